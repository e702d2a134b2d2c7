package engine_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flashsale/flashsale/engine"
	"github.com/flashsale/flashsale/engine/enginetest"
)

func TestPurchaseStress(t *testing.T) {
	// Many goroutines, few units, users that repeat themselves concurrently:
	// sold must be exactly min(stock, demand) and no user over the limit.
	f := func(shards int, stock, limit int64, users, perUser int, q int64) {
		t.Helper()
		fx := newFixture(t, shards)
		fx.put(t, "it", stock, limit)
		var wg sync.WaitGroup
		var won atomic.Int64
		start := make(chan struct{})
		for u := 0; u < users; u++ {
			for k := 0; k < perUser; k++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					o, _, err := fx.buy(fmt.Sprintf("u%d", u), "", q)
					switch {
					case err == nil:
						won.Add(o.Quantity)
					case errors.Is(err, engine.ErrSoldOut), errors.Is(err, engine.ErrLimitExceeded):
					default:
						t.Errorf("unexpected error %v", err)
					}
				}()
			}
		}
		close(start)
		wg.Wait()
		// Demand: each user can take at most limit units in q-sized steps.
		perUserMax := limit / q * q
		demand := int64(users) * min(perUserMax, int64(perUser)*q)
		want := min(stock/q*q, demand)
		if stock < demand && stock%q != 0 {
			// A remainder smaller than q can never sell.
			want = stock - stock%q
		}
		if got := won.Load(); got != want {
			t.Fatalf("shards=%d stock=%d limit=%d users=%d: sold %d units, want %d", shards, stock, limit, users, got, want)
		}
		v := checkBalance(t, fx.e, "it")
		if v.Sold != want {
			t.Fatalf("item reports sold %d, want %d", v.Sold, want)
		}
		held := map[string]int64{}
		for _, o := range fx.sink.Orders() {
			held[o.UserID] += o.Quantity
			if held[o.UserID] > limit {
				t.Fatalf("user %s holds %d > limit %d", o.UserID, held[o.UserID], limit)
			}
		}
		if (v.StockLeft < q) != (v.State == engine.SoldOut) && v.StockLeft == 0 {
			t.Fatalf("state %v with %d left", v.State, v.StockLeft)
		}
	}
	f(4, 100, 1, 500, 3, 1)  // more demand than stock, same user in parallel
	f(8, 1000, 2, 300, 4, 1) // less demand than stock: everyone gets the limit
	f(2, 50, 3, 200, 2, 2)   // quantity 2, limit 3: at most one purchase each
	f(16, 7, 1, 1000, 1, 1)  // more shards than units
	f(1, 1, 1, 100, 5, 1)    // the last unit
}

func TestSoldOutFlipsAndClears(t *testing.T) {
	fx := newFixture(t, 4)
	fx.put(t, "it", 2, 1)
	for _, u := range []string{"a", "b"} {
		if _, _, err := fx.buy(u, "", 1); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := fx.buy("c", "", 1); !errors.Is(err, engine.ErrSoldOut) {
		t.Fatalf("want sold out, got %v", err)
	}
	if v := checkBalance(t, fx.e, "it"); v.State != engine.SoldOut {
		t.Fatalf("state %v, want sold_out", v.State)
	}
	// Restock clears sold out.
	if _, created, err := fx.e.PutItem(context.Background(), engine.Item{ID: "it", Name: "x", Stock: 3, PerUserLimit: 1}); err != nil || created {
		t.Fatalf("restock: created=%v err=%v", created, err)
	}
	if v := checkBalance(t, fx.e, "it"); v.State != engine.OnSale || v.StockLeft != 1 {
		t.Fatalf("after restock: %+v", v)
	}
	if _, _, err := fx.buy("c", "", 1); err != nil {
		t.Fatal(err)
	}
	// Lowering below sold is refused and changes nothing.
	if _, _, err := fx.e.PutItem(context.Background(), engine.Item{ID: "it", Name: "x", Stock: 2, PerUserLimit: 1}); !errors.Is(err, engine.ErrStockBelowSold) {
		t.Fatalf("want stock below sold, got %v", err)
	}
	if v := checkBalance(t, fx.e, "it"); v.Stock != 3 || v.Sold != 3 {
		t.Fatalf("after refused lowering: %+v", v)
	}
}

func TestFailedPurchaseUndoesEverything(t *testing.T) {
	fx := newFixture(t, 4)
	fx.put(t, "it", 10, 2)

	fx.sink.SetFail(errBoom)
	_, _, err := fx.buy("u1", "r1", 2)
	if !errors.Is(err, engine.ErrUnavailable) || !errors.Is(err, errBoom) || engine.CodeOf(err) != engine.CodeUnavailable {
		t.Fatalf("want unavailable wrapping boom, got %v", err)
	}
	v := checkBalance(t, fx.e, "it")
	if v.StockLeft != 10 || v.Sold != 0 {
		t.Fatalf("stock not given back: %+v", v)
	}
	// The user's slot and the request id are free again.
	fx.sink.SetFail(nil)
	if _, replayed, err := fx.buy("u1", "r1", 2); err != nil || replayed {
		t.Fatalf("retry after failure: replayed=%v err=%v", replayed, err)
	}
}

func TestIdempotency(t *testing.T) {
	fx := newFixture(t, 2)
	fx.put(t, "it", 5, 2)
	first, replayed, err := fx.buy("u1", "r1", 1)
	if err != nil || replayed {
		t.Fatal(err, replayed)
	}
	again, replayed, err := fx.buy("u1", "r1", 1)
	if err != nil || !replayed || again != first {
		t.Fatalf("replay: %v %v %v", again, replayed, err)
	}
	if _, _, err := fx.buy("u1", "r1", 2); !errors.Is(err, engine.ErrIdempotencyKeyReused) {
		t.Fatalf("different quantity: %v", err)
	}
	// Same request id, another user: a different key.
	if _, replayed, err := fx.buy("u2", "r1", 1); err != nil || replayed {
		t.Fatalf("other user: %v %v", replayed, err)
	}
	if v := checkBalance(t, fx.e, "it"); v.Sold != 2 {
		t.Fatalf("replay took stock: %+v", v)
	}
	// After the window the key is forgotten and would buy again.
	fx.clock.Advance(engine.DefaultIdempotencyWindow)
	fx.e.SweepIdempotency(fx.clock.Now())
	if n := fx.e.IdempotencyEntries(); n != 0 {
		t.Fatalf("%d entries after the window", n)
	}
	if _, replayed, err := fx.buy("u1", "r1", 1); err != nil || replayed {
		t.Fatalf("after window: %v %v", replayed, err)
	}
}

func TestConcurrentDuplicateIsInProgress(t *testing.T) {
	// The sink holds every append until released, to observe purchases in flight.
	entered, release := make(chan struct{}), make(chan struct{})
	sink := &enginetest.Sink{Before: func(*engine.Order) error { entered <- struct{}{}; <-release; return nil }}
	e := newEngine(t, engine.Options{Sink: sink, Catalog: &enginetest.Catalog{}})
	if _, _, err := e.PutItem(context.Background(), engine.Item{ID: "it", Name: "x", Stock: 5, PerUserLimit: 1}); err != nil {
		t.Fatal(err)
	}
	req := engine.PurchaseRequest{ItemID: "it", UserID: "u", RequestID: "r", Quantity: 1}
	done := make(chan error)
	go func() { _, _, err := e.Purchase(context.Background(), req); done <- err }()
	<-entered
	if _, _, err := e.Purchase(context.Background(), req); !errors.Is(err, engine.ErrRequestInProgress) {
		t.Fatalf("duplicate in flight: %v", err)
	}
	other := req
	other.Quantity = 2
	if _, _, err := e.Purchase(context.Background(), other); !errors.Is(err, engine.ErrIdempotencyKeyReused) && !errors.Is(err, engine.ErrBadQuantity) {
		t.Fatalf("different body in flight: %v", err)
	}
	if v, _ := e.Item("it"); v.Pending != 1 || v.StockLeft != 4 {
		t.Fatalf("in flight: %+v", v)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, replayed, err := e.Purchase(context.Background(), req); err != nil || !replayed {
		t.Fatalf("after: %v %v", replayed, err)
	}
}

func TestRefusals(t *testing.T) {
	fx := newFixture(t, 2)
	now := fx.clock.Now()
	ctx := context.Background()
	mk := func(id string, mod func(*engine.Item)) {
		it := engine.Item{ID: id, Name: id, Stock: 3, PerUserLimit: 1}
		mod(&it)
		if _, _, err := fx.e.PutItem(ctx, it); err != nil {
			t.Fatal(err)
		}
	}
	mk("later", func(it *engine.Item) { it.StartsAt = now.Add(time.Minute) })
	mk("over", func(it *engine.Item) { it.EndsAt = now })
	mk("open", func(it *engine.Item) {})
	f := func(item, user, req string, q int64, want error) {
		t.Helper()
		_, _, err := fx.e.Purchase(ctx, engine.PurchaseRequest{ItemID: item, UserID: user, RequestID: req, Quantity: q})
		if err != want {
			t.Fatalf("%s/%s/%s/%d: got %v, want %v", item, user, req, q, err, want)
		}
	}
	f("later", "u", "", 1, engine.ErrSaleNotStarted)
	f("over", "u", "", 1, engine.ErrSaleEnded)
	f("nope", "u", "", 1, engine.ErrItemNotFound)
	f("bad id!", "u", "", 1, engine.ErrBadItemID)
	f("open", "", "", 1, engine.ErrBadUserID)
	f("open", "u u", "", 1, engine.ErrBadUserID)
	f("open", "u", "a b", 1, engine.ErrBadRequestID)
	f("open", "u", "", 0, engine.ErrBadQuantity)
	f("open", "u", "", 2, engine.ErrBadQuantity)
	f("open", "u", "", 1, nil)
	f("open", "u", "", 1, engine.ErrLimitExceeded)
	if _, err := fx.e.EndItem(ctx, "open"); err != nil {
		t.Fatal(err)
	}
	f("open", "v", "", 1, engine.ErrSaleEnded)
	if v, _ := fx.e.Item("open"); v.State != engine.Ended {
		t.Fatalf("state %v", v.State)
	}
	if v, _ := fx.e.Item("later"); v.State != engine.Upcoming {
		t.Fatalf("state %v", v.State)
	}
	// An ended item stays ended through an update.
	if v, _, _ := fx.e.PutItem(ctx, engine.Item{ID: "open", Name: "x", Stock: 9, PerUserLimit: 1}); v.State != engine.Ended {
		t.Fatalf("update reopened an ended item: %v", v.State)
	}
	// A catalogue failure changes nothing.
	fx.cat.SetFail(errBoom)
	if _, _, err := fx.e.PutItem(ctx, engine.Item{ID: "later", Name: "x", Stock: 1, PerUserLimit: 1}); !errors.Is(err, engine.ErrUnavailable) {
		t.Fatalf("catalogue failure: %v", err)
	}
	if v, _ := fx.e.Item("later"); v.Stock != 3 || v.StockLeft != 3 {
		t.Fatalf("failed update changed the item: %+v", v)
	}
}

func TestRestore(t *testing.T) {
	fx := newFixture(t, 4)
	fx.put(t, "it", 10, 2)
	var orders []*engine.Order
	for i := 0; i < 4; i++ {
		o, _, err := fx.buy(fmt.Sprintf("u%d", i%2), fmt.Sprintf("r%d", i), 1)
		if err != nil {
			t.Fatal(err)
		}
		orders = append(orders, o)
	}
	saved, _ := fx.cat.Item("it")
	snap := engine.Snapshot{
		Items:       []engine.ItemRecord{{Item: saved, Sold: 4}},
		Holdings:    []engine.Holding{{"it", "u0", 2}, {"it", "u1", 2}},
		Replays:     orders,
		LastOrderID: orders[3].ID,
	}
	fx2 := newFixture(t, 3)
	if err := fx2.e.Restore(snap); err != nil {
		t.Fatal(err)
	}
	if v := checkBalance(t, fx2.e, "it"); v.StockLeft != 6 || v.Sold != 4 {
		t.Fatalf("restored %+v", v)
	}
	if o, replayed, err := fx2.buy("u0", "r2", 1); err != nil || !replayed || o.ID != orders[2].ID {
		t.Fatalf("replay after restore: %v %v %v", o, replayed, err)
	}
	if _, _, err := fx2.buy("u0", "new", 1); !errors.Is(err, engine.ErrLimitExceeded) {
		t.Fatalf("limit after restore: %v", err)
	}
	o, _, err := fx2.buy("u9", "", 1)
	if err != nil || o.ID <= orders[3].ID {
		t.Fatalf("new order id %d not after %d (%v)", o.ID, orders[3].ID, err)
	}
	// A snapshot that claims more sold than stock is refused.
	bad := newFixture(t, 1)
	if err := bad.e.Restore(engine.Snapshot{Items: []engine.ItemRecord{{Item: engine.Item{ID: "x", Name: "x", Stock: 1, PerUserLimit: 1}, Sold: 2}}}); err == nil {
		t.Fatal("oversold snapshot accepted")
	}
}
