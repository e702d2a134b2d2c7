package redisledger

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/flashsale/flashsale/engine"
)

func TestNodeRegistration(t *testing.T) {
	c := client(t)
	p := prefix(t, c)
	ctx := context.Background()
	l := New(c, 0, Options{Prefix: p})
	a, err := l.Register(ctx, 0, time.Minute)
	if err != nil || a.ID != 1 {
		t.Fatalf("first node: %+v %v", a, err)
	}
	b, err := l.Register(ctx, 0, time.Minute)
	if err != nil || b.ID != 2 {
		t.Fatalf("second node: %+v %v", b, err)
	}
	if _, err := l.Register(ctx, 1, time.Minute); !errors.Is(err, ErrNodeIDTaken) {
		t.Fatalf("taking a live node's id: %v", err)
	}
	if ok, err := a.Heartbeat(ctx); !ok || err != nil {
		t.Fatalf("heartbeat: %v %v", ok, err)
	}
	// A node that stops beating loses its id, which can then be reused
	// under another token; the old registration learns it lost the id.
	short, err := l.Register(ctx, 7, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	again, err := l.Register(ctx, 7, time.Minute)
	if err != nil || again.Token == short.Token {
		t.Fatalf("reusing an expired id: %+v %v", again, err)
	}
	if ok, _ := short.Heartbeat(ctx); ok {
		t.Fatal("a node kept an id it had lost")
	}
}

func TestReconcileGivesBackOnlyTheDeads(t *testing.T) {
	c := client(t)
	p := prefix(t, c)
	ctx := context.Background()
	base := New(c, 0, Options{Prefix: p})
	base.PutItem(ctx, "it", 100, false)
	regA, _ := base.Register(ctx, 0, time.Minute)
	regB, _ := base.Register(ctx, 0, time.Minute)
	a, b := base.ForInstance(regA), base.ForInstance(regB)
	a.Lease(ctx, "it", 10)
	b.Lease(ctx, "it", 20)
	for i := 0; i < 3; i++ {
		o := &engine.Order{ID: uint64(i + 1), ItemID: "it", UserID: string(rune('a' + i)), Quantity: 1}
		if first, err := a.Claim(ctx, o, 1); err != nil || first != nil {
			t.Fatal(first, err)
		}
	}
	// Nobody is dead: nothing moves.
	if n, err := base.Reconcile(ctx, "it"); err != nil || n != 0 {
		t.Fatalf("reconcile with all alive: %d %v", n, err)
	}
	// Node A dies (its key goes): its 7 unclaimed units return; its 3
	// claims stay sold; node B's lease is untouched.
	c.Do(ctx, c.B().Del().Key(base.nodeKey(regA.ID)).Build())
	if n, err := b.Reconcile(ctx, "it"); err != nil || n != 7 {
		t.Fatalf("reconcile a dead node: %d %v", n, err)
	}
	au, _ := base.Audit(ctx, "it")
	if !au.Balanced() || au.Claimed != 3 || au.Remaining != 77 || au.Leases[regB.Instance()] != 20 || au.Leases[regA.Instance()] != 0 {
		t.Fatalf("after reconciling: %+v", au)
	}
	// A second reconciler finds nothing more.
	if n, _ := base.Reconcile(ctx, "it"); n != 0 {
		t.Fatalf("second reconcile moved %d", n)
	}
	// A new node that reuses A's id has its own instance: untouched.
	regA2, err := base.Register(ctx, regA.ID, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	base.ForInstance(regA2).Lease(ctx, "it", 5)
	if n, _ := base.Reconcile(ctx, "it"); n != 0 {
		t.Fatalf("a live reuse of a dead id was reconciled: %d", n)
	}
}
