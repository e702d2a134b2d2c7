//go:build !race

package engine

import (
	"context"
	"testing"
)

// The losing paths and a winning reservation must not allocate: losers come
// in tens of thousands per second, and garbage is tail latency.

func TestSoldOutDoesNotAllocate(t *testing.T) {
	fx := newFixture(t, 4)
	fx.put(t, "it", 1, 1)
	if _, _, err := fx.buy("winner", "", 1); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	req := PurchaseRequest{ItemID: "it", UserID: "loser", RequestID: "req-1", Quantity: 1}
	n := testing.AllocsPerRun(1000, func() {
		if _, _, err := fx.e.Purchase(ctx, req); err != ErrSoldOut {
			t.Fatal(err)
		}
	})
	if n != 0 {
		t.Fatalf("sold-out rejection allocates %v times", n)
	}
	req.UserID = "winner"
	fx.put(t, "it", 2, 1) // one unit left: the winner is now over the limit
	n = testing.AllocsPerRun(1000, func() {
		if _, _, err := fx.e.Purchase(ctx, req); err != ErrLimitExceeded {
			t.Fatal(err)
		}
	})
	if n != 0 {
		t.Fatalf("limit rejection allocates %v times", n)
	}
}

func TestReservationDoesNotAllocate(t *testing.T) {
	fx := newFixture(t, 4)
	fx.put(t, "it", 1<<30, 1<<30)
	it := fx.e.lookup("it")
	it.users.reserve("u", 1, 1<<30) // the user's first unit allocates its map slot
	n := testing.AllocsPerRun(1000, func() {
		if !it.users.reserve("u", 1, 1<<30) || !it.stock.take(1) {
			t.Fatal("reservation failed")
		}
	})
	if n != 0 {
		t.Fatalf("a winning reservation allocates %v times", n)
	}
}

func TestCodeOfDoesNotAllocate(t *testing.T) {
	var err error = ErrSoldOut
	if n := testing.AllocsPerRun(100, func() { _ = CodeOf(err) }); n != 0 {
		t.Fatalf("CodeOf allocates %v times", n)
	}
}
