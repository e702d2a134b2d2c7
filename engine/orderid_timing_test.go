package engine

import (
	"testing"
	"time"
)

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
