package circuit

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/flashsale/flashsale/engine"
)

type fakeSink struct {
	calls atomic.Int64
	fail  atomic.Bool
	delay atomic.Int64 // ns
}

var errDown = errors.New("down")

func (f *fakeSink) Append(context.Context, *engine.Order) error {
	f.calls.Add(1)
	time.Sleep(time.Duration(f.delay.Load()))
	if f.fail.Load() {
		return errDown
	}
	return nil
}

func TestOpensOnFailuresAndClosesAfterRecovery(t *testing.T) {
	inner := &fakeSink{}
	var changes []string
	s := New("orders", inner, Options{Failures: 3, CoolDown: 50 * time.Millisecond,
		OnStateChange: func(from, to gobreaker.State) { changes = append(changes, to.String()) }})
	ctx, o := context.Background(), &engine.Order{}

	inner.fail.Store(true)
	for i := 0; i < 3; i++ {
		if err := s.Append(ctx, o); !errors.Is(err, errDown) {
			t.Fatalf("append %d: %v", i, err)
		}
	}
	if s.State() != gobreaker.StateOpen || s.Check(ctx) == nil {
		t.Fatalf("state %v after 3 failures", s.State())
	}
	// Open: refused at once, the sink is not called.
	calls := inner.calls.Load()
	start := time.Now()
	if err := s.Append(ctx, o); !errors.Is(err, ErrOpen) || time.Since(start) > 10*time.Millisecond {
		t.Fatalf("open circuit: %v after %v", err, time.Since(start))
	}
	if inner.calls.Load() != calls {
		t.Fatal("the sink was called while the circuit was open")
	}
	// After the cool-down one probe goes through; it fails: open again.
	time.Sleep(60 * time.Millisecond)
	if err := s.Append(ctx, o); !errors.Is(err, errDown) || s.State() != gobreaker.StateOpen {
		t.Fatalf("failed probe: %v, state %v", err, s.State())
	}
	// The sink recovers: the next probe closes the circuit.
	inner.fail.Store(false)
	time.Sleep(60 * time.Millisecond)
	if err := s.Append(ctx, o); err != nil || s.State() != gobreaker.StateClosed || s.Check(ctx) != nil {
		t.Fatalf("probe after recovery: %v, state %v", err, s.State())
	}
	want := "open,half-open,open,half-open,closed"
	if got := joined(changes); got != want {
		t.Fatalf("state changes %s, want %s", got, want)
	}
}

func TestSlowSuccessCountsAgainstTheSink(t *testing.T) {
	inner := &fakeSink{}
	inner.delay.Store(int64(5 * time.Millisecond))
	s := New("orders", inner, Options{Failures: 2, Slow: time.Millisecond, CoolDown: time.Hour})
	for i := 0; i < 2; i++ {
		// A slow success is a success for the caller: the order is durable.
		if err := s.Append(context.Background(), &engine.Order{}); err != nil {
			t.Fatal(err)
		}
	}
	if s.State() != gobreaker.StateOpen {
		t.Fatalf("two slow appends: state %v", s.State())
	}
}

func TestEngineAnswersAtOnceWhileOpen(t *testing.T) {
	inner := &fakeSink{}
	s := New("orders", inner, Options{Failures: 1, CoolDown: time.Hour})
	e, err := engine.New(engine.Options{Sink: s, Catalog: nopCatalog{}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ctx := context.Background()
	e.PutItem(ctx, engine.Item{ID: "it", Name: "x", Stock: 1, PerUserLimit: 1})
	inner.fail.Store(true)
	if _, _, err := e.Purchase(ctx, engine.PurchaseRequest{ItemID: "it", UserID: "a", Quantity: 1}); engine.CodeOf(err) != engine.CodeUnavailable {
		t.Fatalf("first failure: %v", err)
	}
	if _, _, err := e.Purchase(ctx, engine.PurchaseRequest{ItemID: "it", UserID: "b", Quantity: 1}); !errors.Is(err, ErrOpen) || engine.CodeOf(err) != engine.CodeUnavailable {
		t.Fatalf("while open: %v", err)
	}
	// Nothing was taken.
	if v, _ := e.Item("it"); v.StockLeft != 1 || v.Sold != 0 {
		t.Fatalf("stock after refusals: %+v", v)
	}
}

type nopCatalog struct{}

func (nopCatalog) SaveItem(context.Context, engine.Item) error { return nil }

func joined(s []string) string {
	out := ""
	for i, x := range s {
		if i > 0 {
			out += ","
		}
		out += x
	}
	return out
}

// flakyPool is a Pool whose calls fail while down.
type flakyPool struct {
	down      atomic.Bool
	calls     atomic.Int64
	overLimit bool
	unclaims  atomic.Int64
}

var errRedisDown = errors.New("redis down")

func (p *flakyPool) fail() error {
	p.calls.Add(1)
	if p.down.Load() {
		return errRedisDown
	}
	return nil
}

func (p *flakyPool) Claim(context.Context, *engine.Order, int64) (*engine.Order, error) {
	if err := p.fail(); err != nil {
		return nil, err
	}
	if p.overLimit {
		return nil, engine.ErrLimitExceeded
	}
	return nil, nil
}
func (p *flakyPool) Unclaim(context.Context, *engine.Order) error { p.unclaims.Add(1); return p.fail() }
func (p *flakyPool) PutItem(context.Context, string, int64) error { return p.fail() }
func (p *flakyPool) Lease(_ context.Context, _ string, want int64) (int64, int64, error) {
	return want, 1000, p.fail()
}
func (p *flakyPool) GiveBack(context.Context, string, int64) error    { return p.fail() }
func (p *flakyPool) Remaining(context.Context, string) (int64, error) { return 1000, p.fail() }

func TestLedgerBreaker(t *testing.T) {
	pool := &flakyPool{}
	l := NewLedger("redis", pool, Options{Failures: 2, CoolDown: 50 * time.Millisecond})
	ctx := context.Background()
	// Over the limit is an answer: it neither trips the circuit nor is lost.
	pool.overLimit = true
	for i := 0; i < 5; i++ {
		if _, err := l.Claim(ctx, &engine.Order{}, 1); !errors.Is(err, engine.ErrLimitExceeded) {
			t.Fatalf("over the limit: %v", err)
		}
	}
	if l.State() != gobreaker.StateClosed {
		t.Fatal("answers tripped the circuit")
	}
	pool.overLimit = false
	pool.down.Store(true)
	l.Lease(ctx, "it", 1)
	l.Claim(ctx, &engine.Order{}, 1)
	if l.State() != gobreaker.StateOpen {
		t.Fatalf("state %v after two failures", l.State())
	}
	calls := pool.calls.Load()
	if _, err := l.Claim(ctx, &engine.Order{}, 1); !errors.Is(err, ErrOpen) {
		t.Fatalf("claim while open: %v", err)
	}
	if _, _, err := l.Lease(ctx, "it", 1); !errors.Is(err, ErrOpen) || pool.calls.Load() != calls {
		t.Fatalf("lease while open: %v", err)
	}
	// Undoing always tries.
	l.Unclaim(ctx, &engine.Order{})
	if pool.unclaims.Load() != 1 {
		t.Fatal("unclaim skipped while open")
	}
	pool.down.Store(false)
	time.Sleep(60 * time.Millisecond)
	if _, _, err := l.Lease(ctx, "it", 1); err != nil || l.State() != gobreaker.StateClosed {
		t.Fatalf("after recovery: %v %v", err, l.State())
	}
}
