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

// clusterEngine is a node of a cluster whose shared ledger is led, selling
// item "it" (5 units, per-user limit 1).
func clusterEngine(t *testing.T) (*engine.Engine, *enginetest.Ledger, *enginetest.Sink) {
	t.Helper()
	led := &enginetest.Ledger{}
	sink := &enginetest.Sink{}
	e := newEngine(t, engine.Options{Sink: sink, Catalog: &enginetest.Catalog{}, Ledger: led})
	put(t, e, "it", 5, 1)
	return e, led, sink
}

func TestClaimOutcomesFromOtherNodes(t *testing.T) {
	e, led, sink := clusterEngine(t)
	ctx := context.Background()
	req := engine.PurchaseRequest{ItemID: "it", UserID: "u", RequestID: "r", Quantity: 1}

	// Over the limit on another node: nothing taken here.
	led.SetClaimErr(engine.ErrLimitExceeded)
	if _, _, err := e.Purchase(ctx, req); !errors.Is(err, engine.ErrLimitExceeded) || engine.CodeOf(err) != engine.CodeLimitExceeded {
		t.Fatalf("over the limit elsewhere: %v", err)
	}
	if v, _ := e.Item("it"); v.StockLeft != 5 || v.Pending != 0 {
		t.Fatalf("stock after a refusal: %+v", v)
	}

	// The request id won on another node: its order is the answer, no stock
	// is taken here, nothing reaches the sink, and the next replay is
	// answered from memory.
	first := &engine.Order{ID: 42, ItemID: "it", UserID: "u", Quantity: 1, RequestID: "r"}
	led.SetClaimErr(nil)
	led.SetFirst(first)
	o, replayed, err := e.Purchase(ctx, req)
	if err != nil || !replayed || o != first {
		t.Fatalf("replay from another node: %v %v %v", o, replayed, err)
	}
	if v, _ := e.Item("it"); v.StockLeft != 5 || len(sink.Orders()) != 0 {
		t.Fatalf("a replay took stock: %+v", v)
	}
	claims := led.Counts().Claims
	if o, replayed, _ := e.Purchase(ctx, req); o != first || !replayed || led.Counts().Claims != claims {
		t.Fatal("second replay asked the ledger again")
	}
	if led.Counts().Unclaims != 0 {
		t.Fatal("unclaimed a claim that was never made")
	}
}

// TestFailedClaimAndSinkUndoEverything: a purchase whose order cannot be
// stored undoes its claim and gives everything back; a failing claim
// undoes too, and the sink is never called.
func TestFailedClaimAndSinkUndoEverything(t *testing.T) {
	led := &enginetest.Ledger{}
	sink := &enginetest.Sink{}
	e := newEngine(t, engine.Options{Shards: 4, Sink: sink, Catalog: &enginetest.Catalog{}, Ledger: led})
	put(t, e, "it", 10, 2)

	sink.SetFail(errBoom)
	_, _, err := buy(e, "u1", "r1", 2)
	if !errors.Is(err, engine.ErrUnavailable) || !errors.Is(err, errBoom) || engine.CodeOf(err) != engine.CodeUnavailable {
		t.Fatalf("want unavailable wrapping boom, got %v", err)
	}
	if c := led.Counts(); c.Claims != 1 || c.Unclaims != 1 {
		t.Fatalf("claims %d unclaims %d, want 1 and 1", c.Claims, c.Unclaims)
	}
	v := checkBalance(t, e, "it")
	if v.StockLeft != 10 || v.Sold != 0 {
		t.Fatalf("stock not given back: %+v", v)
	}
	// The user's slot and the request id are free again.
	sink.SetFail(nil)
	if _, replayed, err := buy(e, "u1", "r1", 2); err != nil || replayed {
		t.Fatalf("retry after failure: replayed=%v err=%v", replayed, err)
	}

	// A failing claim undoes too, and the sink is never called.
	led.SetClaimErr(errBoom)
	before := sink.Calls()
	if _, _, err := buy(e, "u2", "r2", 1); !errors.Is(err, engine.ErrUnavailable) {
		t.Fatalf("want unavailable, got %v", err)
	}
	if sink.Calls() != before {
		t.Fatal("order reached the sink after a failed claim")
	}
	if v := checkBalance(t, e, "it"); v.StockLeft != 8 {
		t.Fatalf("stock after failed claim: %+v", v)
	}
	if p := led.Pool("it"); !p.Balanced() || p.Claimed != 2 {
		t.Fatalf("the ledger after the failures: %+v", p)
	}
	if a := e.Audit(); a != nil {
		t.Fatalf("a cluster node audits its share of a shared pool: %+v", a)
	}
}

// TestSinkFailureOutcomes: when the order sink fails, the ledger decides.
// An undo the ledger refuses because the order was stored after all makes
// the purchase stand; an undo that fails leaves the units out of the
// shards, for the ledger's reconciliation; a clean undo gives all back.
func TestSinkFailureOutcomes(t *testing.T) {
	e, led, sink := clusterEngine(t)
	ctx := context.Background()
	sink.SetFail(errors.New("produce timed out"))

	if _, _, err := e.Purchase(ctx, engine.PurchaseRequest{ItemID: "it", UserID: "a", Quantity: 1}); engine.CodeOf(err) != engine.CodeUnavailable {
		t.Fatalf("clean undo: %v", err)
	}
	if v, _ := e.Item("it"); v.StockLeft != 5 || v.Pending != 0 {
		t.Fatalf("after a clean undo: %+v", v)
	}

	led.SetUnclaimErr(engine.ErrOrderStored)
	o, _, err := e.Purchase(ctx, engine.PurchaseRequest{ItemID: "it", UserID: "b", RequestID: "rb", Quantity: 1})
	if err != nil || o == nil {
		t.Fatalf("stored after all: %v %v", o, err)
	}
	if v, _ := e.Item("it"); v.StockLeft != 4 || v.Sold != 1 || v.Pending != 0 {
		t.Fatalf("after a purchase stored after all: %+v", v)
	}
	if again, replayed, _ := e.Purchase(ctx, engine.PurchaseRequest{ItemID: "it", UserID: "b", RequestID: "rb", Quantity: 1}); again != o || !replayed {
		t.Fatal("a purchase stored after all is not replayed")
	}
	if st := sink.Standing(); len(st) != 1 || st[0] != o.ID {
		t.Fatalf("the sink was told %v stand after all, want [%d]", st, o.ID)
	}

	led.SetUnclaimErr(errors.New("redis down"))
	if _, _, err := e.Purchase(ctx, engine.PurchaseRequest{ItemID: "it", UserID: "c", Quantity: 1}); engine.CodeOf(err) != engine.CodeUnavailable {
		t.Fatalf("failed undo: %v", err)
	}
	if v, _ := e.Item("it"); v.StockLeft != 3 || v.Sold != 1 || v.Pending != 0 {
		t.Fatalf("a unit whose claim could not be undone went back to the shards: %+v", v)
	}
	// The user's slot is free again: it is the claim that is in doubt, and
	// once the cluster's reconciliation settles it the user may buy.
	led.SetUnclaimErr(nil)
	sink.SetFail(nil)
	if n := led.AbandonStuck(); n != 1 {
		t.Fatalf("%d claims in doubt, want 1", n)
	}
	if _, _, err := e.Purchase(ctx, engine.PurchaseRequest{ItemID: "it", UserID: "c", Quantity: 1}); err != nil {
		t.Fatalf("the user after a failed undo: %v", err)
	}
}

// Three engines lease from one pool and race users (some on two engines at
// once) for the stock: never more sold than the stock, nobody over the
// limit, and after the stragglers give back, late buyers sell the rest.
func TestEnginesShareAPool(t *testing.T) {
	pool := &enginetest.Ledger{}
	var engines []*engine.Engine
	var sinks []*enginetest.Sink
	for i := 0; i < 3; i++ {
		sink := &enginetest.Sink{}
		e := newEngine(t, engine.Options{Shards: 2, NodeID: i + 1, Sink: sink, Catalog: &enginetest.Catalog{}, Ledger: pool, MaxLease: 16})
		engines, sinks = append(engines, e), append(sinks, sink)
	}
	ctx := context.Background()
	const stock, users = 300, 1200
	for _, e := range engines { // every node knows the item; the pool is set once per put
		if _, _, err := e.PutItem(ctx, engine.Item{ID: "it", Name: "x", Stock: stock, PerUserLimit: 1}); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	var won atomic.Int64
	buyOn := func(e *engine.Engine, user string) {
		_, replayed, err := buy(e, user, "", 1)
		switch {
		case err == nil && !replayed:
			won.Add(1)
		case err == nil, errors.Is(err, engine.ErrSoldOut), errors.Is(err, engine.ErrLimitExceeded):
		default:
			t.Errorf("purchase: %v", err)
		}
	}
	for u := 0; u < users; u++ {
		wg.Go(func() { buyOn(engines[u%3], fmt.Sprint("u", u)) })
		if u%4 == 0 { // the same user on another node at the same time
			wg.Go(func() { buyOn(engines[(u+1)%3], fmt.Sprint("u", u)) })
		}
	}
	wg.Wait()
	if p := pool.Pool("it"); won.Load() > stock || !p.Balanced() {
		t.Fatalf("won %d of %d; pool %+v", won.Load(), stock, p)
	}
	for _, e := range engines {
		if err := e.GiveBackAll(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for u := 0; pool.Pool("it").Remaining > 0; u++ {
		buyOn(engines[u%3], fmt.Sprint("late", u))
	}
	if p := pool.Pool("it"); won.Load() != stock || p.Claimed != stock || p.Leased != 0 || !p.Balanced() {
		t.Fatalf("after give-back and late buyers: won %d, pool %+v", won.Load(), p)
	}
	held := map[string]int64{}
	for _, s := range sinks {
		for _, o := range s.Orders() {
			if held[o.UserID]++; held[o.UserID] > 1 {
				t.Fatalf("user %s bought twice across nodes", o.UserID)
			}
		}
	}
	// Losers of a sold-out pool are answered from memory: a node that gave
	// idle units back looks at the pool once more (one lease each at most),
	// then no more leases.
	ops := pool.Counts().Leases
	for i := 0; i < 100; i++ {
		buyOn(engines[i%3], fmt.Sprint("after", i))
	}
	if n := pool.Counts().Leases; n > ops+len(engines) {
		t.Fatalf("%d leases asked after the pool was empty", n-ops)
	}
	ops = pool.Counts().Leases
	for i := 0; i < 100; i++ {
		buyOn(engines[i%3], fmt.Sprint("later", i))
	}
	if n := pool.Counts().Leases; n != ops {
		t.Fatalf("%d leases asked once every node knew the pool was empty", n-ops)
	}
	t.Logf("%d lease calls for %d units", ops, stock)
}

func TestEmptyPoolIsLookedAtAgain(t *testing.T) {
	pool := &enginetest.Ledger{}
	e := newEngine(t, engine.Options{Sink: &enginetest.Sink{}, Catalog: &enginetest.Catalog{}, Ledger: pool})
	ctx := context.Background()
	put(t, e, "it", 0, 1)
	if _, _, err := buy(e, "a", "", 1); !errors.Is(err, engine.ErrSoldOut) {
		t.Fatalf("empty pool: %v", err)
	}
	// Units come to the pool (another node restocks); the janitor notices
	// within a second.
	if err := pool.PutItem(ctx, "it", 2, false); err != nil {
		t.Fatal(err)
	}
	e.RefreshPools()
	if _, _, err := buy(e, "a", "", 1); err != nil {
		t.Fatalf("after units came back: %v", err)
	}
}

// A winner's retry on another node is its first answer, never "sold out":
// from the ledger while the node cannot be sure it knows every winner, from
// memory once its feed has told it (and then the ledger is not asked, even
// for a loser it has never seen). Another quantity is 422 either way.
func TestWinnersRetryOnAnotherNode(t *testing.T) {
	led := &enginetest.Ledger{}
	a := newEngine(t, engine.Options{NodeID: 1, Sink: &enginetest.Sink{}, Catalog: &enginetest.Catalog{}, Ledger: led})
	b := newEngine(t, engine.Options{NodeID: 2, Sink: &enginetest.Sink{}, Catalog: &enginetest.Catalog{}, Ledger: led})
	put(t, a, "it", 1, 1)
	put(t, b, "it", 1, 1)
	won, _, err := buy(a, "u", "r1", 1)
	if err != nil {
		t.Fatal(err)
	}

	firsts := led.Counts().Refusals
	if o, replayed, err := buy(b, "u", "r1", 1); err != nil || !replayed || o.ID != won.ID {
		t.Fatalf("retry on the other node: %v %v %v", o, replayed, err)
	}
	if led.Counts().Refusals != firsts+1 {
		t.Fatal("the node answered a request id it did not know without asking the ledger")
	}
	// Now it knows the answer: from memory, and 422 for another quantity.
	if o, replayed, err := buy(b, "u", "r1", 1); err != nil || !replayed || o.ID != won.ID || led.Counts().Refusals != firsts+1 {
		t.Fatalf("second retry: %v %v %v", o, replayed, err)
	}
	// A loser the node cannot be sure of is asked about; once the feed is
	// up and has seen the whole stock claimed, no loser is.
	if _, _, err := buy(b, "v", "r9", 1); !errors.Is(err, engine.ErrSoldOut) || led.Counts().Refusals != firsts+2 {
		t.Fatalf("an unknown loser, unsure: %v (%d questions)", err, led.Counts().Refusals-firsts)
	}
	b.SetFeedUp(true)
	b.Remember(won)
	b.SetClaimed("it", 1)
	if _, _, err := buy(b, "w", "r9", 1); !errors.Is(err, engine.ErrSoldOut) || led.Counts().Refusals != firsts+2 {
		t.Fatalf("an unknown loser, sure: %v (%d questions)", err, led.Counts().Refusals-firsts)
	}
}

// What the feed tells: a winner of another node is replayed from memory,
// with 422 for another item or quantity; once released, its request id is
// free again.
func TestRememberAndRelease(t *testing.T) {
	led := &enginetest.Ledger{}
	e := newEngine(t, engine.Options{Sink: &enginetest.Sink{}, Catalog: &enginetest.Catalog{}, Ledger: led})
	put(t, e, "it", 5, 2)
	put(t, e, "other", 5, 2)
	elsewhere := &engine.Order{ID: 7, ItemID: "it", UserID: "u", Quantity: 1, PriceCents: 100, RequestID: "r", CreatedAt: time.Now().UTC()}
	e.Remember(elsewhere)
	if o, replayed, err := buy(e, "u", "r", 1); err != nil || !replayed || o != elsewhere {
		t.Fatalf("replay of another node's winner: %v %v %v", o, replayed, err)
	}
	if _, _, err := buy(e, "u", "r", 2); !errors.Is(err, engine.ErrIdempotencyKeyReused) {
		t.Fatalf("another quantity: %v", err)
	}
	if _, _, err := e.Purchase(context.Background(), engine.PurchaseRequest{ItemID: "other", UserID: "u", RequestID: "r", Quantity: 1}); !errors.Is(err, engine.ErrIdempotencyKeyReused) {
		t.Fatalf("another item: %v", err)
	}
	e.Release(elsewhere)
	if o, replayed, err := buy(e, "u", "r", 1); err != nil || replayed || o.ID == elsewhere.ID {
		t.Fatalf("after the release: %v %v %v", o, replayed, err)
	}
	// A release of another order of the same request id changes nothing.
	mine, _, _ := buy(e, "u", "r", 1)
	e.Release(&engine.Order{ID: 12345, ItemID: "it", UserID: "u", RequestID: "r"})
	if o, replayed, _ := buy(e, "u", "r", 1); !replayed || o.ID != mine.ID {
		t.Fatal("a release of another order forgot this one")
	}
}

// A claim whose request id already won on another node with another
// quantity: 422, not a replay.
func TestClaimReplayOfAnotherQuantity(t *testing.T) {
	led := &enginetest.Ledger{}
	a := newEngine(t, engine.Options{NodeID: 1, Sink: &enginetest.Sink{}, Catalog: &enginetest.Catalog{}, Ledger: led})
	b := newEngine(t, engine.Options{NodeID: 2, Sink: &enginetest.Sink{}, Catalog: &enginetest.Catalog{}, Ledger: led, MaxLease: 1})
	put(t, a, "it", 10, 2)
	put(t, b, "it", 10, 2)
	if _, _, err := buy(a, "u", "r", 1); err != nil {
		t.Fatal(err)
	}
	if _, _, err := buy(b, "u", "r", 2); !errors.Is(err, engine.ErrIdempotencyKeyReused) {
		t.Fatalf("the same request id with another quantity on another node: %v", err)
	}
	if c := led.Counts(); c.Confirms != 1 {
		t.Fatalf("%d orders confirmed, want 1", c.Confirms)
	}
}

// A lease that Redis ran but whose answer was lost (Redis failed after the
// script) leaves units leased to a node that never got them. Once the pool
// is empty and the node idle, it trims its lease to what it holds: the units
// go back to the pool and are sold.
func TestLostLeaseAnswerIsTrimmed(t *testing.T) {
	pool := &enginetest.Ledger{}
	now := time.Now()
	clock := func() time.Time { return now }
	e := newEngine(t, engine.Options{Sink: &enginetest.Sink{}, Catalog: &enginetest.Catalog{}, Ledger: pool, MaxLease: 4, Now: clock})
	put(t, e, "it", 10, 1)
	pool.LoseNextLeaseAnswer()
	if _, _, err := buy(e, "first", "", 1); !errors.Is(err, engine.ErrUnavailable) {
		t.Fatalf("a purchase whose lease answer was lost: %v", err)
	}
	sold := 0
	for u := 0; u < 20; u++ {
		if _, _, err := buy(e, fmt.Sprint("u", u), "", 1); err == nil {
			sold++
		}
	}
	if sold == 10 {
		t.Fatal("nothing was stranded by the lost answer")
	}
	now = now.Add(2 * time.Second)
	e.ReturnIdleLeases(now)
	e.RefreshPools()
	for u := 0; u < 20; u++ {
		if _, _, err := buy(e, fmt.Sprint("v", u), "", 1); err == nil {
			sold++
		}
	}
	if sold != 10 {
		t.Fatalf("%d of 10 units sold after the trim", sold)
	}
}

// A request id that won on another node and is reused here for another
// item: before selling, the node hears the feed (SyncFeed), learns the
// winner, and answers 422 instead of a second order.
func TestReuseOnAnotherNodeWaitsForTheFeed(t *testing.T) {
	led := &enginetest.Ledger{}
	a := newEngine(t, engine.Options{NodeID: 1, Sink: &enginetest.Sink{}, Catalog: &enginetest.Catalog{}, Ledger: led})
	var b *engine.Engine
	var heard []*engine.Order // what the feed carries to b
	b = newEngine(t, engine.Options{NodeID: 2, Sink: &enginetest.Sink{}, Catalog: &enginetest.Catalog{}, Ledger: led,
		SyncFeed: func(context.Context) error {
			for _, o := range heard {
				b.Remember(o)
			}
			return nil
		}})
	for _, e := range []*engine.Engine{a, b} {
		put(t, e, "it", 5, 1)
		if _, _, err := e.PutItem(context.Background(), engine.Item{ID: "other", Name: "o", PriceCents: 1, Stock: 5, PerUserLimit: 1}); err != nil {
			t.Fatal(err)
		}
	}
	won, _, err := buy(a, "u", "r1", 1)
	if err != nil {
		t.Fatal(err)
	}
	heard = append(heard, won)
	if _, _, err := b.Purchase(context.Background(), engine.PurchaseRequest{ItemID: "other", UserID: "u", RequestID: "r1", Quantity: 1}); !errors.Is(err, engine.ErrIdempotencyKeyReused) {
		t.Fatalf("the request id reused for another item on another node: %v, want 422", err)
	}
	if again, replayed, err := buy(b, "u", "r1", 1); err != nil || !replayed || again.ID != won.ID {
		t.Fatalf("the winner's retry on the other node: %+v %v %v", again, replayed, err)
	}
}
