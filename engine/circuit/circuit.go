// Package circuit puts a circuit breaker (sony/gobreaker) in front of an
// engine.OrderSink. When appends fail, or succeed too slowly, past a
// threshold, the circuit opens: winners get engine.ErrUnavailable at once,
// with nothing taken, instead of queueing behind a sick dependency. After a
// cool-down one probe goes through (half-open); its outcome closes or
// reopens the circuit. Losers never reach the sink, so they are still
// answered from memory while the circuit is open.
package circuit

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/flashsale/flashsale/engine"
)

// Options configures a breaker; zero fields take the defaults.
type Options struct {
	// Failures is how many failed or slow appends in a row open the
	// circuit. Default 5.
	Failures uint32
	// Slow is the duration past which a successful append still counts
	// as a failure. Default 1 s.
	Slow time.Duration
	// CoolDown is how long the circuit stays open before a probe. Default 5 s.
	CoolDown time.Duration
	// OnStateChange, when set, is told of every change of state.
	OnStateChange func(from, to gobreaker.State)
}

// ErrOpen is returned while the circuit is open.
var ErrOpen = errors.New("circuit: the order sink's circuit is open")

// errSlow tells the breaker that an append succeeded too slowly.
var errSlow = errors.New("circuit: slow append")

// Breaker is a circuit breaker that counts slow successes as failures.
type Breaker struct {
	slow time.Duration
	cb   *gobreaker.TwoStepCircuitBreaker[struct{}]
}

// NewBreaker returns a closed breaker.
func NewBreaker(name string, o Options) *Breaker {
	if o.Failures == 0 {
		o.Failures = 5
	}
	if o.Slow <= 0 {
		o.Slow = time.Second
	}
	if o.CoolDown <= 0 {
		o.CoolDown = 5 * time.Second
	}
	st := gobreaker.Settings{
		Name:        name,
		MaxRequests: 1, // one probe while half-open
		Timeout:     o.CoolDown,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= o.Failures },
	}
	if o.OnStateChange != nil {
		st.OnStateChange = func(_ string, from, to gobreaker.State) { o.OnStateChange(from, to) }
	}
	return &Breaker{slow: o.Slow, cb: gobreaker.NewTwoStepCircuitBreaker[struct{}](st)}
}

// Call runs f unless the circuit is open (then ErrOpen at once). f's error
// is the caller's; a slow success counts as a failure only for the breaker.
func (b *Breaker) Call(f func() error) error {
	done, err := b.cb.Allow()
	if err != nil {
		return fmt.Errorf("%w (%v)", ErrOpen, err)
	}
	start := time.Now()
	err = f()
	switch {
	case err != nil:
		done(err)
	case time.Since(start) > b.slow:
		done(errSlow)
	default:
		done(nil)
	}
	return err
}

// State is the circuit's state: closed, half-open or open.
func (b *Breaker) State() gobreaker.State { return b.cb.State() }

// Check is for /readyz: an error while the circuit is open.
func (b *Breaker) Check(context.Context) error {
	if b.cb.State() == gobreaker.StateOpen {
		return ErrOpen
	}
	return nil
}

// Sink is an OrderSink behind a circuit breaker.
type Sink struct {
	*Breaker
	inner engine.OrderSink
}

// New wraps an order sink.
func New(name string, inner engine.OrderSink, o Options) *Sink {
	return &Sink{Breaker: NewBreaker(name, o), inner: inner}
}

// Append passes o to the sink unless the circuit is open.
func (s *Sink) Append(ctx context.Context, o *engine.Order) error {
	return s.Call(func() error { return s.inner.Append(ctx, o) })
}

// Pool is what cluster mode keeps in Redis: the claims and the stock pool.
type Pool interface {
	engine.Ledger
	engine.StockSource
}

// Ledger puts a breaker in front of a Pool. Claims, leases and stock
// changes go through it: while it is open, would-be winners get 503 at
// once and losers of an empty pool are still answered from memory. Undoing
// (Unclaim, GiveBack) and the background look at empty pools always try:
// skipping them would strand units.
type Ledger struct {
	*Breaker
	inner Pool
}

// NewLedger wraps a pool.
func NewLedger(name string, inner Pool, o Options) *Ledger {
	return &Ledger{Breaker: NewBreaker(name, o), inner: inner}
}

func (l *Ledger) Claim(ctx context.Context, o *engine.Order, limit int64) (*engine.Order, error) {
	var first *engine.Order
	var err error
	cerr := l.Call(func() error {
		first, err = l.inner.Claim(ctx, o, limit)
		if errors.Is(err, engine.ErrLimitExceeded) {
			return nil // an answer, not a failure of the dependency
		}
		return err
	})
	if cerr != nil && err == nil {
		err = cerr // the circuit was open
	}
	return first, err
}

func (l *Ledger) Unclaim(ctx context.Context, o *engine.Order) error { return l.inner.Unclaim(ctx, o) }

func (l *Ledger) PutItem(ctx context.Context, item string, total int64) error {
	var err error
	cerr := l.Call(func() error {
		err = l.inner.PutItem(ctx, item, total)
		if errors.Is(err, engine.ErrStockBelowSold) {
			return nil // an answer, not a failure of the dependency
		}
		return err
	})
	if cerr != nil && err == nil {
		err = cerr
	}
	return err
}

func (l *Ledger) Lease(ctx context.Context, item string, want int64) (granted, remaining int64, err error) {
	err = l.Call(func() error {
		granted, remaining, err = l.inner.Lease(ctx, item, want)
		return err
	})
	return granted, remaining, err
}

func (l *Ledger) GiveBack(ctx context.Context, item string, n int64) error {
	return l.inner.GiveBack(ctx, item, n)
}

func (l *Ledger) Remaining(ctx context.Context, item string) (int64, error) {
	return l.inner.Remaining(ctx, item)
}
