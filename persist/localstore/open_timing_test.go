package localstore

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/flashsale/flashsale/engine"
)

// BenchmarkStartWithAMillionOrders: what a restart costs with 1,000,000
// orders in the store (distinct users, ten items, each with a request id
// inside the replay window): Open (the log read, the index built) and Load
// (the engine's snapshot), reported apart. Appending them, by 1,000
// goroutines, is timed too (append-s).
func BenchmarkStartWithAMillionOrders(b *testing.B) {
	const n = 1_000_000
	dir := b.TempDir()
	s := openStore(b, dir)
	base := engine.FirstOrderIDAt(time.Now())
	start := time.Now()
	var wg sync.WaitGroup
	for w := range 1000 {
		wg.Go(func() {
			for i := w; i < n; i += 1000 {
				o := &engine.Order{ID: base + uint64(i), ItemID: fmt.Sprintf("item-%d", i%10), UserID: fmt.Sprintf("user-%07d", i),
					Quantity: 1, PriceCents: 100, RequestID: fmt.Sprintf("req-%07d", i), CreatedAt: time.Now().Truncate(time.Millisecond).UTC()}
				if err := s.Append(context.Background(), o); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	appended := time.Since(start)
	s.Close()
	var opened, loaded time.Duration
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		s := openStore(b, dir)
		opened += time.Since(start)
		start = time.Now()
		snap, err := s.Load(context.Background(), time.Hour, time.Now())
		loaded += time.Since(start)
		if err != nil || len(snap.Holdings) != n {
			b.Fatalf("%v, %d holdings", err, len(snap.Holdings))
		}
		s.Close()
	}
	b.ReportMetric(appended.Seconds(), "append-s")
	b.ReportMetric(opened.Seconds()/float64(b.N), "open-s")
	b.ReportMetric(loaded.Seconds()/float64(b.N), "load-s")
}
