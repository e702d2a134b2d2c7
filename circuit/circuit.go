// Package circuit puts a circuit breaker (sony/gobreaker) in front of each
// dependency of the engine: the order store or Kafka (an engine.OrderSink)
// and Redis (an engine.Ledger). When calls fail, or succeed too slowly, past
// a threshold, the circuit opens: winners get engine.ErrUnavailable at once,
// with nothing taken, instead of queueing behind a sick dependency. After a
// cool-down one probe goes through (half-open); its outcome closes or
// reopens the circuit. Losers never reach a dependency, so they are still
// answered from memory while a circuit is open.
//
// Each breaker is named for its dependency ("order_store", "kafka",
// "redis"): the errors it returns say which (Dependency), and so do its
// metric's label and, through them, the front's 503 message. It must never
// skip a call that gives something back (Unclaim, GiveBack): skipping
// those would strand units.
package circuit

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sony/gobreaker/v2"

	"github.com/flashsale/flashsale/engine"
)

// Options configures a breaker; zero fields take the defaults.
type Options struct {
	// Failures is how many failed or slow calls in a row open the circuit;
	// default DefaultFailures.
	Failures uint32
	// Slow is the duration past which a successful call still counts as a
	// failure; default DefaultSlow.
	Slow time.Duration
	// CoolDown is how long the circuit stays open before a probe; default
	// DefaultCoolDown.
	CoolDown time.Duration
	// OnStateChange, when set, is told of every change of state.
	OnStateChange func(dependency string, from, to gobreaker.State)
}

// The defaults of Options.
const (
	DefaultFailures = 5
	DefaultSlow     = time.Second
	DefaultCoolDown = 5 * time.Second
)

// DefaultOptions are the defaults.
func DefaultOptions() Options {
	return Options{Failures: DefaultFailures, Slow: DefaultSlow, CoolDown: DefaultCoolDown}
}

// Validate checks the settings as given.
func (o Options) Validate() error {
	if o.Failures == 0 || o.Slow <= 0 || o.CoolDown <= 0 {
		return errors.New("-breaker-failures, -breaker-slow and -breaker-cooldown must be positive")
	}
	return nil
}

// ErrOpen is wrapped in every error returned while a circuit is open.
var ErrOpen = errors.New("circuit: the circuit is open")

// errSlow tells the breaker that a call succeeded too slowly.
var errSlow = errors.New("circuit: slow call")

// Error is a failure of a call through a breaker: the dependency's own
// error, or ErrOpen. It names the dependency, so that the front can say
// which one is unavailable.
type Error struct {
	dependency string
	err        error
}

func (e *Error) Error() string { return e.dependency + ": " + e.err.Error() }
func (e *Error) Unwrap() error { return e.err }

// Dependency is the name of the dependency that failed, for people ("order
// store", "kafka", "redis").
func (e *Error) Dependency() string { return e.dependency }

// Breaker is a circuit breaker that counts slow successes as failures.
type Breaker struct {
	name string // the metric label: order_store, kafka, redis
	slow time.Duration
	cb   *gobreaker.TwoStepCircuitBreaker[struct{}]
}

// NewBreaker returns a closed breaker for the dependency name (a metric
// label: lower case, underscores).
func NewBreaker(name string, o Options) *Breaker {
	if o.Failures == 0 {
		o.Failures = DefaultFailures
	}
	if o.Slow <= 0 {
		o.Slow = DefaultSlow
	}
	if o.CoolDown <= 0 {
		o.CoolDown = DefaultCoolDown
	}
	st := gobreaker.Settings{
		Name:        name,
		MaxRequests: 1, // one probe while half-open
		Timeout:     o.CoolDown,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= o.Failures },
	}
	if o.OnStateChange != nil {
		st.OnStateChange = func(name string, from, to gobreaker.State) { o.OnStateChange(name, from, to) }
	}
	return &Breaker{name: name, slow: o.Slow, cb: gobreaker.NewTwoStepCircuitBreaker[struct{}](st)}
}

// Dependency is the breaker's dependency, for people.
func (b *Breaker) Dependency() string { return strings.ReplaceAll(b.name, "_", " ") }

// Call runs f unless the circuit is open (then an error wrapping ErrOpen at
// once). f's error is the caller's, named for the dependency; a slow success
// counts as a failure only for the breaker.
func (b *Breaker) Call(f func() error) error {
	done, err := b.cb.Allow()
	if err != nil {
		return &Error{b.Dependency(), fmt.Errorf("%w (%v)", ErrOpen, err)}
	}
	start := time.Now()
	err = f()
	switch {
	case err != nil:
		done(err)
		return &Error{b.Dependency(), err}
	case time.Since(start) > b.slow:
		done(errSlow)
	default:
		done(nil)
	}
	return nil
}

// State is the circuit's state: closed, half-open or open.
func (b *Breaker) State() gobreaker.State { return b.cb.State() }

// Check is for /readyz: an error while the circuit is open.
func (b *Breaker) Check(context.Context) error {
	if b.cb.State() == gobreaker.StateOpen {
		return &Error{b.Dependency(), ErrOpen}
	}
	return nil
}

// Collectors are the breaker's metrics, to register:
// flashsale_circuit_state{dependency}.
func (b *Breaker) Collectors() []prometheus.Collector {
	return []prometheus.Collector{prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "flashsale_circuit_state",
		Help:        "State of the circuit breaker in front of a dependency: 0 closed, 1 half-open, 2 open.",
		ConstLabels: prometheus.Labels{"dependency": b.name},
	}, func() float64 { return float64(b.State()) })}
}

// Sink is an OrderSink behind a circuit breaker.
type Sink struct {
	*Breaker
	inner engine.OrderSink
}

var _ engine.OrderSink = (*Sink)(nil)

// NewSink puts a breaker named for the dependency in front of an order sink.
func NewSink(name string, inner engine.OrderSink, o Options) *Sink {
	return &Sink{Breaker: NewBreaker(name, o), inner: inner}
}

// Stands passes on to the sink, if it keeps failed orders
// (engine.StandingSink), that o stands after all; it is never refused by
// the breaker (it undoes a refusal).
func (s *Sink) Stands(ctx context.Context, o *engine.Order) error {
	return engine.Stands(ctx, s.inner, o)
}

// Append passes o to the sink unless the circuit is open.
func (s *Sink) Append(ctx context.Context, o *engine.Order) error {
	return s.Call(func() error { return s.inner.Append(ctx, o) })
}

// Ledger puts a breaker in front of a cluster Ledger. Claims, leases and
// stock changes go through it: while it is open, would-be winners get 503
// at once and losers of an empty pool are still answered from memory.
// Undoing (Unclaim, GiveBack) and the background look at empty pools
// (Remaining) always try.
type Ledger struct {
	*Breaker
	inner engine.Ledger
}

var _ engine.Ledger = (*Ledger)(nil)

// NewLedger puts a breaker named for the dependency in front of a ledger.
func NewLedger(name string, inner engine.Ledger, o Options) *Ledger {
	return &Ledger{Breaker: NewBreaker(name, o), inner: inner}
}

// answer runs f through the breaker, where an error among answers (a
// refusal of the ledger, not a failure of the dependency) passes untouched
// and does not count against the dependency.
func (l *Ledger) answer(f func() error, answers ...error) error {
	var err error
	cerr := l.Call(func() error {
		err = f()
		for _, a := range answers {
			if errors.Is(err, a) {
				return nil
			}
		}
		return err
	})
	if cerr != nil {
		return cerr
	}
	return err
}

func (l *Ledger) Claim(ctx context.Context, o *engine.Order, limit int64) (first *engine.Order, err error) {
	err = l.answer(func() error {
		first, err = l.inner.Claim(ctx, o, limit)
		return err
	}, engine.ErrLimitExceeded, engine.ErrSoldOut, engine.ErrLedgerLost, engine.ErrNotLeased)
	return first, err
}

func (l *Ledger) Unclaim(ctx context.Context, o *engine.Order) error { return l.inner.Unclaim(ctx, o) }

func (l *Ledger) Confirm(ctx context.Context, o *engine.Order) error {
	return l.Call(func() error { return l.inner.Confirm(ctx, o) })
}

func (l *Ledger) Refuse(ctx context.Context, item, user, requestID string) (first *engine.Order, err error) {
	err = l.Call(func() error {
		first, err = l.inner.Refuse(ctx, item, user, requestID)
		return err
	})
	return first, err
}

func (l *Ledger) PutItem(ctx context.Context, item string, total int64, exists bool) error {
	return l.answer(func() error { return l.inner.PutItem(ctx, item, total, exists) }, engine.ErrStockBelowSold, engine.ErrLedgerLost)
}

func (l *Ledger) Lease(ctx context.Context, item string, want int64) (granted, remaining int64, err error) {
	err = l.answer(func() error {
		granted, remaining, err = l.inner.Lease(ctx, item, want)
		return err
	}, engine.ErrLedgerLost)
	return granted, remaining, err
}

func (l *Ledger) GiveBack(ctx context.Context, item string, n int64) error {
	return l.inner.GiveBack(ctx, item, n)
}

func (l *Ledger) Trim(ctx context.Context, item string, keep int64) (int64, error) {
	return l.inner.Trim(ctx, item, keep)
}

func (l *Ledger) Remaining(ctx context.Context, item string) (int64, error) {
	return l.inner.Remaining(ctx, item)
}
