package localstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/flashsale/flashsale/codes"
	"github.com/flashsale/flashsale/engine"
)

// The log's records: a kind byte, then the fields. Numbers are varints,
// strings a uvarint length and the bytes; an order's id is 8 bytes, big
// endian. A record of a kind this version does not know stops Open: it
// was written by a newer version, and skipping it would lose orders.
const (
	kindOrder      byte = 1 // id, item, user, quantity, price, request id, created (unix ms)
	kindRedemption byte = 2 // batch, serial, user, redeemed (unix ms)
	kindProbe      byte = 3 // nothing: Check's durable write after a failure
)

func appendOrder(dst []byte, o *engine.Order) []byte {
	dst = append(dst, kindOrder)
	dst = binary.BigEndian.AppendUint64(dst, o.ID)
	dst = appendString(dst, o.ItemID)
	dst = appendString(dst, o.UserID)
	dst = binary.AppendVarint(dst, o.Quantity)
	dst = binary.AppendVarint(dst, o.PriceCents)
	dst = appendString(dst, o.RequestID)
	return binary.AppendVarint(dst, o.CreatedAt.UnixMilli())
}

func appendRedemption(dst []byte, r *codes.Redemption) []byte {
	dst = append(dst, kindRedemption)
	dst = binary.AppendUvarint(dst, uint64(r.Number))
	dst = binary.AppendUvarint(dst, uint64(r.Serial))
	dst = appendString(dst, r.UserID)
	return binary.AppendVarint(dst, r.At.UnixMilli())
}

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

var errRecord = errors.New("a malformed record")

// reader takes a record's fields in order; the first fault sticks.
type reader struct {
	b   []byte
	err error
}

func (r *reader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errRecord
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) varint() int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.err = errRecord
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) string() string { return string(r.bytes()) }

// bytes takes a string's bytes (aliasing the record).
func (r *reader) bytes() []byte {
	n := r.uvarint()
	if r.err != nil || n > uint64(len(r.b)) {
		r.err = errRecord
		return nil
	}
	b := r.b[:n]
	r.b = r.b[n:]
	return b
}

// done reports the first fault, or trailing bytes.
func (r *reader) done() error {
	if r.err == nil && len(r.b) > 0 {
		r.err = errRecord
	}
	return r.err
}

// decodeOrder reads an order record (its kind byte included).
func decodeOrder(rec []byte) (*engine.Order, error) {
	if len(rec) < 9 || rec[0] != kindOrder {
		return nil, errRecord
	}
	o := &engine.Order{ID: binary.BigEndian.Uint64(rec[1:]), Status: engine.Persisted} // this log is the order database
	r := reader{b: rec[9:]}
	o.ItemID, o.UserID = r.string(), r.string()
	o.Quantity, o.PriceCents = r.varint(), r.varint()
	o.RequestID = r.string()
	o.CreatedAt = time.UnixMilli(r.varint()).UTC()
	if err := r.done(); err != nil {
		return nil, fmt.Errorf("order %d: %w", o.ID, err)
	}
	return o, nil
}

// orderKey reads an order record's id and user id, no more (user aliases
// rec).
func orderKey(rec []byte) (id uint64, user []byte, err error) {
	if len(rec) < 9 || rec[0] != kindOrder {
		return 0, nil, errRecord
	}
	r := reader{b: rec[9:]}
	r.bytes() // the item
	user = r.bytes()
	return binary.BigEndian.Uint64(rec[1:]), user, r.err
}

// decodeRedemption reads a redemption record (its kind byte included).
func decodeRedemption(rec []byte) (*codes.Redemption, error) {
	if len(rec) < 1 || rec[0] != kindRedemption {
		return nil, errRecord
	}
	r := reader{b: rec[1:]}
	number, serial := r.uvarint(), r.uvarint()
	red := &codes.Redemption{UserID: r.string(), At: time.UnixMilli(r.varint()).UTC()}
	if err := r.done(); err != nil {
		return nil, err
	}
	if number < 1 || number > codes.MaxBatch || serial > codes.MaxSerial {
		return nil, errRecord
	}
	red.Number, red.Serial = uint32(number), uint32(serial)
	return red, nil
}
