//go:build !race

package engine_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/flashsale/flashsale/engine"
)

// The losing paths must not allocate: losers come
// in tens of thousands per second, and garbage is tail latency.

func TestSoldOutDoesNotAllocate(t *testing.T) {
	fx := newFixture(t, 4)
	fx.put(t, "it", 1, 1)
	if _, _, err := fx.buy("winner", "", 1); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	req := engine.PurchaseRequest{ItemID: "it", UserID: "loser", RequestID: "req-1", Quantity: 1}
	n := testing.AllocsPerRun(1000, func() {
		if _, _, err := fx.e.Purchase(ctx, req); err != engine.ErrSoldOut {
			t.Fatal(err)
		}
	})
	if n != 0 {
		t.Fatalf("sold-out rejection allocates %v times", n)
	}
	req.UserID = "winner"
	fx.put(t, "it", 2, 1) // one unit left: the winner is now over the limit
	n = testing.AllocsPerRun(1000, func() {
		if _, _, err := fx.e.Purchase(ctx, req); err != engine.ErrLimitExceeded {
			t.Fatal(err)
		}
	})
	if n != 0 {
		t.Fatalf("limit rejection allocates %v times", n)
	}
}

func TestCodeOfDoesNotAllocate(t *testing.T) {
	var err error = engine.ErrSoldOut
	if n := testing.AllocsPerRun(100, func() { _ = engine.CodeOf(err) }); n != 0 {
		t.Fatalf("engine.CodeOf allocates %v times", n)
	}
}

// A winning purchase allocates what it keeps: the order, its copies of the
// user id and request id, and the idempotency window's entry and key (the
// maps' growth is spread over many).
func TestWinningPurchaseAllocations(t *testing.T) {
	fx := newFixture(t, 4)
	fx.put(t, "it", 1<<20, 1)
	ctx := context.Background()
	reqs := make([]engine.PurchaseRequest, 3000)
	for i := range reqs {
		u := fmt.Sprintf("u-%d", i)
		reqs[i] = engine.PurchaseRequest{ItemID: "it", UserID: u, RequestID: "r-" + u, Quantity: 1}
	}
	i := 0
	n := testing.AllocsPerRun(2000, func() {
		if _, _, err := fx.e.Purchase(ctx, reqs[i]); err != nil {
			t.Fatal(err)
		}
		i++
	})
	t.Logf("a winning purchase allocates %v times", n)
	if n > 5.5 {
		t.Fatalf("a winning purchase allocates %v times, want at most 5 and the maps' growth", n)
	}
}
