// Package orderlog is the contract of cluster mode's order log on Kafka:
// what the edge nodes (persist/kafkasink), the writers
// (persist/orderwriter) and the reconcilers (persist/reconcile) agree on.
// It owns the record format (record.go), the settings and defaults every
// client is built from and the topics' creation (config.go), and the reading
// of how far the writers have come (progress.go). It produces and consumes
// no order itself, and imports no adapter.
package orderlog

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/bytedance/sonic"

	"github.com/flashsale/flashsale/engine"
)

// GenerationHeader is the record header that carries the generation of the
// ledger its claim was made in (see package ledger): a writer that cannot
// find the claim knows whether that ledger was lost.
const GenerationHeader = "ledger_generation"

// record is an order on the wire: JSON, one object per Kafka record, keyed
// by user id so that one user's orders stay in order in one partition.
type record struct {
	OrderID    string `json:"order_id"` // a string: JSON numbers lose 64-bit ids in many readers
	ItemID     string `json:"item_id"`
	UserID     string `json:"user_id"`
	Quantity   int64  `json:"quantity"`
	PriceCents int64  `json:"price_cents"`
	RequestID  string `json:"request_id,omitempty"`
	CreatedMs  int64  `json:"created_ms"`
}

// Encode is the value of o's record.
func Encode(o *engine.Order) ([]byte, error) {
	return sonic.ConfigStd.Marshal(record{OrderID: strconv.FormatUint(o.ID, 10), ItemID: o.ItemID, UserID: o.UserID,
		Quantity: o.Quantity, PriceCents: o.PriceCents, RequestID: o.RequestID, CreatedMs: o.CreatedAt.UnixMilli()})
}

// MaxRecordBytes bounds a record a writer accepts; an order is ~250 bytes.
const MaxRecordBytes = 4 << 10

var errTooLarge = errors.New("record larger than 4 KiB")

// Decode reads a record's value back into an order, checking every field
// against the rules the edge enforced: a record that fails is poison and
// goes to the dead-letter topic.
func Decode(b []byte) (*engine.Order, error) {
	if len(b) > MaxRecordBytes {
		return nil, errTooLarge
	}
	var r record
	if err := sonic.ConfigStd.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("not an order record: %w", err)
	}
	id, err := strconv.ParseUint(r.OrderID, 10, 64)
	switch {
	case err != nil || id == 0:
		return nil, fmt.Errorf("bad order_id %q", r.OrderID)
	case !engine.ValidItemID(r.ItemID):
		return nil, fmt.Errorf("bad item_id %q", r.ItemID)
	case !engine.ValidUserID(r.UserID):
		return nil, fmt.Errorf("bad user_id %q", r.UserID)
	case r.RequestID != "" && !engine.ValidRequestID(r.RequestID):
		return nil, fmt.Errorf("bad request_id %q", r.RequestID)
	case r.Quantity < 1 || r.Quantity > 1<<31-1:
		return nil, fmt.Errorf("bad quantity %d", r.Quantity)
	case r.PriceCents < 0:
		return nil, fmt.Errorf("bad price_cents %d", r.PriceCents)
	case r.CreatedMs <= 0 || r.CreatedMs > 1<<41:
		return nil, fmt.Errorf("bad created_ms %d", r.CreatedMs)
	}
	return &engine.Order{ID: id, ItemID: r.ItemID, UserID: r.UserID, Quantity: r.Quantity, PriceCents: r.PriceCents,
		RequestID: r.RequestID, CreatedAt: time.UnixMilli(r.CreatedMs).UTC(), Status: engine.Accepted}, nil
}
