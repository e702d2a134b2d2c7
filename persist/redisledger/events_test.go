package redisledger

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/flashsale/flashsale/engine"
	"github.com/flashsale/flashsale/engine/enginetest"
	"github.com/flashsale/flashsale/internal/redistest"
	"github.com/flashsale/flashsale/ledger"
)

// recorder is a Listener that writes down what it is told.
type recorder struct {
	mu      sync.Mutex
	events  []string
	resyncs int
}

func (r *recorder) add(format string, args ...any) {
	r.mu.Lock()
	r.events = append(r.events, fmt.Sprintf(format, args...))
	r.mu.Unlock()
}

func (r *recorder) Resync(context.Context) error {
	r.mu.Lock()
	r.resyncs++
	r.mu.Unlock()
	return nil
}
func (r *recorder) Claimed(o *engine.Order, n, _ int64) {
	r.add("claimed %d %s %s %s q%d %dc at %d; %d claimed", o.ID, o.ItemID, o.UserID, o.RequestID, o.Quantity, o.PriceCents, o.CreatedAt.UnixMilli(), n)
}
func (r *recorder) Released(o *engine.Order, n int64) {
	r.add("released %d %s %s %s; %d claimed", o.ID, o.ItemID, o.UserID, o.RequestID, n)
}
func (r *recorder) Acked(o *engine.Order) {
	r.add("acked %d %s %s %s", o.ID, o.ItemID, o.UserID, o.RequestID)
}
func (r *recorder) Pool(item string, n int64) { r.add("pool %s %d", item, n) }
func (r *recorder) Item(item string)          { r.add("item %s", item) }
func (r *recorder) Generation(g string)       { r.add("generation %s", g) }
func (r *recorder) seen() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.events...)
}
func (r *recorder) resynced() int { r.mu.Lock(); defer r.mu.Unlock(); return r.resyncs }

// Every change another node must know is published with the script that
// makes it, in order, and a barrier returns once everything published
// before it has been handled.
func TestFeedTellsEveryChangeInOrder(t *testing.T) {
	c := client(t)
	p := prefix(t, c)
	ctx := context.Background()
	feed := NewFeed(c, p)
	rec := &recorder{}
	fctx, stop := context.WithCancel(ctx)
	defer stop()
	go feed.Run(fctx, rec, nil)
	for deadline := time.Now().Add(5 * time.Second); !feed.Up(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the feed did not come up")
		}
	}
	if rec.resynced() != 1 {
		t.Fatalf("%d resyncs after the subscription, want 1", rec.resynced())
	}

	l := New(c, 1, Options{Prefix: p, TrackClaims: true})
	cat := NewCatalog(c, p, 0)
	if err := cat.SaveItem(ctx, engine.Item{ID: "it", Name: "x", PriceCents: 500, Stock: 3, PerUserLimit: 1}); err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(l.PutItem(ctx, "it", 3, false))
	_, _, err := l.Lease(ctx, "it", 3)
	must(err)
	won, lost := enginetest.Order(1, "u1", "r|1"), enginetest.Order(2, "u2", "")
	for _, o := range []*engine.Order{won, lost} {
		if _, err := l.Claim(ctx, o, 1); err != nil {
			t.Fatal(err)
		}
	}
	must(l.Confirm(ctx, won))
	must(l.Unclaim(ctx, lost))
	must(l.GiveBack(ctx, "it", 2))
	must(feed.Barrier(ctx))

	at := won.CreatedAt.UnixMilli()
	want := []string{
		"item it",
		"pool it 3",
		"pool it 0",
		fmt.Sprintf("claimed 1 it u1 r|1 q1 500c at %d; 1 claimed", at),
		fmt.Sprintf("claimed 2 it u2  q1 500c at %d; 2 claimed", lost.CreatedAt.UnixMilli()),
		"acked 1 it u1 r|1",
		"released 2 it u2 ; 1 claimed",
		"pool it 2",
	}
	got := rec.seen()
	if len(got) != len(want) {
		t.Fatalf("events:\n%q\nwant\n%q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("event %d: %q, want %q\nall: %q", i, got[i], want[i], got)
		}
	}
	// What a resynchronising node reads instead: the winners remembered by
	// request id (refusals are none), and the claimed units.
	winners, claimed, err := l.Winners(ctx, "it")
	if err != nil || claimed != 1 || len(winners) != 1 || winners[0].ID != 1 || winners[0].RequestID != "r|1" || winners[0].UserID != "u1" {
		t.Fatalf("winners: %+v, %d claimed, %v", winners, claimed, err)
	}
	if first, err := l.Refuse(ctx, "it", "u1", "r|1"); err != nil || first == nil || first.ID != 1 || first.PriceCents != 500 {
		t.Fatalf("refusing r|1, which won: %+v %v", first, err)
	}
	// A request id refused here cannot win elsewhere a moment later: its
	// claim is refused too (sold out), and the refusal is no winner.
	if first, err := l.Refuse(ctx, "it", "u9", "twin"); err != nil || first != nil {
		t.Fatalf("refusing an unknown request id: %+v %v", first, err)
	}
	must(l.PutItem(ctx, "it", 4, false))
	_, _, err = l.Lease(ctx, "it", 1)
	must(err)
	if _, err := l.Claim(ctx, enginetest.Order(9, "u9", "twin"), 1); !errors.Is(err, engine.ErrSoldOut) {
		t.Fatalf("claiming a request id refused a moment ago: %v", err)
	}
	// An acknowledged claim is kept from the reconciler: Abandon refuses it.
	claims, _ := l.Claims(ctx, "it")
	for _, cl := range claims {
		if cl.OrderID == 1 {
			if cl.State != ledger.Acked {
				t.Fatalf("claim 1 is %v after its confirmation", cl.State)
			}
			if ok, _ := l.Abandon(ctx, cl); ok {
				t.Fatal("an acknowledged claim was abandoned")
			}
		}
	}
	// A feed that is down refuses a barrier at once.
	stop()
	for deadline := time.Now().Add(5 * time.Second); feed.Up(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the feed did not go down")
		}
	}
	if err := feed.Barrier(ctx); err == nil || errors.Is(err, context.Canceled) {
		t.Fatalf("a barrier on a stopped feed: %v", err)
	}
}

// The order Refuse returns is kept by the engine for replays: it must not
// alias the user and request id it was given (they alias a request's
// buffer, which the next request overwrites).
func TestRefuseCopiesWhatItKeeps(t *testing.T) {
	c := redistest.Client(t)
	p := redistest.Prefix(t, c)
	ctx := context.Background()
	l := New(c, 1, Options{Prefix: p, TrackClaims: true, IdempotencyWindow: time.Minute})
	if err := l.PutItem(ctx, "it", 5, false); err != nil {
		t.Fatal(err)
	}
	if _, _, err := l.Lease(ctx, "it", 1); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Claim(ctx, &engine.Order{ID: 7, ItemID: "it", UserID: "alice", Quantity: 1, RequestID: "r1", CreatedAt: time.Now()}, 1); err != nil {
		t.Fatal(err)
	}
	buf := []byte("alice|r1")
	user, req := unsafe.String(&buf[0], 5), unsafe.String(&buf[6], 2) // as a request's buffer
	first, err := l.Refuse(ctx, "it", user, req)
	if err != nil || first == nil || first.ID != 7 {
		t.Fatalf("refuse: %+v %v", first, err)
	}
	copy(buf, "mallo|r9") // the next request
	if first.UserID != "alice" || first.RequestID != "r1" {
		t.Fatalf("the order kept aliases the request: %+v", first)
	}
}
