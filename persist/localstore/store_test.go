package sqlitestore

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/flashsale/flashsale/engine"
	"github.com/flashsale/flashsale/engine/enginetest"
	"github.com/flashsale/flashsale/internal/promtest"
)

func openStore(t testing.TB, dir string) *Store {
	t.Helper()
	s, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

var t0 = time.Date(2026, 11, 11, 12, 0, 0, 0, time.UTC)

func TestGroupCommitAndReload(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	ctx := context.Background()
	item := engine.Item{ID: "it", Name: "Phone", PriceCents: 500, Stock: 1000, PerUserLimit: 2,
		StartsAt: t0, EndsAt: t0.Add(time.Hour)}
	if err := s.SaveItem(ctx, item); err != nil {
		t.Fatal(err)
	}
	base := engine.FirstOrderIDAt(t0)
	var wg sync.WaitGroup
	const n = 500
	for i := range n {
		wg.Go(func() {
			req := ""
			if i%2 == 0 {
				req = fmt.Sprintf("r%d", i)
			}
			if err := s.Append(ctx, enginetest.Order(base+uint64(i), fmt.Sprintf("u%d", i%100), req)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	// Concurrent appends share commits, and every order is in one.
	metrics := promtest.Of(s.Collectors()...)
	if commits, orders := promtest.Value(metrics, "flashsale_store_commit_seconds"), promtest.Sum(metrics, "flashsale_store_commit_batch_orders"); commits >= n || orders != n {
		t.Fatalf("%v commits for %v orders; want fewer commits than %d orders", commits, orders, n)
	}
	if err := s.Check(ctx); err != nil {
		t.Fatal(err)
	}
	o, ok, err := s.Order(ctx, base+2)
	if err != nil || !ok || o.UserID != "u2" || o.RequestID != "r2" || o.Status != engine.Persisted || !o.CreatedAt.Equal(engine.OrderIDTime(base+2)) {
		t.Fatalf("order: %+v %v %v", o, ok, err)
	}
	if _, ok, _ := s.Order(ctx, 1); ok {
		t.Fatal("found a missing order")
	}
	list, err := s.UserOrders(ctx, "u7")
	if err != nil || len(list) != 5 || list[0].ID < list[1].ID {
		t.Fatalf("user orders: %d %v", len(list), err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Append(ctx, enginetest.Order(base+n, "x", "")); err != ErrClosed {
		t.Fatalf("append after close: %v", err)
	}

	// Reopen: everything is there.
	s = openStore(t, dir)
	defer s.Close()
	snap, err := s.Load(ctx, 10*time.Minute, t0.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Items) != 1 || snap.Items[0].Sold != n || snap.Items[0].Item != item {
		t.Fatalf("items: %+v", snap.Items)
	}
	if len(snap.Holdings) != 100 || snap.Holdings[0].Units != 5 {
		t.Fatalf("holdings: %d %+v", len(snap.Holdings), snap.Holdings[0])
	}
	if len(snap.Replays) != n/2 || snap.Replays[0].Status != engine.Accepted {
		t.Fatalf("replays: %d", len(snap.Replays))
	}
	if snap.LastOrderID != base+n-1 {
		t.Fatalf("last id %d", snap.LastOrderID)
	}
	// Past the window, no replays are loaded.
	snap, _ = s.Load(ctx, 10*time.Minute, t0.Add(11*time.Minute))
	if len(snap.Replays) != 0 {
		t.Fatalf("replays past the window: %d", len(snap.Replays))
	}
}

func TestDataDirLocked(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	if _, err := Open(Options{Dir: dir}); err == nil {
		t.Fatal("second open of a data directory succeeded")
	}
	s.Close()
	openStore(t, dir).Close()
}

func TestFailedCommitStoresNothing(t *testing.T) {
	s := openStore(t, t.TempDir())
	defer s.Close()
	ctx := context.Background()
	id := engine.FirstOrderIDAt(t0)
	if err := s.Append(ctx, enginetest.Order(id, "u", "")); err != nil {
		t.Fatal(err)
	}
	// A duplicate id fails its whole batch, and Check reports it.
	if err := s.Append(ctx, enginetest.Order(id, "u", "")); err == nil {
		t.Fatal("duplicate order id accepted")
	}
	if p := s.lastErr.Load(); p == nil {
		t.Fatal("a failed commit is not recorded")
	}
	// The database itself is fine, so Check's probe write clears the failure
	// without waiting for another order.
	if err := s.Check(ctx); err != nil {
		t.Fatalf("Check after a failed commit on a healthy database: %v", err)
	}
	if p := s.lastErr.Load(); p != nil {
		t.Fatal("probe did not clear the failure")
	}
	if err := s.Append(ctx, enginetest.Order(id+1, "u", "")); err != nil {
		t.Fatal(err)
	}
}

func TestMaxBatchSeals(t *testing.T) {
	s, err := Open(Options{Dir: t.TempDir(), MaxBatch: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	base := engine.FirstOrderIDAt(t0)
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			if err := s.Append(context.Background(), enginetest.Order(base+uint64(i), "u", "")); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	snap, err := s.Load(context.Background(), time.Minute, t0)
	if err != nil || snap.LastOrderID != base+49 {
		t.Fatalf("%v %d", err, snap.LastOrderID)
	}
}

// BenchmarkAppend measures group commit throughput with many concurrent
// buyers, as the HTTP front produces them: orders/s = 1e9 / ns/op. Users are
// distinct, as in a sale: the index by user is written at random places.
func BenchmarkAppend(b *testing.B) {
	users := make([]string, 1<<16)
	for i := range users {
		users[i] = fmt.Sprintf("user-%d", i*7919)
	}
	for _, buyers := range []int{1, 64, 1024} {
		b.Run(fmt.Sprintf("buyers=%d", buyers), func(b *testing.B) {
			s := openStore(b, b.TempDir())
			defer s.Close()
			base := engine.FirstOrderIDAt(time.Now())
			var next sync.Mutex
			id := base
			b.SetParallelism(max(1, buyers/2))
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					next.Lock()
					id++
					o := enginetest.Order(id, users[id%uint64(len(users))], "req")
					next.Unlock()
					if err := s.Append(context.Background(), o); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}

func TestCheckFailsWhileTheDiskRefuses(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	defer s.Close()
	ctx := context.Background()
	id := engine.FirstOrderIDAt(t0)
	// Make the database read-only under the store: commits and probes fail.
	if _, err := s.w.Exec(`PRAGMA query_only = 1`); err != nil {
		t.Fatal(err)
	}
	if err := s.Append(ctx, enginetest.Order(id, "u", "")); err == nil {
		t.Fatal("commit succeeded on a read-only database")
	}
	if err := s.Check(ctx); err == nil {
		t.Fatal("Check is fine while writes fail")
	}
	if _, err := s.w.Exec(`PRAGMA query_only = 0`); err != nil {
		t.Fatal(err)
	}
	if err := s.Check(ctx); err != nil {
		t.Fatalf("Check after the disk came back: %v", err)
	}
	if err := s.Append(ctx, enginetest.Order(id, "u", "")); err != nil {
		t.Fatal(err)
	}
}

// Durability rests on these settings of the writer's connection: a 201 is
// sent after a commit, and only WAL with synchronous=FULL fsyncs on commit.
func TestWriterIsDurable(t *testing.T) {
	s := openStore(t, t.TempDir())
	defer s.Close()
	var mode string
	var sync int
	if err := s.w.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
		t.Fatalf("journal_mode %q (%v), want wal", mode, err)
	}
	if err := s.w.QueryRow(`PRAGMA synchronous`).Scan(&sync); err != nil || sync != 2 {
		t.Fatalf("synchronous %d (%v), want 2 (FULL)", sync, err)
	}
}

// An item's creation time and each user's first order come back at start
// (the leaderboards), also from a store made before the creation time was
// kept (the column is added).
func TestBoardAndCreationTimeReload(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	old, err := sql.Open("sqlite", "file:"+filepath.Join(dir, FileName))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := old.Exec(`CREATE TABLE items (id TEXT PRIMARY KEY, name TEXT NOT NULL, price_cents INTEGER NOT NULL,
		stock INTEGER NOT NULL, per_user_limit INTEGER NOT NULL, starts_at INTEGER, ends_at INTEGER, ended INTEGER NOT NULL DEFAULT 0)`); err != nil {
		t.Fatal(err)
	}
	old.Close()
	s := openStore(t, dir)
	it := engine.Item{ID: "it", Name: "x", PriceCents: 1, Stock: 9, PerUserLimit: 2, Created: t0}
	if err := s.SaveItem(ctx, it); err != nil {
		t.Fatal(err)
	}
	for i, u := range []string{"b", "a", "b"} {
		if err := s.Append(ctx, &engine.Order{ID: uint64(10 + i), ItemID: "it", UserID: u, Quantity: 1, CreatedAt: t0.Add(time.Duration(i) * time.Second)}); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	s = openStore(t, dir)
	defer s.Close()
	snap, err := s.Load(ctx, time.Hour, t0)
	if err != nil || len(snap.Items) != 1 || !snap.Items[0].Item.Created.Equal(t0) {
		t.Fatalf("items: %+v %v", snap.Items, err)
	}
	firsts := map[string]uint64{}
	for _, b := range snap.Board {
		firsts[b.UserID] = b.OrderID
	}
	if len(firsts) != 2 || firsts["b"] != 10 || firsts["a"] != 11 {
		t.Fatalf("first orders: %+v", snap.Board)
	}
}
