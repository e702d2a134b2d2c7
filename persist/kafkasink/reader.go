package kafkasink

import (
	"context"
	"slices"
	"time"

	"github.com/flashsale/flashsale/engine"
)

// Stored is the order database's read side (mysqlstore.Store).
type Stored interface {
	Order(ctx context.Context, id uint64) (*engine.Order, bool, error)
	UserOrders(ctx context.Context, user string) ([]*engine.Order, error)
}

// Reader answers order reads in cluster mode: from the order database
// (status persisted), and, for orders acknowledged by Kafka that the
// writers have not stored yet, from the acknowledged orders the node
// remembers (accepted): its own, and every other node's from its feed.
type Reader struct {
	DB    Stored
	Acked *Acked
	// Barrier, when set, returns once every order acknowledged before it
	// was called is in Acked (the feed's barrier): an order is readable on
	// every node as soon as its 201 is written. A failed barrier is passed:
	// the order is readable once stored.
	Barrier func(ctx context.Context) error
}

// barrierWait bounds a read's wait for the feed.
const barrierWait = 100 * time.Millisecond

func (r Reader) barrier(ctx context.Context) {
	if r.Barrier != nil {
		ctx, cancel := context.WithTimeout(ctx, barrierWait)
		defer cancel()
		r.Barrier(ctx)
	}
}

// Order reads one order.
func (r Reader) Order(ctx context.Context, id uint64) (*engine.Order, bool, error) {
	o, ok, err := r.DB.Order(ctx, id)
	if err != nil || ok {
		return o, ok, err
	}
	if o, ok := r.Acked.Get(id); ok {
		return accepted(o), true, nil
	}
	if time.Since(engine.OrderIDTime(id)) < recentOrders { // acknowledged a moment ago, on another node?
		r.barrier(ctx)
		if o, ok := r.Acked.Get(id); ok {
			return accepted(o), true, nil
		}
	}
	return nil, false, nil
}

// recentOrders is how young an order id must be for a read that misses it
// to wait for the feed.
const recentOrders = 10 * time.Second

// UserOrders reads a user's orders, newest first: the stored ones and the
// accepted ones not stored yet.
func (r Reader) UserOrders(ctx context.Context, user string) ([]*engine.Order, error) {
	r.barrier(ctx)
	stored, err := r.DB.UserOrders(ctx, user)
	if err != nil {
		return nil, err
	}
	have := make(map[uint64]bool, len(stored))
	for _, o := range stored {
		have[o.ID] = true
	}
	for _, o := range r.Acked.OfUser(user) {
		if !have[o.ID] {
			stored = append(stored, accepted(o))
		}
	}
	slices.SortFunc(stored, func(a, b *engine.Order) int {
		switch {
		case a.ID > b.ID:
			return -1
		case a.ID < b.ID:
			return 1
		}
		return 0
	})
	return stored, nil
}

func accepted(o *engine.Order) *engine.Order {
	c := *o
	c.Status = engine.Accepted
	return &c
}
