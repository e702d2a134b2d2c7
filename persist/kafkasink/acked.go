package kafkasink

import (
	"sync"

	"github.com/flashsale/flashsale/engine"
)

// maxAcked bounds the acknowledged orders a node remembers for reads
// (winners only: the stock bounds them; ~200 bytes each).
const maxAcked = 100_000

// Acked remembers the last orders Kafka acknowledged, this node's (the
// producer adds them) and, in a cluster, every other node's (the node's
// event feed adds them), so that an order is readable on every node from
// its 201 until a writer has stored it. Oldest out first; an order added
// twice is kept once.
type Acked struct {
	mu     sync.Mutex
	max    int
	ring   []*engine.Order
	next   int
	byID   map[uint64]*engine.Order
	byUser map[string][]*engine.Order
}

// NewAcked remembers up to max orders; max <= 0 is the default.
func NewAcked(max int) *Acked {
	if max <= 0 {
		max = maxAcked
	}
	return &Acked{max: max, byID: map[uint64]*engine.Order{}, byUser: map[string][]*engine.Order{}}
}

// Add remembers o.
func (r *Acked) Add(o *engine.Order) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.byID[o.ID] != nil {
		return
	}
	if len(r.ring) < r.max {
		r.ring = append(r.ring, o)
	} else {
		old := r.ring[r.next]
		delete(r.byID, old.ID)
		list := r.byUser[old.UserID]
		for i, x := range list {
			if x == old {
				list = append(list[:i:i], list[i+1:]...)
				break
			}
		}
		if len(list) == 0 {
			delete(r.byUser, old.UserID)
		} else {
			r.byUser[old.UserID] = list
		}
		r.ring[r.next] = o
		r.next = (r.next + 1) % r.max
	}
	r.byID[o.ID] = o
	r.byUser[o.UserID] = append(r.byUser[o.UserID], o)
}

// Get returns the acknowledged order id, when remembered.
func (r *Acked) Get(id uint64) (*engine.Order, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	o, ok := r.byID[id]
	return o, ok
}

// OfUser returns the user's acknowledged orders remembered.
func (r *Acked) OfUser(user string) []*engine.Order {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*engine.Order(nil), r.byUser[user]...)
}
