package orderlog

import (
	"testing"
	"time"

	"github.com/flashsale/flashsale/engine"
)

func TestRecordRoundTrip(t *testing.T) {
	o := &engine.Order{ID: 1862365091234567890, ItemID: "phone-1", UserID: "u-42@x", Quantity: 2, PriceCents: 39800,
		RequestID: `r"|\1`, CreatedAt: time.UnixMilli(1_800_000_000_123).UTC()}
	b, err := Encode(o)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(b)
	if err != nil || *got != *o {
		t.Fatalf("round trip: %+v %v\nwant %+v", got, err, o)
	}
	for _, bad := range []string{``, `{}`, `[]`, `{"order_id":"1"}`, `{"order_id":1,"item_id":"a","user_id":"u","quantity":1,"created_ms":1}`,
		`{"order_id":"1","item_id":"a b","user_id":"u","quantity":1,"created_ms":1}`,
		`{"order_id":"1","item_id":"a","user_id":"u","quantity":0,"created_ms":1}`,
		`{"order_id":"1","item_id":"a","user_id":"u","quantity":1,"price_cents":-1,"created_ms":1}`,
		`{"order_id":"0","item_id":"a","user_id":"u","quantity":1,"created_ms":1}`} {
		if _, err := Decode([]byte(bad)); err == nil {
			t.Errorf("accepted %s", bad)
		}
	}
}

// FuzzDecode: whatever bytes arrive, Decode answers an order that passes
// every rule of the edge, or an error; never a panic.
func FuzzDecode(f *testing.F) {
	o := &engine.Order{ID: 7, ItemID: "it", UserID: "u", Quantity: 1, PriceCents: 1, RequestID: "r", CreatedAt: time.UnixMilli(1)}
	b, _ := Encode(o)
	f.Add(b)
	f.Add([]byte(`{"order_id":"18446744073709551615","item_id":"x","user_id":"y","quantity":1,"created_ms":5}`))
	f.Add([]byte(`{"order_id":"1","item_id":"x","user_id":"y","quantity":1,"created_ms":5,"request_id":"\u0000"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		o, err := Decode(b)
		if err != nil {
			return
		}
		if o.ID == 0 || !engine.ValidItemID(o.ItemID) || !engine.ValidUserID(o.UserID) || o.Quantity < 1 ||
			(o.RequestID != "" && !engine.ValidRequestID(o.RequestID)) || o.PriceCents < 0 {
			t.Fatalf("accepted a bad order %+v from %q", o, b)
		}
		again, err := Encode(o)
		if err != nil {
			t.Fatal(err)
		}
		if o2, err := Decode(again); err != nil || *o2 != *o {
			t.Fatalf("re-encoding changed %+v into %+v (%v)", o, o2, err)
		}
	})
}
