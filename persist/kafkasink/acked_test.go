package kafkasink

import (
	"testing"

	"github.com/flashsale/flashsale/engine/enginetest"
)

// The acknowledged orders a node remembers for reads: bounded, oldest out
// first, by id and by user.
func TestAckedIsBoundedOldestFirst(t *testing.T) {
	r := NewAcked(3)
	for id := uint64(1); id <= 5; id++ {
		user := "a"
		if id%2 == 0 {
			user = "b"
		}
		r.Add(enginetest.Order(id, user, ""))
	}
	for id := uint64(1); id <= 5; id++ {
		if _, ok := r.Get(id); ok != (id >= 3) {
			t.Fatalf("order %d remembered: %v", id, ok)
		}
	}
	ids := func(user string) []uint64 {
		var out []uint64
		for _, o := range r.OfUser(user) {
			out = append(out, o.ID)
		}
		return out
	}
	if a, b := ids("a"), ids("b"); len(a) != 2 || a[0] != 3 || a[1] != 5 || len(b) != 1 || b[0] != 4 {
		t.Fatalf("by user after eviction: a %v, b %v", a, b)
	}
	if len(r.byUser) != 2 || len(r.byID) != 3 {
		t.Fatalf("indexes hold %d users and %d orders", len(r.byUser), len(r.byID))
	}
	// An order added again (this node's own, back from the feed) is kept once.
	again, _ := r.Get(5)
	r.Add(again)
	if a := ids("a"); len(a) != 2 || len(r.ring) != 3 {
		t.Fatalf("an order added twice: a %v, %d in the ring", a, len(r.ring))
	}
}
