package engine

import (
	"fmt"
	"sync/atomic"
	"time"
)

// Order ids are 63-bit integers (positive in every signed 64-bit store):
//
//	| 41 bits: ms since idEpoch | 10 bits: node | 12 bits: sequence |
//
// Sorting ids sorts orders by time of creation on a node. The time and the
// sequence live in one atomic word, advanced by compare-and-swap, so ids are
// made without a lock. A node that makes more than 4096 ids in a millisecond
// borrows from the next one: ids run ahead of the clock for a moment, and
// stay unique and increasing. So does a clock that steps back.
const (
	idNodeBits = 10
	idSeqBits  = 12
	// MaxNodeID is the highest node id an order id can carry.
	MaxNodeID = 1<<idNodeBits - 1
)

// idEpoch is the zero of the time field: 2024-01-01T00:00:00Z, good until 2093.
var idEpoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

type idGen struct {
	node  uint64
	state atomic.Uint64 // ms<<idSeqBits | seq of the last id made
}

func newIDGen(node int) (*idGen, error) {
	if node < 0 || node > MaxNodeID {
		return nil, fmt.Errorf("engine: node id %d is out of range [0, %d]", node, MaxNodeID)
	}
	return &idGen{node: uint64(node)}, nil
}

// next returns a new id for an order created at now.
func (g *idGen) next(now time.Time) uint64 {
	ms := uint64(now.Sub(idEpoch).Milliseconds())
	for {
		old := g.state.Load()
		s := ms << idSeqBits
		if s <= old {
			s = old + 1
		}
		if g.state.CompareAndSwap(old, s) {
			ms, seq := s>>idSeqBits, s&(1<<idSeqBits-1)
			return ms<<(idNodeBits+idSeqBits) | g.node<<idSeqBits | seq
		}
	}
}

// observe makes every later id greater than id, so a node restarted with a
// clock behind its last order (or with a rebuilt store) never repeats an id.
func (g *idGen) observe(id uint64) {
	// The next id is at least in the millisecond after id's: ids of other
	// nodes carry other node bits, so only a later time orders after them.
	ms := id >> (idNodeBits + idSeqBits)
	s := (ms+1)<<idSeqBits - 1
	for {
		old := g.state.Load()
		if s <= old || g.state.CompareAndSwap(old, s) {
			return
		}
	}
}

// orderIDNode returns the node id carried by an order id.
func orderIDNode(id uint64) int { return int(id >> idSeqBits & MaxNodeID) }

// OrderIDTime returns the millisecond an order id was made in (or, for a node
// that ran ahead of its clock, the millisecond it borrowed).
func OrderIDTime(id uint64) time.Time {
	return idEpoch.Add(time.Duration(id>>(idNodeBits+idSeqBits)) * time.Millisecond).UTC()
}

// FirstOrderIDAt returns the smallest id an order created at t or later can
// have, on any node: stores use it to find recent orders by primary key.
func FirstOrderIDAt(t time.Time) uint64 {
	ms := t.Sub(idEpoch).Milliseconds()
	if ms < 0 {
		return 0
	}
	return uint64(ms) << (idNodeBits + idSeqBits)
}
