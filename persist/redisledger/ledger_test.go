package redisledger

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/flashsale/flashsale/engine"
	"github.com/flashsale/flashsale/engine/enginetest"
	"github.com/flashsale/flashsale/internal/redistest"
	"github.com/flashsale/flashsale/ledger"
)

func client(t testing.TB) rueidis.Client { return redistest.Client(t) }

func prefix(t testing.TB, c rueidis.Client) string { return redistest.Prefix(t, c) }

func TestLedgerScripts(t *testing.T) {
	c := client(t)
	p := prefix(t, c)
	ctx := context.Background()
	n1, n2 := New(c, 1, Options{Prefix: p}), New(c, 2, Options{Prefix: p})
	if err := n1.PutItem(ctx, "it", 10, false); err != nil {
		t.Fatal(err)
	}
	if g, rem, err := n1.Lease(ctx, "it", 4); err != nil || g != 4 || rem != 6 {
		t.Fatalf("lease 1: %d %d %v", g, rem, err)
	}
	if g, rem, err := n2.Lease(ctx, "it", 100); err != nil || g != 6 || rem != 0 {
		t.Fatalf("lease 2: %d %d %v", g, rem, err)
	}
	if g, _, _ := n2.Lease(ctx, "it", 1); g != 0 {
		t.Fatal("leased from an empty pool")
	}
	first := enginetest.Order(111, "u", "r1")
	if o, err := n1.Claim(ctx, first, 1); err != nil || o != nil {
		t.Fatalf("claim: %v %v", o, err)
	}
	// The same request on another node: the first order, field for field.
	o, err := n2.Claim(ctx, enginetest.Order(222, "u", "r1"), 1)
	if err != nil || o == nil || *o != *first {
		t.Fatalf("replay on node 2: %+v %v, want %+v", o, err, first)
	}
	// Another request of the same user on another node: over the limit.
	if _, err := n2.Claim(ctx, enginetest.Order(333, "u", "r2"), 1); !errors.Is(err, engine.ErrLimitExceeded) {
		t.Fatalf("second claim across nodes: %v", err)
	}
	// A node cannot claim units it was not leased.
	if _, err := New(c, 3, Options{Prefix: p}).Claim(ctx, enginetest.Order(444, "v", ""), 1); !errors.Is(err, engine.ErrNotLeased) {
		t.Fatalf("claim without a lease: %v", err)
	}
	a, _ := n1.Audit(ctx, "it")
	if !a.Balanced() || a.Claimed != 1 || a.Leases["1"] != 3 || a.Leases["2"] != 6 {
		t.Fatalf("audit: %+v", a)
	}
	// Undo the claim: the unit goes back to node 1's lease, the id is free.
	if err := n1.Unclaim(ctx, first); err != nil {
		t.Fatal(err)
	}
	if o, err := n1.Claim(ctx, first, 1); err != nil || o != nil {
		t.Fatalf("claim after unclaim: %v %v", o, err)
	}
	n1.Unclaim(ctx, first)
	// Give back, restock, and refuse a total below what is out.
	if err := n2.GiveBack(ctx, "it", 100); err != nil {
		t.Fatal(err)
	}
	if rem, _ := n1.Remaining(ctx, "it"); rem != 6 {
		t.Fatalf("remaining after give-back: %d", rem)
	}
	if err := n1.PutItem(ctx, "it", 5, false); err != nil {
		t.Fatalf("lower to 5: %v", err)
	}
	if err := n1.PutItem(ctx, "it", 3, false); !errors.Is(err, engine.ErrStockBelowSold) {
		t.Fatalf("lower below the leases: %v", err)
	}
	if a, _ := n1.Audit(ctx, "it"); !a.Balanced() || a.Total != 5 {
		t.Fatalf("audit at the end: %+v", a)
	}
	if rem, err := n1.Remaining(ctx, "nothing"); err != nil || rem != 0 {
		t.Fatalf("remaining of an unknown item: %d %v", rem, err)
	}
}

// Three engines share one Redis and race 20,000 users (a fifth of them on
// two nodes at once) for 1,000 units with per-user limit 1: never more than
// 1,000 sold, nobody over the limit across nodes, the pool in balance even
// mid-race; the stragglers give their leases back and late buyers sell the
// rest: exactly 1,000.
func TestThreeEnginesOnRedis(t *testing.T) {
	c := client(t)
	p := prefix(t, c)
	ctx := context.Background()
	const stock, users = 1000, 20000
	var engines []*engine.Engine
	var sinks []*enginetest.Sink
	var ledgers []*Ledger
	cat := NewCatalog(c, p, 0)
	feeds, stopFeeds := context.WithCancel(ctx)
	defer stopFeeds()
	for i := 1; i <= 3; i++ {
		l := New(c, i, Options{Prefix: p})
		sink := &enginetest.Sink{}
		e, err := engine.New(engine.Options{NodeID: i, Sink: sink, Catalog: cat, Ledger: l})
		if err != nil {
			t.Fatal(err)
		}
		defer e.Close()
		if _, _, err := e.PutItem(ctx, engine.Item{ID: "it", Name: "x", Stock: stock, PerUserLimit: 1}); err != nil {
			t.Fatal(err)
		}
		// Each node follows the cluster's events, as an edge node does.
		feed := NewFeed(c, p)
		go feed.Run(feeds, &Follower{Engine: e, Ledger: l, Catalog: cat}, e.SetFeedUp)
		for deadline := time.Now().Add(5 * time.Second); !feed.Up(); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("a feed did not come up")
			}
		}
		engines, sinks, ledgers = append(engines, e), append(sinks, sink), append(ledgers, l)
	}
	scriptsBefore := scriptCalls(t, c)
	var requests atomic.Int64
	var won atomic.Int64
	buy := func(e *engine.Engine, user string) {
		requests.Add(1)
		_, replayed, err := e.Purchase(ctx, engine.PurchaseRequest{ItemID: "it", UserID: user, RequestID: "r", Quantity: 1})
		switch {
		case err == nil && !replayed:
			won.Add(1)
		case err == nil, errors.Is(err, engine.ErrSoldOut), errors.Is(err, engine.ErrLimitExceeded), errors.Is(err, engine.ErrRequestInProgress):
		default:
			t.Errorf("purchase: %v", err)
		}
	}
	stop := make(chan struct{})
	audited := make(chan struct{})
	go func() {
		defer close(audited)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if a, err := ledgers[0].Audit(ctx, "it"); err == nil && (!a.Balanced() || a.Claimed > stock) {
				t.Errorf("mid-race audit: %+v", a)
			}
			time.Sleep(time.Millisecond)
		}
	}()
	work := make(chan int, 1024)
	var wg sync.WaitGroup
	for w := 0; w < 48; w++ {
		wg.Go(func() {
			for u := range work {
				buy(engines[u%3], fmt.Sprint("u", u))
				if u%5 == 0 {
					buy(engines[(u+1)%3], fmt.Sprint("u", u)) // again, elsewhere
				}
			}
		})
	}
	for u := 0; u < users; u++ {
		work <- u
	}
	close(work)
	wg.Wait()
	close(stop)
	<-audited
	if won.Load() > stock {
		t.Fatalf("oversold: %d of %d", won.Load(), stock)
	}
	// Redis sees about one script per winner, not one per request.
	scripts := scriptCalls(t, c) - scriptsBefore
	perPurchase := float64(scripts) / float64(requests.Load())
	t.Logf("%d scripts for %d purchases (%d units): %.3f per purchase", scripts, requests.Load(), stock, perPurchase)
	if perPurchase > 0.15 {
		t.Fatalf("%.3f Redis scripts per purchase; want about stock/requests = %.3f", perPurchase, float64(stock)/float64(requests.Load()))
	}
	for _, e := range engines {
		if err := e.GiveBackAll(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for u := 0; ; u++ {
		if rem, _ := ledgers[0].Remaining(ctx, "it"); rem == 0 {
			break
		}
		buy(engines[u%3], fmt.Sprint("late", u))
	}
	for _, e := range engines {
		e.GiveBackAll(ctx)
	}
	a, err := ledgers[0].Audit(ctx, "it")
	if err != nil || won.Load() != stock || a.Claimed != stock || a.Leased() != 0 || !a.Balanced() {
		t.Fatalf("after the sale: won %d, audit %+v (%v)", won.Load(), a, err)
	}
	held := map[string]int{}
	for _, s := range sinks {
		for _, o := range s.Orders() {
			if held[o.UserID]++; held[o.UserID] > 1 {
				t.Fatalf("user %s bought on two nodes", o.UserID)
			}
		}
	}
	if len(held) != stock {
		t.Fatalf("%d users hold orders, want %d", len(held), stock)
	}
}

// scriptCalls is how many scripts Redis has run (EVALSHA and EVAL).
func scriptCalls(t *testing.T, c rueidis.Client) int64 {
	info, err := c.Do(context.Background(), c.B().Info().Section("commandstats").Build()).ToString()
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, line := range strings.Split(info, "\n") {
		for _, cmd := range []string{"cmdstat_evalsha:", "cmdstat_eval:"} {
			if rest, ok := strings.CutPrefix(strings.TrimSpace(line), cmd); ok {
				var calls int64
				fmt.Sscanf(rest, "calls=%d", &calls)
				n += calls
			}
		}
	}
	return n
}

// Restore writes a large item in chunks: every user's count, every recent
// request id (an old one is left out), then the pool of the generation.
func TestRestoreInChunks(t *testing.T) {
	c := redistest.Client(t)
	p := redistest.Prefix(t, c)
	ctx := context.Background()
	l := New(c, 1, Options{Prefix: p, IdempotencyWindow: time.Minute, Generation: "g"})
	now := time.Now().UTC().Truncate(time.Millisecond)
	tally := ledger.Tally{Item: engine.Item{ID: "it", Stock: 5000}, Sold: 2500, Holdings: map[string]int64{}}
	for i := range 2500 {
		user := fmt.Sprint("u", i)
		tally.Holdings[user] = 1
		tally.Recent = append(tally.Recent, &engine.Order{ID: uint64(i + 1), ItemID: "it", UserID: user, Quantity: 1, RequestID: "r", CreatedAt: now})
	}
	tally.Recent = append(tally.Recent, &engine.Order{ID: 9999, ItemID: "it", UserID: "old", Quantity: 1, RequestID: "r", CreatedAt: now.Add(-time.Hour)})
	if err := l.Fence(ctx, "g", []string{"it"}); err != nil {
		t.Fatal(err)
	}
	if err := l.Restore(ctx, tally, "g", now); err != nil {
		t.Fatal(err)
	}
	if err := l.Activate(ctx, "g"); err != nil {
		t.Fatal(err)
	}
	if err := l.Activate(ctx, "g"); !errors.Is(err, ErrFencedAgain) {
		t.Fatalf("a second activation: %v", err)
	}
	if err := l.Restore(ctx, tally, "g2", now); err == nil {
		t.Fatal("a restore of a ledger not fenced for it")
	}
	k := l.keys("it")
	if n, err := c.Do(ctx, c.B().Hlen().Key(k.users).Build()).AsInt64(); err != nil || n != 2500 {
		t.Fatalf("users restored: %d %v", n, err)
	}
	if n, err := c.Do(ctx, c.B().Exists().Key(k.reqKey("u2499", "r")).Build()).AsInt64(); err != nil || n != 1 {
		t.Fatalf("the last recent request id: %d %v", n, err)
	}
	if n, _ := c.Do(ctx, c.B().Exists().Key(k.reqKey("old", "r")).Build()).AsInt64(); n != 0 {
		t.Fatal("a request id past the window was restored")
	}
	if a, err := l.Audit(ctx, "it"); err != nil || a.Total != 5000 || a.Remaining != 2500 || a.Claimed != 2500 || !a.Balanced() {
		t.Fatalf("pool: %+v %v", a, err)
	}
	if _, _, err := l.Lease(ctx, "it", 1); err != nil {
		t.Fatalf("a lease of the restored generation: %v", err)
	}
}
