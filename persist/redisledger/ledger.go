// Package redisledger keeps cluster mode's shared ledger (package ledger) in
// Redis: the pool of an item's units, the leases that move units into each
// node's in-memory shards in batches, the claims that confirm each winner
// across all nodes (per-user count and request id) and, with orders through
// Kafka, the lifecycle of each claim; also the item catalogue (catalog.go)
// and the nodes' registrations (nodes.go). Every multi-key update is a Lua
// script run through rueidis (EVALSHA, falling back to EVAL), and the keys
// of one item share a hash tag, so the scripts run on Redis Cluster too.
// The data model and its invariant are below; each script stands before
// the method that runs it.
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

// The ledger's state for one item lives in keys that share the hash tag
// {<prefix>:<item>}, so every script touches one slot (Redis Cluster):
//
//	stock   hash: total (units of the sale), remaining (not leased to any
//	        node), claimed (units of winners' claims)
//	leases  hash: node id -> units leased to that node and not yet claimed
//	users   hash: user id -> units claimed by that user
//	req:... string: the order id that first answered a (user, request id),
//	        with the idempotency window as its expiry
//	claims  hash (only when orders go through Kafka): order id ->
//	        "state|q|created ms|user|request id", state p (pending: claimed,
//	        not yet in the order database), s (stored by a writer) or a
//	        (aborted: given back; a record of it arriving late is refused)
//
// Invariant, at every instant, since each script moves units atomically:
//
//	total = remaining + sum(leases) + claimed, and pending <= claimed
//
// where pending (a field of stock) counts the units of claims in state p.
// A claim moves p -> s (persist, by a writer) or p -> a (unclaim by its
// node, or abandon by the reconciler), never back: whichever script runs
// first decides, so an order is either stored with its unit or refused.

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

// putItem sets the total of an item, creating it; lowering the total
// takes from the unleased pool only.
// KEYS: stock. ARGV: total, events channel, item. Returns remaining, or -1
// when the pool cannot give up enough units (stock below what is leased or
// claimed). Publishes the pool event.
var putItem = rueidis.NewLuaScript(`
local total = tonumber(ARGV[1])
local old = tonumber(redis.call('HGET', KEYS[1], 'total') or '0')
local remaining = tonumber(redis.call('HGET', KEYS[1], 'remaining') or '0')
local delta = total - old
if remaining + delta < 0 then return -1 end
redis.call('HSET', KEYS[1], 'total', total, 'remaining', remaining + delta)
redis.call('HSETNX', KEYS[1], 'claimed', 0)
redis.call('PUBLISH', ARGV[2], 'p|' .. ARGV[3] .. '|' .. (remaining + delta))
return remaining + delta
`)

// PutItem sets an item's total stock (creating it). Lowering it below what
// is leased or claimed fails with engine.ErrStockBelowSold.
func (l *Ledger) PutItem(ctx context.Context, item string, total int64) error {
	ctx, cancel := l.bound(ctx)
	defer cancel()
	k := l.keys(item)
	n, err := putItem.Exec(ctx, l.c, []string{k.stock}, []string{strconv.FormatInt(total, 10), l.channel(), item}).AsInt64()
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

// lease moves up to want units from the pool to a node.
// KEYS: stock, leases. ARGV: node, want, events channel, item. Returns
// {granted, remaining}; publishes the pool event when it granted any.
var lease = rueidis.NewLuaScript(`
local want = tonumber(ARGV[2])
local remaining = tonumber(redis.call('HGET', KEYS[1], 'remaining') or '0')
local granted = math.min(want, remaining)
if granted > 0 then
  redis.call('HINCRBY', KEYS[1], 'remaining', -granted)
  redis.call('HINCRBY', KEYS[2], ARGV[1], granted)
  redis.call('PUBLISH', ARGV[3], 'p|' .. ARGV[4] .. '|' .. (remaining - granted))
end
return {granted, remaining - granted}
`)

// Lease moves up to want units of item from the pool to this node. It
// returns the units granted and what the pool has left.
func (l *Ledger) Lease(ctx context.Context, item string, want int64) (granted, remaining int64, err error) {
	ctx, cancel := l.bound(ctx)
	defer cancel()
	k := l.keys(item)
	vals, err := lease.Exec(ctx, l.c, []string{k.stock, k.leases}, []string{l.node, strconv.FormatInt(want, 10), l.channel(), item}).AsIntSlice()
	if err != nil || len(vals) != 2 {
		return 0, 0, fmt.Errorf("redisledger: cannot lease %q: %v", item, errOr(err, "bad reply"))
	}
	return vals[0], vals[1], nil
}

// giveBack moves up to n leased units of a node back to the pool.
// KEYS: stock, leases. ARGV: node, n, events channel, item. Returns the
// units given back; publishes the pool event when there were any.
var giveBack = rueidis.NewLuaScript(`
local held = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
local n = math.min(tonumber(ARGV[2]), held)
if n > 0 then
  redis.call('HINCRBY', KEYS[2], ARGV[1], -n)
  local remaining = redis.call('HINCRBY', KEYS[1], 'remaining', n)
  redis.call('PUBLISH', ARGV[3], 'p|' .. ARGV[4] .. '|' .. remaining)
end
return n
`)

// GiveBack returns up to n of this node's leased units of item to the pool.
func (l *Ledger) GiveBack(ctx context.Context, item string, n int64) error {
	ctx, cancel := l.bound(ctx)
	defer cancel()
	k := l.keys(item)
	if err := giveBack.Exec(ctx, l.c, []string{k.stock, k.leases}, []string{l.node, strconv.FormatInt(n, 10), l.channel(), item}).Error(); err != nil {
		return fmt.Errorf("redisledger: cannot give back %q: %w", item, err)
	}
	return nil
}

// claim turns q leased units of a node into a winner's claim, checking the
// user's count against the limit across all nodes and recording the
// request id, or answers with the order that first used the request id.
// KEYS: stock, leases, users, req (or the same key as users when there is
// no request id), claims. ARGV: node, user, q, limit, encoded order, window
// seconds, has request id (1/0), track (1/0), order id, claim record, events
// channel, item, request id. Returns {1, ""} claimed, {2, order} replay,
// {0, "limit"} over the limit, {0, "refused"} the request id was refused
// (Refuse) a moment ago, {0, "lease"} the node holds fewer units.
// Publishes the claim event (every node learns the winner).
var claim = rueidis.NewLuaScript(`
local q = tonumber(ARGV[3])
if ARGV[7] == '1' then
  local first = redis.call('GET', KEYS[4])
  if first == '` + refused + `' then return {0, 'refused'} end
  if first then return {2, first} end
end
local held = tonumber(redis.call('HGET', KEYS[3], ARGV[2]) or '0')
if held + q > tonumber(ARGV[4]) then return {0, 'limit'} end
local leased = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if leased < q then return {0, 'lease'} end
redis.call('HINCRBY', KEYS[2], ARGV[1], -q)
redis.call('HINCRBY', KEYS[3], ARGV[2], q)
local claimed = redis.call('HINCRBY', KEYS[1], 'claimed', q)
if ARGV[7] == '1' then
  redis.call('SET', KEYS[4], ARGV[5], 'EX', tonumber(ARGV[6]))
end
if ARGV[8] == '1' then
  redis.call('HSET', KEYS[5], ARGV[9], ARGV[10])
  redis.call('HINCRBY', KEYS[1], 'pending', q)
end
redis.call('PUBLISH', ARGV[11], 'c|' .. ARGV[12] .. '|' .. claimed .. '|' .. ARGV[5] .. '|' .. ARGV[2] .. '|' .. ARGV[13])
return {1, ''}
`)

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
		claimRecord(ledger.Pending, o.Quantity, o.CreatedAt, o.UserID, o.RequestID), l.channel(), o.ItemID, o.RequestID}).ToArray()
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
	case detail == refused:
		return nil, engine.ErrSoldOut
	}
	return nil, ErrNotLeased
}

// unclaim undoes a claim whose purchase failed later: the units go back to
// the node's lease. A tracked claim is undone only while pending: one a
// writer already stored, or whose record Kafka acknowledged, is kept (the
// order exists).
// KEYS: stock, leases, users, req, claims. ARGV: node, user, q, order id,
// has request id, track (1/0), events channel, item, request id. Returns 1
// undone, 0 no such claim (or already undone), 2 stored or acked: kept.
// Publishes the release event.
var unclaim = rueidis.NewLuaScript(`
local q, user, req, has, users, claims, id = tonumber(ARGV[3]), ARGV[2], KEYS[4], ARGV[5], KEYS[3], KEYS[5], ARGV[4]
local channel, item, rid = ARGV[7], ARGV[8], ARGV[9]
local cur = false
if ARGV[6] == '1' then
  cur = redis.call('HGET', claims, id)
  if not cur then return 0 end
  local st = string.sub(cur, 1, 1)
  if st == 's' or st == 'k' then return 2 end
  if st ~= 'p' then return 0 end
end
` + release + `
redis.call('HINCRBY', KEYS[2], ARGV[1], q)
return 1
`)

// Unclaim undoes a claim whose purchase failed later (engine.Ledger). A
// tracked claim that a writer has already stored is kept, and Unclaim says
// so with engine.ErrOrderStored.
func (l *Ledger) Unclaim(ctx context.Context, o *engine.Order) error {
	ctx, cancel := l.bound(ctx)
	defer cancel()
	k := l.keys(o.ItemID)
	req, has := k.requestOf(o)
	n, err := unclaim.Exec(ctx, l.c, []string{k.stock, k.leases, k.users, req, k.claims}, []string{l.node, o.UserID,
		strconv.FormatInt(o.Quantity, 10), strconv.FormatUint(o.ID, 10), has, l.track, l.channel(), o.ItemID, o.RequestID}).AsInt64()
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
