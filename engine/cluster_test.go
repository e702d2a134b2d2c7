package engine

import (
	"context"
	"errors"
	"testing"
)

// scriptedLedger answers claims as told.
type scriptedLedger struct {
	first    *Order
	err      error
	claims   int
	unclaims int
}

func (l *scriptedLedger) Claim(context.Context, *Order, int64) (*Order, error) {
	l.claims++
	return l.first, l.err
}

func (l *scriptedLedger) Unclaim(context.Context, *Order) error { l.unclaims++; return nil }

func TestClaimOutcomesFromOtherNodes(t *testing.T) {
	led := &scriptedLedger{}
	sink := &memSink{}
	e, err := New(Options{Sink: sink, Catalog: &memCatalog{}, Ledger: led})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ctx := context.Background()
	e.PutItem(ctx, Item{ID: "it", Name: "x", Stock: 5, PerUserLimit: 1})
	req := PurchaseRequest{ItemID: "it", UserID: "u", RequestID: "r", Quantity: 1}

	// Over the limit on another node: nothing taken here.
	led.err = ErrLimitExceeded
	if _, _, err := e.Purchase(ctx, req); !errors.Is(err, ErrLimitExceeded) || CodeOf(err) != CodeLimitExceeded {
		t.Fatalf("over the limit elsewhere: %v", err)
	}
	if v, _ := e.Item("it"); v.StockLeft != 5 || v.Pending != 0 {
		t.Fatalf("stock after a refusal: %+v", v)
	}

	// The request id won on another node: its order is the answer, no stock
	// is taken here, nothing reaches the sink, and the next replay is
	// answered from memory.
	first := &Order{ID: 42, ItemID: "it", UserID: "u", Quantity: 1, RequestID: "r"}
	led.err, led.first = nil, first
	o, replayed, err := e.Purchase(ctx, req)
	if err != nil || !replayed || o != first {
		t.Fatalf("replay from another node: %v %v %v", o, replayed, err)
	}
	if v, _ := e.Item("it"); v.StockLeft != 5 || len(sink.all()) != 0 {
		t.Fatalf("a replay took stock: %+v", v)
	}
	claims := led.claims
	if o, replayed, _ := e.Purchase(ctx, req); o != first || !replayed || led.claims != claims {
		t.Fatal("second replay asked the ledger again")
	}
	if led.unclaims != 0 {
		t.Fatal("unclaimed a claim that was never made")
	}
}
