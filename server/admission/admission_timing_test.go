package admission

import (
	"net/netip"
	"testing"
	"time"
)

// The cost of admission on the hot path: a decision with every rate limit
// on (global and per IP; per item is the same bucket), from many cores.
func BenchmarkAllowGlobalAndIP(b *testing.B) {
	l := NewLimits(Options{Global: 1e9, IP: 1e9, Warmup: time.Nanosecond}, time.Now().Add(-time.Second))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		ip := netip.MustParseAddr("192.0.2.1")
		for pb.Next() {
			if lim, _ := l.Allow(ip, time.Now()); lim != None {
				b.Fatal(lim)
			}
		}
	})
}

func BenchmarkAllowItem(b *testing.B) {
	l := NewLimits(Options{Item: 1e9, Warmup: time.Nanosecond}, time.Now().Add(-time.Second))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			l.AllowItem("phone-1", time.Now())
		}
	})
}

func BenchmarkInflight(b *testing.B) {
	f := NewInflight(1<<20, time.Millisecond)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if f.Acquire() {
				f.Release()
			}
		}
	})
}
