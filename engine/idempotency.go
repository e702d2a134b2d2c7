package engine

import (
	"hash/maphash"
	"sync"
	"time"
)

const idemShards = 64

// idemKeyCap fits a validated user id, a separator and a validated request id.
const idemKeyCap = MaxUserIDLen + 1 + MaxRequestIDLen

// idemKey is (user, request id) laid out in a fixed buffer, so building and
// looking up a key allocates nothing; only an insert copies it into the map.
type idemKey struct {
	buf [idemKeyCap]byte
	n   int
}

func (k *idemKey) set(user, requestID string) {
	k.n = copy(k.buf[:], user)
	k.buf[k.n] = 0
	k.n++
	k.n += copy(k.buf[k.n:], requestID)
}

func (k *idemKey) bytes() []byte { return k.buf[:k.n] }

// idemEntry is what the window remembers of one request id: the request it
// was first used for, and, once that purchase has finished, its order. An
// entry without an order is in progress.
type idemEntry struct {
	key      string // as in the map
	shard    uint8
	item     string
	quantity int64
	order    *Order
	expires  time.Time // set when the order is
}

// matches reports whether a repeat asks for the same thing as the first use.
func (e *idemEntry) matches(item string, quantity int64) bool {
	return e.item == item && e.quantity == quantity
}

// idemWindow remembers the answers to purchases that took stock, for a
// retention window. Refusals are not remembered: they took nothing, and the
// same request is answered again from memory, at no cost per loser. Memory is
// therefore bounded by the units sold within one window.
type idemWindow struct {
	window time.Duration
	shards [idemShards]idemShard
}

type idemShard struct {
	mu sync.Mutex
	m  map[string]*idemEntry
	// fifo holds finished entries in the order they expire (the window is
	// the same for all), so expiry pops from the front.
	fifo []*idemEntry
	head int
}

func (w *idemWindow) shard(key []byte) *idemShard {
	return &w.shards[shardOf(key)]
}

func shardOf(key []byte) uint8 { return uint8(maphash.Bytes(hashSeed, key) % idemShards) }

// lookup returns the live entry for key, or nil. The entry's fields other
// than order are immutable; order is read under the shard lock here.
func (w *idemWindow) lookup(key []byte, now time.Time) (e *idemEntry, order *Order) {
	sh := w.shard(key)
	sh.mu.Lock()
	e = sh.m[string(key)]
	if e != nil {
		if e.order != nil && !now.Before(e.expires) {
			e = nil
		} else {
			order = e.order
		}
	}
	sh.mu.Unlock()
	return e, order
}

// begin marks key in progress for (item, quantity) and returns its new
// entry, which its purchase completes or aborts. When key already has a
// live entry it changes nothing and returns that entry (not started) and
// its order.
func (w *idemWindow) begin(key []byte, item string, quantity int64, now time.Time) (started bool, e *idemEntry, order *Order) {
	i := shardOf(key)
	sh := &w.shards[i]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.expire(now, 4)
	if e = sh.m[string(key)]; e != nil && (e.order == nil || now.Before(e.expires)) {
		return false, e, e.order
	}
	if sh.m == nil {
		sh.m = make(map[string]*idemEntry)
	}
	e = &idemEntry{key: string(key), shard: i, item: item, quantity: quantity}
	sh.m[e.key] = e
	return true, e, nil
}

// abort forgets an entry begin made, after its purchase was refused.
func (w *idemWindow) abort(e *idemEntry) {
	sh := &w.shards[e.shard]
	sh.mu.Lock()
	if sh.m[e.key] == e && e.order == nil {
		delete(sh.m, e.key)
	}
	sh.mu.Unlock()
}

// complete records the order as the answer of an entry begin made, until
// now+window. Nothing else removes an entry in progress from the map.
func (w *idemWindow) complete(e *idemEntry, o *Order, now time.Time) {
	sh := &w.shards[e.shard]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if e.order != nil {
		panic("BUG: engine: idempotency entry completed twice")
	}
	e.order = o
	e.expires = now.Add(w.window)
	sh.fifo = append(sh.fifo, e)
}

// learn records an answer given before a restart, or on another node of a
// cluster, while it is in the window. An entry key already has (in progress
// here, or known) is kept.
func (w *idemWindow) learn(key []byte, o *Order, now time.Time) {
	expires := o.CreatedAt.Add(w.window)
	if !now.Before(expires) {
		return
	}
	i := shardOf(key)
	sh := &w.shards[i]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.m[string(key)] != nil {
		return
	}
	if sh.m == nil {
		sh.m = make(map[string]*idemEntry)
	}
	e := &idemEntry{key: string(key), shard: i, item: o.ItemID, quantity: o.Quantity, order: o, expires: expires}
	sh.m[e.key] = e
	sh.fifo = append(sh.fifo, e)
}

// unlearn forgets key's answer when it is the order id: that winner's claim
// was given back, so the request id is free again. An entry in progress is
// kept.
func (w *idemWindow) unlearn(key []byte, id uint64) {
	sh := w.shard(key)
	sh.mu.Lock()
	if e := sh.m[string(key)]; e != nil && e.order != nil && e.order.ID == id {
		delete(sh.m, string(key))
	}
	sh.mu.Unlock()
}

// forgetFinished drops every finished entry, keeping those in progress:
// after the cluster's ledger was rebuilt, the winners are what it says.
func (w *idemWindow) forgetFinished() {
	for i := range w.shards {
		sh := &w.shards[i]
		sh.mu.Lock()
		for k, e := range sh.m {
			if e.order != nil {
				delete(sh.m, k)
			}
		}
		sh.fifo, sh.head = nil, 0
		sh.mu.Unlock()
	}
}

// sweep drops every expired entry.
func (w *idemWindow) sweep(now time.Time) {
	for i := range w.shards {
		sh := &w.shards[i]
		sh.mu.Lock()
		sh.expire(now, -1)
		sh.mu.Unlock()
	}
}

// len counts the live and expired-but-not-swept entries.
func (w *idemWindow) len() int {
	n := 0
	for i := range w.shards {
		sh := &w.shards[i]
		sh.mu.Lock()
		n += len(sh.m)
		sh.mu.Unlock()
	}
	return n
}

// expire pops up to max expired entries (all when max < 0). Restored entries
// may sit slightly out of order in the fifo; an entry that expires late is
// only kept a little longer, never answered after its expiry (lookup checks).
func (sh *idemShard) expire(now time.Time, max int) {
	for max != 0 && sh.head < len(sh.fifo) {
		e := sh.fifo[sh.head]
		if now.Before(e.expires) {
			break
		}
		if sh.m[e.key] == e {
			delete(sh.m, e.key)
		}
		sh.fifo[sh.head] = nil
		sh.head++
		max--
	}
	if sh.head > 1024 && sh.head*2 > len(sh.fifo) {
		n := copy(sh.fifo, sh.fifo[sh.head:])
		clear(sh.fifo[n:])
		sh.fifo = sh.fifo[:n]
		sh.head = 0
	}
}
