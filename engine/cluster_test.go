package engine

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
)

// scriptedLedger answers claims as told.
type scriptedLedger struct {
	first      *Order
	err        error
	claims     int
	unclaims   int
	unclaimErr error
}

func (l *scriptedLedger) Claim(context.Context, *Order, int64) (*Order, error) {
	l.claims++
	return l.first, l.err
}

func (l *scriptedLedger) Unclaim(context.Context, *Order) error { l.unclaims++; return l.unclaimErr }

// scriptedEngine is an engine on a scripted ledger and a memory sink,
// selling item "it" (5 units, per-user limit 1).
func scriptedEngine(t *testing.T) (*Engine, *scriptedLedger, *memSink) {
	t.Helper()
	led := &scriptedLedger{}
	sink := &memSink{}
	e, err := New(Options{Sink: sink, Catalog: &memCatalog{}, Ledger: led})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	e.PutItem(context.Background(), Item{ID: "it", Name: "x", Stock: 5, PerUserLimit: 1})
	return e, led, sink
}

func TestClaimOutcomesFromOtherNodes(t *testing.T) {
	e, led, sink := scriptedEngine(t)
	ctx := context.Background()
	req := PurchaseRequest{ItemID: "it", UserID: "u", RequestID: "r", Quantity: 1}

	// Over the limit on another node: nothing taken here.
	led.err = ErrLimitExceeded
	if _, _, err := e.Purchase(ctx, req); !errors.Is(err, ErrLimitExceeded) || CodeOf(err) != CodeLimitExceeded {
		t.Fatalf("over the limit elsewhere: %v", err)
	}
	if v, _ := e.Item("it"); v.StockLeft != 5 || v.Pending != 0 {
		t.Fatalf("stock after a refusal: %+v", v)
	}

	// The request id won on another node: its order is the answer, no stock
	// is taken here, nothing reaches the sink, and the next replay is
	// answered from memory.
	first := &Order{ID: 42, ItemID: "it", UserID: "u", Quantity: 1, RequestID: "r"}
	led.err, led.first = nil, first
	o, replayed, err := e.Purchase(ctx, req)
	if err != nil || !replayed || o != first {
		t.Fatalf("replay from another node: %v %v %v", o, replayed, err)
	}
	if v, _ := e.Item("it"); v.StockLeft != 5 || len(sink.all()) != 0 {
		t.Fatalf("a replay took stock: %+v", v)
	}
	claims := led.claims
	if o, replayed, _ := e.Purchase(ctx, req); o != first || !replayed || led.claims != claims {
		t.Fatal("second replay asked the ledger again")
	}
	if led.unclaims != 0 {
		t.Fatal("unclaimed a claim that was never made")
	}
}

// TestSinkFailureOutcomes: when the order sink fails, the ledger decides.
// An undo the ledger refuses because the order was stored after all makes
// the purchase stand; an undo that fails leaves the units out of the
// shards, for the ledger's reconciliation; a clean undo gives all back.
func TestSinkFailureOutcomes(t *testing.T) {
	e, led, sink := scriptedEngine(t)
	ctx := context.Background()
	sink.setFail(errors.New("produce timed out"))

	if _, _, err := e.Purchase(ctx, PurchaseRequest{ItemID: "it", UserID: "a", Quantity: 1}); CodeOf(err) != CodeUnavailable {
		t.Fatalf("clean undo: %v", err)
	}
	if v, _ := e.Item("it"); v.StockLeft != 5 || v.Pending != 0 {
		t.Fatalf("after a clean undo: %+v", v)
	}

	led.unclaimErr = ErrOrderStored
	o, _, err := e.Purchase(ctx, PurchaseRequest{ItemID: "it", UserID: "b", RequestID: "rb", Quantity: 1})
	if err != nil || o == nil {
		t.Fatalf("stored after all: %v %v", o, err)
	}
	if v, _ := e.Item("it"); v.StockLeft != 4 || v.Sold != 1 || v.Pending != 0 {
		t.Fatalf("after a purchase stored after all: %+v", v)
	}
	if again, replayed, _ := e.Purchase(ctx, PurchaseRequest{ItemID: "it", UserID: "b", RequestID: "rb", Quantity: 1}); again != o || !replayed {
		t.Fatal("a purchase stored after all is not replayed")
	}

	led.unclaimErr = errors.New("redis down")
	if _, _, err := e.Purchase(ctx, PurchaseRequest{ItemID: "it", UserID: "c", Quantity: 1}); CodeOf(err) != CodeUnavailable {
		t.Fatalf("failed undo: %v", err)
	}
	if v, _ := e.Item("it"); v.StockLeft != 3 || v.Sold != 1 || v.Pending != 0 {
		t.Fatalf("a unit whose claim could not be undone went back to the shards: %+v", v)
	}
	// The user's slot is free again: it is the claim that is in doubt.
	led.unclaimErr = nil
	sink.setFail(nil)
	if _, _, err := e.Purchase(ctx, PurchaseRequest{ItemID: "it", UserID: "c", Quantity: 1}); err != nil {
		t.Fatalf("the user after a failed undo: %v", err)
	}
}

// sharedPool and sharedClaims stand in for Redis: one pool and one claim
// table for several engines, behind a mutex.
type sharedPool struct {
	mu        sync.Mutex
	total     int64
	remaining int64
	leases    int64
	claimed   int64
	users     map[string]int64
	leaseOps  int
}

func (p *sharedPool) PutItem(_ context.Context, _ string, total int64) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.remaining+total-p.total < 0 {
		return ErrStockBelowSold
	}
	p.remaining += total - p.total
	p.total = total
	return nil
}

func (p *sharedPool) Lease(_ context.Context, _ string, want int64) (int64, int64, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.leaseOps++
	g := min(want, p.remaining)
	p.remaining -= g
	p.leases += g
	return g, p.remaining, nil
}

func (p *sharedPool) GiveBack(_ context.Context, _ string, n int64) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.leases -= n
	p.remaining += n
	return nil
}

func (p *sharedPool) Remaining(context.Context, string) (int64, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.remaining, nil
}

func (p *sharedPool) Claim(_ context.Context, o *Order, limit int64) (*Order, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.users[o.UserID]+o.Quantity > limit {
		return nil, ErrLimitExceeded
	}
	p.users[o.UserID] += o.Quantity
	p.leases -= o.Quantity
	p.claimed += o.Quantity
	return nil, nil
}

func (p *sharedPool) Unclaim(_ context.Context, o *Order) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.users[o.UserID] -= o.Quantity
	p.leases += o.Quantity
	p.claimed -= o.Quantity
	return nil
}

func (p *sharedPool) balanced() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.total == p.remaining+p.leases+p.claimed
}

// Three engines lease from one pool and race users (some on two engines at
// once) for the stock: never more sold than the stock, nobody over the
// limit, and after the stragglers give back, late buyers sell the rest.
func TestEnginesShareAPool(t *testing.T) {
	pool := &sharedPool{users: map[string]int64{}}
	var engines []*Engine
	var sinks []*memSink
	for i := 0; i < 3; i++ {
		sink := &memSink{}
		e, err := New(Options{Shards: 2, NodeID: i + 1, Sink: sink, Catalog: &memCatalog{}, Ledger: pool, Stock: pool, MaxLease: 16})
		if err != nil {
			t.Fatal(err)
		}
		defer e.Close()
		engines, sinks = append(engines, e), append(sinks, sink)
	}
	ctx := context.Background()
	const stock, users = 300, 1200
	for _, e := range engines { // every node knows the item; the pool is set once per put
		if _, _, err := e.PutItem(ctx, Item{ID: "it", Name: "x", Stock: stock, PerUserLimit: 1}); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	var won atomic.Int64
	buy := func(e *Engine, user string) {
		_, replayed, err := e.Purchase(ctx, PurchaseRequest{ItemID: "it", UserID: user, Quantity: 1})
		switch {
		case err == nil && !replayed:
			won.Add(1)
		case err == nil, errors.Is(err, ErrSoldOut), errors.Is(err, ErrLimitExceeded):
		default:
			t.Errorf("purchase: %v", err)
		}
	}
	for u := 0; u < users; u++ {
		wg.Go(func() { buy(engines[u%3], fmt.Sprint("u", u)) })
		if u%4 == 0 { // the same user on another node at the same time
			wg.Go(func() { buy(engines[(u+1)%3], fmt.Sprint("u", u)) })
		}
	}
	wg.Wait()
	if won.Load() > stock || !pool.balanced() {
		t.Fatalf("won %d of %d; pool %+v", won.Load(), stock, pool)
	}
	for _, e := range engines {
		if err := e.GiveBackAll(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for u := 0; pool.remaining > 0; u++ {
		buy(engines[u%3], fmt.Sprint("late", u))
	}
	if won.Load() != stock || pool.claimed != stock || pool.leases != 0 || !pool.balanced() {
		t.Fatalf("after give-back and late buyers: won %d, pool %+v", won.Load(), pool)
	}
	held := map[string]int64{}
	for _, s := range sinks {
		for _, o := range s.all() {
			if held[o.UserID]++; held[o.UserID] > 1 {
				t.Fatalf("user %s bought twice across nodes", o.UserID)
			}
		}
	}
	// Losers of a sold-out pool are answered from memory: no more leases.
	ops := pool.leaseOps
	for i := 0; i < 100; i++ {
		buy(engines[i%3], fmt.Sprint("after", i))
	}
	if pool.leaseOps != ops {
		t.Fatalf("%d leases asked after the pool was empty", pool.leaseOps-ops)
	}
	t.Logf("%d lease calls for %d units", ops, stock)
}

func TestEmptyPoolIsLookedAtAgain(t *testing.T) {
	pool := &sharedPool{users: map[string]int64{}}
	e, _ := New(Options{Sink: &memSink{}, Catalog: &memCatalog{}, Ledger: pool, Stock: pool})
	defer e.Close()
	ctx := context.Background()
	e.PutItem(ctx, Item{ID: "it", Name: "x", Stock: 0, PerUserLimit: 1})
	if _, _, err := e.Purchase(ctx, PurchaseRequest{ItemID: "it", UserID: "a", Quantity: 1}); !errors.Is(err, ErrSoldOut) {
		t.Fatalf("empty pool: %v", err)
	}
	// Another node gives units back; the janitor notices within a second.
	pool.mu.Lock()
	pool.total, pool.remaining = 2, 2
	pool.mu.Unlock()
	e.refreshPools()
	if _, _, err := e.Purchase(ctx, PurchaseRequest{ItemID: "it", UserID: "a", Quantity: 1}); err != nil {
		t.Fatalf("after units came back: %v", err)
	}
}
