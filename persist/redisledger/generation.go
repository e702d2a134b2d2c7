package redisledger

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/rueidis"

	"github.com/flashsale/flashsale/ledger"
)

// The ledger's generation: a name given to one life of the ledger in Redis.
// The order database keeps the generation of record; Redis keeps it in
// <prefix>:generation, and every pool in its own "gen" field, which every
// script checks against the generation the node sells from. A Redis that
// lost its data has no generation (or a pool none); one being rebuilt has
// "rebuilding:<next>"; one that is not the ledger of record has another.
// In each case a node stops selling (engine.ErrLedgerLost) until the
// ledger is rebuilt from the orders of record (persist/reconcile.Rebuild).

func (l *Ledger) generationKey() string { return l.prefix + ":generation" }

// Generation is the generation this node sells from.
func (l *Ledger) Generation() string { return *l.gen.Load() }

// SetGeneration makes the node sell from generation g: after a rebuild.
func (l *Ledger) SetGeneration(g string) { l.gen.Store(&g) }

// CurrentGeneration reads the ledger's generation in Redis: "" when Redis
// has none (it lost its data, or is new).
func (l *Ledger) CurrentGeneration(ctx context.Context) (string, error) {
	ctx, cancel := l.bound(ctx)
	defer cancel()
	g, err := l.c.Do(ctx, l.c.B().Get().Key(l.generationKey()).Build()).ToString()
	if rueidis.IsRedisNil(err) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("redisledger: cannot read the ledger's generation: %w", err)
	}
	return g, nil
}

// StartGeneration gives a Redis without a generation the generation g, when
// it also has no item (a new cluster), and returns the generation Redis has
// then. A Redis that has items and no generation lost it: it is not given
// one here (that is the rebuild's).
func (l *Ledger) StartGeneration(ctx context.Context, g string) (string, error) {
	cur, err := l.CurrentGeneration(ctx)
	if err != nil || cur != "" {
		return cur, err
	}
	ctx, cancel := l.bound(ctx)
	defer cancel()
	n, err := l.c.Do(ctx, l.c.B().Scard().Key(l.prefix+":items").Build()).AsInt64()
	if err != nil {
		return "", fmt.Errorf("redisledger: cannot count the items: %w", err)
	}
	if n > 0 {
		return "", nil
	}
	if err := l.c.Do(ctx, l.c.B().Set().Key(l.generationKey()).Value(g).Nx().Build()).Error(); err != nil && !rueidis.IsRedisNil(err) {
		return "", fmt.Errorf("redisledger: cannot set the ledger's generation: %w", err)
	}
	return l.CurrentGeneration(ctx)
}

// condemn replaces the generation if it is still ARGV[1]. KEYS: generation.
// ARGV: generation, condemned name, events channel.
var condemn = rueidis.NewLuaScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('PUBLISH', ARGV[3], 'g|' .. ARGV[2])
return 1
`)

// Condemn marks generation gen, if it is still the ledger's, as having lost
// writes: every node stops selling until the ledger is rebuilt.
func (l *Ledger) Condemn(ctx context.Context, gen string) error {
	ctx, cancel := l.bound(ctx)
	defer cancel()
	if err := condemn.Exec(ctx, l.c, []string{l.generationKey()}, []string{gen, ledger.Condemned + gen, l.channel()}).Error(); err != nil {
		return fmt.Errorf("redisledger: cannot condemn generation %s: %w", gen, err)
	}
	return nil
}

func (l *Ledger) rebuildLockKey() string { return l.prefix + ":rebuild" }

// lock takes the rebuild's lock for token, or extends it when token holds
// it already. KEYS: lock. ARGV: token, ttl ms. Returns 1 when token holds
// it, else 0.
var lock = rueidis.NewLuaScript(`
local v = redis.call('GET', KEYS[1])
if v == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
elseif v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
`)

// Lock takes the rebuild's lock for ttl under token, or extends it when
// token holds it; false when another holds it.
func (l *Ledger) Lock(ctx context.Context, token string, ttl time.Duration) (bool, error) {
	ctx, cancel := l.bound(ctx)
	defer cancel()
	n, err := lock.Exec(ctx, l.c, []string{l.rebuildLockKey()}, []string{token, strconv.FormatInt(ttl.Milliseconds(), 10)}).AsInt64()
	if err != nil {
		return false, fmt.Errorf("redisledger: cannot take the rebuild lock: %w", err)
	}
	return n == 1, nil
}

// unlock drops the lock if it is still token's. KEYS: lock. ARGV: token.
var unlock = rueidis.NewLuaScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

// Unlock gives the rebuild's lock back.
func (l *Ledger) Unlock(ctx context.Context, token string) error {
	ctx, cancel := l.bound(ctx)
	defer cancel()
	return unlock.Exec(ctx, l.c, []string{l.rebuildLockKey()}, []string{token}).Error()
}

// Fence starts a rebuild towards generation next: the ledger's generation
// becomes "rebuilding:next", the pools, leases, user counts, claims and
// request ids of items are dropped (nothing can be leased or claimed any
// more, no unit of the lost ledger given back, no request id of it
// answered), and every node is told.
func (l *Ledger) Fence(ctx context.Context, next string, items []string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*l.timeout)
	defer cancel()
	cmds := rueidis.Commands{l.c.B().Set().Key(l.generationKey()).Value(ledger.Rebuilding + next).Build()}
	for _, item := range items {
		k := l.keys(item)
		cmds = append(cmds, l.c.B().Unlink().Key(k.stock, k.leases, k.users, k.claims, k.board(), k.boardUsers()).Build()) // freed in the background
	}
	cmds = append(cmds, l.c.B().Publish().Channel(l.channel()).Message("g|"+ledger.Rebuilding+next).Build())
	for _, r := range l.c.DoMulti(ctx, cmds...) {
		if err := r.Error(); err != nil {
			return fmt.Errorf("redisledger: cannot fence the ledger: %w", err)
		}
	}
	for _, item := range items {
		if err := l.dropRequests(ctx, item); err != nil {
			return err
		}
	}
	return nil
}

// dropRequests unlinks every request id of item (SCAN, a thousand at a
// time): the rebuild writes back those of the orders of record.
func (l *Ledger) dropRequests(ctx context.Context, item string) error {
	match := l.keys(item).tag + ":req:*"
	var cursor uint64
	for {
		e, err := l.c.Do(ctx, l.c.B().Scan().Cursor(cursor).Match(match).Count(1000).Build()).AsScanEntry()
		if err != nil {
			return fmt.Errorf("redisledger: cannot list the request ids of %q: %w", item, err)
		}
		if len(e.Elements) > 0 {
			if err := l.c.Do(ctx, l.c.B().Unlink().Key(e.Elements...).Build()).Error(); err != nil {
				return fmt.Errorf("redisledger: cannot drop the request ids of %q: %w", item, err)
			}
		}
		if cursor = e.Cursor; cursor == 0 {
			return nil
		}
	}
}

// Pools reads each item's pool's generation and claim sequence (a gone
// pool has neither): a node told "lost" checks them before the whole ledger
// is rebuilt for it, and the guard compares the sequences with the highest
// seen (seqs.go).
func (l *Ledger) Pools(ctx context.Context, items []string) (map[string]ledger.PoolState, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*l.timeout)
	defer cancel()
	cmds := make(rueidis.Commands, len(items))
	for i, item := range items {
		cmds[i] = l.c.B().Hmget().Key(l.keys(item).stock).Field("gen", "seq").Build()
	}
	out := make(map[string]ledger.PoolState, len(items))
	for i, r := range l.c.DoMulti(ctx, cmds...) {
		vals, err := r.ToArray()
		if err != nil || len(vals) != 2 {
			return nil, fmt.Errorf("redisledger: cannot read the pools: %v", errOr(err, "bad reply"))
		}
		var st ledger.PoolState
		st.Gen, _ = vals[0].ToString()
		st.Seq, _ = vals[1].AsInt64()
		out[items[i]] = st
	}
	return out, nil
}

// Restore writes an item's ledger of generation gen from what its orders
// of record say: the pool (total, remaining = total - sold, claimed = sold,
// nothing pending or leased), the users' counts and the request ids of the
// window with their first orders, in pipelined chunks (a million buyers is
// a thousand HSETs of a thousand users), each chunk with its own deadline
// and each after checking that the ledger is still fenced for gen (another
// rebuilder may have fenced it again: then this one stops). The pool goes
// last: nothing can be claimed before the rest is written. The catalogue's
// definition is the caller's (Catalog.SaveItem).
func (l *Ledger) Restore(ctx context.Context, t ledger.Tally, gen string, now time.Time) error {
	k := l.keys(t.Item.ID)
	// What a node may have written since the fence (a lease of a pool made
	// meanwhile) goes first.
	cmds := rueidis.Commands{l.c.B().Unlink().Key(k.leases, k.claims).Build()}
	flush := func(force bool) error {
		if len(cmds) == 0 || !force && len(cmds) < restoreChunk {
			return nil
		}
		ctx, cancel := context.WithTimeout(ctx, 10*l.timeout)
		defer cancel()
		if cur, err := l.CurrentGeneration(ctx); err != nil || cur != ledger.Rebuilding+gen {
			return fmt.Errorf("redisledger: the ledger is no longer fenced for generation %s (%q, %v): another rebuild took over", gen, cur, err)
		}
		for _, r := range l.c.DoMulti(ctx, cmds...) {
			if err := r.Error(); err != nil {
				return fmt.Errorf("redisledger: cannot restore item %q: %w", t.Item.ID, err)
			}
		}
		cmds = cmds[:0]
		return nil
	}
	users := l.c.B().Hset().Key(k.users).FieldValue()
	n := 0
	for user, q := range t.Holdings {
		users = users.FieldValue(user, strconv.FormatInt(q, 10))
		if n++; n%restoreFields == 0 || n == len(t.Holdings) {
			cmds = append(cmds, users.Build())
			users = l.c.B().Hset().Key(k.users).FieldValue()
			if err := flush(false); err != nil {
				return err
			}
		}
	}
	for _, o := range t.Recent {
		if ttl := o.CreatedAt.Add(l.window).Sub(now); ttl > 0 {
			cmds = append(cmds, l.c.B().Set().Key(k.reqKey(o.UserID, o.RequestID)).Value(encodeOrder(o)).PxMilliseconds(max(ttl.Milliseconds(), 1)).Build())
			if err := flush(false); err != nil {
				return err
			}
		}
	}
	for _, b := range t.Firsts { // the leaderboard
		m := boardMember(b.OrderID, b.UserID)
		cmds = append(cmds, l.c.B().Zadd().Key(k.board()).ScoreMember().ScoreMember(0, m).Build(),
			l.c.B().Hset().Key(k.boardUsers()).FieldValue().FieldValue(b.UserID, m).Build())
		if err := flush(false); err != nil {
			return err
		}
	}
	remaining := max(t.Item.Stock-t.Sold, 0)
	cmds = append(cmds, l.c.B().Hset().Key(k.stock).FieldValue().FieldValue("total", strconv.FormatInt(t.Item.Stock, 10)).
		FieldValue("remaining", strconv.FormatInt(remaining, 10)).FieldValue("claimed", strconv.FormatInt(t.Sold, 10)).
		FieldValue("pending", "0").FieldValue("gen", gen).FieldValue("seq", seqAbove(now, t.Seq)).Build())
	return flush(true)
}

// A restore's chunks: users per HSET, commands per round trip.
const (
	restoreFields = 1000
	restoreChunk  = 10000
)

// activate ends the rebuild towards ARGV[1] if the ledger is still fenced
// for it. KEYS: generation. ARGV: generation, events channel. Returns 1, or
// 0 when another rebuild fenced it since.
var activate = rueidis.NewLuaScript(`
if redis.call('GET', KEYS[1]) ~= '` + ledger.Rebuilding + `' .. ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('PUBLISH', ARGV[2], 'g|' .. ARGV[1])
return 1
`)

// ErrFencedAgain: another rebuild fenced the ledger since this one did.
var ErrFencedAgain = errors.New("redisledger: the ledger was fenced again by another rebuild")

// Activate ends a rebuild: the ledger's generation becomes gen, if the
// ledger is still fenced for it (ErrFencedAgain otherwise), and every node
// is told.
func (l *Ledger) Activate(ctx context.Context, gen string) error {
	ctx, cancel := l.bound(ctx)
	defer cancel()
	n, err := activate.Exec(ctx, l.c, []string{l.generationKey()}, []string{gen, l.channel()}).AsInt64()
	switch {
	case err != nil:
		return fmt.Errorf("redisledger: cannot activate generation %s: %w", gen, err)
	case n == 0:
		return ErrFencedAgain
	}
	return nil
}
