// Package redisledger keeps cluster mode's shared ledger (package ledger) in
// Redis: the pool of an item's units, the leases that move units into each
// node's in-memory shards in batches, the claims that confirm each winner
// across all nodes (per-user count and request id) and, with orders through
// Kafka, the lifecycle of each claim; also the item catalogue (catalog.go)
// and the nodes' registrations (nodes.go). Every multi-key update is a Lua
// script run through rueidis (EVALSHA, falling back to EVAL), and the keys
// of one item share a hash tag, so the scripts run on Redis Cluster too.
// See scripts.go for the data model and its invariant.
//
// A Ledger is the engine's engine.Ledger, the writers' ledger.Marker and the
// reconcilers' ledger.Settler and ledger.Pools. It never decides when a
// claim may be abandoned: that is persist/reconcile's.
package redisledger

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"

	"github.com/flashsale/flashsale/engine"
	"github.com/flashsale/flashsale/ledger"
)

var (
	_ engine.Ledger  = (*Ledger)(nil)
	_ ledger.Marker  = (*Ledger)(nil)
	_ ledger.Settler = (*Ledger)(nil)
	_ ledger.Pools   = (*Ledger)(nil)
)

// Options configures a Ledger.
type Options struct {
	// Prefix namespaces the keys; default DefaultPrefix.
	Prefix string
	// IdempotencyWindow is how long a claimed request id is remembered;
	// default engine.DefaultIdempotencyWindow.
	IdempotencyWindow time.Duration
	// Timeout bounds each call to Redis; default DefaultTimeout.
	Timeout time.Duration
	// TrackClaims records each claim by order id until a writer stores its
	// order (orders through Kafka): see claims.go.
	TrackClaims bool
}

// The defaults of Options.
const (
	DefaultPrefix  = "fs"
	DefaultTimeout = 500 * time.Millisecond
)

// DefaultOptions are the defaults, claims untracked.
func DefaultOptions() Options {
	return Options{Prefix: DefaultPrefix, IdempotencyWindow: engine.DefaultIdempotencyWindow, Timeout: DefaultTimeout}
}

// Validate checks the settings as given.
func (o Options) Validate() error {
	if o.Prefix == "" || o.Timeout <= 0 || o.IdempotencyWindow <= 0 {
		return errors.New("-redis-prefix must not be empty, -redis-timeout and the idempotency window must be positive")
	}
	return nil
}

// Ledger is one node's view of the shared ledger.
type Ledger struct {
	c       rueidis.Client
	node    string
	prefix  string
	window  time.Duration
	timeout time.Duration
	track   string // "1" when claims are tracked, else "0"
}

// bound gives a call its timeout.
func (l *Ledger) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, l.timeout)
}

// Errors of the ledger.
var (
	ErrNotLeased = errors.New("redisledger: node claims units it does not hold (BUG)")
	// ErrClaimSettled: the claim to undo was already undone (by the
	// reconciler, which gave its units to the pool): the node must not put
	// them back into its shards.
	ErrClaimSettled = errors.New("redisledger: the claim was already settled by reconciliation")
)

// New returns node's ledger over the client c.
func New(c rueidis.Client, node int, o Options) *Ledger {
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if o.IdempotencyWindow <= 0 {
		o.IdempotencyWindow = engine.DefaultIdempotencyWindow
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	track := "0"
	if o.TrackClaims {
		track = "1"
	}
	return &Ledger{c: c, node: strconv.Itoa(node), prefix: o.Prefix, window: o.IdempotencyWindow, timeout: o.Timeout, track: track}
}

// keys of an item; they share the hash tag {prefix:item}.
type keys struct{ stock, leases, users, claims, tag string }

func (l *Ledger) keys(item string) keys {
	tag := "{" + l.prefix + ":" + item + "}"
	return keys{stock: tag + ":stock", leases: tag + ":leases", users: tag + ":users", claims: tag + ":claims", tag: tag}
}

// reqKey is the key of a (user, request id); the user's length comes
// first so that ids with separators in them cannot collide.
func (k keys) reqKey(user, requestID string) string {
	return k.tag + ":req:" + strconv.Itoa(len(user)) + ":" + user + ":" + requestID
}

// requestOf returns the script arguments for o's request id: its key and
// "1", or a stand-in key of the same slot and "0" when o has none.
func (k keys) requestOf(o *engine.Order) (key, has string) {
	if o.RequestID == "" {
		return k.users, "0"
	}
	return k.reqKey(o.UserID, o.RequestID), "1"
}

// PutItem sets an item's total stock (creating it). Lowering it below what
// is leased or claimed fails with engine.ErrStockBelowSold.
func (l *Ledger) PutItem(ctx context.Context, item string, total int64) error {
	ctx, cancel := l.bound(ctx)
	defer cancel()
	k := l.keys(item)
	n, err := putItem.Exec(ctx, l.c, []string{k.stock}, []string{strconv.FormatInt(total, 10)}).AsInt64()
	if err != nil {
		return fmt.Errorf("redisledger: cannot put item %q: %w", item, err)
	}
	if n < 0 {
		return engine.ErrStockBelowSold
	}
	return nil
}

// Remaining is what the pool of item has left.
func (l *Ledger) Remaining(ctx context.Context, item string) (int64, error) {
	ctx, cancel := l.bound(ctx)
	defer cancel()
	n, err := l.c.Do(ctx, l.c.B().Hget().Key(l.keys(item).stock).Field("remaining").Build()).AsInt64()
	if rueidis.IsRedisNil(err) {
		return 0, nil
	}
	return n, err
}

// Lease moves up to want units of item from the pool to this node. It
// returns the units granted and what the pool has left.
func (l *Ledger) Lease(ctx context.Context, item string, want int64) (granted, remaining int64, err error) {
	ctx, cancel := l.bound(ctx)
	defer cancel()
	k := l.keys(item)
	vals, err := lease.Exec(ctx, l.c, []string{k.stock, k.leases}, []string{l.node, strconv.FormatInt(want, 10)}).AsIntSlice()
	if err != nil || len(vals) != 2 {
		return 0, 0, fmt.Errorf("redisledger: cannot lease %q: %v", item, errOr(err, "bad reply"))
	}
	return vals[0], vals[1], nil
}

// GiveBack returns up to n of this node's leased units of item to the pool.
func (l *Ledger) GiveBack(ctx context.Context, item string, n int64) error {
	ctx, cancel := l.bound(ctx)
	defer cancel()
	k := l.keys(item)
	if err := giveBack.Exec(ctx, l.c, []string{k.stock, k.leases}, []string{l.node, strconv.FormatInt(n, 10)}).Error(); err != nil {
		return fmt.Errorf("redisledger: cannot give back %q: %w", item, err)
	}
	return nil
}

// Claim confirms a winner across all nodes (engine.Ledger): a unit of
// this node's lease becomes the user's, within the per-user limit, and the
// request id is recorded with the order, so that a replay on any node gets
// the first order back. Over the limit: engine.ErrLimitExceeded.
func (l *Ledger) Claim(ctx context.Context, o *engine.Order, limit int64) (*engine.Order, error) {
	ctx, cancel := l.bound(ctx)
	defer cancel()
	k := l.keys(o.ItemID)
	req, has := k.requestOf(o)
	vals, err := claim.Exec(ctx, l.c, []string{k.stock, k.leases, k.users, req, k.claims}, []string{l.node, o.UserID,
		strconv.FormatInt(o.Quantity, 10), strconv.FormatInt(limit, 10), encodeOrder(o),
		strconv.Itoa(int(l.window.Seconds())), has, l.track, strconv.FormatUint(o.ID, 10),
		claimRecord(ledger.Pending, o.Quantity, o.CreatedAt, o.UserID, o.RequestID)}).ToArray()
	if err != nil || len(vals) != 2 {
		return nil, fmt.Errorf("redisledger: cannot claim: %v", errOr(err, "bad reply"))
	}
	status, _ := vals[0].AsInt64()
	detail, _ := vals[1].ToString()
	switch {
	case status == 1:
		return nil, nil
	case status == 2:
		return decodeOrder(detail, o)
	case detail == "limit":
		return nil, engine.ErrLimitExceeded
	}
	return nil, ErrNotLeased
}

// Unclaim undoes a claim whose purchase failed later (engine.Ledger). A
// tracked claim that a writer has already stored is kept, and Unclaim says
// so with engine.ErrOrderStored.
func (l *Ledger) Unclaim(ctx context.Context, o *engine.Order) error {
	ctx, cancel := l.bound(ctx)
	defer cancel()
	k := l.keys(o.ItemID)
	req, has := k.requestOf(o)
	n, err := unclaim.Exec(ctx, l.c, []string{k.stock, k.leases, k.users, req, k.claims}, []string{l.node, o.UserID,
		strconv.FormatInt(o.Quantity, 10), strconv.FormatUint(o.ID, 10), has, l.track}).AsInt64()
	if err != nil {
		return fmt.Errorf("redisledger: cannot unclaim: %w", err)
	}
	switch {
	case n == 2:
		return engine.ErrOrderStored
	case n == 0 && l.track == "1":
		return ErrClaimSettled
	}
	return nil
}

// encodeOrder is the first answer kept under a request id: what the
// request does not already say (item, user and request id are in the key).
func encodeOrder(o *engine.Order) string {
	return strconv.FormatUint(o.ID, 10) + "|" + strconv.FormatInt(o.CreatedAt.UnixMilli(), 10) + "|" +
		strconv.FormatInt(o.Quantity, 10) + "|" + strconv.FormatInt(o.PriceCents, 10)
}

func decodeOrder(s string, req *engine.Order) (*engine.Order, error) {
	parts := strings.Split(s, "|")
	if len(parts) != 4 {
		return nil, fmt.Errorf("redisledger: bad stored order %q", s)
	}
	id, err1 := strconv.ParseUint(parts[0], 10, 64)
	ms, err2 := strconv.ParseInt(parts[1], 10, 64)
	q, err3 := strconv.ParseInt(parts[2], 10, 64)
	price, err4 := strconv.ParseInt(parts[3], 10, 64)
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return nil, fmt.Errorf("redisledger: bad stored order %q: %w", s, err)
	}
	return &engine.Order{ID: id, ItemID: req.ItemID, UserID: req.UserID, RequestID: req.RequestID,
		Quantity: q, PriceCents: price, CreatedAt: time.UnixMilli(ms).UTC(), Status: engine.Accepted}, nil
}

// Audit reads an item's ledger atomically (in one MULTI). Pending counts
// the claimed units whose orders no writer has stored yet (tracked claims
// only).
func (l *Ledger) Audit(ctx context.Context, item string) (ledger.Audit, error) {
	ctx, cancel := l.bound(ctx)
	defer cancel()
	k := l.keys(item)
	res := l.c.DoMulti(ctx,
		l.c.B().Multi().Build(),
		l.c.B().Hgetall().Key(k.stock).Build(),
		l.c.B().Hgetall().Key(k.leases).Build(),
		l.c.B().Exec().Build())
	exec, err := res[3].ToArray()
	if err != nil || len(exec) != 2 {
		return ledger.Audit{}, fmt.Errorf("redisledger: cannot audit %q: %v", item, errOr(err, "bad reply"))
	}
	stock, err1 := exec[0].AsIntMap()
	leases, err2 := exec[1].AsIntMap()
	if err := errors.Join(err1, err2); err != nil {
		return ledger.Audit{}, fmt.Errorf("redisledger: cannot audit %q: %w", item, err)
	}
	return ledger.Audit{Total: stock["total"], Remaining: stock["remaining"], Claimed: stock["claimed"], Pending: stock["pending"], Leases: leases}, nil
}

func errOr(err error, msg string) error {
	if err != nil {
		return err
	}
	return errors.New(msg)
}
