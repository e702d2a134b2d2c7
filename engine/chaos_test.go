package engine_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/flashsale/flashsale/engine"
	"github.com/flashsale/flashsale/engine/enginetest"
)

// TestChaos races buyers (repeating users and request ids) against a sink
// that fails a fifth of the time and an admin who raises and lowers the
// stock. At rest the stock must balance exactly against the orders the sink
// holds, and no user may hold more than the limit.
func TestChaos(t *testing.T) {
	// The sink fails a fifth of the appends, at random.
	sink := &enginetest.Sink{Before: func(*engine.Order) error {
		if rand.IntN(100) < 20 {
			return errBoom
		}
		return nil
	}}
	e := newEngine(t, engine.Options{Shards: 4, Sink: sink, Catalog: &enginetest.Catalog{}})
	ctx := context.Background()
	const limit = 2
	put := func(stock int64) error {
		_, _, err := e.PutItem(ctx, engine.Item{ID: "it", Name: "x", PriceCents: 7, Stock: stock, PerUserLimit: limit})
		return err
	}
	if err := put(200); err != nil {
		t.Fatal(err)
	}

	var wg sync.WaitGroup
	var mu sync.Mutex
	answers := map[string]*engine.Order{} // user/request id -> first order
	for w := 0; w < 16; w++ {
		wg.Go(func() {
			for i := 0; i < 300; i++ {
				user := fmt.Sprintf("u%d", rand.IntN(250))
				req := fmt.Sprintf("r%d", rand.IntN(3))
				q := int64(1 + rand.IntN(limit))
				o, replayed, err := e.Purchase(ctx, engine.PurchaseRequest{ItemID: "it", UserID: user, RequestID: req, Quantity: q})
				switch {
				case err == nil:
					mu.Lock()
					first := answers[user+"/"+req]
					if replayed && first != nil && first != o {
						t.Errorf("replay of %s/%s answered another order", user, req)
					}
					if first == nil {
						answers[user+"/"+req] = o
					}
					mu.Unlock()
				case errors.Is(err, engine.ErrSoldOut), errors.Is(err, engine.ErrLimitExceeded), errors.Is(err, engine.ErrUnavailable),
					errors.Is(err, engine.ErrRequestInProgress), errors.Is(err, engine.ErrIdempotencyKeyReused):
				default:
					t.Errorf("unexpected %v", err)
				}
			}
		})
	}
	wg.Go(func() {
		stock := int64(200)
		for i := 0; i < 100; i++ {
			next := stock + int64(rand.IntN(21)-10)
			switch err := put(next); {
			case err == nil:
				stock = next
			case errors.Is(err, engine.ErrStockBelowSold):
			default:
				t.Errorf("restock: %v", err)
			}
		}
	})
	wg.Wait()

	v := checkBalance(t, e, "it")
	orders := sink.Orders()
	var sold int64
	held := map[string]int64{}
	ids := map[uint64]bool{}
	for _, o := range orders {
		sold += o.Quantity
		held[o.UserID] += o.Quantity
		if held[o.UserID] > limit {
			t.Fatalf("user %s holds %d > %d", o.UserID, held[o.UserID], limit)
		}
		if ids[o.ID] {
			t.Fatalf("order id %d twice", o.ID)
		}
		ids[o.ID] = true
	}
	if sold != v.Sold {
		t.Fatalf("sink holds %d units, engine says %d sold", sold, v.Sold)
	}
	if a := e.Audit(); len(a) != 1 || a[0].ID != "it" || a[0].Difference != 0 {
		t.Fatalf("the auditor after the chaos: %+v", a)
	}
	// Every answered order is durable.
	for key, o := range answers {
		if !ids[o.ID] {
			t.Fatalf("order %d answered to %s is not in the sink", o.ID, key)
		}
	}
	t.Logf("stock %d, sold %d in %d orders, %d left", v.Stock, v.Sold, len(orders), v.StockLeft)
}
