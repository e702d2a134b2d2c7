package engine

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// memSink is an order sink in memory that can be told to fail.
type memSink struct {
	mu     sync.Mutex
	orders []*Order
	fail   error
}

func (s *memSink) Append(_ context.Context, o *Order) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return s.fail
	}
	s.orders = append(s.orders, o)
	return nil
}

func (s *memSink) setFail(err error) { s.mu.Lock(); s.fail = err; s.mu.Unlock() }

func (s *memSink) all() []*Order {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*Order(nil), s.orders...)
}

type memCatalog struct {
	mu    sync.Mutex
	items map[string]Item
	fail  error
}

func (c *memCatalog) SaveItem(_ context.Context, it Item) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fail != nil {
		return c.fail
	}
	if c.items == nil {
		c.items = map[string]Item{}
	}
	c.items[it.ID] = it
	return nil
}

// countingLedger counts claims and can fail them.
type countingLedger struct {
	mu        sync.Mutex
	claims    int
	unclaims  int
	failClaim error
}

func (l *countingLedger) Claim(context.Context, *Order, int64) (*Order, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.failClaim != nil {
		return nil, l.failClaim
	}
	l.claims++
	return nil, nil
}

func (l *countingLedger) Unclaim(context.Context, *Order) error {
	l.mu.Lock()
	l.unclaims++
	l.mu.Unlock()
	return nil
}

var errBoom = errors.New("boom")

type fixture struct {
	e      *Engine
	sink   *memSink
	cat    *memCatalog
	ledger *countingLedger
	clock  *fakeClock
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newFixture(t testing.TB, shards int) *fixture {
	t.Helper()
	f := &fixture{sink: &memSink{}, cat: &memCatalog{}, ledger: &countingLedger{},
		clock: &fakeClock{t: time.Date(2026, 11, 11, 12, 0, 0, 0, time.UTC)}}
	e, err := New(Options{Shards: shards, Sink: f.sink, Catalog: f.cat, Ledger: f.ledger, Now: f.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	f.e = e
	return f
}

func (f *fixture) put(t testing.TB, id string, stock, limit int64) {
	t.Helper()
	if _, _, err := f.e.PutItem(context.Background(), Item{ID: id, Name: "Item " + id, PriceCents: 100, Stock: stock, PerUserLimit: limit}); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) buy(user, reqID string, q int64) (*Order, bool, error) {
	return f.e.Purchase(context.Background(), PurchaseRequest{ItemID: "it", UserID: user, RequestID: reqID, Quantity: q})
}

// checkBalance asserts the stock equation of an item at rest.
func checkBalance(t testing.TB, e *Engine, id string) ItemView {
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
