package engine

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// Item is an item for sale as the admin sets it. Stock is the total number of
// units for the whole sale, sold ones included.
type Item struct {
	ID           string
	Name         string
	PriceCents   int64
	Stock        int64
	PerUserLimit int64
	StartsAt     time.Time // zero: on sale at once
	EndsAt       time.Time // zero: until sold out
	Ended        bool      // ended by the admin; final
	// Created is when the item was first put: the start of its sale when
	// StartsAt is zero (its leaderboard counts from it). The engine sets
	// it; zero for items of a store that does not keep it.
	Created time.Time
}

// MaxItemNameLen bounds an item's name, in bytes.
const MaxItemNameLen = 256

// Validate checks an item as given to PutItem.
func (it *Item) Validate() error {
	switch {
	case !ValidItemID(it.ID):
		return ErrBadItemID
	case it.Name == "" || len(it.Name) > MaxItemNameLen || !utf8.ValidString(it.Name):
		return invalidf("name must be 1-%d bytes of UTF-8", MaxItemNameLen)
	case it.PriceCents < 0:
		return invalidf("price_cents must not be negative")
	case it.Stock < 0 || it.Stock > MaxStock:
		return invalidf("stock must be between 0 and %d", MaxStock)
	case it.PerUserLimit < 1 || it.PerUserLimit > MaxStock:
		return invalidf("per_user_limit must be between 1 and %d", MaxStock)
	case !it.StartsAt.IsZero() && !it.EndsAt.IsZero() && !it.StartsAt.Before(it.EndsAt):
		return invalidf("starts_at must be before ends_at")
	}
	return nil
}

// MaxStock bounds stock and limits so that no sum of them can overflow.
const MaxStock = 1 << 40

func invalidf(format string, args ...any) error {
	return &Error{CodeInvalidRequest, fmt.Sprintf(format, args...)}
}

// ItemState is where an item's sale stands.
type ItemState uint8

const (
	Upcoming ItemState = iota
	OnSale
	SoldOut
	Ended
)

var stateNames = [...]string{Upcoming: "upcoming", OnSale: "on_sale", SoldOut: "sold_out", Ended: "ended"}

func (s ItemState) String() string { return stateNames[s] }

// ItemView is a snapshot of an item and its stock.
type ItemView struct {
	Item
	StockLeft int64 // units a buyer can still get
	Pending   int64 // units reserved by purchases not yet durable
	Sold      int64 // units in durable orders
	State     ItemState
}

// item is the live state of one item. Its configuration is immutable and
// swapped whole, so the hot path reads it with one atomic load.
type item struct {
	id    string
	cfg   atomic.Pointer[Item]
	stock stock
	_     [cacheLine]byte // keep the winners' counters off the line above
	// pending and sold move only for winners; pending+sold+stock.left() is
	// the item's Stock whenever no purchase is between two of its steps.
	pending atomic.Int64
	sold    atomic.Int64
	users   userLedger

	// Cluster mode: what the shared pool had left at the last lease or
	// event (-1: unknown), one lease at a time, and the units claimed across
	// the cluster as of the feed's last event (-1: unknown).
	pool     atomic.Int64
	refillMu sync.Mutex
	claimed  atomic.Int64
	lastSale atomic.Int64 // unix ns of this node's last sale of the item
	// leaseUnsure: a lease failed without an answer; the ledger may count
	// units this node never got (returnIdleLeases trims them).
	leaseUnsure atomic.Bool

	board board // the first buyers (board.go)
}

// checkWindow refuses a purchase outside the sale window.
func (it *Item) checkWindow(now time.Time) error {
	switch {
	case it.Ended || !it.EndsAt.IsZero() && !now.Before(it.EndsAt):
		return ErrSaleEnded
	case !it.StartsAt.IsZero() && now.Before(it.StartsAt):
		return ErrSaleNotStarted
	}
	return nil
}

func (it *item) view(now time.Time) ItemView {
	cfg := it.cfg.Load()
	v := ItemView{Item: *cfg, StockLeft: it.stock.left() + max(it.pool.Load(), 0), Pending: it.pending.Load(), Sold: it.sold.Load()}
	switch err := cfg.checkWindow(now); {
	case err == ErrSaleEnded:
		v.State = Ended
	case err == ErrSaleNotStarted:
		v.State = Upcoming
	case v.StockLeft == 0:
		v.State = SoldOut
	default:
		v.State = OnSale
	}
	return v
}
