package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/flashsale/flashsale/engine"
	"github.com/flashsale/flashsale/internal/mysqltest"
	"github.com/flashsale/flashsale/internal/redistest"
	"github.com/flashsale/flashsale/persist/orderlog"
	"github.com/flashsale/flashsale/persist/redisledger"
)

func TestAuditAndReconcile(t *testing.T) {
	c := redistest.Client(t)
	p := redistest.Prefix(t, c)
	ctx := context.Background()
	l := redisledger.New(c, 0, redisledger.Options{Prefix: p})
	redisledger.NewCatalog(c, p, time.Second).SaveItem(ctx, engine.Item{ID: "it", Name: "x", Stock: 10, PerUserLimit: 1})
	l.PutItem(ctx, "it", 10)
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
	kf, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer kf.Close()
	broker := kf.ListenAddrs()[0]
	ctx := context.Background()
	if err := orderlog.EnsureTopics(ctx, orderlog.Config{Brokers: []string{broker}, Partitions: 2}); err != nil {
		t.Fatal(err)
	}
	l := redisledger.New(c, 3, redisledger.Options{Prefix: p, TrackClaims: true})
	redisledger.NewCatalog(c, p, time.Second).SaveItem(ctx, engine.Item{ID: "it", Name: "x", Stock: 5, PerUserLimit: 1})
	l.PutItem(ctx, "it", 5)
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
