package engine_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/flashsale/flashsale/engine"
	"github.com/flashsale/flashsale/engine/enginetest"
)

var errBoom = errors.New("boom")

// fixture is a standalone engine on fakes, with a clock that moves only
// when told.
type fixture struct {
	e     *engine.Engine
	sink  *enginetest.Sink
	cat   *enginetest.Catalog
	clock *enginetest.Clock
}

func newFixture(t testing.TB, shards int) *fixture {
	t.Helper()
	f := &fixture{sink: &enginetest.Sink{}, cat: &enginetest.Catalog{},
		clock: enginetest.NewClock(time.Date(2026, 11, 11, 12, 0, 0, 0, time.UTC))}
	f.e = newEngine(t, engine.Options{Shards: shards, Sink: f.sink, Catalog: f.cat, Now: f.clock.Now})
	return f
}

// newEngine builds an engine that is closed when the test ends.
func newEngine(t testing.TB, opts engine.Options) *engine.Engine {
	t.Helper()
	e, err := engine.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e
}

func (f *fixture) put(t testing.TB, id string, stock, limit int64) {
	t.Helper()
	put(t, f.e, id, stock, limit)
}

func put(t testing.TB, e *engine.Engine, id string, stock, limit int64) {
	t.Helper()
	if _, _, err := e.PutItem(context.Background(), engine.Item{ID: id, Name: "Item " + id, PriceCents: 100, Stock: stock, PerUserLimit: limit}); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) buy(user, reqID string, q int64) (*engine.Order, bool, error) {
	return buy(f.e, user, reqID, q)
}

// buy purchases q units of item "it".
func buy(e *engine.Engine, user, reqID string, q int64) (*engine.Order, bool, error) {
	return e.Purchase(context.Background(), engine.PurchaseRequest{ItemID: "it", UserID: user, RequestID: reqID, Quantity: q})
}

// checkBalance asserts the stock equation of an item at rest.
func checkBalance(t testing.TB, e *engine.Engine, id string) engine.ItemView {
	t.Helper()
	v, ok := e.Item(id)
	if !ok {
		t.Fatalf("item %s missing", id)
	}
	if v.StockLeft < 0 || v.Pending != 0 || v.StockLeft+v.Sold != v.Stock {
		t.Fatalf("item %s out of balance: stock %d = left %d + sold %d + pending %d", id, v.Stock, v.StockLeft, v.Sold, v.Pending)
	}
	return v
}
