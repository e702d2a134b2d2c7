package engine

import (
	"math/rand/v2"
	"sync/atomic"
)

// cacheLine is the size that keeps two shards from sharing a line. 128 covers
// the adjacent-line prefetcher of x86 and the 128-byte lines of Apple cores.
const cacheLine = 128

// paddedInt64 is an atomic counter alone on its cache line, so cores that
// write different shards never invalidate each other's line.
type paddedInt64 struct {
	atomic.Int64
	_ [cacheLine - 8]byte
}

// stock is the units an item has left, spread over shards. Each shard only
// ever moves by compare-and-swap from v to v-k with k <= v, so no shard is
// ever negative and the sum of the shards never drops below zero: that is the
// whole no-oversell argument, and it needs no lock.
//
// A taker starts at a random shard and moves on to the others when it is dry
// (stealing), so the item is sold out only when every shard is empty.
type stock struct {
	shards []paddedInt64
}

func newStock(shards int) stock {
	return stock{shards: make([]paddedInt64, shards)}
}

// left is the sum of the shards: exact when nobody is taking, otherwise a
// value the counter held at some instant during the call or one in between.
func (s *stock) left() int64 {
	var n int64
	for i := range s.shards {
		n += s.shards[i].Load()
	}
	return n
}

// take reserves q units, from one shard or several. It returns false, having
// taken nothing, when fewer than q units are left. A take of several units
// that fails may briefly hold units another taker would have found; it gives
// them back before returning.
func (s *stock) take(q int64) bool {
	n := len(s.shards)
	start := int(rand.Uint32N(uint32(n)))
	need := q
	for i := 0; i < n && need > 0; i++ {
		sh := &s.shards[(start+i)%n]
		for {
			v := sh.Load()
			if v <= 0 {
				break
			}
			k := min(v, need)
			if sh.CompareAndSwap(v, v-k) {
				need -= k
				break
			}
		}
	}
	if need > 0 {
		s.put(q - need)
		return false
	}
	return true
}

// put gives q units back, to a random shard; takers steal, so where does not
// matter for correctness.
func (s *stock) put(q int64) {
	if q <= 0 {
		return
	}
	s.shards[rand.Uint32N(uint32(len(s.shards)))].Add(q)
}

// spread adds q units evenly over all shards, so that a fresh sale does not
// start with every taker converging on one line.
func (s *stock) spread(q int64) {
	n := int64(len(s.shards))
	for i := range s.shards {
		part := q / n
		if int64(i) < q%n {
			part++
		}
		if part > 0 {
			s.shards[i].Add(part)
		}
	}
}
