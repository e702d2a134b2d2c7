package engine

import (
	"context"
	"time"
)

// The engine does no I/O. It talks to three interfaces, which the process
// that assembles it fills in: a Ledger (cluster mode only), an OrderSink and a
// Catalog. Whether a Ledger is set is the one difference between the modes.

// Ledger is the shared ledger of a cluster (persist/redisledger): the pool an
// item's units are leased from into this node's shards, and the record that
// confirms each winner across all nodes. Without one (standalone) this
// process's memory is the whole truth: an item's whole stock sits in its
// shards, a winner needs no confirmation, and the items are this node's own.
type Ledger interface {
	// PutItem sets the pool's total for an item; ErrStockBelowSold when
	// lowering it below what is leased or claimed. exists says the item is
	// known already: its pool must be there, and ErrLedgerLost when it is
	// not (a pool is created only for a new item).
	PutItem(ctx context.Context, item string, total int64, exists bool) error
	// Lease takes up to want units from the pool for this node and says
	// what the pool has left; ErrLedgerLost when the pool is gone or is
	// not of the ledger this node sells from.
	Lease(ctx context.Context, item string, want int64) (granted, remaining int64, err error)
	// GiveBack returns n leased units to the pool.
	GiveBack(ctx context.Context, item string, n int64) error
	// Trim returns every unit leased to this node beyond keep, and says
	// how many: a lease whose answer was lost may have granted units the
	// node never got.
	Trim(ctx context.Context, item string, keep int64) (int64, error)
	// Remaining is what the pool has left.
	Remaining(ctx context.Context, item string) (int64, error)

	// Claim records o within the per-user limit, across all nodes. It is
	// called only for winners, after the in-memory reservations succeeded.
	// It returns ErrLimitExceeded when the user is over the limit across
	// nodes, ErrSoldOut when o's request id was answered "sold out" on
	// another node a moment ago (Refuse), ErrLedgerLost when the pool is
	// gone or not of this node's ledger, ErrNotLeased when this node holds
	// fewer units than it thinks, and, when o's request id already won (on
	// any node), that first order, claiming nothing.
	Claim(ctx context.Context, o *Order, limit int64) (first *Order, err error)
	// Unclaim undoes a claim whose purchase failed later. It answers
	// ErrOrderStored, undoing nothing, when o reached the order database
	// anyway: the purchase then stands. On any other error the claim stays
	// until the ledger's reconciliation settles it, and the engine keeps
	// the units out of its shards meanwhile.
	Unclaim(ctx context.Context, o *Order) error
	// Confirm tells the ledger that o is durable, before its answer is
	// written: every node may now read it back. A failure changes nothing
	// for the purchase (the order is durable); the order is then readable
	// elsewhere once a writer stored it.
	Confirm(ctx context.Context, o *Order) error
	// Refuse is asked by a node that has no units for a request id it does
	// not know, while it cannot be sure that it knows every winner (another
	// node may have sold it a moment ago). It returns the order the request
	// id first won, if it did; otherwise it records, for a moment, that the
	// request id was answered "sold out", so that a Claim of it on another
	// node in that moment answers ErrSoldOut too: twins sent to two nodes
	// never get a 201 and a "sold out". The order is kept (replays): its
	// strings must not alias user or requestID, which alias a request.
	Refuse(ctx context.Context, item, user, requestID string) (first *Order, err error)
}

// OrderSink makes accepted orders durable: the embedded store's group
// commit, or a Kafka produce acknowledged by the brokers.
type OrderSink interface {
	// Append returns nil once o is durable, and an error once o can never
	// be stored: either it is certain o was not written, or (Kafka) a
	// record that lands late is refused by the writers because the
	// ledger's Unclaim, which the engine calls next, turned the claim into
	// a tombstone. On error the engine gives the stock back, so an order
	// that could still be stored would be sold twice.
	//
	// An implementation must not give up early because ctx ends: a client
	// that goes away must not turn an order that will be durable into a
	// refused one. It bounds its own wait.
	Append(ctx context.Context, o *Order) error
}

// StandingSink is an OrderSink that keeps a record of the orders whose
// Append failed (cluster mode: so that a record that lands later is refused
// even where the ledger's tombstone was lost). Stands tells it that such an
// order stands after all (ErrOrderStored: a writer stored it): its record
// must not count as refused.
type StandingSink interface {
	OrderSink
	Stands(ctx context.Context, o *Order) error
}

// Stands tells s that o stands after all, when s keeps a record of failed
// orders (StandingSink); a wrapper of a sink passes it on with this.
func Stands(ctx context.Context, s OrderSink, o *Order) error {
	if st, ok := s.(StandingSink); ok {
		return st.Stands(ctx, o)
	}
	return nil
}

// Catalog keeps the item definitions: the embedded store, or Redis in
// cluster mode, where every node changes the same catalogue.
type Catalog interface {
	SaveItem(ctx context.Context, it Item) error
	// Items lists every item. With a Ledger the engine reads it twice a
	// second (through rueidis' client-side cache), so that an item created
	// or changed on another node is sold here within a second.
	Items(ctx context.Context) ([]Item, error)
}

// RecordedCatalog is a Catalog with a record outside the ledger (cluster
// mode: MySQL): Recorded says whether an item was ever defined, so that an
// item this node does not know is not taken for a new one.
type RecordedCatalog interface {
	Catalog
	Recorded(ctx context.Context, id string) (bool, error)
}

// OrderStatus says how far an order has travelled.
type OrderStatus uint8

const (
	// Accepted: durable (store or Kafka), not yet in the order database.
	Accepted OrderStatus = iota
	// Persisted: in the order database.
	Persisted
)

var statusNames = [...]string{Accepted: "accepted", Persisted: "persisted"}

func (s OrderStatus) String() string { return statusNames[s] }

// Order is an accepted purchase. PriceCents is what the order costs: the
// unit price at the time of purchase times the quantity.
type Order struct {
	ID         uint64
	ItemID     string
	UserID     string
	Quantity   int64
	PriceCents int64
	RequestID  string    // empty when the client sent none
	CreatedAt  time.Time // UTC, whole milliseconds
	Status     OrderStatus
}

// Snapshot is the state the engine is rebuilt from at start.
type Snapshot struct {
	Items    []ItemRecord
	Holdings []Holding
	// Replays are the orders with a request id, so that a replay after a
	// restart still gets its first answer; those past the window are skipped.
	Replays     []*Order
	LastOrderID uint64
	// Board holds, per item, the first order of its first BoardSize users
	// (by order id): the leaderboards.
	Board []BoardEntry
}

// ItemRecord is an item and the units its durable orders hold.
type ItemRecord struct {
	Item Item
	Sold int64
}

// Holding is the units of an item a user's durable orders hold.
type Holding struct {
	ItemID, UserID string
	Units          int64
}
