package server

import (
	"encoding/json"
	"fmt"
	"math"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/bytedance/sonic/encoder"

	"github.com/flashsale/flashsale/engine"
)

// sonicOrder is the shape sonic wrote an order in before appendOrderJSON,
// kept as the reference the hand-built answer must match byte for byte.
type sonicOrder struct {
	OrderID    string `json:"order_id"`
	ItemID     string `json:"item_id"`
	UserID     string `json:"user_id"`
	Quantity   int64  `json:"quantity"`
	PriceCents int64  `json:"price_cents"`
	Status     string `json:"status"`
	CreatedAt  string `json:"created_at"`
}

func asSonicWroteIt(t testing.TB, o *engine.Order, status string) []byte {
	t.Helper()
	var b []byte
	err := encoder.EncodeInto(&b, &sonicOrder{
		OrderID: fmt.Sprint(o.ID), ItemID: o.ItemID, UserID: o.UserID, Quantity: o.Quantity,
		PriceCents: o.PriceCents, Status: status, CreatedAt: o.CreatedAt.UTC().Format(orderTimeLayout),
	}, 0)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Every character a valid item and user id may hold, and times in and out of
// UTC, with and without milliseconds: the same bytes as sonic wrote.
func TestOrderJSONAsSonicWritesIt(t *testing.T) {
	var ids []byte
	for c := 0; c < 256; c++ {
		if engine.ValidUserID(string(rune(c))) && c < utf8.RuneSelf {
			ids = append(ids, byte(c))
		}
	}
	tokyo := time.FixedZone("JST", 9*3600)
	for i, o := range []*engine.Order{
		{ID: 385862934175154176, ItemID: "phone-1", UserID: "u-42", Quantity: 1, PriceCents: 19900,
			CreatedAt: time.Date(2026, 11, 30, 18, 41, 32, 494e6, time.UTC)},
		{ID: math.MaxUint64, ItemID: "a_B-9", UserID: string(ids), Quantity: math.MaxInt64, PriceCents: math.MinInt64,
			CreatedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, tokyo)},
		{ID: 0, ItemID: "x", UserID: "a@b.c:d", Quantity: 0, PriceCents: 0, Status: engine.Persisted},
	} {
		for _, status := range []string{engine.Accepted.String(), o.Status.String()} {
			got := appendOrderJSON(nil, o, status)
			if want := asSonicWroteIt(t, o, status); string(got) != string(want) {
				t.Fatalf("order %d:\n got %s\nwant %s", i, got, want)
			}
		}
	}
}

// FuzzOrderJSON: whatever the ids hold, the hand-built order is valid JSON
// that reads back as the order.
func FuzzOrderJSON(f *testing.F) {
	f.Add(uint64(1), "phone-1", "u-42", int64(1), int64(100), "accepted", int64(0))
	f.Add(uint64(math.MaxUint64), "\"\\\x00\x1f\u2028", "<>&\x7f", int64(-1), int64(math.MinInt64), "", int64(-62135596800000))
	f.Fuzz(func(t *testing.T, id uint64, item, user string, q, price int64, status string, ms int64) {
		if !utf8.ValidString(item) || !utf8.ValidString(user) || !utf8.ValidString(status) { // encoding/json would read U+FFFD for the bad bytes
			t.Skip()
		}
		o := &engine.Order{ID: id, ItemID: item, UserID: user, Quantity: q, PriceCents: price, CreatedAt: time.UnixMilli(ms)}
		b := appendOrderJSON(nil, o, status)
		var got sonicOrder
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		want := sonicOrder{OrderID: fmt.Sprint(id), ItemID: item, UserID: user, Quantity: q, PriceCents: price,
			Status: status, CreatedAt: o.CreatedAt.UTC().Format(orderTimeLayout)}
		if got != want {
			t.Fatalf("%s reads back as %+v, want %+v", b, got, want)
		}
	})
}
