package mysqlstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/flashsale/flashsale/codes"
	"github.com/flashsale/flashsale/engine"
	"github.com/flashsale/flashsale/internal/mysqltest"
)

func open(t *testing.T, dsn string, tables int) *Store {
	t.Helper()
	s, err := Open(context.Background(), Options{DSN: dsn, Tables: tables, Workers: 4, MaxRows: 7})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func orders(n int, first uint64) []*engine.Order {
	out := make([]*engine.Order, n)
	for i := range out {
		req := ""
		if i%2 == 0 {
			req = fmt.Sprintf("r|%d", i) // any printable character
		}
		out[i] = &engine.Order{ID: first + uint64(i), ItemID: "it", UserID: fmt.Sprintf("u-%d", i%40), Quantity: 1,
			PriceCents: 19900, RequestID: req, CreatedAt: time.UnixMilli(1_800_000_000_123 + int64(i)).UTC()}
	}
	return out
}

// TestWriteIsIdempotent: batches split across tables and statements land
// once, a redelivered batch adds nothing, and every field reads back.
func TestWriteIsIdempotent(t *testing.T) {
	ctx := context.Background()
	s := open(t, mysqltest.DSN(t), 8)
	in := orders(100, 1000)
	if err := s.Write(ctx, in); err != nil {
		t.Fatal(err)
	}
	if err := s.Write(ctx, append(in[50:], orders(10, 5000)...)); err != nil { // redelivery and new ones
		t.Fatal(err)
	}
	if n, err := s.Count(ctx); err != nil || n != 110 {
		t.Fatalf("rows: %d %v, want 110", n, err)
	}
	for _, want := range in[:3] {
		got, ok, err := s.Order(ctx, want.ID)
		if err != nil || !ok {
			t.Fatalf("order %d: %v %v", want.ID, ok, err)
		}
		w := *want
		w.Status = engine.Persisted
		if *got != w {
			t.Fatalf("order read back\n got %+v\nwant %+v", got, w)
		}
	}
	if _, ok, err := s.Order(ctx, 1); ok || err != nil {
		t.Fatalf("missing order: %v %v", ok, err)
	}
	list, err := s.UserOrders(ctx, "u-3")
	if err != nil || len(list) != 4 { // 3, 43, 83 and the later 3
		t.Fatalf("user orders: %d %v", len(list), err)
	}
	for i := 1; i < len(list); i++ {
		if list[i].ID >= list[i-1].ID {
			t.Fatal("user orders not newest first")
		}
	}
	if sold, _ := s.Sold(ctx, "it"); sold != 110 {
		t.Fatalf("sold %d", sold)
	}
	// One user's orders are in one table, and the users spread.
	seen := map[string]bool{}
	for i := 0; i < 40; i++ {
		seen[s.TableOf(fmt.Sprintf("u-%d", i))] = true
	}
	if len(seen) < 5 {
		t.Fatalf("40 users fell into %d of 8 tables", len(seen))
	}
}

// TestMigration is idempotent and refuses another number of tables.
func TestMigration(t *testing.T) {
	dsn := mysqltest.DSN(t)
	open(t, dsn, 4)
	open(t, dsn, 4)
	_, err := Open(context.Background(), Options{DSN: dsn, Tables: 8})
	if err == nil || !strings.Contains(err.Error(), "holds 4 order tables") {
		t.Fatalf("another table count: %v", err)
	}
}

// TestDurable: what is of record beside the orders. Items read back as
// saved; the generation is started once and set by a rebuild; Settled tells
// aborted from stored; Tallies counts each item's units, users and recent
// request ids in one pass over the tables.
func TestDurable(t *testing.T) {
	ctx := context.Background()
	s := open(t, mysqltest.DSN(t), 4)
	a := engine.Item{ID: "a", Name: "A", PriceCents: 100, Stock: 10, PerUserLimit: 2, StartsAt: time.UnixMilli(1_800_000_000_000).UTC()}
	b := engine.Item{ID: "b", Name: "B", PriceCents: 5, Stock: 3, PerUserLimit: 1, Ended: true}
	for _, it := range []engine.Item{a, b, a} {
		if err := s.SaveItem(ctx, it); err != nil {
			t.Fatal(err)
		}
	}
	if items, err := s.Items(ctx); err != nil || len(items) != 2 || items[0] != a || items[1] != b {
		t.Fatalf("items: %+v %v", items, err)
	}
	if g, err := s.StartGeneration(ctx, "g1"); err != nil || g != "g1" {
		t.Fatalf("first generation: %q %v", g, err)
	}
	if g, err := s.StartGeneration(ctx, "g2"); err != nil || g != "g1" {
		t.Fatalf("a second start must keep the first: %q %v", g, err)
	}
	if err := s.SetGeneration(ctx, "g1", "g3"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetGeneration(ctx, "g1", "g4"); !errors.Is(err, ErrGenerationMoved) {
		t.Fatalf("a rebuild from a generation that moved on: %v", err)
	}
	if g, _ := s.Generation(ctx); g != "g3" {
		t.Fatalf("generation after a rebuild: %q", g)
	}
	now := time.Now().UTC().Truncate(time.Millisecond)
	recent := engine.FirstOrderIDAt(now)
	os := []*engine.Order{
		{ID: 1, ItemID: "a", UserID: "u1", Quantity: 2, PriceCents: 200, RequestID: "old", CreatedAt: time.UnixMilli(1).UTC()},
		{ID: recent + 1, ItemID: "a", UserID: "u2", Quantity: 1, PriceCents: 100, RequestID: "new", CreatedAt: now},
		{ID: recent + 2, ItemID: "b", UserID: "u1", Quantity: 1, PriceCents: 5, CreatedAt: now},
		{ID: recent + 3, ItemID: "gone", UserID: "u3", Quantity: 1, PriceCents: 5, CreatedAt: now},
	}
	if err := s.Write(ctx, os); err != nil {
		t.Fatal(err)
	}
	if err := s.Abort(ctx, recent+9); err != nil {
		t.Fatal(err)
	}
	aborted, stored, err := s.Settled(ctx, []*engine.Order{os[0], os[2], {ID: recent + 9, UserID: "u9"}, {ID: recent + 8, UserID: "u8"}})
	if err != nil || len(aborted) != 1 || !aborted[recent+9] || len(stored) != 2 || !stored[1] || !stored[recent+2] {
		t.Fatalf("settled: aborted %v stored %v %v", aborted, stored, err)
	}
	ts, err := s.Tallies(ctx, []engine.Item{a, b}, now.Add(-time.Minute))
	if err != nil || len(ts) != 2 {
		t.Fatalf("tallies: %+v %v", ts, err)
	}
	if ta := ts[0]; ta.Item != a || ta.Sold != 3 || ta.Holdings["u1"] != 2 || ta.Holdings["u2"] != 1 || len(ta.Recent) != 1 || ta.Recent[0].RequestID != "new" {
		t.Fatalf("tally of a: %+v", ta)
	}
	if tb := ts[1]; tb.Sold != 1 || tb.Holdings["u1"] != 1 || len(tb.Recent) != 0 {
		t.Fatalf("tally of b: %+v", tb)
	}
}

// Codes in the order database: batch numbers from one sequence, a name
// once; a code redeemed once, whoever comes second gets the first.
func TestCodes(t *testing.T) {
	ctx := context.Background()
	s := open(t, mysqltest.DSN(t), 4)
	a, created, err := s.CreateBatch(ctx, codes.Batch{Name: "a", Key: 1, Count: 10, ValueCents: 500, Expires: time.Unix(1_900_000_000, 0).UTC()})
	if err != nil || !created || a.Number == 0 {
		t.Fatalf("first batch: %+v %v %v", a, created, err)
	}
	if again, created, err := s.CreateBatch(ctx, codes.Batch{Name: "a", Key: 1, Count: 99}); err != nil || created || again != a {
		t.Fatalf("the name again: %+v %v %v", again, created, err)
	}
	b, _, err := s.CreateBatch(ctx, codes.Batch{Name: "b", Key: 1, Count: 1})
	if err != nil || b.Number <= a.Number {
		t.Fatalf("second batch: %+v %v", b, err)
	}
	if got, ok, err := s.FindBatch(ctx, a.Number); err != nil || !ok || got != a {
		t.Fatalf("find: %+v %v %v", got, ok, err)
	}
	if _, ok, err := s.FindBatch(ctx, 999999); err != nil || ok {
		t.Fatalf("find a batch that is not: %v %v", ok, err)
	}
	at := time.UnixMilli(1_800_000_000_123).UTC()
	r := &codes.Redemption{Batch: "a", Number: a.Number, Serial: 3, UserID: "u1", At: at}
	if first, err := s.Redeem(ctx, r); err != nil || first != r {
		t.Fatalf("redeem: %+v %v", first, err)
	}
	if first, err := s.Redeem(ctx, &codes.Redemption{Batch: "a", Number: a.Number, Serial: 3, UserID: "u2", At: at.Add(time.Second)}); err != nil ||
		first.UserID != "u1" || !first.At.Equal(at) {
		t.Fatalf("the code again: %+v %v", first, err)
	}
	if all, err := s.Batches(ctx); err != nil || len(all) != 2 {
		t.Fatalf("batches: %+v %v", all, err)
	}
}
