// Package ledger is the model of cluster mode's shared ledger: what every
// party to it must agree on, in one place. persist/redisledger keeps the
// ledger in Redis; the engine uses it as its engine.Ledger (leases and
// claims); the writers (persist/orderwriter) and the reconcilers
// (persist/reconcile) settle it through the interfaces below. It does no I/O
// and imports no adapter.
//
// # The stock equation
//
// For every item, at every instant (each change is one Lua script in Redis):
//
//	total = remaining + leased + claimed,   0 <= pending <= claimed
//
// remaining is in the pool, leased is in nodes' shards, claimed belongs to
// winners, and pending is the part of claimed whose order no writer has
// stored yet. Audit is one reading of it; the auditor exports it as metrics
// and `fsctl audit` prints it.
//
// # The lifecycle of a claim
//
// When orders go through Kafka, a winner's claim is kept by order id until
// its order is in the order database, because between "stock taken" (the
// claim) and "order recorded" (the row) lies a produce whose outcome may be
// unknown. A claim is Pending from its Claim until one of two transitions,
// whichever runs first (both are scripts on the item's slot, so they exclude
// each other), and never moves again:
//
//	Pending -> Stored   a writer marks it (Marker.Persist) before inserting
//	                    the row; from then on nothing can undo it.
//	Pending -> Aborted  its units are given back: by its node, whose produce
//	                    failed or timed out (engine.Ledger.Unclaim: the
//	                    shopper got 503), or by a reconciler, once no record
//	                    of it can still arrive (Settler.Abandon: its node
//	                    died between the claim and the ack).
//
// Between the two, a claim whose record Kafka acknowledged is marked Acked by
// its node (engine.Ledger.Confirm) before the shopper's 201: the order is
// then readable on every node, and no reconciler may abandon it (its record
// is in the topic: a writer will store it). Acked -> Stored as Pending does.
//
// The consequences, each tested: a record that lands after its claim was
// aborted is refused by the writers (dead-lettered: Verdict Refuse, reason
// claim_aborted), since its unit may have been sold again; an Unclaim that
// finds the claim Stored or Acked undoes nothing and answers
// engine.ErrOrderStored, and the purchase stands.
// Settled claims (Stored or Aborted) are forgotten once no record of them can
// arrive any more (Settler.Forget); the order database keeps the history.
package ledger

import (
	"context"
	"strings"
	"time"

	"github.com/flashsale/flashsale/engine"
)

// Audit is an item's ledger at one instant.
type Audit struct {
	Total, Remaining, Claimed, Pending int64
	Leases                             map[string]int64 // units leased, by node instance
}

// Leased is the sum of the leases.
func (a Audit) Leased() int64 {
	var n int64
	for _, v := range a.Leases {
		n += v
	}
	return n
}

// Difference is total - (remaining + leased + claimed): 0 when the stock
// equation holds. Anything else is the worst alert there is.
func (a Audit) Difference() int64 { return a.Total - a.Remaining - a.Leased() - a.Claimed }

// Balanced reports whether the stock equation holds.
func (a Audit) Balanced() bool {
	return a.Difference() == 0 && a.Pending >= 0 && a.Pending <= a.Claimed
}

// State is where a claim stands.
type State byte

// The states of a claim. The values are the first byte of a claim's record
// in Redis, which the Lua scripts of persist/redisledger compare.
const (
	Pending State = 'p'
	Acked   State = 'k'
	Stored  State = 's'
	Aborted State = 'a'
)

func (s State) String() string {
	switch s {
	case Pending:
		return "pending"
	case Acked:
		return "acked"
	case Stored:
		return "stored"
	case Aborted:
		return "aborted"
	}
	return "unknown"
}

// Claim is a tracked claim: one winner's order, by order id.
type Claim struct {
	OrderID   uint64
	ItemID    string
	State     State
	Quantity  int64
	CreatedAt time.Time // the order's time, whole milliseconds
	UserID    string
	RequestID string
}

// Verdict is what a writer does with one record, from its claim.
type Verdict int8

const (
	// Store: the claim is (now) marked Stored; insert the order.
	Store Verdict = 1
	// Refuse: the claim was Aborted, its units given back; storing the
	// order would oversell.
	Refuse Verdict = 0
	// Unknown: no such claim (never made in this ledger, or long forgotten).
	Unknown Verdict = -1
)

// String is the reason a refused record carries to the dead-letter topic.
func (v Verdict) String() string {
	switch v {
	case Store:
		return "store"
	case Refuse:
		return "claim_aborted"
	}
	return "claim_unknown"
}

// Marker is what a writer needs of the ledger.
type Marker interface {
	// Persist marks the claims of orders about to be stored (Pending ->
	// Stored, or already Stored: a redelivery) and answers a Verdict per
	// order, in order.
	Persist(ctx context.Context, orders []*engine.Order) ([]Verdict, error)
	// CurrentGeneration is the ledger's generation now: "" when the ledger
	// lost its data, Rebuilding+next while it is rebuilt. A claim the
	// writer cannot find in a lost or rebuilding ledger was in the lost
	// one: its order is of record (unless its purchase was answered 503).
	CurrentGeneration(ctx context.Context) (string, error)
	// Condemn marks generation gen, if it is still the ledger's, as having
	// lost writes (Condemned+gen): every node stops selling and the ledger
	// is rebuilt.
	Condemn(ctx context.Context, gen string) error
	// Board enters stored orders on their items' leaderboards.
	Board(ctx context.Context, orders []*engine.Order) error
}

// Rebuilding is the prefix of the ledger's generation while it is rebuilt
// from the orders of record.
const Rebuilding = "rebuilding:"

// IsRebuilding reports whether generation g says the ledger is being
// rebuilt.
func IsRebuilding(g string) bool { return strings.HasPrefix(g, Rebuilding) }

// Condemned is the prefix of the ledger's generation once a writer found it
// lost writes (orders whose claims it does not have).
const Condemned = "condemned:"

// IsCondemned reports whether generation g was condemned.
func IsCondemned(g string) bool { return strings.HasPrefix(g, Condemned) }

// Settler is what the claim reconciler needs of the ledger.
type Settler interface {
	// Claims lists an item's tracked claims, in every state.
	Claims(ctx context.Context, item string) ([]Claim, error)
	// Abandon gives back the units of a Pending claim that no record can
	// still store (Pending -> Aborted), to the pool. It returns false,
	// doing nothing, when the claim changed since it was read.
	Abandon(ctx context.Context, c Claim) (bool, error)
	// Forget drops settled claims.
	Forget(ctx context.Context, item string, ids ...uint64) error
}

// Pools is what the lease reconciler and the auditor need of the ledger.
type Pools interface {
	// Reconcile gives the units leased to dead nodes back to the pool and
	// says how many; what they claimed stays claimed.
	Reconcile(ctx context.Context, item string) (int64, error)
	// Audit reads an item's ledger at one instant.
	Audit(ctx context.Context, item string) (Audit, error)
}

// PoolState is what a guard reads of an item's pool: its generation (""
// when the pool is gone) and its claim sequence, which only grows.
type PoolState struct {
	Gen string
	Seq int64
}

// Tally is what the orders of record say of an item, from which a lost
// ledger is rebuilt: sold is every unit in a stored order, what is left of
// the stock is total - sold, the users hold what their orders hold, and the
// request ids of the idempotency window answer their first orders again.
type Tally struct {
	Item     engine.Item
	Sold     int64
	Holdings map[string]int64 // units by user
	Recent   []*engine.Order  // orders with a request id, within the window
	// Firsts are the first orders of the item's first engine.BoardSize
	// users, by order id: its leaderboard.
	Firsts []engine.BoardEntry
	// Seq is the highest claim sequence of the item seen before the loss
	// (the marks of record): the rebuilt pool counts on from above it.
	Seq int64
}
