package engine

import (
	"hash/maphash"
	"strings"
	"sync"
)

const userShards = 64

var hashSeed = maphash.MakeSeed()

// userLedger counts the units each user holds of one item. It is a map split
// into shards by a hash of the user id, so buyers contend only when they hash
// to the same shard, and a check plus increment happens under one short lock:
// the same user sending many requests at once can never pass the limit.
type userLedger struct {
	shards [userShards]userShard
}

type userShard struct {
	mu sync.Mutex
	m  map[string]int64
	_  [cacheLine - 16]byte
}

func (l *userLedger) shard(user string) *userShard {
	return &l.shards[maphash.String(hashSeed, user)%userShards]
}

// held returns the units user holds. It does not allocate.
func (l *userLedger) held(user string) int64 {
	sh := l.shard(user)
	sh.mu.Lock()
	n := sh.m[user]
	sh.mu.Unlock()
	return n
}

// reserve adds q units to user's count unless that would pass limit. A new
// user becomes the map's key as it is: user must not alias a buffer that is
// reused (the purchase clones it once, for this and for its order).
func (l *userLedger) reserve(user string, q, limit int64) bool {
	sh := l.shard(user)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	n, ok := sh.m[user]
	if n+q > limit {
		return false
	}
	if !ok && sh.m == nil {
		sh.m = make(map[string]int64)
	}
	sh.m[user] = n + q
	return true
}

// release gives back q units that reserve took.
func (l *userLedger) release(user string, q int64) {
	sh := l.shard(user)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	n := sh.m[user] - q
	switch {
	case n < 0:
		panic("BUG: engine: user ledger released more units than reserved")
	case n == 0:
		delete(sh.m, user)
	default:
		sh.m[user] = n
	}
}

// restore sets user's count, when the engine is rebuilt from the order store.
func (l *userLedger) restore(user string, n int64) {
	sh := l.shard(user)
	sh.mu.Lock()
	if sh.m == nil {
		sh.m = make(map[string]int64)
	}
	sh.m[strings.Clone(user)] += n
	sh.mu.Unlock()
}
