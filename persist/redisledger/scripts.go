package redisledger

import "github.com/redis/rueidis"

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

// putItem sets the total of an item, creating it; lowering the total
// takes from the unleased pool only.
// KEYS: stock. ARGV: total. Returns remaining, or -1 when the pool cannot
// give up enough units (stock below what is leased or claimed).
var putItem = rueidis.NewLuaScript(`
local total = tonumber(ARGV[1])
local old = tonumber(redis.call('HGET', KEYS[1], 'total') or '0')
local remaining = tonumber(redis.call('HGET', KEYS[1], 'remaining') or '0')
local delta = total - old
if remaining + delta < 0 then return -1 end
redis.call('HSET', KEYS[1], 'total', total, 'remaining', remaining + delta)
redis.call('HSETNX', KEYS[1], 'claimed', 0)
return remaining + delta
`)

// lease moves up to want units from the pool to a node.
// KEYS: stock, leases. ARGV: node, want. Returns {granted, remaining}.
var lease = rueidis.NewLuaScript(`
local want = tonumber(ARGV[2])
local remaining = tonumber(redis.call('HGET', KEYS[1], 'remaining') or '0')
local granted = math.min(want, remaining)
if granted > 0 then
  redis.call('HINCRBY', KEYS[1], 'remaining', -granted)
  redis.call('HINCRBY', KEYS[2], ARGV[1], granted)
end
return {granted, remaining - granted}
`)

// giveBack moves up to n leased units of a node back to the pool.
// KEYS: stock, leases. ARGV: node, n. Returns the units given back.
var giveBack = rueidis.NewLuaScript(`
local held = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
local n = math.min(tonumber(ARGV[2]), held)
if n > 0 then
  redis.call('HINCRBY', KEYS[2], ARGV[1], -n)
  redis.call('HINCRBY', KEYS[1], 'remaining', n)
end
return n
`)

// claim turns q leased units of a node into a winner's claim, checking the
// user's count against the limit across all nodes and recording the
// request id, or answers with the order that first used the request id.
// KEYS: stock, leases, users, req (or the same key as users when there is
// no request id), claims. ARGV: node, user, q, limit, encoded order, window
// seconds, has request id (1/0), track (1/0), order id, claim record.
// Returns {1, ""} claimed, {2, order} replay, {0, "limit"} over the limit,
// {0, "lease"} the node holds fewer units.
var claim = rueidis.NewLuaScript(`
local q = tonumber(ARGV[3])
if ARGV[7] == '1' then
  local first = redis.call('GET', KEYS[4])
  if first then return {2, first} end
end
local held = tonumber(redis.call('HGET', KEYS[3], ARGV[2]) or '0')
if held + q > tonumber(ARGV[4]) then return {0, 'limit'} end
local leased = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if leased < q then return {0, 'lease'} end
redis.call('HINCRBY', KEYS[2], ARGV[1], -q)
redis.call('HINCRBY', KEYS[3], ARGV[2], q)
redis.call('HINCRBY', KEYS[1], 'claimed', q)
if ARGV[7] == '1' then
  redis.call('SET', KEYS[4], ARGV[5], 'EX', tonumber(ARGV[6]))
end
if ARGV[8] == '1' then
  redis.call('HSET', KEYS[5], ARGV[9], ARGV[10])
  redis.call('HINCRBY', KEYS[1], 'pending', q)
end
return {1, ''}
`)

// release is the part of unclaim and abandon that gives a claim's units
// back: the user's count down, the request id forgotten (only if it still
// names this order), the claim's units out of claimed and, for a tracked
// claim, out of pending, and the claim turned into a tombstone.
// It expects q, the user, the request key, "has request id", the order
// id and the claim record (cur, false when untracked) in locals, and KEYS[1] = stock, users and claims as named.
const release = `
local held = tonumber(redis.call('HGET', users, user) or '0')
if held < q then return 0 end
if has == '1' then
  local first = redis.call('GET', req)
  if first and string.match(first, '^(%d+)|') == id then redis.call('DEL', req) end
end
if held == q then redis.call('HDEL', users, user) else redis.call('HINCRBY', users, user, -q) end
redis.call('HINCRBY', KEYS[1], 'claimed', -q)
if cur then
  redis.call('HINCRBY', KEYS[1], 'pending', -q)
  redis.call('HSET', claims, id, 'a' .. string.sub(cur, 2))
end
`

// unclaim undoes a claim whose purchase failed later: the units go back to
// the node's lease. A tracked claim is undone only while pending: one a
// writer already stored is kept (the order exists).
// KEYS: stock, leases, users, req, claims. ARGV: node, user, q, order id,
// has request id, track (1/0). Returns 1 undone, 0 no
// such claim (or already undone), 2 stored by a writer: kept.
var unclaim = rueidis.NewLuaScript(`
local q, user, req, has, users, claims, id = tonumber(ARGV[3]), ARGV[2], KEYS[4], ARGV[5], KEYS[3], KEYS[5], ARGV[4]
local cur = false
if ARGV[6] == '1' then
  cur = redis.call('HGET', claims, id)
  if not cur then return 0 end
  local st = string.sub(cur, 1, 1)
  if st == 's' then return 2 end
  if st ~= 'p' then return 0 end
end
` + release + `
redis.call('HINCRBY', KEYS[2], ARGV[1], q)
return 1
`)

// abandon undoes a pending claim no record can still store (its node died
// between the claim and the Kafka ack, or its undo failed): the units go
// back to the pool, since the node that claimed them may be gone.
// KEYS: stock, users, claims, req (or users when none). ARGV: order id, the
// claim record as read (the script acts only if it is unchanged), user, q,
// has request id. Returns 1 abandoned, 0 changed meanwhile.
var abandon = rueidis.NewLuaScript(`
local id, users, claims, req = ARGV[1], KEYS[2], KEYS[3], KEYS[4]
local user, q, has = ARGV[3], tonumber(ARGV[4]), ARGV[5]
local cur = redis.call('HGET', claims, id)
if cur ~= ARGV[2] or string.sub(cur, 1, 1) ~= 'p' then return 0 end
` + release + `
redis.call('HINCRBY', KEYS[1], 'remaining', q)
return 1
`)

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
if st ~= 'p' then return 0 end
local q = tonumber(string.match(cur, '^p|(%d+)|'))
redis.call('HSET', KEYS[2], ARGV[1], 's' .. string.sub(cur, 2))
redis.call('HINCRBY', KEYS[1], 'pending', -q)
return 1
`)
