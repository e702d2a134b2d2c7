// Package engine decides who wins a flash sale, in memory. It keeps every
// item's stock in per-core shards of padded atomic counters, each user's
// holdings, a window of idempotency keys and an order id generator. It does no
// I/O: an OrderSink makes winners' orders durable, a Catalog keeps the items,
// and in cluster mode a Ledger leases units from the shared pool and confirms
// each winner across all nodes (deps.go). It imports nothing of the project
// and never asks which mode it is in beyond whether it has a Ledger.
//
// Invariants (tested in engine_test.go, cluster_test.go and chaos_test.go):
//   - a shard never goes below zero, so units sold never exceed stock;
//   - a user's holdings never exceed the item's per-user limit;
//   - a request id that won is answered with its first order for the window;
//   - a purchase that fails after a reservation undoes every reservation, in
//     reverse order, before it returns.
package engine

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Options configures an Engine: its settings, which the zero value of each
// field defaults, and its dependencies.
type Options struct {
	// Shards is the number of stock shards per item; default GOMAXPROCS.
	Shards int
	// NodeID goes into every order id; unique among live nodes.
	NodeID int
	// IdempotencyWindow is how long a winning request id is remembered;
	// default DefaultIdempotencyWindow.
	IdempotencyWindow time.Duration
	Sink              OrderSink // required
	Catalog           Catalog   // required
	// Ledger is the cluster's shared ledger; nil is standalone: every
	// item's whole stock in this process, nothing to confirm.
	Ledger Ledger
	// MaxLease caps the units one lease takes (cluster mode); default
	// DefaultMaxLease. Leases shrink near the end of the stock so that no
	// node sits on the last units.
	MaxLease int64
	// Now is the clock; default time.Now (tests pass one they move).
	Now func() time.Time
	// SyncFeed, when set (cluster mode), returns once every event published
	// before it was called has reached this node's engine (the feed's
	// barrier): a purchase with a request id the node does not know calls
	// it before it sells. An error skips it.
	SyncFeed func(ctx context.Context) error
	// OnLedgerLost, when set, is told when the ledger answers that a pool
	// is gone or of another generation (the engine stops selling: see
	// SetLedgerLost): the node's guard looks at once.
	OnLedgerLost func()
}

const (
	// DefaultIdempotencyWindow is the retention of the HTTP contract.
	DefaultIdempotencyWindow = 10 * time.Minute
	// DefaultMaxLease is the most units one lease takes from the pool.
	DefaultMaxLease = 64
	// MaxShards bounds Options.Shards.
	MaxShards = 1024
)

// Engine is the in-memory stock engine. It is safe for concurrent use.
type Engine struct {
	shards   int
	ledger   Ledger // nil in standalone mode
	sink     OrderSink
	catalog  Catalog
	maxLease int64
	now      func() time.Time

	items    atomic.Pointer[itemSet]
	adminMu  sync.Mutex // serialises item changes; never taken by purchases
	ids      *idGen
	idem     idemWindow
	feedUp   atomic.Bool                     // cluster mode: the node's event feed is up (feed.go)
	lost     atomic.Bool                     // cluster mode: the shared ledger was lost (feed.go)
	onLost   func()                          // Options.OnLedgerLost
	syncFeed func(ctx context.Context) error // Options.SyncFeed

	stop chan struct{}
	done chan struct{}
}

// itemSet is an immutable index of the items, replaced whole when an item is
// added, so purchases find their item without a lock.
type itemSet struct {
	byID   map[string]*item
	sorted []*item
}

// DefaultOptions are the settings with their defaults, and no dependencies.
func DefaultOptions() Options {
	return Options{IdempotencyWindow: DefaultIdempotencyWindow, MaxLease: DefaultMaxLease}
}

// Validate checks the settings of o as given (not its dependencies).
func (o Options) Validate() error {
	var errs []error
	if o.Shards < 0 || o.Shards > MaxShards {
		errs = append(errs, fmt.Errorf("engine: %d stock shards is out of range [0, %d] (0: one per CPU)", o.Shards, MaxShards))
	}
	if o.NodeID < 0 || o.NodeID > MaxNodeID {
		errs = append(errs, fmt.Errorf("engine: node id %d is out of range [0, %d]", o.NodeID, MaxNodeID))
	}
	if o.IdempotencyWindow <= 0 || o.MaxLease < 1 {
		errs = append(errs, errors.New("engine: the idempotency window and the largest lease must be positive"))
	}
	return errors.Join(errs...)
}

// New returns an engine with no items. Zero settings take their defaults.
func New(opts Options) (*Engine, error) {
	if opts.Sink == nil || opts.Catalog == nil {
		return nil, errors.New("engine: Options.Sink and Options.Catalog are required")
	}
	if opts.IdempotencyWindow == 0 {
		opts.IdempotencyWindow = DefaultIdempotencyWindow
	}
	if opts.MaxLease == 0 {
		opts.MaxLease = DefaultMaxLease
	}
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if opts.Shards == 0 {
		opts.Shards = runtime.GOMAXPROCS(0)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	ids, err := newIDGen(opts.NodeID)
	if err != nil {
		return nil, err
	}
	e := &Engine{
		shards:   opts.Shards,
		ledger:   opts.Ledger,
		sink:     opts.Sink,
		catalog:  opts.Catalog,
		maxLease: opts.MaxLease,
		now:      opts.Now,
		onLost:   opts.OnLedgerLost,
		syncFeed: opts.SyncFeed,
		ids:      ids,
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	e.idem.window = opts.IdempotencyWindow
	e.items.Store(&itemSet{byID: map[string]*item{}})
	go e.janitor()
	return e, nil
}

// Close stops the engine's background work. Purchases in flight finish.
func (e *Engine) Close() {
	close(e.stop)
	<-e.done
}

// janitor drops expired idempotency entries that no insert has popped,
// and, in cluster mode, follows the shared catalogue and reads what the
// pools have left: units another node gave back must not stay unsold.
func (e *Engine) janitor() {
	defer close(e.done)
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for tick := 1; ; tick++ {
		select {
		case <-e.stop:
			return
		case <-t.C:
			if tick%10 == 0 {
				e.idem.sweep(e.now())
			}
			if tick%2 == 0 {
				e.refreshPools()
				e.returnIdleLeases(e.now())
			}
			e.SyncCatalog()
		}
	}
}

func (e *Engine) lookup(id string) *item { return e.items.Load().byID[id] }

// HasItem reports whether an item exists, without building a snapshot.
func (e *Engine) HasItem(id string) bool { return e.lookup(id) != nil }

// Item returns a snapshot of the item with id.
func (e *Engine) Item(id string) (ItemView, bool) {
	it := e.lookup(id)
	if it == nil {
		return ItemView{}, false
	}
	return it.view(e.now()), true
}

// Items returns snapshots of all items, ordered by id.
func (e *Engine) Items() []ItemView {
	set := e.items.Load()
	now := e.now()
	views := make([]ItemView, len(set.sorted))
	for i, it := range set.sorted {
		views[i] = it.view(now)
	}
	return views
}

// ItemAudit is one item's stock equation on a standalone node.
type ItemAudit struct {
	ID string
	// Difference is stock_total - (left + sold + pending): 0 when every
	// unit is accounted for.
	Difference int64
}

// Audit checks stock_total = left + sold + pending for every item, for the
// auditor's metric. A purchase between two of its steps unbalances the
// equation for nanoseconds, so an item is read again, up to three times,
// before a difference is reported. In cluster mode it returns nil: the
// stock lives in the shared ledger, which the reconcilers audit.
func (e *Engine) Audit() []ItemAudit {
	if e.ledger != nil {
		return nil
	}
	items := e.items.Load().sorted
	out := make([]ItemAudit, len(items))
	for i, it := range items {
		var d int64
		for range 3 {
			if d = it.cfg.Load().Stock - it.stock.left() - it.sold.Load() - it.pending.Load(); d == 0 {
				break
			}
		}
		out[i] = ItemAudit{ID: it.id, Difference: d}
	}
	return out
}

// IdempotencyEntries counts the request ids remembered, for metrics.
func (e *Engine) IdempotencyEntries() int { return e.idem.len() }

// PutItem creates the item, or updates it. Raising Stock adds units; lowering
// it removes units that are still unsold and unreserved, or fails with
// ErrStockBelowSold. An ended item stays ended.
func (e *Engine) PutItem(ctx context.Context, in Item) (v ItemView, created bool, err error) {
	if err := in.Validate(); err != nil {
		return ItemView{}, false, err
	}
	e.adminMu.Lock()
	defer e.adminMu.Unlock()

	it := e.lookup(in.ID)
	if it == nil {
		in.Created = e.now().UTC().Truncate(time.Millisecond)
	} else {
		in.Created = it.cfg.Load().Created
	}
	if e.ledger != nil {
		if e.lost.Load() {
			return ItemView{}, false, ErrLedgerLost
		}
		return e.putPooledItem(ctx, it, in)
	}
	if it == nil {
		if err := e.catalog.SaveItem(ctx, in); err != nil {
			return ItemView{}, false, unavailable("cannot save item", err)
		}
		it = e.addItem(in)
		it.stock.spread(in.Stock)
		return it.view(e.now()), true, nil
	}

	old := it.cfg.Load()
	in.Ended = old.Ended
	delta := in.Stock - old.Stock
	if delta < 0 && !it.stock.take(-delta) {
		return ItemView{}, false, ErrStockBelowSold
	}
	if err := e.catalog.SaveItem(ctx, in); err != nil {
		if delta < 0 {
			it.stock.put(-delta)
		}
		return ItemView{}, false, unavailable("cannot save item", err)
	}
	it.cfg.Store(&in)
	if delta > 0 {
		it.stock.spread(delta)
	}
	return it.view(e.now()), false, nil
}

// EndItem ends the sale of an item; it stays readable in state Ended.
func (e *Engine) EndItem(ctx context.Context, id string) (ItemView, error) {
	e.adminMu.Lock()
	defer e.adminMu.Unlock()
	it := e.lookup(id)
	if it == nil {
		return ItemView{}, ErrItemNotFound
	}
	if e.ledger != nil && e.lost.Load() {
		return ItemView{}, ErrLedgerLost
	}
	cfg := *it.cfg.Load()
	if !cfg.Ended {
		cfg.Ended = true
		if err := e.catalog.SaveItem(ctx, cfg); err != nil {
			return ItemView{}, unavailable("cannot save item", err)
		}
		it.cfg.Store(&cfg)
	}
	return it.view(e.now()), nil
}

// addItem publishes a new item. The caller holds adminMu.
func (e *Engine) addItem(cfg Item) *item {
	cfg.ID = strings.Clone(cfg.ID)
	it := &item{id: cfg.ID, stock: newStock(e.shards)}
	it.cfg.Store(&cfg)
	if e.ledger != nil {
		it.pool.Store(-1)    // unknown until the first lease
		it.claimed.Store(-1) // unknown until the feed tells
	}
	old := e.items.Load()
	set := &itemSet{byID: make(map[string]*item, len(old.byID)+1), sorted: make([]*item, 0, len(old.sorted)+1)}
	for k, v := range old.byID {
		set.byID[k] = v
	}
	set.byID[it.id] = it
	set.sorted = append(set.sorted, old.sorted...)
	set.sorted = append(set.sorted, it)
	slices.SortFunc(set.sorted, func(a, b *item) int { return cmp.Compare(a.id, b.id) })
	e.items.Store(set)
	return it
}

// Restore rebuilds the engine from a snapshot of the order store. It is
// called once, on a new engine, before any purchase.
func (e *Engine) Restore(s Snapshot) error {
	e.adminMu.Lock()
	defer e.adminMu.Unlock()
	if len(e.items.Load().byID) != 0 {
		return errors.New("engine: Restore on an engine that has items")
	}
	for _, r := range s.Items {
		if err := r.Item.Validate(); err != nil {
			return fmt.Errorf("engine: stored item %q: %w", r.Item.ID, err)
		}
		if r.Sold < 0 || r.Sold > r.Item.Stock {
			return fmt.Errorf("engine: stored item %q has %d units sold of %d", r.Item.ID, r.Sold, r.Item.Stock)
		}
		it := e.addItem(r.Item)
		it.sold.Store(r.Sold)
		if e.ledger == nil { // in cluster mode units come from leases
			it.stock.spread(r.Item.Stock - r.Sold)
		}
	}
	set := e.items.Load()
	for _, b := range s.Board {
		if it := set.byID[b.ItemID]; it != nil {
			it.board.add(b)
		}
	}
	for _, h := range s.Holdings {
		it := set.byID[h.ItemID]
		if it == nil {
			return fmt.Errorf("engine: stored orders name unknown item %q", h.ItemID)
		}
		it.users.restore(h.UserID, h.Units)
	}
	now := e.now()
	var key idemKey
	for _, o := range s.Replays {
		if !ValidUserID(o.UserID) || !ValidRequestID(o.RequestID) {
			return fmt.Errorf("engine: stored order %d has a bad user or request id", o.ID)
		}
		key.set(o.UserID, o.RequestID)
		e.idem.learn(key.bytes(), o, now)
	}
	e.ids.observe(s.LastOrderID)
	return nil
}

// PurchaseRequest asks for Quantity units of an item. Its strings may alias
// the caller's buffers for the duration of Purchase; the engine copies what
// it keeps.
type PurchaseRequest struct {
	ItemID    string
	UserID    string
	RequestID string // optional idempotency key
	Quantity  int64
}

// Purchase sells units to a user, or says why not. It returns the order, and
// replayed=true when the request id had already won and this is its first
// answer again. Losers (sold out, over the limit, outside the window) are
// answered from memory without allocating.
func (e *Engine) Purchase(ctx context.Context, req PurchaseRequest) (o *Order, replayed bool, err error) {
	switch {
	case !ValidItemID(req.ItemID):
		return nil, false, ErrBadItemID
	case !ValidUserID(req.UserID):
		return nil, false, ErrBadUserID
	case req.RequestID != "" && !ValidRequestID(req.RequestID):
		return nil, false, ErrBadRequestID
	}
	it := e.lookup(req.ItemID)
	if it == nil {
		return nil, false, ErrItemNotFound
	}
	cfg := it.cfg.Load()
	q := req.Quantity
	if q < 1 || q > cfg.PerUserLimit {
		return nil, false, ErrBadQuantity
	}
	now := e.now()

	// r records each reservation as it is made, and undoes them all if a
	// later step fails. It holds the idempotency key, built once, on the stack.
	r := reservation{e: e, it: it, q: q}
	if req.RequestID != "" {
		r.key.set(req.UserID, req.RequestID)
		if ent, first := e.idem.lookup(r.key.bytes(), now); ent != nil {
			return replay(ent, first, it.id, q)
		}
	}
	if e.lost.Load() { // cluster mode: nothing is sold until the ledger is rebuilt
		return nil, false, ErrLedgerLost
	}
	// Losers stop here, on reads alone.
	if err := cfg.checkWindow(now); err != nil {
		return nil, false, err
	}
	if it.stock.left() < q && !e.mayLease(it) {
		return e.soldOut(ctx, it, &req)
	}
	if it.users.held(req.UserID)+q > cfg.PerUserLimit {
		return nil, false, ErrLimitExceeded
	}
	if req.RequestID != "" && e.syncFeed != nil {
		// A cluster node that does not know this request id, about to sell,
		// first hears every claim made before the request came (the feed's
		// barrier): a request id that won on another node, for this item or
		// another, is then its replay or 422, never a second order.
		if err := e.syncFeed(ctx); err == nil {
			if ent, first := e.idem.lookup(r.key.bytes(), now); ent != nil {
				return replay(ent, first, it.id, q)
			}
		}
	}

	if req.RequestID != "" {
		started, ent, first := e.idem.begin(r.key.bytes(), it.id, q, now)
		if !started {
			return replay(ent, first, it.id, q)
		}
		r.entry = ent
	}
	r.user = strings.Clone(req.UserID) // the request's may alias a pooled buffer
	if !it.users.reserve(r.user, q, cfg.PerUserLimit) {
		r.undo(ctx)
		return nil, false, ErrLimitExceeded
	}
	r.userHeld = true
	if ok, err := e.takeStock(ctx, it, q); !ok {
		if errors.Is(err, ErrLedgerLost) {
			e.ledgerLost()
			return nil, false, errors.Join(ErrLedgerLost, r.undo(ctx))
		}
		if err != nil {
			return nil, false, errors.Join(unavailable("cannot lease stock", err), r.undo(ctx))
		}
		r.undo(ctx)
		return e.soldOut(ctx, it, &req)
	}
	it.pending.Add(q)
	r.stockHeld = true

	now = now.Truncate(time.Millisecond).UTC()
	o = &Order{
		ID:         e.ids.next(now),
		ItemID:     it.id,
		UserID:     r.user,
		Quantity:   q,
		PriceCents: cfg.PriceCents * q,
		RequestID:  strings.Clone(req.RequestID),
		CreatedAt:  now,
	}
	if e.ledger != nil {
		first, err := e.ledger.Claim(ctx, o, cfg.PerUserLimit)
		switch {
		case errors.Is(err, ErrLimitExceeded): // over the limit on another node
			return nil, false, errors.Join(ErrLimitExceeded, r.undo(ctx))
		case errors.Is(err, ErrSoldOut): // its twin was told so on another node
			return nil, false, errors.Join(ErrSoldOut, r.undo(ctx))
		case errors.Is(err, ErrLedgerLost):
			e.ledgerLost()
			r.dropStock = true // leased from the lost ledger
			return nil, false, errors.Join(ErrLedgerLost, r.undo(ctx))
		case errors.Is(err, ErrNotLeased):
			r.dropStock = true
			return nil, false, errors.Join(unavailable("cannot claim", err), r.undo(ctx))
		case err != nil:
			return nil, false, errors.Join(unavailable("cannot claim", err), r.undo(ctx))
		case first != nil: // the request id won on another node: its answer
			ent := r.entry
			r.entry = nil
			r.undo(ctx)
			if ent != nil {
				e.idem.complete(ent, first, now)
			}
			if first.Quantity != q {
				return nil, false, ErrIdempotencyKeyReused
			}
			return first, true, nil
		}
		r.claimed = o
	}
	if err := e.sink.Append(ctx, o); err != nil {
		if uerr := r.undo(ctx); !errors.Is(uerr, ErrOrderStored) {
			return nil, false, errors.Join(unavailable("cannot store order", err), uerr)
		}
		// The record landed after all and a writer stored it: it stands,
		// and the sink forgets that it failed.
		Stands(ctx, e.sink, o)
	}
	it.sold.Add(q)
	it.pending.Add(-q)
	if e.ledger == nil { // a cluster's boards are the writers' (they see every node's orders)
		it.board.add(BoardEntry{ItemID: it.id, UserID: o.UserID, OrderID: o.ID, At: o.CreatedAt})
	}
	if e.ledger != nil {
		it.lastSale.Store(now.UnixNano())
	}
	if r.entry != nil {
		e.idem.complete(r.entry, o, now)
	}
	if e.ledger != nil {
		e.ledger.Confirm(ctx, o) // best effort: the order is durable either way
	}
	return o, false, nil
}

// takeStock reserves q units, leasing when the shards are short.
func (e *Engine) takeStock(ctx context.Context, it *item, q int64) (bool, error) {
	for attempt := 0; attempt < 3; attempt++ {
		if it.stock.take(q) {
			return true, nil
		}
		ok, err := e.refill(ctx, it, q)
		if err != nil || !ok {
			return false, err
		}
	}
	return false, nil // others took each refill first: sold out for now
}

// soldOut answers a purchase that finds no units. In cluster mode a request
// id this node does not know may have won on another node a moment ago:
// unless this node knows every winner of the item (its event feed is up
// and has seen every unit of the stock claimed), it asks the ledger
// (Refuse), so that a winner's retry is never told "sold out" and a twin
// on another node is not sold after it was. Without a request id, or
// knowing every winner, it answers from memory, allocating nothing.
func (e *Engine) soldOut(ctx context.Context, it *item, req *PurchaseRequest) (*Order, bool, error) {
	if e.ledger == nil || req.RequestID == "" || e.feedUp.Load() && it.claimed.Load() >= it.cfg.Load().Stock {
		return nil, false, ErrSoldOut
	}
	first, err := e.ledger.Refuse(ctx, it.id, req.UserID, req.RequestID)
	if err != nil || first == nil {
		return nil, false, ErrSoldOut // what this node knows; the ledger cannot say otherwise
	}
	var key idemKey
	key.set(first.UserID, first.RequestID)
	e.idem.learn(key.bytes(), first, e.now())
	if first.Quantity != req.Quantity {
		return nil, false, ErrIdempotencyKeyReused
	}
	return first, true, nil
}

// replay answers a request id that is already known.
func replay(ent *idemEntry, first *Order, itemID string, q int64) (*Order, bool, error) {
	switch {
	case !ent.matches(itemID, q):
		return nil, false, ErrIdempotencyKeyReused
	case first == nil:
		return nil, false, ErrRequestInProgress
	}
	return first, true, nil
}

// reservation records what a purchase has taken so far.
type reservation struct {
	e         *Engine
	it        *item
	user      string
	q         int64
	key       idemKey
	entry     *idemEntry // the request id's entry, begun
	userHeld  bool
	stockHeld bool
	dropStock bool   // the ledger says the units are not this node's: keep them out
	claimed   *Order // ledger claim made (cluster mode)
}

// undo gives back everything taken, in reverse order. Only the ledger can
// fail to give back; its error is returned, and the claim is left for the
// ledger's reconciliation, which owns its units from then on: they do not
// go back to the shards. When the ledger says the order was stored after
// all (ErrOrderStored), nothing is undone.
func (r *reservation) undo(ctx context.Context) error {
	var err error
	if r.claimed != nil {
		if uerr := r.e.ledger.Unclaim(ctx, r.claimed); errors.Is(uerr, ErrOrderStored) {
			return uerr
		} else if uerr != nil {
			err = fmt.Errorf("engine: cannot undo claim of order %d: %w", r.claimed.ID, uerr)
		}
	}
	if r.stockHeld {
		r.it.pending.Add(-r.q)
		if err == nil && !r.dropStock {
			r.it.stock.put(r.q)
		}
	}
	if r.userHeld {
		r.it.users.release(r.user, r.q)
	}
	if r.entry != nil {
		r.e.idem.abort(r.entry)
	}
	return err
}

func unavailable(what string, err error) error {
	return fmt.Errorf("%w: %s: %w", ErrUnavailable, what, err)
}
