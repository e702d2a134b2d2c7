package kafkasink

import (
	"context"
	"slices"

	"github.com/flashsale/flashsale/engine"
)

// Stored is the order database's read side (mysqlstore.Store).
type Stored interface {
	Order(ctx context.Context, id uint64) (*engine.Order, bool, error)
	UserOrders(ctx context.Context, user string) ([]*engine.Order, error)
}

// Reader answers order reads in cluster mode: from the order database
// (status persisted), and, for orders this node acknowledged that the
// writers have not stored yet, from the producer's memory (accepted).
type Reader struct {
	DB       Stored
	Producer *Producer
}

// Order reads one order.
func (r Reader) Order(ctx context.Context, id uint64) (*engine.Order, bool, error) {
	o, ok, err := r.DB.Order(ctx, id)
	if err != nil || ok {
		return o, ok, err
	}
	if o, ok := r.Producer.Recent(id); ok {
		return accepted(o), true, nil
	}
	return nil, false, nil
}

// UserOrders reads a user's orders, newest first: the stored ones and the
// accepted ones not stored yet.
func (r Reader) UserOrders(ctx context.Context, user string) ([]*engine.Order, error) {
	stored, err := r.DB.UserOrders(ctx, user)
	if err != nil {
		return nil, err
	}
	have := make(map[uint64]bool, len(stored))
	for _, o := range stored {
		have[o.ID] = true
	}
	for _, o := range r.Producer.RecentOf(user) {
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
