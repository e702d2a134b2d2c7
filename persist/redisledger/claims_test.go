package redisledger

import (
	"context"
	"errors"
	"testing"

	"github.com/flashsale/flashsale/engine"
	"github.com/flashsale/flashsale/engine/enginetest"
	"github.com/flashsale/flashsale/ledger"
)

// TestTrackedClaims walks a claim through each of its fates: stored by a
// writer (then it cannot be undone), undone by its node (then a late record
// is refused), abandoned by the reconciler (units back to the pool), and a
// race between the two settled by whichever script ran first.
func TestTrackedClaims(t *testing.T) {
	c := client(t)
	p := prefix(t, c)
	ctx := context.Background()
	l := New(c, 1, Options{Prefix: p, TrackClaims: true})
	if err := l.PutItem(ctx, "it", 10, false); err != nil {
		t.Fatal(err)
	}
	if g, _, err := l.Lease(ctx, "it", 10); err != nil || g != 10 {
		t.Fatalf("lease: %d %v", g, err)
	}
	balanced := func(wantPending, wantClaimed int64) {
		t.Helper()
		a, err := l.Audit(ctx, "it")
		if err != nil || !a.Balanced() || a.Pending != wantPending || a.Claimed != wantClaimed {
			t.Fatalf("audit %+v %v: want pending %d claimed %d", a, err, wantPending, wantClaimed)
		}
	}
	claim := func(o *engine.Order) {
		t.Helper()
		if first, err := l.Claim(ctx, o, 1); err != nil || first != nil {
			t.Fatalf("claim %d: %v %v", o.ID, first, err)
		}
	}

	// Stored: the writer's verdict is Store (twice: a redelivery), and the
	// node can no longer undo it.
	stored := enginetest.Order(1, "u1", "r|1")
	claim(stored)
	balanced(1, 1)
	if v, err := l.Persist(ctx, []*engine.Order{stored, stored}); err != nil || v[0] != ledger.Store || v[1] != ledger.Store {
		t.Fatalf("persist: %v %v", v, err)
	}
	balanced(0, 1)
	if err := l.Unclaim(ctx, stored); !errors.Is(err, engine.ErrOrderStored) {
		t.Fatalf("unclaim of a stored order: %v", err)
	}
	balanced(0, 1)

	// Undone by its node: a record of it arriving late is refused, and the
	// request id is free again.
	undone := enginetest.Order(2, "u2", "r2")
	claim(undone)
	if err := l.Unclaim(ctx, undone); err != nil {
		t.Fatal(err)
	}
	balanced(0, 1)
	if err := l.Unclaim(ctx, undone); !errors.Is(err, ErrClaimSettled) { // nothing twice
		t.Fatalf("second unclaim: %v", err)
	}
	balanced(0, 1)
	if v, _ := l.Persist(ctx, []*engine.Order{undone, enginetest.Order(99, "nobody", "")}); v[0] != ledger.Refuse || v[1] != ledger.Unknown {
		t.Fatalf("late record of an undone claim: %v", v)
	}
	if a, _ := l.Audit(ctx, "it"); a.Leases["1"] != 9 {
		t.Fatalf("unclaim did not give the unit back to the lease: %+v", a)
	}

	// Abandoned by the reconciler: the unit goes to the pool, the user's
	// slot and request id are free; a changed record is left alone.
	lost := enginetest.Order(3, "u3", "r3")
	claim(lost)
	claims, err := l.Claims(ctx, "it")
	if err != nil {
		t.Fatal(err)
	}
	var pending []ledger.Claim
	for _, cl := range claims {
		if cl.State == ledger.Pending {
			pending = append(pending, cl)
		}
	}
	if len(pending) != 1 || pending[0].OrderID != 3 || pending[0].UserID != "u3" || pending[0].RequestID != "r3" ||
		!pending[0].CreatedAt.Equal(lost.CreatedAt) || pending[0].Quantity != 1 {
		t.Fatalf("pending claims: %+v", pending)
	}
	before, _ := l.Remaining(ctx, "it")
	if ok, err := l.Abandon(ctx, pending[0]); err != nil || !ok {
		t.Fatalf("abandon: %v %v", ok, err)
	}
	if ok, _ := l.Abandon(ctx, pending[0]); ok {
		t.Fatal("abandoned twice")
	}
	if after, _ := l.Remaining(ctx, "it"); after != before+1 {
		t.Fatalf("pool %d -> %d after abandon", before, after)
	}
	if v, _ := l.Persist(ctx, []*engine.Order{lost}); v[0] != ledger.Refuse {
		t.Fatalf("record of an abandoned claim: %v", v)
	}
	if first, err := l.Claim(ctx, enginetest.Order(4, "u3", "r3"), 1); err != nil || first != nil {
		t.Fatalf("the user's slot and request id after abandon: %v %v", first, err)
	}
	balanced(1, 2)

	// A writer that stores first wins over a later abandon.
	raced := enginetest.Order(5, "u5", "")
	claim(raced)
	claims, _ = l.Claims(ctx, "it")
	var read ledger.Claim
	for _, cl := range claims {
		if cl.OrderID == 5 {
			read = cl
		}
	}
	l.Persist(ctx, []*engine.Order{raced})
	if ok, _ := l.Abandon(ctx, read); ok {
		t.Fatal("abandoned a claim a writer had stored")
	}
	balanced(1, 3)

	// Settled claims can be forgotten.
	if err := l.Forget(ctx, "it", 1, 2, 3); err != nil {
		t.Fatal(err)
	}
	if claims, _ := l.Claims(ctx, "it"); len(claims) != 2 {
		t.Fatalf("claims after forget: %+v", claims)
	}
}
