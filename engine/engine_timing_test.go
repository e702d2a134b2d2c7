package engine_test

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/flashsale/flashsale/engine"
	"github.com/flashsale/flashsale/engine/enginetest"
)

func benchEngine(b *testing.B, stock int64) *engine.Engine {
	e, err := engine.New(engine.Options{Sink: enginetest.Discard{}, Catalog: &enginetest.Catalog{}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(e.Close)
	if _, _, err := e.PutItem(context.Background(), engine.Item{ID: "it", Name: "x", Stock: stock, PerUserLimit: 1}); err != nil {
		b.Fatal(err)
	}
	return e
}

func BenchmarkPurchaseSoldOut(b *testing.B) {
	e := benchEngine(b, 0)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		req := engine.PurchaseRequest{ItemID: "it", UserID: "loser", RequestID: "r-1", Quantity: 1}
		for pb.Next() {
			if _, _, err := e.Purchase(context.Background(), req); err != engine.ErrSoldOut {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkPurchaseWin sells one unit per distinct user, with a request id:
// every iteration is a full winning purchase (the order is the one allocation
// that has to be).
func BenchmarkPurchaseWin(b *testing.B) {
	e := benchEngine(b, engine.MaxStock)
	var next atomic.Int64
	users := make([]string, 1<<20)
	for i := range users {
		users[i] = "u" + strconv.Itoa(i)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			n := next.Add(1)
			u := users[n%int64(len(users))] + "-" // distinct per iteration
			if n < int64(len(users)) {
				u = users[n]
			}
			if _, _, err := e.Purchase(context.Background(), engine.PurchaseRequest{ItemID: "it", UserID: u, RequestID: "r", Quantity: 1}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
