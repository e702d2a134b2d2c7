package admission

import (
	"hash/maphash"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Keyed is a bucket per key (a client IP, a user), bounded in number: when
// a shard is full its idle keys are forgotten first, else an arbitrary one.
// A key seen for the first time starts with a full bucket: a client that
// comes back after being forgotten must not be punished.
type Keyed[K comparable] struct {
	rate, burst float64
	max         int           // keys per shard
	idle        time.Duration // forgotten after this silence
	shards      [keyedShards]keyedShard[K]
}

const keyedShards = 64

type keyedShard[K comparable] struct {
	mu sync.Mutex
	m  map[K]*keyedBucket
}

type keyedBucket struct {
	*Bucket
	last atomic.Int64 // ns of the last use
}

var seed = maphash.MakeSeed()

// NewKeyed returns buckets of rate per second and burst, for at most
// maxKeys keys (0: DefaultMaxIPs), each forgotten after idle. The keys are
// spread over shards by a hash with a random seed, each holding at least
// minPerShard: with fewer, two clients that land in the same shard would
// forget each other at once (a small bound is raised to 256 in all).
func NewKeyed[K comparable](rate, burst float64, maxKeys int, idle time.Duration) *Keyed[K] {
	if maxKeys <= 0 {
		maxKeys = DefaultMaxIPs
	}
	return &Keyed[K]{rate: rate, burst: burst, max: max(minPerShard, maxKeys/keyedShards), idle: idle}
}

// minPerShard is the least keys a shard holds before it forgets one.
const minPerShard = 4

// Get returns key's bucket, made when new. A string key may alias a
// request buffer: it is copied when stored.
func (k *Keyed[K]) Get(key K, now time.Time) *Bucket {
	sh := &k.shards[maphash.Comparable(seed, key)%keyedShards]
	sh.mu.Lock()
	b := sh.m[key]
	if b == nil {
		if sh.m == nil {
			sh.m = make(map[K]*keyedBucket)
		}
		if len(sh.m) >= k.max {
			sh.evict(now, k.idle)
		}
		if s, ok := any(key).(string); ok {
			key = any(strings.Clone(s)).(K)
		}
		b = &keyedBucket{Bucket: NewBucket(k.rate, k.burst, 0, now)}
		sh.m[key] = b
	}
	sh.mu.Unlock()
	b.last.Store(now.UnixNano())
	return b.Bucket
}

// evict makes room in a full shard: the idle keys, or else one whose
// bucket is full (forgetting it changes nothing), or else an arbitrary one.
func (sh *keyedShard[K]) evict(now time.Time, idle time.Duration) {
	if sh.dropIdle(now.Add(-idle).UnixNano()) > 0 {
		return
	}
	for key, b := range sh.m {
		if b.Full(now) {
			delete(sh.m, key)
			return
		}
	}
	for key := range sh.m { // every key is spending: drop one
		delete(sh.m, key)
		return
	}
}

// Sweep forgets the keys idle longer than the idle time.
func (k *Keyed[K]) Sweep(now time.Time) {
	cut := now.Add(-k.idle).UnixNano()
	for i := range k.shards {
		sh := &k.shards[i]
		sh.mu.Lock()
		sh.dropIdle(cut)
		sh.mu.Unlock()
	}
}

// dropIdle forgets the keys silent since before cut (ns) and says how many.
// The caller holds sh.mu.
func (sh *keyedShard[K]) dropIdle(cut int64) int {
	n := 0
	for key, b := range sh.m {
		if b.last.Load() < cut {
			delete(sh.m, key)
			n++
		}
	}
	return n
}

// Len is the number of keys tracked.
func (k *Keyed[K]) Len() int {
	n := 0
	for i := range k.shards {
		sh := &k.shards[i]
		sh.mu.Lock()
		n += len(sh.m)
		sh.mu.Unlock()
	}
	return n
}
