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
//
// Invariant, at every instant, since each script moves units atomically:
//
//	total = remaining + sum(leases) + claimed

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
// no request id). ARGV: node, user, q, limit, order id, window seconds,
// has request id (1/0). Returns {1, ""} claimed, {2, order id} replay,
// {0, "limit"} over the limit, {0, "lease"} the node holds fewer units.
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
return {1, ''}
`)

// unclaim undoes a claim whose purchase failed later: the units go back to
// the node's lease, the user's count down, the request id is forgotten
// (only if it still names this order).
// KEYS: stock, leases, users, req. ARGV: node, user, q, order id, has
// request id. Returns 1, or 0 when there was no such claim.
var unclaim = rueidis.NewLuaScript(`
local q = tonumber(ARGV[3])
local held = tonumber(redis.call('HGET', KEYS[3], ARGV[2]) or '0')
if held < q then return 0 end
if ARGV[5] == '1' and redis.call('GET', KEYS[4]) == ARGV[4] then
  redis.call('DEL', KEYS[4])
end
if held == q then redis.call('HDEL', KEYS[3], ARGV[2]) else redis.call('HINCRBY', KEYS[3], ARGV[2], -q) end
redis.call('HINCRBY', KEYS[1], 'claimed', -q)
redis.call('HINCRBY', KEYS[2], ARGV[1], q)
return 1
`)
