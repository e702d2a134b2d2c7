package circuit

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/flashsale/flashsale/engine"
	"github.com/flashsale/flashsale/engine/enginetest"
)

var errDown = errors.New("down")

// flakySink is an order sink that is down while told so, and as slow as
// told.
func flakySink() (*enginetest.Sink, *atomic.Bool, *atomic.Int64) {
	var fail atomic.Bool
	var delay atomic.Int64 // ns
	return &enginetest.Sink{Before: func(*engine.Order) error {
		time.Sleep(time.Duration(delay.Load()))
		if fail.Load() {
			return errDown
		}
		return nil
	}}, &fail, &delay
}

func TestOpensOnFailuresAndClosesAfterRecovery(t *testing.T) {
	inner, fail, _ := flakySink()
	var changes []string
	s := NewSink("order_store", inner, Options{Failures: 3, CoolDown: 50 * time.Millisecond,
		OnStateChange: func(_ string, from, to gobreaker.State) { changes = append(changes, to.String()) }})
	ctx, o := context.Background(), &engine.Order{}

	fail.Store(true)
	for i := 0; i < 3; i++ {
		if err := s.Append(ctx, o); !errors.Is(err, errDown) {
			t.Fatalf("append %d: %v", i, err)
		}
	}
	if s.State() != gobreaker.StateOpen || s.Check(ctx) == nil {
		t.Fatalf("state %v after 3 failures", s.State())
	}
	// Open: refused at once, the sink is not called.
	calls := inner.Calls()
	start := time.Now()
	if err := s.Append(ctx, o); !errors.Is(err, ErrOpen) || time.Since(start) > 10*time.Millisecond {
		t.Fatalf("open circuit: %v after %v", err, time.Since(start))
	}
	var named interface{ Dependency() string }
	if err := s.Append(ctx, o); !errors.As(err, &named) || named.Dependency() != "order store" {
		t.Fatalf("the error of an open circuit does not name its dependency: %v", err)
	}
	if inner.Calls() != calls {
		t.Fatal("the sink was called while the circuit was open")
	}
	// After the cool-down one probe goes through; it fails: open again.
	time.Sleep(60 * time.Millisecond)
	if err := s.Append(ctx, o); !errors.Is(err, errDown) || s.State() != gobreaker.StateOpen {
		t.Fatalf("failed probe: %v, state %v", err, s.State())
	}
	// The sink recovers: the next probe closes the circuit.
	fail.Store(false)
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
	inner, _, delay := flakySink()
	delay.Store(int64(5 * time.Millisecond))
	s := NewSink("kafka", inner, Options{Failures: 2, Slow: time.Millisecond, CoolDown: time.Hour})
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
	inner, fail, _ := flakySink()
	s := NewSink("order_store", inner, Options{Failures: 1, CoolDown: time.Hour})
	e, err := engine.New(engine.Options{Sink: s, Catalog: &enginetest.Catalog{}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ctx := context.Background()
	e.PutItem(ctx, engine.Item{ID: "it", Name: "x", Stock: 1, PerUserLimit: 1})
	fail.Store(true)
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

var errRedisDown = errors.New("redis down")

func TestLedgerBreaker(t *testing.T) {
	pool := &enginetest.Ledger{}
	l := NewLedger("redis", pool, Options{Failures: 2, CoolDown: 50 * time.Millisecond})
	ctx := context.Background()
	if err := l.PutItem(ctx, "it", 1000, false); err != nil {
		t.Fatal(err)
	}
	// Over the limit is an answer: it neither trips the circuit nor is lost.
	pool.SetClaimErr(engine.ErrLimitExceeded)
	for i := 0; i < 5; i++ {
		if _, err := l.Claim(ctx, &engine.Order{}, 1); !errors.Is(err, engine.ErrLimitExceeded) {
			t.Fatalf("over the limit: %v", err)
		}
	}
	if l.State() != gobreaker.StateClosed {
		t.Fatal("answers tripped the circuit")
	}
	pool.SetClaimErr(nil)
	pool.SetDown(errRedisDown)
	l.Lease(ctx, "it", 1)
	l.Claim(ctx, &engine.Order{}, 1)
	if l.State() != gobreaker.StateOpen {
		t.Fatalf("state %v after two failures", l.State())
	}
	calls := pool.Counts().Calls
	if _, err := l.Claim(ctx, &engine.Order{}, 1); !errors.Is(err, ErrOpen) {
		t.Fatalf("claim while open: %v", err)
	}
	if _, _, err := l.Lease(ctx, "it", 1); !errors.Is(err, ErrOpen) || pool.Counts().Calls != calls {
		t.Fatalf("lease while open: %v", err)
	}
	// Undoing always tries.
	l.Unclaim(ctx, &engine.Order{})
	if pool.Counts().Unclaims != 1 {
		t.Fatal("unclaim skipped while open")
	}
	pool.SetDown(nil)
	time.Sleep(60 * time.Millisecond)
	if _, _, err := l.Lease(ctx, "it", 1); err != nil || l.State() != gobreaker.StateClosed {
		t.Fatalf("after recovery: %v %v", err, l.State())
	}
}
