package redisledger

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"

	"github.com/flashsale/flashsale/engine"
)

// The leaderboards of a cluster: per item, a sorted set of the first orders
// of its first engine.BoardSize users, fed by the writers as they store
// orders (every node's, in any order: the set keeps each user's smallest
// order id) and read by every node through rueidis' client-side cache, so
// a burst of leaderboard reads stays on the nodes. Every member scores 0
// and is "<order id, 20 digits>|<user>": the set's lexical order is the
// purchase order. A hash beside it maps each user on the board to their
// member. A Redis that lost its data gets them back from the rebuild.

func (k keys) board() string      { return k.tag + ":board" }
func (k keys) boardUsers() string { return k.tag + ":boardusers" }

func boardMember(id uint64, user string) string { return fmt.Sprintf("%020d|%s", id, user) }

// boardAdd enters each (member, user) pair of ARGV whose user is not on the
// board with an earlier order, then keeps the first ARGV[1] members.
// KEYS: board, board users.
var boardAdd = rueidis.NewLuaScript(`
local size = tonumber(ARGV[1])
for i = 2, #ARGV, 2 do
  local member, user = ARGV[i], ARGV[i + 1]
  local cur = redis.call('HGET', KEYS[2], user)
  if not cur or member < cur then
    if cur then redis.call('ZREM', KEYS[1], cur) end
    redis.call('ZADD', KEYS[1], 0, member)
    redis.call('HSET', KEYS[2], user, member)
  end
end
for _, m in ipairs(redis.call('ZRANGE', KEYS[1], size, -1)) do
  redis.call('HDEL', KEYS[2], string.sub(m, 22))
end
redis.call('ZREMRANGEBYRANK', KEYS[1], size, -1)
return 0
`)

// Board enters stored orders on their items' leaderboards (the writers,
// once the orders are in MySQL), in one round trip.
func (l *Ledger) Board(ctx context.Context, orders []*engine.Order) error {
	byItem := map[string][]string{}
	for _, o := range orders {
		byItem[o.ItemID] = append(byItem[o.ItemID], boardMember(o.ID, o.UserID), o.UserID)
	}
	execs := make([]rueidis.LuaExec, 0, len(byItem))
	for item, args := range byItem {
		k := l.keys(item)
		execs = append(execs, rueidis.LuaExec{Keys: []string{k.board(), k.boardUsers()},
			Args: append([]string{strconv.Itoa(engine.BoardSize)}, args...)})
	}
	ctx, cancel := l.bound(ctx)
	defer cancel()
	for _, r := range boardAdd.ExecMulti(ctx, l.c, execs...) {
		if err := r.Error(); err != nil {
			return fmt.Errorf("redisledger: cannot update a leaderboard: %w", err)
		}
	}
	return nil
}

// boardTTL bounds how long a node serves a leaderboard from its cache;
// Redis invalidates it sooner when the board changes.
const boardTTL = time.Second

// Leaders reads item's leaderboard, first buyer first, through the
// client-side cache.
func (l *Ledger) Leaders(ctx context.Context, item string) ([]engine.BoardEntry, error) {
	ctx, cancel := l.bound(ctx)
	defer cancel()
	members, err := l.c.DoCache(ctx, l.c.B().Zrange().Key(l.keys(item).board()).Min("0").Max("-1").Cache(), boardTTL).AsStrSlice()
	if err != nil {
		return nil, fmt.Errorf("redisledger: cannot read the leaderboard of %q: %w", item, err)
	}
	out := make([]engine.BoardEntry, 0, len(members))
	for _, m := range members {
		id, user, ok := strings.Cut(m, "|")
		n, err := strconv.ParseUint(id, 10, 64)
		if !ok || err != nil {
			return nil, fmt.Errorf("redisledger: bad leaderboard member %q", m)
		}
		out = append(out, engine.BoardEntry{ItemID: item, UserID: user, OrderID: n, At: engine.OrderIDTime(n)})
	}
	return out, nil
}
