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

// Tracked claims (package ledger has their lifecycle): each claim is kept
// by order id in the item's claims hash as "state|q|created ms|user|request
// id", where state is a ledger.State. The transitions are the Lua scripts
// claim and unclaim (ledger.go), abandon and persist (below).

// claimRecord is a claim's value in the claims hash; the request id, which
// may hold any printable character, comes last.
func claimRecord(state ledger.State, q int64, created time.Time, user, requestID string) string {
	return string(rune(state)) + "|" + strconv.FormatInt(q, 10) + "|" + strconv.FormatInt(created.UnixMilli(), 10) +
		"|" + user + "|" + requestID
}

func parseClaim(item, id, rec string) (ledger.Claim, error) {
	parts := strings.SplitN(rec, "|", 5)
	if len(parts) != 5 || len(parts[0]) != 1 {
		return ledger.Claim{}, fmt.Errorf("redisledger: bad claim record %q", rec)
	}
	oid, err1 := strconv.ParseUint(id, 10, 64)
	q, err2 := strconv.ParseInt(parts[1], 10, 64)
	ms, err3 := strconv.ParseInt(parts[2], 10, 64)
	if err := errors.Join(err1, err2, err3); err != nil {
		return ledger.Claim{}, fmt.Errorf("redisledger: bad claim %s=%q: %w", id, rec, err)
	}
	return ledger.Claim{OrderID: oid, ItemID: item, State: ledger.State(parts[0][0]), Quantity: q,
		CreatedAt: time.UnixMilli(ms).UTC(), UserID: parts[3], RequestID: parts[4]}, nil
}

// release is the part of unclaim and abandon that gives a claim's units
// back: the user's count down, the request id forgotten (only if it still
// names this order), the claim's units out of claimed and, for a tracked
// claim, out of pending, and the claim turned into a tombstone; then the
// release event published. It expects q, the user, the request key, "has
// request id", the order id, the claim record (cur, false when untracked),
// the events channel, the item and the request id (rid) in locals, and
// KEYS[1] = stock, users and claims as named.
const release = `
local held = tonumber(redis.call('HGET', users, user) or '0')
if held < q then return 0 end
if has == '1' then
  local first = redis.call('GET', req)
  if first and string.match(first, '^(%d+)|') == id then redis.call('DEL', req) end
end
if held == q then redis.call('HDEL', users, user) else redis.call('HINCRBY', users, user, -q) end
local claimed = redis.call('HINCRBY', KEYS[1], 'claimed', -q)
if cur then
  redis.call('HINCRBY', KEYS[1], 'pending', -q)
  redis.call('HSET', claims, id, 'a' .. string.sub(cur, 2))
end
redis.call('PUBLISH', channel, 'a|' .. item .. '|' .. claimed .. '|' .. id .. '|' .. user .. '|' .. rid)
`

// Claims lists the tracked claims of item, in every state.
func (l *Ledger) Claims(ctx context.Context, item string) ([]ledger.Claim, error) {
	ctx, cancel := l.bound(ctx)
	defer cancel()
	m, err := l.c.Do(ctx, l.c.B().Hgetall().Key(l.keys(item).claims).Build()).AsStrMap()
	if err != nil {
		return nil, fmt.Errorf("redisledger: cannot read the claims of %q: %w", item, err)
	}
	out := make([]ledger.Claim, 0, len(m))
	for id, rec := range m {
		c, err := parseClaim(item, id, rec)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// abandon undoes a pending claim no record can still store (its node died
// between the claim and the Kafka ack, or its undo failed): the units go
// back to the pool, since the node that claimed them may be gone.
// KEYS: stock, users, claims, req (or users when none). ARGV: order id, the
// claim record as read (the script acts only if it is unchanged), user, q,
// has request id, events channel, item, request id. Returns 1 abandoned, 0
// changed meanwhile. Publishes the release and the pool events.
var abandon = rueidis.NewLuaScript(`
local id, users, claims, req = ARGV[1], KEYS[2], KEYS[3], KEYS[4]
local user, q, has = ARGV[3], tonumber(ARGV[4]), ARGV[5]
local channel, item, rid = ARGV[6], ARGV[7], ARGV[8]
local cur = redis.call('HGET', claims, id)
if cur ~= ARGV[2] or string.sub(cur, 1, 1) ~= 'p' then return 0 end
` + release + `
local remaining = redis.call('HINCRBY', KEYS[1], 'remaining', q)
redis.call('PUBLISH', channel, 'p|' .. item .. '|' .. remaining)
return 1
`)

// Abandon gives back the units of a pending claim that no record can still
// store, to the pool. It returns false, doing nothing, when the claim
// changed since it was read (a writer stored it, or it was undone): the
// script compares the record as c describes it with the one in Redis.
func (l *Ledger) Abandon(ctx context.Context, c ledger.Claim) (bool, error) {
	ctx, cancel := l.bound(ctx)
	defer cancel()
	k := l.keys(c.ItemID)
	req, has := k.requestOf(&engine.Order{UserID: c.UserID, RequestID: c.RequestID})
	n, err := abandon.Exec(ctx, l.c, []string{k.stock, k.users, k.claims, req}, []string{
		strconv.FormatUint(c.OrderID, 10), claimRecord(c.State, c.Quantity, c.CreatedAt, c.UserID, c.RequestID), c.UserID,
		strconv.FormatInt(c.Quantity, 10), has, l.channel(), c.ItemID, c.RequestID}).AsInt64()
	if err != nil {
		return false, fmt.Errorf("redisledger: cannot abandon claim %d: %w", c.OrderID, err)
	}
	return n == 1, nil
}

// Forget drops settled claims (stored or aborted): once no record of them
// can arrive any more, they are history, kept in the order database.
func (l *Ledger) Forget(ctx context.Context, item string, ids ...uint64) error {
	if len(ids) == 0 {
		return nil
	}
	ctx, cancel := l.bound(ctx)
	defer cancel()
	fields := make([]string, len(ids))
	for i, id := range ids {
		fields[i] = strconv.FormatUint(id, 10)
	}
	return l.c.Do(ctx, l.c.B().Hdel().Key(l.keys(item).claims).Field(fields...).Build()).Error()
}

// persist marks a pending claim stored, for a writer about to insert its
// order: from then on nothing can undo it.
// KEYS: stock, claims. ARGV: order id. Returns 1 (store it: newly marked or
// already stored, a redelivery), 0 aborted (its units were given back:
// refuse it), -1 no such claim.
var persist = rueidis.NewLuaScript(`
local cur = redis.call('HGET', KEYS[2], ARGV[1])
if not cur then return -1 end
local st = string.sub(cur, 1, 1)
if st == 's' then return 1 end
if st ~= 'p' and st ~= 'k' then return 0 end
local q = tonumber(string.match(cur, '^[pk]|(%d+)|'))
redis.call('HSET', KEYS[2], ARGV[1], 's' .. string.sub(cur, 2))
redis.call('HINCRBY', KEYS[1], 'pending', -q)
return 1
`)

// Persist marks the claims of orders stored, for a writer about to insert
// them, in one pipelined round trip. The verdicts are in the order of os.
func (l *Ledger) Persist(ctx context.Context, os []*engine.Order) ([]ledger.Verdict, error) {
	if len(os) == 0 {
		return nil, nil
	}
	ctx, cancel := l.bound(ctx)
	defer cancel()
	execs := make([]rueidis.LuaExec, len(os))
	for i, o := range os {
		k := l.keys(o.ItemID)
		execs[i] = rueidis.LuaExec{Keys: []string{k.stock, k.claims}, Args: []string{strconv.FormatUint(o.ID, 10)}}
	}
	out := make([]ledger.Verdict, len(os))
	for i, r := range persist.ExecMulti(ctx, l.c, execs...) {
		n, err := r.AsInt64()
		if err != nil {
			return nil, fmt.Errorf("redisledger: cannot mark order %d stored: %w", os[i].ID, err)
		}
		out[i] = ledger.Verdict(n)
	}
	return out, nil
}
