package main

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/flashsale/flashsale/engine"
	"github.com/flashsale/flashsale/internal/mysqltest"
	"github.com/flashsale/flashsale/internal/redistest"
	"github.com/flashsale/flashsale/persist/mysqlstore"
	"github.com/flashsale/flashsale/persist/orderlog"
	"github.com/flashsale/flashsale/persist/redisledger"
)

func TestAuditAndReconcile(t *testing.T) {
	c := redistest.Client(t)
	p := redistest.Prefix(t, c)
	ctx := context.Background()
	l := redisledger.New(c, 0, redisledger.Options{Prefix: p})
	redisledger.NewCatalog(c, p, time.Second).SaveItem(ctx, engine.Item{ID: "it", Name: "x", Stock: 10, PerUserLimit: 1})
	l.PutItem(ctx, "it", 10, false)
	reg, _ := l.Register(ctx, 0, time.Minute)
	l.ForInstance(reg).Lease(ctx, "it", 4)
	c.Do(ctx, c.B().Del().Key(p+":node:1").Build()) // the node dies

	f := func(want int, wantOut string, args ...string) {
		t.Helper()
		var out, errOut bytes.Buffer
		if code := run(append([]string{"-redis", redistest.Addr(), "-redis-prefix", p}, args...), &out, &errOut); code != want || !strings.Contains(out.String(), wantOut) {
			t.Fatalf("fsctl %v: %d\n%s%s", args, code, out.String(), errOut.String())
		}
	}
	f(0, "true", "audit")
	f(0, "it: 4 units of dead nodes given back", "reconcile")
	f(0, "it: 0 units", "reconcile", "it")
	f(2, "", "nonsense")
	// A ledger out of balance is reported, with exit status 1.
	c.Do(ctx, c.B().Hincrby().Key("{"+p+":it}:stock").Field("claimed").Increment(1).Build())
	f(1, "false", "audit", "it")
}

// With -kafka, reconcile settles a pending claim whose order never reached
// Kafka (the writers have nothing left to pass: the topic is empty), and
// audit with -mysql shows what MySQL holds.
func TestReconcileClaimsWithKafka(t *testing.T) {
	c := redistest.Client(t)
	p := redistest.Prefix(t, c)
	dsn := mysqltest.DSN(t)
	broker := startKafka(t)
	ctx := context.Background()
	l := redisledger.New(c, 3, redisledger.Options{Prefix: p, TrackClaims: true})
	redisledger.NewCatalog(c, p, time.Second).SaveItem(ctx, engine.Item{ID: "it", Name: "x", Stock: 5, PerUserLimit: 1})
	l.PutItem(ctx, "it", 5, false)
	l.Lease(ctx, "it", 1)
	o := &engine.Order{ID: 42, ItemID: "it", UserID: "u", Quantity: 1, CreatedAt: time.Now().Add(-time.Minute)}
	if _, err := l.Claim(ctx, o, 1); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	args := []string{"-redis", redistest.Addr(), "-redis-prefix", p, "-mysql", dsn, "-order-tables", "4"}
	if code := run(append(args, "audit"), &out, &errOut); code != 0 || !strings.Contains(out.String(), "pending") {
		t.Fatalf("audit: %d %s%s", code, out.String(), errOut.String())
	}
	out.Reset()
	if code := run(append(args, "-kafka", broker, "-wait", "5s", "reconcile"), &out, &errOut); code != 0 ||
		!strings.Contains(out.String(), "given back: 1") {
		t.Fatalf("reconcile: %d %s%s", code, out.String(), errOut.String())
	}
	if a, _ := l.Audit(ctx, "it"); a.Pending != 0 || a.Claimed != 0 || a.Remaining != 5 || !a.Balanced() {
		t.Fatalf("after reconcile: %+v", a)
	}
}

// rebuild makes a lost ledger again from the rows in MySQL: the pool holds
// stock - sold, the users their units, a recent request id its first
// order; the generation of record is the ledger's.
func TestRebuild(t *testing.T) {
	c := redistest.Client(t)
	p := redistest.Prefix(t, c)
	dsn := mysqltest.DSN(t)
	broker := startKafka(t)
	ctx := context.Background()
	db, err := mysqlstore.Open(ctx, mysqlstore.Options{DSN: dsn, Tables: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	it := engine.Item{ID: "it", Name: "x", PriceCents: 100, Stock: 10, PerUserLimit: 2}
	now := time.Now().UTC().Truncate(time.Millisecond)
	recent := &engine.Order{ID: engine.FirstOrderIDAt(now) + 1, ItemID: "it", UserID: "a", Quantity: 2, PriceCents: 100, RequestID: "r1", CreatedAt: now}
	old := &engine.Order{ID: 7, ItemID: "it", UserID: "b", Quantity: 1, PriceCents: 100, RequestID: "r2", CreatedAt: time.Unix(1, 0).UTC()}
	if err := errors.Join(db.SaveItem(ctx, it), func() error { _, err := db.StartGeneration(ctx, "lost-one"); return err }(), db.Write(ctx, []*engine.Order{recent, old})); err != nil {
		t.Fatal(err)
	}
	// What the lost ledger left: a lease, a user's count, a request id
	// whose order is not of record (its purchase was answered 503).
	stale := redisledger.New(c, 3, redisledger.Options{Prefix: p, TrackClaims: true, IdempotencyWindow: time.Hour, Generation: "lost-one"})
	if err := stale.PutItem(ctx, "it", 10, false); err != nil {
		t.Fatal(err)
	}
	if _, _, err := stale.Lease(ctx, "it", 4); err != nil {
		t.Fatal(err)
	}
	ghost := &engine.Order{ID: recent.ID + 50, ItemID: "it", UserID: "ghost", Quantity: 1, RequestID: "g1", CreatedAt: now}
	if _, err := stale.Claim(ctx, ghost, 2); err != nil {
		t.Fatal(err)
	}
	args := []string{"-redis", redistest.Addr(), "-redis-prefix", p, "-mysql", dsn, "-order-tables", "4", "-kafka", broker,
		"-kafka-produce-timeout", "50ms", "-wait", "5s"}
	var out, errOut bytes.Buffer
	if code := run(append(args[:4:4], "rebuild"), &out, &errOut); code != 2 {
		t.Fatalf("rebuild without -kafka and -mysql: %d %s", code, errOut.String())
	}
	if code := run(append(args, "rebuild"), &out, &errOut); code != 0 || !strings.Contains(out.String(), "ledger rebuilt") {
		t.Fatalf("rebuild: %d %s%s", code, out.String(), errOut.String())
	}
	t.Log(out.String())
	gen, err := db.Generation(ctx)
	if err != nil || gen == "lost-one" {
		t.Fatalf("the generation of record after the rebuild: %q %v", gen, err)
	}
	l := redisledger.New(c, 1, redisledger.Options{Prefix: p, TrackClaims: true, Generation: gen})
	if cur, err := l.CurrentGeneration(ctx); err != nil || cur != gen {
		t.Fatalf("Redis's generation %q (%v), the record's %q", cur, err, gen)
	}
	if a, err := l.Audit(ctx, "it"); err != nil || a.Total != 10 || a.Remaining != 7 || a.Claimed != 3 || !a.Balanced() {
		t.Fatalf("the pool after the rebuild: %+v %v", a, err)
	}
	if got, ok, err := redisledger.NewCatalog(c, p, 0).Item(ctx, "it"); err != nil || !ok || got != it {
		t.Fatalf("the item in Redis after the rebuild: %+v %v %v", got, ok, err)
	}
	// a's recent request id replays; a holds 2 of 2, b 1.
	if _, _, err := l.Lease(ctx, "it", 2); err != nil {
		t.Fatal(err)
	}
	first, err := l.Claim(ctx, &engine.Order{ID: recent.ID + 1, ItemID: "it", UserID: "a", Quantity: 2, RequestID: "r1", CreatedAt: now}, 2)
	if err != nil || first == nil || first.ID != recent.ID {
		t.Fatalf("the recent request id after the rebuild: %+v %v", first, err)
	}
	if _, err := l.Claim(ctx, &engine.Order{ID: recent.ID + 2, ItemID: "it", UserID: "a", Quantity: 1, CreatedAt: now}, 2); !errors.Is(err, engine.ErrLimitExceeded) {
		t.Fatalf("a's third unit: %v, want the limit", err)
	}
	// b holds its one unit; its request id is past the window: a purchase
	// afresh. The ghost's request id and count are gone with the lost ledger.
	if _, err := l.Claim(ctx, &engine.Order{ID: recent.ID + 3, ItemID: "it", UserID: "b", Quantity: 1, CreatedAt: now}, 1); !errors.Is(err, engine.ErrLimitExceeded) {
		t.Fatalf("b's second unit: %v, want the limit", err)
	}
	if first, err := l.Claim(ctx, &engine.Order{ID: recent.ID + 4, ItemID: "it", UserID: "b", Quantity: 1, RequestID: "r2", CreatedAt: now}, 2); err != nil || first != nil {
		t.Fatalf("b's request id past the window: %+v %v, want a claim afresh", first, err)
	}
	if first, err := l.Claim(ctx, &engine.Order{ID: recent.ID + 5, ItemID: "it", UserID: "ghost", Quantity: 1, RequestID: "g1", CreatedAt: now}, 1); err != nil || first != nil {
		t.Fatalf("the ghost's request id after the rebuild: %+v %v, want a claim afresh", first, err)
	}
	if a, _ := l.Audit(ctx, "it"); a.Leased() != 0 || a.Claimed != 5 || !a.Balanced() {
		t.Fatalf("after the claims: %+v (the lost ledger's lease must be gone)", a)
	}
}

// startKafka runs kfake with the topics made, until the test ends.
func startKafka(t *testing.T) string {
	t.Helper()
	kf, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kf.Close)
	broker := kf.ListenAddrs()[0]
	if err := orderlog.EnsureTopics(context.Background(), orderlog.Config{Brokers: []string{broker}, Partitions: 2}); err != nil {
		t.Fatal(err)
	}
	return broker
}

func TestLag(t *testing.T) {
	broker := startKafka(t)
	var out, errOut bytes.Buffer
	if code := run([]string{"-kafka", broker, "lag"}, &out, &errOut); code != 0 || !strings.Contains(out.String(), "partition") {
		t.Fatalf("lag: %d %s%s", code, out.String(), errOut.String())
	}
	if code := run([]string{"lag"}, &out, &errOut); code != 2 {
		t.Fatalf("lag without -kafka: %d", code)
	}
}
