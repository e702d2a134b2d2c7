// Package enginetest has in-memory fakes of what the engine depends on (an
// OrderSink, a Catalog, a cluster Ledger) and a clock, for the tests of every
// package that runs an engine. It owns no production code path: nothing but
// tests may import it, and it never touches a disk, a network or a real
// dependency (those are tested against the real thing: internal/redistest,
// internal/mysqltest).
package enginetest

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/flashsale/flashsale/engine"
)

// Sink is an engine.OrderSink in memory: it keeps every order it accepts.
type Sink struct {
	// Before, when set, runs at the start of every Append; an error from it
	// fails the append. Tests use it to hold appends, fail some at random
	// or slow them down. Set it before the sink is used.
	Before func(*engine.Order) error

	mu     sync.Mutex
	orders []*engine.Order
	fail   error
	calls  int
	stands []uint64
}

var _ engine.StandingSink = (*Sink)(nil)

// Stands records that o, whose append failed, stands after all.
func (s *Sink) Stands(_ context.Context, o *engine.Order) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stands = append(s.stands, o.ID)
	return nil
}

// Standing are the ids of the orders the sink was told stand after all.
func (s *Sink) Standing() []uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]uint64(nil), s.stands...)
}

// Append keeps o, unless the sink was told to fail.
func (s *Sink) Append(_ context.Context, o *engine.Order) error {
	s.mu.Lock()
	s.calls++
	s.mu.Unlock()
	if s.Before != nil {
		if err := s.Before(o); err != nil {
			return err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return s.fail
	}
	s.orders = append(s.orders, o)
	return nil
}

// SetFail makes every append fail with err from now on; nil heals the sink.
func (s *Sink) SetFail(err error) { s.mu.Lock(); s.fail = err; s.mu.Unlock() }

// Orders returns the orders accepted so far.
func (s *Sink) Orders() []*engine.Order {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*engine.Order(nil), s.orders...)
}

// Calls counts the appends tried, failed ones included.
func (s *Sink) Calls() int { s.mu.Lock(); defer s.mu.Unlock(); return s.calls }

// Discard is an OrderSink that accepts every order at once and keeps none,
// so that benchmarks measure the engine alone.
type Discard struct{}

func (Discard) Append(context.Context, *engine.Order) error { return nil }

// Catalog is an engine.Catalog in memory.
type Catalog struct {
	mu    sync.Mutex
	items map[string]engine.Item
	fail  error
}

var _ engine.Catalog = (*Catalog)(nil)

func (c *Catalog) SaveItem(_ context.Context, it engine.Item) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fail != nil {
		return c.fail
	}
	if c.items == nil {
		c.items = map[string]engine.Item{}
	}
	c.items[it.ID] = it
	return nil
}

func (c *Catalog) Items(context.Context) ([]engine.Item, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fail != nil {
		return nil, c.fail
	}
	out := make([]engine.Item, 0, len(c.items))
	for _, it := range c.items {
		out = append(out, it)
	}
	return out, nil
}

// Item returns the definition saved for id.
func (c *Catalog) Item(id string) (engine.Item, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	it, ok := c.items[id]
	return it, ok
}

// SetFail makes every call fail with err from now on; nil heals it.
func (c *Catalog) SetFail(err error) { c.mu.Lock(); c.fail = err; c.mu.Unlock() }

// Ledger is a cluster's shared ledger in memory, as persist/redisledger keeps
// it in Redis: per item a pool (total, remaining, leased, claimed) and each
// user's claimed units. Engines built on one Ledger sell one stock as the
// nodes of a cluster do. Its answers can be scripted (SetClaimErr, SetFirst,
// SetUnclaimErr) and it can be taken down (SetDown).
type Ledger struct {
	mu    sync.Mutex
	items map[string]*pool

	down       error
	loseLease  bool  // the next lease is granted and its answer lost
	lost       int64 // units granted by leases whose answers were lost
	claimErr   error
	first      *engine.Order
	unclaimErr error

	claims, unclaims, leases, calls int
	refusals, confirms              int
	stuck                           []*engine.Order          // claims whose undo failed
	winners                         map[string]*engine.Order // by item, user and request id
	refused                         map[string]bool
}

func winnerKey(item, user, requestID string) string { return item + "\x00" + user + "\x00" + requestID }

var _ engine.Ledger = (*Ledger)(nil)

type pool struct {
	total, remaining, leased, claimed int64
	users                             map[string]int64
}

func (l *Ledger) pool(item string) *pool {
	if l.items == nil {
		l.items = map[string]*pool{}
	}
	p := l.items[item]
	if p == nil {
		p = &pool{users: map[string]int64{}}
		l.items[item] = p
	}
	return p
}

// enter counts a call and says whether the ledger is down. The caller holds mu.
func (l *Ledger) enter() error {
	l.calls++
	return l.down
}

func (l *Ledger) PutItem(_ context.Context, item string, total int64, _ bool) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.enter(); err != nil {
		return err
	}
	p := l.pool(item)
	if p.remaining+total-p.total < 0 {
		return engine.ErrStockBelowSold
	}
	p.remaining += total - p.total
	p.total = total
	return nil
}

func (l *Ledger) Lease(_ context.Context, item string, want int64) (int64, int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.enter(); err != nil {
		return 0, 0, err
	}
	l.leases++
	p := l.pool(item)
	g := min(want, p.remaining)
	p.remaining -= g
	p.leased += g
	if l.loseLease {
		l.loseLease = false
		l.lost += g
		return 0, 0, errors.New("enginetest: the lease's answer was lost")
	}
	return g, p.remaining, nil
}

// LoseNextLeaseAnswer makes the next lease grant its units and answer an
// error, as when Redis fails after running the script: the units are leased
// to a node that never got them, until it trims its lease (Trim).
func (l *Ledger) LoseNextLeaseAnswer() { l.mu.Lock(); l.loseLease = true; l.mu.Unlock() }

func (l *Ledger) GiveBack(_ context.Context, item string, n int64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.enter(); err != nil {
		return err
	}
	p := l.pool(item)
	p.leased -= n
	p.remaining += n
	return nil
}

func (l *Ledger) Trim(_ context.Context, item string, keep int64) (int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.enter(); err != nil {
		return 0, err
	}
	// The kit counts the leases of every engine on it together: only what
	// lost leases granted is known to be beyond what the nodes hold.
	p := l.pool(item)
	n := min(l.lost, max(p.leased-keep, 0))
	l.lost -= n
	p.leased -= n
	p.remaining += n
	return n, nil
}

func (l *Ledger) Remaining(_ context.Context, item string) (int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.enter(); err != nil {
		return 0, err
	}
	return l.pool(item).remaining, nil
}

// Claim turns leased units into the user's, within the limit, unless a
// scripted answer says otherwise.
func (l *Ledger) Claim(_ context.Context, o *engine.Order, limit int64) (*engine.Order, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.enter(); err != nil {
		return nil, err
	}
	l.claims++
	switch {
	case l.claimErr != nil:
		return nil, l.claimErr
	case l.first != nil:
		return l.first, nil
	}
	p := l.pool(o.ItemID)
	if p.users[o.UserID]+o.Quantity > limit {
		return nil, engine.ErrLimitExceeded
	}
	if o.RequestID != "" {
		k := winnerKey(o.ItemID, o.UserID, o.RequestID)
		if first := l.winners[k]; first != nil {
			return first, nil
		}
		if l.refused[k] {
			return nil, engine.ErrSoldOut
		}
	}
	p.users[o.UserID] += o.Quantity
	p.leased -= o.Quantity
	p.claimed += o.Quantity
	if o.RequestID != "" {
		if l.winners == nil {
			l.winners = map[string]*engine.Order{}
		}
		l.winners[winnerKey(o.ItemID, o.UserID, o.RequestID)] = o
	}
	return nil, nil
}

// Unclaim gives a claim's units back to the lease, unless a scripted error
// says otherwise (then the claim stays, as a real ledger's would).
func (l *Ledger) Unclaim(_ context.Context, o *engine.Order) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.unclaims++
	err := l.enter()
	if err == nil {
		err = l.unclaimErr
	}
	if err != nil {
		if !errors.Is(err, engine.ErrOrderStored) {
			l.stuck = append(l.stuck, o)
		}
		return err
	}
	p := l.pool(o.ItemID)
	p.users[o.UserID] -= o.Quantity
	p.leased += o.Quantity
	p.claimed -= o.Quantity
	if o.RequestID != "" {
		delete(l.winners, winnerKey(o.ItemID, o.UserID, o.RequestID))
	}
	return nil
}

// Confirm counts the orders told durable.
func (l *Ledger) Confirm(context.Context, *engine.Order) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.enter(); err != nil {
		return err
	}
	l.confirms++
	return nil
}

// Refuse answers the order a request id won with, as Claim recorded it, or
// marks it refused: a later Claim of it answers engine.ErrSoldOut (for
// ever: the fake has no clock).
func (l *Ledger) Refuse(_ context.Context, item, user, requestID string) (*engine.Order, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.enter(); err != nil {
		return nil, err
	}
	l.refusals++
	k := winnerKey(item, user, requestID)
	if first := l.winners[k]; first != nil {
		return first, nil
	}
	if l.refused == nil {
		l.refused = map[string]bool{}
	}
	l.refused[k] = true
	return nil, nil
}

// AbandonStuck gives the units of every claim whose undo failed back to
// the pool, freeing the users' slots, as the cluster's reconciliation does,
// and says how many claims it settled.
func (l *Ledger) AbandonStuck() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, o := range l.stuck {
		p := l.pool(o.ItemID)
		p.users[o.UserID] -= o.Quantity
		p.claimed -= o.Quantity
		p.remaining += o.Quantity
	}
	n := len(l.stuck)
	l.stuck = nil
	return n
}

// SetDown makes every call fail with err, as a dependency that is down;
// nil brings the ledger back.
func (l *Ledger) SetDown(err error) { l.mu.Lock(); l.down = err; l.mu.Unlock() }

// SetClaimErr makes Claim fail with err (claiming nothing); nil stops it.
func (l *Ledger) SetClaimErr(err error) { l.mu.Lock(); l.claimErr = err; l.mu.Unlock() }

// SetFirst makes Claim answer o as the first order of the request id, as
// when it won on another node; nil stops it.
func (l *Ledger) SetFirst(o *engine.Order) { l.mu.Lock(); l.first = o; l.mu.Unlock() }

// SetUnclaimErr makes Unclaim fail with err, keeping the claim (e.g.
// engine.ErrOrderStored); nil stops it.
func (l *Ledger) SetUnclaimErr(err error) { l.mu.Lock(); l.unclaimErr = err; l.mu.Unlock() }

// Counts are the claims, unclaims, leases, confirmations and refusals asked
// so far, and every call.
type Counts struct{ Claims, Unclaims, Leases, Confirms, Refusals, Calls int }

// Counts says how often the ledger was asked.
func (l *Ledger) Counts() Counts {
	l.mu.Lock()
	defer l.mu.Unlock()
	return Counts{Claims: l.claims, Unclaims: l.unclaims, Leases: l.leases, Confirms: l.confirms, Refusals: l.refusals, Calls: l.calls}
}

// Pool is an item's ledger at one instant.
type Pool struct{ Total, Remaining, Leased, Claimed int64 }

// Balanced reports whether total = remaining + leased + claimed.
func (p Pool) Balanced() bool { return p.Total == p.Remaining+p.Leased+p.Claimed }

// Pool reads an item's ledger.
func (l *Ledger) Pool(item string) Pool {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.pool(item)
	return Pool{Total: p.total, Remaining: p.remaining, Leased: p.leased, Claimed: p.claimed}
}

// Clock is a clock that moves only when told.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a clock stopped at t.
func NewClock(t time.Time) *Clock { return &Clock{t: t} }

// Now is the clock's time; pass it as engine.Options.Now.
func (c *Clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// Order is one unit of item "it" at 500 cents for user, made at the time its
// id carries; requestID may be empty.
func Order(id uint64, user, requestID string) *engine.Order {
	return &engine.Order{ID: id, ItemID: "it", UserID: user, Quantity: 1, PriceCents: 500, RequestID: requestID,
		CreatedAt: engine.OrderIDTime(id)}
}
