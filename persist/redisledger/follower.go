package redisledger

import (
	"context"
	"log/slog"
	"time"

	"github.com/flashsale/flashsale/engine"
)

// Follower is an edge node's Listener: it tells the node's engine what the
// feed says (winners and released claims, pools, changed items) and passes
// the acknowledged orders on, for reads.
type Follower struct {
	Engine  *engine.Engine
	Ledger  *Ledger
	Catalog *Catalog
	OnAcked func(*engine.Order) // optional
	// OnGeneration, when set, is told that the ledger's generation changed.
	OnGeneration func(gen string)
}

var _ Listener = (*Follower)(nil)

// Resync reads what the events would have said: the catalogue, and for
// every item its pool, its claimed units and the request ids that won.
// A ledger that is not the one this node sells from (Redis lost its data,
// or it was rebuilt) teaches nothing: OnGeneration is told, and the node
// keeps what it knew until it sells from the rebuilt ledger (and
// resynchronises again).
func (f *Follower) Resync(ctx context.Context) error {
	if err := f.Engine.SyncCatalog(); err != nil {
		return err
	}
	if f.Ledger.Generation() != "" {
		gen, err := f.Ledger.CurrentGeneration(ctx)
		if err != nil {
			return err
		}
		if gen != f.Ledger.Generation() {
			f.Generation(gen)
			return nil
		}
	}
	for _, v := range f.Engine.Items() {
		winners, claimed, err := f.Ledger.Winners(ctx, v.ID)
		if err != nil {
			return err
		}
		for _, o := range winners {
			f.Engine.Remember(o)
		}
		f.Engine.SetClaimed(v.ID, claimed)
		remaining, err := f.Ledger.Remaining(ctx, v.ID)
		if err != nil {
			return err
		}
		f.Engine.SetPool(v.ID, remaining)
	}
	return nil
}

func (f *Follower) Claimed(o *engine.Order, claimed, seq int64) {
	f.Ledger.seqs.note(o.ItemID, seq)
	f.Engine.Remember(o)
	f.Engine.SetClaimed(o.ItemID, claimed)
}

func (f *Follower) Released(o *engine.Order, claimed int64) {
	f.Engine.Release(o)
	f.Engine.SetClaimed(o.ItemID, claimed)
}

func (f *Follower) Acked(o *engine.Order) {
	if f.OnAcked != nil {
		f.OnAcked(o)
	}
}

func (f *Follower) Pool(item string, remaining int64) { f.Engine.SetPool(item, remaining) }

// Item reads the changed item from Redis itself (not the client-side cache,
// whose invalidation may come later) and brings the engine in line.
func (f *Follower) Item(item string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	it, ok, err := f.Catalog.Item(ctx, item)
	if err != nil {
		slog.Warn("cannot read a changed item; the next catalogue sync will", "item", item, "err", err)
		return
	}
	if ok {
		f.Engine.Follow(it)
	}
}

// Generation tells OnGeneration (the node's guard, which decides).
func (f *Follower) Generation(gen string) {
	if f.OnGeneration != nil {
		f.OnGeneration(gen)
	}
}
