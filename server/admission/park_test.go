package admission

import (
	"context"
	"testing"

	"github.com/flashsale/flashsale/engine"
)

// waitLedger answers every call a purchase waits on, noting how many
// in-flight slots were held meanwhile.
type waitLedger struct {
	engine.Ledger
	f      *Inflight
	inUse  []int
	called int
}

func (l *waitLedger) note() { l.inUse = append(l.inUse, l.f.InUse()); l.called++ }
func (l *waitLedger) Claim(context.Context, *engine.Order, int64) (*engine.Order, error) {
	l.note()
	return nil, nil
}
func (l *waitLedger) Confirm(context.Context, *engine.Order) error { l.note(); return nil }
func (l *waitLedger) Refuse(context.Context, string, string, string) (*engine.Order, error) {
	l.note()
	return nil, nil
}
func (l *waitLedger) Lease(context.Context, string, int64) (int64, int64, error) {
	l.note()
	return 0, 0, nil
}

// A request waiting on the ledger or the sink holds no in-flight slot; its
// slot is given back once however often it parks, and End does not give
// it back twice.
func TestParkGivesTheSlotBackOnce(t *testing.T) {
	f := NewInflight(2, 0)
	first, second := f.Acquire(), f.Acquire()
	if !first || !second {
		t.Fatal("acquire")
	}
	slot := f.Held(context.Background())
	l := &waitLedger{f: f}
	pl := ParkingLedger(l)
	pl.Lease(slot, "it", 1)
	pl.Claim(slot, &engine.Order{}, 1)
	pl.Refuse(slot, "it", "u", "r")
	pl.Confirm(slot, &engine.Order{})
	Park(slot)
	for i, n := range l.inUse {
		if n != 1 {
			t.Fatalf("call %d ran with %d slots held, want 1 (the other request's)", i, n)
		}
	}
	slot.End()
	if n := f.InUse(); n != 1 {
		t.Fatalf("%d slots held after End of a parked request, want 1", n)
	}
	// Not parked: End gives the slot back.
	other := f.Held(context.Background())
	other.End()
	if n := f.InUse(); n != 0 {
		t.Fatalf("%d slots held after End", n)
	}
	// Outside admission (no slot in the context) Park does nothing.
	Park(context.Background())
	if n := testing.AllocsPerRun(100, func() {
		if f.Acquire() {
			s := f.Held(context.Background())
			Park(s)
			s.End()
		}
	}); n != 0 {
		t.Fatalf("a slot allocates %v times", n)
	}
}
