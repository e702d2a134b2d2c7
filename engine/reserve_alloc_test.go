//go:build !race

package engine

import "testing"

// A winning reservation (the user's slot and the units) must not allocate.
func TestReservationDoesNotAllocate(t *testing.T) {
	var users userLedger
	stock := newStock(4)
	stock.spread(1 << 30)
	users.reserve("u", 1, 1<<30) // the user's first unit allocates its map slot
	n := testing.AllocsPerRun(1000, func() {
		if !users.reserve("u", 1, 1<<30) || !stock.take(1) {
			t.Fatal("reservation failed")
		}
	})
	if n != 0 {
		t.Fatalf("a winning reservation allocates %v times", n)
	}
}
