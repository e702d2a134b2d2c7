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
	"sync/atomic"
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
	// Generation is the ledger's generation this node sells from
	// (generation.go): pools of another generation, or none where one
	// should be, answer engine.ErrLedgerLost. Empty checks nothing.
	Generation string
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
	track   string                  // "1" when claims are tracked, else "0"
	gen     *atomic.Pointer[string] // shared by the node's copies (ForInstance)
	seqs    *seqs                   // shared by the node's copies
}

// bound gives a call its timeout.
func (l *Ledger) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, l.timeout)
}

// Errors of the ledger.
var (
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
	l := &Ledger{c: c, node: strconv.Itoa(node), prefix: o.Prefix, window: o.IdempotencyWindow, timeout: o.Timeout, track: track,
		gen: new(atomic.Pointer[string]), seqs: newSeqs()}
	l.gen.Store(&o.Generation)
	return l
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
// KEYS: stock. ARGV: total, events channel, item, generation, exists (1:
// the pool must be there already), the claim sequence a new pool starts
// from (seqs.go). Returns remaining, -1 when the pool
// cannot give up enough units (stock below what is leased or claimed), -2
// when the pool is gone or of another generation. Publishes the pool event.
var putItem = rueidis.NewLuaScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then
  if ARGV[4] ~= '' and redis.call('HGET', KEYS[1], 'gen') ~= ARGV[4] then return -2 end
elseif ARGV[5] == '1' then
  return -2
end
local total = tonumber(ARGV[1])
local old = tonumber(redis.call('HGET', KEYS[1], 'total') or '0')
local remaining = tonumber(redis.call('HGET', KEYS[1], 'remaining') or '0')
local delta = total - old
if remaining + delta < 0 then return -1 end
redis.call('HSET', KEYS[1], 'total', total, 'remaining', remaining + delta)
redis.call('HSETNX', KEYS[1], 'claimed', 0)
redis.call('HSETNX', KEYS[1], 'seq', ARGV[6])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'gen', ARGV[4]) end
redis.call('PUBLISH', ARGV[2], 'p|' .. ARGV[3] .. '|' .. (remaining + delta))
return remaining + delta
`)

// PutItem sets an item's total stock, creating its pool when the item is
// new (exists false). Lowering it below what is leased or claimed fails
// with engine.ErrStockBelowSold; a pool gone, or of another generation,
// with engine.ErrLedgerLost.
func (l *Ledger) PutItem(ctx context.Context, item string, total int64, exists bool) error {
	ctx, cancel := l.bound(ctx)
	defer cancel()
	k := l.keys(item)
	n, err := putItem.Exec(ctx, l.c, []string{k.stock}, []string{strconv.FormatInt(total, 10), l.channel(), item,
		l.Generation(), flag(exists), seqBase(time.Now())}).AsInt64()
	switch {
	case err != nil:
		return fmt.Errorf("redisledger: cannot put item %q: %w", item, err)
	case n == -2:
		return engine.ErrLedgerLost
	case n < 0:
		return engine.ErrStockBelowSold
	}
	return nil
}

func flag(b bool) string {
	if b {
		return "1"
	}
	return "0"
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
// KEYS: stock, leases. ARGV: node, want, events channel, item, generation.
// Returns {granted, remaining}, or {-1, -1} when the pool is gone or of
// another generation; publishes the pool event when it granted any.
var lease = rueidis.NewLuaScript(`
if redis.call('EXISTS', KEYS[1]) == 0 or ARGV[5] ~= '' and redis.call('HGET', KEYS[1], 'gen') ~= ARGV[5] then
  return {-1, -1}
end
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
	vals, err := lease.Exec(ctx, l.c, []string{k.stock, k.leases}, []string{l.node, strconv.FormatInt(want, 10), l.channel(), item,
		l.Generation()}).AsIntSlice()
	if err != nil || len(vals) != 2 {
		return 0, 0, fmt.Errorf("redisledger: cannot lease %q: %v", item, errOr(err, "bad reply"))
	}
	if vals[0] < 0 {
		return 0, 0, engine.ErrLedgerLost
	}
	return vals[0], vals[1], nil
}

// giveBack moves up to n leased units of a node back to the pool, or with
// keep >= 0 every unit above keep.
// KEYS: stock, leases. ARGV: node, n, events channel, item, generation,
// keep (-1: none). Returns the units given back; publishes the pool event
// when there were any. Nothing goes back to a pool of another generation
// (the units were leased from a ledger that was lost: the rebuilt one
// counted them).
var giveBack = rueidis.NewLuaScript(`
if ARGV[5] ~= '' and redis.call('HGET', KEYS[1], 'gen') ~= ARGV[5] then return 0 end
local held = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
local n = math.min(tonumber(ARGV[2]), held)
local keep = tonumber(ARGV[6])
if keep >= 0 then n = held - keep end
if n > 0 then
  redis.call('HINCRBY', KEYS[2], ARGV[1], -n)
  local remaining = redis.call('HINCRBY', KEYS[1], 'remaining', n)
  redis.call('PUBLISH', ARGV[3], 'p|' .. ARGV[4] .. '|' .. remaining)
end
return math.max(n, 0)
`)

// GiveBack returns up to n of this node's leased units of item to the pool.
func (l *Ledger) GiveBack(ctx context.Context, item string, n int64) error {
	_, err := l.giveBack(ctx, item, n, -1)
	return err
}

// Trim returns to the pool every unit of item leased to this node beyond
// keep, and how many that was: the ledger may count units the node never
// got (a lease whose answer was lost when Redis failed after running it).
func (l *Ledger) Trim(ctx context.Context, item string, keep int64) (int64, error) {
	return l.giveBack(ctx, item, 0, keep)
}

func (l *Ledger) giveBack(ctx context.Context, item string, n, keep int64) (int64, error) {
	ctx, cancel := l.bound(ctx)
	defer cancel()
	k := l.keys(item)
	got, err := giveBack.Exec(ctx, l.c, []string{k.stock, k.leases}, []string{l.node, strconv.FormatInt(n, 10), l.channel(), item,
		l.Generation(), strconv.FormatInt(keep, 10)}).AsInt64()
	if err != nil {
		return 0, fmt.Errorf("redisledger: cannot give back %q: %w", item, err)
	}
	return got, nil
}

// claim turns q leased units of a node into a winner's claim, checking the
// user's count against the limit across all nodes and recording the
// request id, or answers with the order that first used the request id.
// KEYS: stock, leases, users, req (or the same key as users when there is
// no request id), claims. ARGV: node, user, q, limit, encoded order, window
// seconds, has request id (1/0), track (1/0), order id, claim record, events
// channel, item, request id, generation. Returns {1, ""} claimed, {2,
// order} replay, {0, "limit"} over the limit, {0, "refused"} the request id
// was refused (Refuse) a moment ago, {0, "lost"} the pool is gone or of
// another generation, {0, "lease"} the node holds fewer units. Publishes
// the claim event (every node learns the winner). {1, seq} carries the
// pool's claim sequence after this claim (seqs.go).
var claim = rueidis.NewLuaScript(`
if redis.call('EXISTS', KEYS[1]) == 0 or ARGV[14] ~= '' and redis.call('HGET', KEYS[1], 'gen') ~= ARGV[14] then
  return {0, 'lost'}
end
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
local seq = string.format('%d', redis.call('HINCRBY', KEYS[1], 'seq', 1)) -- %d: no exponent
redis.call('PUBLISH', ARGV[11], 'c|' .. ARGV[12] .. '|' .. claimed .. '|' .. seq .. '|' .. ARGV[5] .. '|' .. ARGV[2] .. '|' .. ARGV[13])
return {1, seq}
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
	before := l.seqs.seen(o.ItemID) // every sequence seen so far was issued before this claim
	vals, err := claim.Exec(ctx, l.c, []string{k.stock, k.leases, k.users, req, k.claims}, []string{l.node, o.UserID,
		strconv.FormatInt(o.Quantity, 10), strconv.FormatInt(limit, 10), encodeOrder(o),
		strconv.Itoa(int(l.window.Seconds())), has, l.track, strconv.FormatUint(o.ID, 10),
		claimRecord(ledger.Pending, o.Quantity, o.CreatedAt, o.UserID, o.RequestID), l.channel(), o.ItemID, o.RequestID,
		l.Generation()}).ToArray()
	if err != nil || len(vals) != 2 {
		return nil, fmt.Errorf("redisledger: cannot claim: %v", errOr(err, "bad reply"))
	}
	status, _ := vals[0].AsInt64()
	detail, _ := vals[1].ToString()
	switch {
	case status == 1:
		seq, err := strconv.ParseInt(detail, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("redisledger: bad claim sequence %q", detail)
		}
		if seq <= before {
			// Redis went back in time (a failover to a replica that had not
			// got the last claims): this claim may sell a unit sold before.
			return nil, l.wentBack(ctx, o.ItemID, seq, before)
		}
		l.seqs.note(o.ItemID, seq)
		return nil, nil
	case status == 2:
		return decodeOrder(detail, o)
	case detail == "limit":
		return nil, engine.ErrLimitExceeded
	case detail == refused:
		return nil, engine.ErrSoldOut
	case detail == "lost":
		return nil, engine.ErrLedgerLost
	}
	return nil, engine.ErrNotLeased
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
		l.c.B().Hmget().Key(k.stock).Field("total", "remaining", "claimed", "pending").Build(),
		l.c.B().Hgetall().Key(k.leases).Build(),
		l.c.B().Exec().Build())
	exec, err := res[3].ToArray()
	if err != nil || len(exec) != 2 {
		return ledger.Audit{}, fmt.Errorf("redisledger: cannot audit %q: %v", item, errOr(err, "bad reply"))
	}
	fields, err1 := exec[0].ToArray()
	var stock [4]int64
	for i := 0; err1 == nil && i < len(fields) && i < len(stock); i++ {
		if stock[i], err1 = fields[i].AsInt64(); rueidis.IsRedisNil(err1) {
			err1 = nil
		}
	}
	leases, err2 := exec[1].AsIntMap()
	if err := errors.Join(err1, err2); err != nil {
		return ledger.Audit{}, fmt.Errorf("redisledger: cannot audit %q: %w", item, err)
	}
	return ledger.Audit{Total: stock[0], Remaining: stock[1], Claimed: stock[2], Pending: stock[3], Leases: leases}, nil
}

func errOr(err error, msg string) error {
	if err != nil {
		return err
	}
	return errors.New(msg)
}
