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

// Sink is an OrderSink behind a circuit breaker.
type Sink struct {
	inner engine.OrderSink
	slow  time.Duration
	cb    *gobreaker.TwoStepCircuitBreaker[struct{}]
}

// New wraps inner.
func New(name string, inner engine.OrderSink, o Options) *Sink {
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
	return &Sink{inner: inner, slow: o.Slow, cb: gobreaker.NewTwoStepCircuitBreaker[struct{}](st)}
}

// Append passes o to the sink unless the circuit is open. Its result is the
// sink's: a slow success is still a success for the caller, and counts as
// a failure only for the breaker.
func (s *Sink) Append(ctx context.Context, o *engine.Order) error {
	done, err := s.cb.Allow()
	if err != nil {
		return fmt.Errorf("%w (%v)", ErrOpen, err)
	}
	start := time.Now()
	err = s.inner.Append(ctx, o)
	switch {
	case err != nil:
		done(err)
	case time.Since(start) > s.slow:
		done(errSlow)
	default:
		done(nil)
	}
	return err
}

// State is the circuit's state: closed, half-open or open.
func (s *Sink) State() gobreaker.State { return s.cb.State() }

// Check is for /readyz: an error while the circuit is open.
func (s *Sink) Check(context.Context) error {
	if s.cb.State() == gobreaker.StateOpen {
		return ErrOpen
	}
	return nil
}
