package redisledger

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"
)

// client connects to the real Redis (FLASHSALE_TEST_REDIS, default
// 127.0.0.1:6379). Without one the tests skip, except in CI.
func client(t testing.TB) rueidis.Client {
	t.Helper()
	addr := os.Getenv("FLASHSALE_TEST_REDIS")
	if addr == "" {
		addr = "127.0.0.1:6379"
	}
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}, DisableCache: true})
	if err == nil {
		err = c.Do(context.Background(), c.B().Ping().Build()).Error()
	}
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("Redis at %s: %v (.ci/run starts it)", addr, err)
		}
		t.Skipf("no Redis at %s: %v", addr, err)
	}
	t.Cleanup(c.Close)
	return c
}

// prefix isolates one test's keys, and deletes them afterwards.
func prefix(t testing.TB, c rueidis.Client) string {
	p := fmt.Sprintf("fstest-%d", rand.Uint64())
	t.Cleanup(func() {
		ctx := context.Background()
		keys, _ := c.Do(ctx, c.B().Keys().Pattern("{"+p+":*").Build()).AsStrSlice()
		for _, k := range keys {
			c.Do(ctx, c.B().Del().Key(k).Build())
		}
	})
	return p
}

func TestLedgerScripts(t *testing.T) {
	c := client(t)
	p := prefix(t, c)
	ctx := context.Background()
	n1, n2 := New(c, 1, Options{Prefix: p}), New(c, 2, Options{Prefix: p})
	if rem, err := n1.PutItem(ctx, "it", 10); err != nil || rem != 10 {
		t.Fatalf("put: %d %v", rem, err)
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
	first := Claim{Item: "it", User: "u", RequestID: "r1", Quantity: 1, Limit: 1, OrderID: 111}
	if replay, _, err := n1.Claim(ctx, first); err != nil || replay {
		t.Fatalf("claim: %v %v", replay, err)
	}
	// The same request on another node: its first answer.
	if replay, id, err := n2.Claim(ctx, Claim{Item: "it", User: "u", RequestID: "r1", Quantity: 1, Limit: 1, OrderID: 222}); err != nil || !replay || id != 111 {
		t.Fatalf("replay on node 2: %v %d %v", replay, id, err)
	}
	// Another request of the same user on another node: over the limit.
	if _, _, err := n2.Claim(ctx, Claim{Item: "it", User: "u", RequestID: "r2", Quantity: 1, Limit: 1, OrderID: 333}); !errors.Is(err, ErrOverLimit) {
		t.Fatalf("second claim across nodes: %v", err)
	}
	// A node cannot claim units it was not leased.
	n3 := New(c, 3, Options{Prefix: p})
	if _, _, err := n3.Claim(ctx, Claim{Item: "it", User: "v", Quantity: 1, Limit: 1, OrderID: 444}); !errors.Is(err, ErrNotLeased) {
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
	if replay, _, err := n1.Claim(ctx, first); err != nil || replay {
		t.Fatalf("claim after unclaim: %v %v", replay, err)
	}
	n1.Unclaim(ctx, first)
	// Give back, restock, and refuse a total below what is out.
	if got, err := n2.GiveBack(ctx, "it", 100); err != nil || got != 6 {
		t.Fatalf("give back: %d %v", got, err)
	}
	if rem, err := n1.PutItem(ctx, "it", 5); err != nil || rem != 1 {
		t.Fatalf("lower to 5: %d %v", rem, err)
	}
	if _, err := n1.PutItem(ctx, "it", 3); !errors.Is(err, ErrStockBelowClaimed) {
		t.Fatalf("lower below the leases: %v", err)
	}
	if a, _ := n1.Audit(ctx, "it"); !a.Balanced() || a.Total != 5 {
		t.Fatalf("audit at the end: %+v", a)
	}
}

// node is a test stand-in for an engine: units leased in batches, sold to
// users one claim at a time, leftovers given back.
type node struct {
	l     *Ledger
	mu    sync.Mutex
	local int64
}

func (n *node) buy(ctx context.Context, item, user string, id uint64) (bool, error) {
	n.mu.Lock()
	if n.local == 0 {
		g, _, err := n.l.Lease(ctx, item, 20)
		if err != nil {
			n.mu.Unlock()
			return false, err
		}
		n.local += g
	}
	if n.local == 0 {
		n.mu.Unlock()
		return false, nil // sold out everywhere this node can see
	}
	n.local--
	n.mu.Unlock()
	replay, _, err := n.l.Claim(ctx, Claim{Item: item, User: user, RequestID: "r", Quantity: 1, Limit: 1, OrderID: id})
	if err != nil || replay {
		n.mu.Lock()
		n.local++ // no unit was claimed: it stays with the node
		n.mu.Unlock()
		if errors.Is(err, ErrOverLimit) {
			err = nil
		}
		return false, err // a replay is the first answer again, not a new win
	}
	return true, nil
}

func (n *node) giveBack(ctx context.Context, item string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	got, _ := n.l.GiveBack(ctx, item, n.local)
	n.local -= got
}

// Three nodes race 2,000 users (some trying twice, on other nodes) for 500
// units: never more than 500 claimed, nobody over 1, and once the
// stragglers give their leases back and the last users buy, exactly 500.
func TestThreeNodesNeverOversell(t *testing.T) {
	c := client(t)
	p := prefix(t, c)
	ctx := context.Background()
	const stock, users = 500, 2000
	nodes := []*node{{l: New(c, 1, Options{Prefix: p})}, {l: New(c, 2, Options{Prefix: p})}, {l: New(c, 3, Options{Prefix: p})}}
	nodes[0].l.PutItem(ctx, "it", stock)
	queue := make(chan int, users*2)
	for u := 0; u < users; u++ {
		queue <- u
		if u%5 == 0 {
			queue <- u // tries again, probably on another node
		}
	}
	close(queue)
	var won atomic.Int64
	var ids atomic.Uint64
	var wg sync.WaitGroup
	stopAudit := make(chan struct{})
	go func() { // the pool never goes out of balance, even mid-race
		for {
			select {
			case <-stopAudit:
				return
			default:
			}
			if a, err := nodes[0].l.Audit(ctx, "it"); err == nil && (!a.Balanced() || a.Claimed > stock) {
				t.Errorf("mid-race audit: %+v", a)
			}
			time.Sleep(time.Millisecond)
		}
	}()
	for w := 0; w < 24; w++ {
		n := nodes[w%3]
		wg.Go(func() {
			for u := range queue {
				ok, err := n.buy(ctx, "it", fmt.Sprintf("u%d", u), ids.Add(1))
				if err != nil {
					t.Error(err)
					return
				}
				if ok {
					won.Add(1)
				}
			}
		})
	}
	wg.Wait()
	close(stopAudit)
	// The stragglers give back; late users buy what was stranded.
	for _, n := range nodes {
		n.giveBack(ctx, "it")
	}
	for u := users; ; u++ {
		a, _ := nodes[0].l.Audit(ctx, "it")
		if a.Remaining == 0 {
			break
		}
		if ok, err := nodes[u%3].buy(ctx, "it", fmt.Sprintf("late%d", u), ids.Add(1)); err != nil {
			t.Fatal(err)
		} else if ok {
			won.Add(1)
		}
	}
	for _, n := range nodes {
		n.giveBack(ctx, "it")
	}
	a, err := nodes[0].l.Audit(ctx, "it")
	if err != nil || !a.Balanced() || a.Claimed != stock || won.Load() != stock || a.Leased() != 0 || a.Remaining != 0 {
		t.Fatalf("after the sale: won %d, audit %+v (%v)", won.Load(), a, err)
	}
	held, _ := c.Do(ctx, c.B().Hgetall().Key("{"+p+":it}:users").Build()).AsIntMap()
	if len(held) != stock {
		t.Fatalf("%d users hold units, want %d", len(held), stock)
	}
	for u, n := range held {
		if n != 1 {
			t.Fatalf("user %s holds %d", u, n)
		}
	}
}
