package redisledger

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"

	"github.com/flashsale/flashsale/engine"
)

// Node identity. A node registers under a node id (the one its order ids
// carry) with a random token: <prefix>:node:<id> = <token>, with a TTL kept
// alive by a heartbeat. Its leases are recorded under the instance
// "<id>.<token>", so a dead node's units can never be confused with those of
// a later node that reuses its id. An instance whose key no longer holds its
// token is dead: its leased, unclaimed units go back to the pool (Reconcile).

// DefaultNodeTTL is how long a node that stopped beating its heartbeat
// still counts as alive; MinNodeTTL is the least accepted.
const (
	DefaultNodeTTL = 10 * time.Second
	MinNodeTTL     = 500 * time.Millisecond
)

// ErrNodeIDTaken is returned when the asked node id belongs to a live node.
var ErrNodeIDTaken = errors.New("redisledger: the node id is held by a live node")

// heartbeat extends the key's life only while it still holds our token.
var heartbeat = rueidis.NewLuaScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
`)

// Registration is this node's claim on a node id.
type Registration struct {
	ID    int
	Token string
	c     rueidis.Client
	key   string
	ttl   time.Duration
}

// Instance is the name its leases are recorded under.
func (r *Registration) Instance() string { return strconv.Itoa(r.ID) + "." + r.Token }

func (l *Ledger) nodeKey(id int) string { return l.prefix + ":node:" + strconv.Itoa(id) }

// Register takes node id want (1-1023), or the lowest free one when want is
// 0, for ttl. Keep it with Heartbeat at least every ttl/3.
func (l *Ledger) Register(ctx context.Context, want int, ttl time.Duration) (*Registration, error) {
	var b [8]byte
	rand.Read(b[:])
	token := hex.EncodeToString(b[:])
	first, last := 1, engine.MaxNodeID
	if want != 0 {
		first, last = want, want
	}
	for id := first; id <= last; id++ {
		err := l.c.Do(ctx, l.c.B().Set().Key(l.nodeKey(id)).Value(token).Nx().PxMilliseconds(ttl.Milliseconds()).Build()).Error()
		if rueidis.IsRedisNil(err) {
			continue // taken
		}
		if err != nil {
			return nil, fmt.Errorf("redisledger: cannot register node: %w", err)
		}
		return &Registration{ID: id, Token: token, c: l.c, key: l.nodeKey(id), ttl: ttl}, nil
	}
	if want != 0 {
		return nil, fmt.Errorf("%w: %d", ErrNodeIDTaken, want)
	}
	return nil, errors.New("redisledger: all node ids are taken by live nodes")
}

// Heartbeat keeps the registration alive. It returns false when the node
// lost its id (its key expired and was taken, or was deleted): the node must
// stop selling, since its leases may be given back by others.
func (r *Registration) Heartbeat(ctx context.Context) (bool, error) {
	n, err := heartbeat.Exec(ctx, r.c, []string{r.key}, []string{r.Token, strconv.FormatInt(r.ttl.Milliseconds(), 10)}).AsInt64()
	if err != nil {
		return true, fmt.Errorf("redisledger: heartbeat: %w", err) // unknown: keep going, retry
	}
	return n == 1, nil
}

// Keep beats the heartbeat every ttl/3 until ctx ends. The channel it
// returns is closed when the node has lost its id: it must stop selling,
// since others may give its leases back. rejoin, when set, is asked first
// whether the node may take its id again (Rejoin) and go on: it may when
// Redis lost the whole ledger, its leases with it.
func (r *Registration) Keep(ctx context.Context, rejoin func(context.Context) bool) <-chan struct{} {
	lost := make(chan struct{})
	go func() {
		t := time.NewTicker(r.ttl / 3)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				hctx, cancel := context.WithTimeout(ctx, r.ttl/3)
				ok, err := r.Heartbeat(hctx)
				cancel()
				if err != nil {
					slog.Warn("heartbeat to Redis failed; retrying", "err", err)
				}
				if !ok && (rejoin == nil || !rejoin(ctx)) {
					close(lost)
					return
				}
			}
		}
	}()
	return lost
}

// Rejoin takes the node's id again, under the same token, when its key is
// gone (Redis lost its data); ErrNodeIDTaken when another node took it.
func (r *Registration) Rejoin(ctx context.Context) error {
	err := r.c.Do(ctx, r.c.B().Set().Key(r.key).Value(r.Token).Nx().PxMilliseconds(r.ttl.Milliseconds()).Build()).Error()
	if rueidis.IsRedisNil(err) {
		return fmt.Errorf("%w: %d", ErrNodeIDTaken, r.ID)
	}
	return err
}

// Release ends the registration at a graceful stop.
func (r *Registration) Release(ctx context.Context) error {
	_, err := heartbeat.Exec(ctx, r.c, []string{r.key}, []string{r.Token, "1"}).AsInt64()
	return err
}

// ForInstance returns a ledger that records leases and claims under a
// registered instance.
func (l *Ledger) ForInstance(r *Registration) *Ledger {
	c := *l
	c.node = r.Instance()
	return &c
}

// alive reports whether a lease holder is a live instance. Holders without
// a token (tests, or ledgers built with New alone) count as alive.
func (l *Ledger) alive(ctx context.Context, holder string) (bool, error) {
	id, token, ok := strings.Cut(holder, ".")
	if !ok {
		return true, nil
	}
	n, err := strconv.Atoi(id)
	if err != nil {
		return true, nil
	}
	cur, err := l.c.Do(ctx, l.c.B().Get().Key(l.nodeKey(n)).Build()).ToString()
	if rueidis.IsRedisNil(err) {
		return false, nil
	}
	if err != nil {
		return true, err
	}
	return cur == token, nil
}

// Reconcile gives the units leased to dead instances back to item's pool
// and returns how many. Units they had claimed stay claimed: sold is never
// sold again. Safe to run on every node at once.
func (l *Ledger) Reconcile(ctx context.Context, item string) (int64, error) {
	ctx, cancel := l.bound(ctx)
	defer cancel()
	k := l.keys(item)
	leases, err := l.c.Do(ctx, l.c.B().Hgetall().Key(k.leases).Build()).AsIntMap()
	if err != nil {
		return 0, fmt.Errorf("redisledger: cannot read the leases of %q: %w", item, err)
	}
	var total int64
	for holder, n := range leases {
		if n <= 0 {
			continue
		}
		live, err := l.alive(ctx, holder)
		if err != nil || live {
			continue
		}
		got, err := giveBack.Exec(ctx, l.c, []string{k.stock, k.leases}, []string{holder, strconv.FormatInt(n, 10), l.channel(), item,
			l.Generation(), "-1"}).AsInt64()
		if err != nil {
			return total, fmt.Errorf("redisledger: cannot reconcile %q of %q: %w", holder, item, err)
		}
		total += got // the emptied field stays, at 0: harmless, and never a race
	}
	return total, nil
}
