package engine

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// nopSink accepts every order at once, so benchmarks measure the engine alone.
type nopSink struct{}

func (nopSink) Append(context.Context, *Order) error { return nil }

func benchEngine(b *testing.B, stock int64) *Engine {
	e, err := New(Options{Sink: nopSink{}, Catalog: &memCatalog{}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(e.Close)
	if _, _, err := e.PutItem(context.Background(), Item{ID: "it", Name: "x", Stock: stock, PerUserLimit: 1}); err != nil {
		b.Fatal(err)
	}
	return e
}

func BenchmarkPurchaseSoldOut(b *testing.B) {
	e := benchEngine(b, 0)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		req := PurchaseRequest{ItemID: "it", UserID: "loser", RequestID: "r-1", Quantity: 1}
		for pb.Next() {
			if _, _, err := e.Purchase(context.Background(), req); err != ErrSoldOut {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkPurchaseWin sells one unit per distinct user, with a request id:
// every iteration is a full winning purchase (the order is the one allocation
// that has to be).
func BenchmarkPurchaseWin(b *testing.B) {
	e := benchEngine(b, MaxStock)
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
			if _, _, err := e.Purchase(context.Background(), PurchaseRequest{ItemID: "it", UserID: u, RequestID: "r", Quantity: 1}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkOrderID(b *testing.B) {
	g, _ := newIDGen(1)
	now := time.Now()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			g.next(now)
		}
	})
}

func BenchmarkOrderIDWithClock(b *testing.B) {
	g, _ := newIDGen(1)
	b.ReportAllocs()
	for b.Loop() {
		g.next(time.Now())
	}
}
