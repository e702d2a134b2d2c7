package node

import (
	"context"

	"github.com/flashsale/flashsale/engine"
	"github.com/flashsale/flashsale/persist/mysqlstore"
	"github.com/flashsale/flashsale/persist/redisledger"
)

// recordedCatalog is the cluster's catalogue: written to the order database
// first (the definitions of record, which outlive a Redis that lost its
// data), then to Redis (which pushes the change to every node and serves
// the reads, through the client-side cache).
type recordedCatalog struct {
	record *mysqlstore.Store
	shared *redisledger.Catalog
}

func (c recordedCatalog) SaveItem(ctx context.Context, it engine.Item) error {
	if err := c.record.SaveItem(ctx, it); err != nil {
		return err
	}
	return c.shared.SaveItem(ctx, it)
}

func (c recordedCatalog) Items(ctx context.Context) ([]engine.Item, error) {
	return c.shared.Items(ctx)
}

func (c recordedCatalog) Recorded(ctx context.Context, id string) (bool, error) {
	return c.record.Recorded(ctx, id)
}

// all is what a node starts from: the definitions of record, and those only
// Redis has (items created before their definitions were recorded, by an
// earlier version), which it records now: a rebuild restores only what is
// of record.
func (c recordedCatalog) all(ctx context.Context) ([]engine.Item, error) {
	items, err := c.record.Items(ctx)
	if err != nil {
		return nil, err
	}
	shared, err := c.shared.Items(ctx)
	if err != nil {
		return nil, err
	}
	have := make(map[string]bool, len(items))
	for _, it := range items {
		have[it.ID] = true
	}
	for _, it := range shared {
		if !have[it.ID] {
			if err := c.record.SaveItem(ctx, it); err != nil {
				return nil, err
			}
			items = append(items, it)
		}
	}
	return items, nil
}
