package localstore

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flashsale/flashsale/codes"
	"github.com/flashsale/flashsale/engine"
	"github.com/flashsale/flashsale/engine/enginetest"
	"github.com/flashsale/flashsale/internal/promtest"
	"github.com/flashsale/flashsale/persist/seglog"
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
	seg, _ := os.ReadFile(filepath.Join(dir, LogDir, "00000001.log"))
	records := len(bytes.TrimRight(seg, "\x00")) // not the zeros written ahead
	if size, segs := promtest.Value(metrics, "flashsale_store_log_bytes"), promtest.Value(metrics, "flashsale_store_log_segments"); size != float64(records) || segs != 1 {
		t.Fatalf("the log's size: %v bytes in %v segments, %d bytes of records on disk", size, segs, records)
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
	var refuse atomic.Bool
	s, err := Open(Options{Dir: dir, Fault: func(op string) error {
		if refuse.Load() && op != "truncate" {
			return errors.New("injected: the disk refuses")
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	id := engine.FirstOrderIDAt(t0)
	refuse.Store(true)
	if err := s.Append(ctx, enginetest.Order(id, "u", "lost")); err == nil {
		t.Fatal("commit succeeded while the disk refuses")
	}
	if err := s.Check(ctx); err == nil {
		t.Fatal("Check is fine while writes fail")
	}
	if _, ok, _ := s.Order(ctx, id); ok {
		t.Fatal("a failed order is readable")
	}
	refuse.Store(false)
	if err := s.Check(ctx); err != nil {
		t.Fatalf("Check after the disk came back: %v", err)
	}
	if err := s.Append(ctx, enginetest.Order(id+1, "u", "kept")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	// The failed order never comes back; the one after it does.
	s = openStore(t, dir)
	defer s.Close()
	snap, err := s.Load(ctx, time.Hour, t0)
	if err != nil || len(snap.Replays) != 1 || snap.Replays[0].RequestID != "kept" {
		t.Fatalf("after reopening: %v %+v", err, snap.Replays)
	}
}

// A crash in the middle of a commit leaves a torn record at the log's end:
// the store opens, cuts it, keeps every order acknowledged before, and goes
// on appending.
func TestTornTailAfterACrash(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openStore(t, dir)
	base := engine.FirstOrderIDAt(t0)
	for i := range 3 {
		if err := s.Append(ctx, enginetest.Order(base+uint64(i), "u", "")); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	seg := filepath.Join(dir, LogDir, "00000001.log")
	data, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(seg, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	// A record's head and part of it, right after the records (over the
	// zeros written ahead of them).
	f.WriteAt([]byte{40, 0, 0, 0, 1, 2, 3, 4, kindOrder, 0, 0}, int64(len(bytes.TrimRight(data, "\x00"))))
	f.Close()
	s = openStore(t, dir)
	if err := s.Append(ctx, enginetest.Order(base+3, "u", "")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openStore(t, dir)
	defer s.Close()
	orders, err := s.UserOrders(ctx, "u")
	if err != nil || len(orders) != 4 || orders[0].ID != base+3 || orders[3].ID != base {
		t.Fatalf("after the torn tail: %v, %d orders", err, len(orders))
	}
}

// Orders are read back across the log's segments, by id and by user, also
// after reopening.
func TestOrdersAcrossSegments(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir, SegmentBytes: 512, MaxBatch: 4})
	if err != nil {
		t.Fatal(err)
	}
	base := engine.FirstOrderIDAt(t0)
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Go(func() {
			o := enginetest.Order(base+uint64(i), fmt.Sprintf("user-%d", i%7), fmt.Sprintf("req-%d", i))
			if err := s.Append(ctx, o); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	check := func(s *Store) {
		t.Helper()
		for i := range 200 {
			o, ok, err := s.Order(ctx, base+uint64(i))
			if err != nil || !ok || o.RequestID != fmt.Sprintf("req-%d", i) || o.UserID != fmt.Sprintf("user-%d", i%7) {
				t.Fatalf("order %d: %+v %v %v", i, o, ok, err)
			}
		}
		orders, err := s.UserOrders(ctx, "user-3")
		if err != nil || len(orders) != 29 {
			t.Fatalf("user-3: %d orders, %v", len(orders), err)
		}
		for i := 1; i < len(orders); i++ {
			if orders[i].ID >= orders[i-1].ID {
				t.Fatal("a user's orders are not newest first")
			}
		}
	}
	check(s)
	s.Close()
	segs, _ := filepath.Glob(filepath.Join(dir, LogDir, "*.log"))
	if len(segs) < 10 {
		t.Fatalf("512-byte segments: %d files", len(segs))
	}
	s = openStore(t, dir)
	defer s.Close()
	check(s)
}

// A store made by an earlier version, whose orders and redemptions are in
// SQLite tables, has them moved into the log at Open, once: a second move
// (a crash after the log got them but before the tables were dropped)
// appends nothing twice.
func TestMovesAnEarlierVersionsOrders(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	first := int64(engine.FirstOrderIDAt(t0))
	oldTables := func() {
		t.Helper()
		db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, FileName))
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if _, err := db.Exec(`
CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, item_id TEXT NOT NULL, user_id TEXT NOT NULL,
	quantity INTEGER NOT NULL, price_cents INTEGER NOT NULL, request_id TEXT, created_at INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS orders_by_user ON orders (user_id, id DESC);
CREATE TABLE IF NOT EXISTS redemptions (batch INTEGER NOT NULL, serial INTEGER NOT NULL, user_id TEXT NOT NULL,
	redeemed_at INTEGER NOT NULL, PRIMARY KEY (batch, serial));
CREATE TABLE IF NOT EXISTS probe (id INTEGER PRIMARY KEY, at INTEGER NOT NULL);
INSERT OR IGNORE INTO orders VALUES (?, 'it', 'ann', 2, 200, 'r1', ?), (?, 'it', 'bob', 1, 100, NULL, ?);
INSERT OR IGNORE INTO redemptions VALUES (1, 7, 'ann', ?);`, first, t0.UnixMilli(), first+1, t0.UnixMilli()+1, t0.UnixMilli()+2); err != nil {
			t.Fatal(err)
		}
	}
	oldTables()
	for range 2 {
		s := openStore(t, dir)
		if _, _, err := s.CreateBatch(ctx, codes.Batch{Name: "b", Key: 1, Count: 10, ValueCents: 500}); err != nil {
			t.Fatal(err)
		}
		snap, err := s.Load(ctx, time.Hour, t0)
		if err != nil || snap.LastOrderID != uint64(first+1) || len(snap.Holdings) != 2 || len(snap.Replays) != 1 || snap.Replays[0].RequestID != "r1" {
			t.Fatalf("after the move: %v %+v", err, snap)
		}
		if o, ok, err := s.Order(ctx, uint64(first)); err != nil || !ok || o.UserID != "ann" || o.Quantity != 2 || !o.CreatedAt.Equal(t0) {
			t.Fatalf("the first order: %+v %v %v", o, ok, err)
		}
		reds, err := s.Redemptions(ctx, nil)
		if err != nil || len(reds) != 1 || reds[0].UserID != "ann" || reds[0].Batch != "b" || reds[0].ValueCents != 500 {
			t.Fatalf("redemptions: %v %+v", err, reds)
		}
		var tables int
		s.r.QueryRow(`SELECT COUNT(*) FROM sqlite_master WHERE name IN ('orders', 'redemptions')`).Scan(&tables)
		if tables != 0 {
			t.Fatal("the old tables are still there")
		}
		records := 0
		s.log.Scan(func(seglog.Pos, []byte) error { records++; return nil })
		if records != 3 {
			t.Fatalf("the log holds %d records, want 3", records)
		}
		s.Close()
		oldTables() // as if the store had died before dropping them
	}
}

// FuzzRecords: decoding never panics, and what decodes encodes to a
// record that decodes to the same (varints may come in longer forms).
func FuzzRecords(f *testing.F) {
	f.Add(appendOrder(nil, enginetest.Order(engine.FirstOrderIDAt(t0), "user", "req")))
	f.Add(appendRedemption(nil, &codes.Redemption{Number: 3, Serial: 9, UserID: "u", At: t0}))
	f.Add([]byte{kindOrder, 0, 0, 0, 0, 0, 0, 0, 1, 200})
	f.Fuzz(func(t *testing.T, rec []byte) {
		if o, err := decodeOrder(rec); err == nil {
			again, err := decodeOrder(appendOrder(nil, o))
			if err != nil || *again != *o {
				t.Fatalf("order %+v comes back as %+v (%v)", o, again, err)
			}
			if id, user, err := orderKey(rec); err != nil || id != o.ID || string(user) != o.UserID {
				t.Fatalf("the key of order %+v reads as %d, %q (%v)", o, id, user, err)
			}
		}
		if r, err := decodeRedemption(rec); err == nil {
			again, err := decodeRedemption(appendRedemption(nil, r))
			if err != nil || *again != *r {
				t.Fatalf("redemption %+v comes back as %+v (%v)", r, again, err)
			}
		}
	})
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

// A commit that failed and could not be cut back may or may not be stored:
// its buyers get no answer (neither "failed", which would sell the units
// again, nor "stored"), and the store calls Unsure (by default: exit, and
// the restart's recovery decides).
func TestUnsureCommitAnswersNobody(t *testing.T) {
	var refuse atomic.Bool
	unsure := make(chan error, 1)
	s, err := Open(Options{Dir: t.TempDir(),
		Fault: func(op string) error {
			if refuse.Load() && op != "write" {
				return errors.New("injected: the disk refuses")
			}
			return nil
		},
		Unsure: func(err error) { unsure <- err },
	})
	if err != nil {
		t.Fatal(err)
	}
	refuse.Store(true)
	answered := make(chan error, 1)
	go func() {
		answered <- s.Append(context.Background(), enginetest.Order(engine.FirstOrderIDAt(t0), "u", ""))
	}()
	select {
	case err := <-unsure:
		if !errors.Is(err, seglog.ErrUnsure) {
			t.Fatalf("Unsure called with %v", err)
		}
	case err := <-answered:
		t.Fatalf("the buyer of an unsure commit was answered: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("Unsure was not called")
	}
	select {
	case err := <-answered:
		t.Fatalf("the buyer of an unsure commit was answered: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
}

// Two orders with one id in one batch fail it, as one already stored does.
func TestDuplicateIDsFailTheBatch(t *testing.T) {
	s := openStore(t, t.TempDir())
	defer s.Close()
	base := engine.FirstOrderIDAt(t0)
	for _, ids := range [][]uint64{{base + 1, base + 2, base + 1}, {base + 5, base + 3, base + 3}} {
		b := newBatch()
		for _, id := range ids {
			b.orders = append(b.orders, enginetest.Order(id, "u", ""))
		}
		if err := s.commit(b); !errors.Is(err, errDuplicateID) {
			t.Fatalf("batch %v: %v, want a duplicate id", ids, err)
		}
	}
	b := newBatch()
	b.orders = []*engine.Order{enginetest.Order(base+9, "u", ""), enginetest.Order(base+7, "u", ""), enginetest.Order(base+8, "u", "")}
	if err := s.commit(b); err != nil {
		t.Fatalf("ids out of order, no duplicate: %v", err)
	}
	b = newBatch()
	b.orders = []*engine.Order{enginetest.Order(base+7, "v", "")}
	if err := s.commit(b); !errors.Is(err, errDuplicateID) {
		t.Fatalf("an id stored before: %v", err)
	}
}

// After a failed commit only a write clears the failure: a batch that
// writes nothing (a code redeemed before) says nothing about the disk.
func TestOnlyAWriteClearsAFailure(t *testing.T) {
	var refuse atomic.Bool
	s, err := Open(Options{Dir: t.TempDir(), Fault: func(op string) error {
		if refuse.Load() && strings.HasPrefix(op, "write") { // with the zeros ahead or not
			return errors.New("injected: the disk refuses")
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	r := &codes.Redemption{Number: 1, Serial: 2, UserID: "a", At: t0}
	if _, err := s.Redeem(ctx, r); err != nil {
		t.Fatal(err)
	}
	refuse.Store(true)
	if err := s.Append(ctx, enginetest.Order(engine.FirstOrderIDAt(t0), "u", "")); err == nil {
		t.Fatal("commit succeeded while the disk refuses")
	}
	again := &codes.Redemption{Number: 1, Serial: 2, UserID: "b", At: t0}
	if first, err := s.Redeem(ctx, again); err != nil || first.UserID != "a" {
		t.Fatalf("second redemption: %+v %v", first, err)
	}
	if s.lastErr.Load() == nil {
		t.Fatal("a batch that wrote nothing cleared the failure")
	}
	if err := s.Check(ctx); err == nil {
		t.Fatal("Check is fine while writes fail")
	}
}

// A user's newest orders by id are returned, at most MaxUserOrders, even
// when an older order was committed after newer ones.
func TestUserOrdersNewestByID(t *testing.T) {
	s := openStore(t, t.TempDir())
	defer s.Close()
	base := engine.FirstOrderIDAt(t0)
	commit := func(ids ...uint64) {
		t.Helper()
		b := newBatch()
		for _, id := range ids {
			b.orders = append(b.orders, enginetest.Order(base+id, "many", ""))
		}
		if err := s.commit(b); err != nil {
			t.Fatal(err)
		}
	}
	for id := uint64(2); id <= MaxUserOrders+1; id++ {
		commit(id)
	}
	commit(1) // taken before the others, committed after them
	orders, err := s.UserOrders(context.Background(), "many")
	if err != nil || len(orders) != MaxUserOrders {
		t.Fatalf("%d orders, %v", len(orders), err)
	}
	if orders[0].ID != base+MaxUserOrders+1 || orders[len(orders)-1].ID != base+2 {
		t.Fatalf("newest %d, oldest %d; want %d and %d", orders[0].ID-base, orders[len(orders)-1].ID-base, MaxUserOrders+1, 2)
	}
}
