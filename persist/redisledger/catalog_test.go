package redisledger

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/flashsale/flashsale/engine"
	"github.com/flashsale/flashsale/engine/enginetest"
)

// cachingClient is a client with client-side caching on, as a node has.
func cachingClient(t *testing.T) rueidis.Client {
	t.Helper()
	addr := os.Getenv("FLASHSALE_TEST_REDIS")
	if addr == "" {
		addr = "127.0.0.1:6379"
	}
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func TestCatalogIsSharedAndCached(t *testing.T) {
	p := prefix(t, client(t))
	a, b := NewCatalog(cachingClient(t), p, time.Minute), NewCatalog(cachingClient(t), p, time.Minute)
	ctx := context.Background()
	it := engine.Item{ID: "phone-1", Name: "Phone", PriceCents: 19900, Stock: 1000, PerUserLimit: 1,
		StartsAt: time.Date(2026, 11, 11, 12, 0, 0, 0, time.UTC)}
	if err := a.SaveItem(ctx, it); err != nil {
		t.Fatal(err)
	}
	items, err := b.Items(ctx)
	if err != nil || len(items) != 1 || items[0] != it {
		t.Fatalf("node b reads %+v (%v), want %+v", items, err, it)
	}
	// Nothing changed: node b's next read comes from its cache.
	if !b.cacheHit(ctx, "phone-1") {
		t.Fatal("a read of an unchanged item went to Redis")
	}
	// Node a ends the sale: Redis invalidates b's cache, b sees it at once.
	it.Ended = true
	if err := a.SaveItem(ctx, it); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Second)
	for {
		items, _ := b.Items(ctx)
		if len(items) == 1 && items[0].Ended {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node b still sees %+v a second after the change", items)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestEnginesFollowTheCatalog(t *testing.T) {
	raw := client(t)
	p := prefix(t, raw)
	ctx := context.Background()
	var engines []*engine.Engine
	for i := 1; i <= 2; i++ {
		c := cachingClient(t)
		l, cat := New(c, i, Options{Prefix: p}), NewCatalog(c, p, time.Second)
		e, err := engine.New(engine.Options{NodeID: i, Sink: &enginetest.Sink{}, Catalog: cat, Ledger: l})
		if err != nil {
			t.Fatal(err)
		}
		defer e.Close()
		engines = append(engines, e)
	}
	if _, _, err := engines[0].PutItem(ctx, engine.Item{ID: "it", Name: "x", Stock: 3, PerUserLimit: 1}); err != nil {
		t.Fatal(err)
	}
	// The second node learns of the item within a second (one 500 ms sync
	// tick; the test allows 1.5 s for a loaded machine), and sells it.
	deadline := time.Now().Add(1500 * time.Millisecond)
	for {
		if _, ok := engines[1].Item("it"); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("node 2 does not know the item a second after node 1 created it")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, _, err := engines[1].Purchase(ctx, engine.PurchaseRequest{ItemID: "it", UserID: "u", Quantity: 1}); err != nil {
		t.Fatalf("purchase on node 2: %v", err)
	}
	// An end of sale on node 1 reaches node 2.
	engines[0].EndItem(ctx, "it")
	deadline = time.Now().Add(1500 * time.Millisecond)
	for {
		_, _, err := engines[1].Purchase(ctx, engine.PurchaseRequest{ItemID: "it", UserID: "v", Quantity: 1})
		if err == engine.ErrSaleEnded {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node 2 still sells a second after the end: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// cacheHit reports whether reading item id was answered from the cache;
// the tests ask.
func (c *Catalog) cacheHit(ctx context.Context, id string) bool {
	return c.c.DoCache(ctx, c.c.B().Hgetall().Key(c.defKey(id)).Cache(), c.ttl).IsCacheHit()
}
