package redisledger

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/flashsale/flashsale/engine"
)

// Lua script latency against the real Redis, round trip included. Serial:
// one call at a time (the latency a purchase sees); parallel: rueidis
// auto-pipelines concurrent calls (the throughput of a node).

func BenchmarkClaimSerial(b *testing.B) { benchClaim(b, false) }

func BenchmarkClaimParallel(b *testing.B) { benchClaim(b, true) }

func benchClaim(b *testing.B, parallel bool) {
	c := client(b)
	p := prefix(b, c)
	ctx := context.Background()
	l := New(c, 1, Options{Prefix: p})
	l.PutItem(ctx, "it", 1<<40, false)
	l.Lease(ctx, "it", 1<<40)
	var n atomic.Uint64
	claim := func() {
		id := n.Add(1)
		o := &engine.Order{ID: id, ItemID: "it", UserID: fmt.Sprint("u", id), RequestID: "r", Quantity: 1}
		if _, err := l.Claim(ctx, o, 1); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	if !parallel {
		for b.Loop() {
			claim()
		}
		return
	}
	b.SetParallelism(32)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			claim()
		}
	})
}

func BenchmarkLeaseSerial(b *testing.B) {
	c := client(b)
	p := prefix(b, c)
	ctx := context.Background()
	l := New(c, 1, Options{Prefix: p})
	l.PutItem(ctx, "it", 1<<40, false)
	for b.Loop() {
		if _, _, err := l.Lease(ctx, "it", 16); err != nil {
			b.Fatal(err)
		}
	}
}
