package admission

import (
	"context"
	"sync"
	"time"

	"github.com/flashsale/flashsale/engine"
)

// A winner waits for durability (the store's group commit, Kafka's ack)
// and, in a cluster, for Redis (the claim, the feed's barrier, a lease)
// without using the CPU; if it kept its in-flight slot meanwhile, a rush of
// winners would fill the bound and the losers behind them, answered from
// memory in microseconds, would be refused. So a request gives its slot
// back when it starts to wait on a dependency (Park, called by the
// wrappers Parking and ParkingLedger), and the in-flight bound counts the
// requests doing work. Stalls of a dependency are the circuit breakers' to
// catch (slow calls open them).

// Slot is a request's in-flight slot, and the context its purchase runs in
// (parent's values, and Park's hook). It is pooled: the request's goroutine
// gets it from Held and gives it back with End, and nothing may keep it
// after that: a dependency that keeps a context past the call (a Kafka
// record) must take what it needs from it (the span), not the Slot.
type Slot struct {
	context.Context
	f    *Inflight
	held bool // touched only by the request's goroutine
}

type parkKey struct{}

var slots = sync.Pool{New: func() any { return new(Slot) }}

// Held is the slot of a request that Acquire admitted, in parent's context.
func (f *Inflight) Held(parent context.Context) *Slot {
	s := slots.Get().(*Slot)
	s.Context, s.f, s.held = parent, f, true
	return s
}

// Value answers Park's key with the slot itself. A slot that ended (a
// dependency that kept the context past the request) has no values.
func (s *Slot) Value(key any) any {
	switch {
	case s.Context == nil:
		return nil
	case key == (parkKey{}):
		return s
	}
	return s.Context.Value(key)
}

// Deadline, Done and Err are the parent's; an ended slot has none.
func (s *Slot) Deadline() (time.Time, bool) {
	if s.Context == nil {
		return time.Time{}, false
	}
	return s.Context.Deadline()
}

func (s *Slot) Done() <-chan struct{} {
	if s.Context == nil {
		return nil
	}
	return s.Context.Done()
}

func (s *Slot) Err() error {
	if s.Context == nil {
		return nil
	}
	return s.Context.Err()
}

// End releases the slot unless it was parked, and recycles it.
func (s *Slot) End() {
	if s.held {
		s.f.Release()
	}
	*s = Slot{}
	slots.Put(s)
}

// Park gives back the in-flight slot of the request whose context ctx is
// (its Slot), once; without one it does nothing.
func Park(ctx context.Context) {
	if s, ok := ctx.Value(parkKey{}).(*Slot); ok && s.held {
		s.held = false
		s.f.Release()
	}
}

// Parking is sink with Park before each Append: a winner waiting for
// durability does not count against the in-flight bound.
func Parking(sink engine.OrderSink) engine.OrderSink { return parking{sink} }

type parking struct{ inner engine.OrderSink }

var _ engine.StandingSink = parking{}

func (p parking) Append(ctx context.Context, o *engine.Order) error {
	Park(ctx)
	return p.inner.Append(ctx, o)
}

func (p parking) Stands(ctx context.Context, o *engine.Order) error {
	return engine.Stands(ctx, p.inner, o)
}

// ParkingLedger is l with Park before each call a purchase waits on (claim,
// confirm, refuse, lease).
func ParkingLedger(l engine.Ledger) engine.Ledger { return parkingLedger{l} }

type parkingLedger struct{ engine.Ledger }

func (p parkingLedger) Claim(ctx context.Context, o *engine.Order, limit int64) (*engine.Order, error) {
	Park(ctx)
	return p.Ledger.Claim(ctx, o, limit)
}

func (p parkingLedger) Confirm(ctx context.Context, o *engine.Order) error {
	Park(ctx)
	return p.Ledger.Confirm(ctx, o)
}

func (p parkingLedger) Refuse(ctx context.Context, item, user, requestID string) (*engine.Order, error) {
	Park(ctx)
	return p.Ledger.Refuse(ctx, item, user, requestID)
}

func (p parkingLedger) Lease(ctx context.Context, item string, want int64) (int64, int64, error) {
	Park(ctx)
	return p.Ledger.Lease(ctx, item, want)
}
