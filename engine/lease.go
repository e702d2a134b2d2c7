package engine

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Cluster mode: an item's shards hold the units this node leased from the
// shared pool (the Ledger). A purchase that finds them short leases more,
// one lease per item at a time; a pool seen empty answers losers from
// memory until the janitor sees units come back.

// mayLease reports whether a short purchase may still get units by leasing.
func (e *Engine) mayLease(it *item) bool {
	return e.ledger != nil && it.pool.Load() != 0
}

// refill leases units until q are local, or the pool is empty.
func (e *Engine) refill(ctx context.Context, it *item, q int64) (bool, error) {
	if !e.mayLease(it) {
		return false, nil
	}
	it.refillMu.Lock()
	defer it.refillMu.Unlock()
	if it.stock.left() >= q {
		return true, nil // a lease that ran meanwhile brought units
	}
	pool := it.pool.Load()
	if pool == 0 {
		return false, nil
	}
	want := e.maxLease
	if pool > 0 {
		want = min(pool/8, e.maxLease) // large while plentiful, small near the end
	}
	granted, remaining, err := e.ledger.Lease(ctx, it.id, max(want, q))
	if err != nil {
		if !errors.Is(err, ErrLedgerLost) {
			it.leaseUnsure.Store(true)
		}
		return false, err
	}
	it.pool.Store(remaining)
	if granted > 0 {
		it.stock.spread(granted)
	}
	return it.stock.left() >= q, nil
}

// putPooledItem creates or updates an item whose units live in the pool.
// The caller holds adminMu.
func (e *Engine) putPooledItem(ctx context.Context, it *item, in Item) (ItemView, bool, error) {
	exists := it != nil
	if rec, ok := e.catalog.(RecordedCatalog); ok && !exists {
		// This node may not know an item the cluster has (it missed its
		// event): the catalogue of record says, so that a pool lost with
		// Redis is never made again at full stock.
		var err error
		if exists, err = rec.Recorded(ctx, in.ID); err != nil {
			return ItemView{}, false, unavailable("cannot read the catalogue of record", err)
		}
	}
	if err := e.ledger.PutItem(ctx, in.ID, in.Stock, exists); err != nil {
		switch {
		case errors.Is(err, ErrStockBelowSold):
			return ItemView{}, false, ErrStockBelowSold
		case errors.Is(err, ErrLedgerLost):
			e.ledgerLost()
			return ItemView{}, false, ErrLedgerLost
		}
		return ItemView{}, false, unavailable("cannot set the item's stock in the pool", err)
	}
	if err := e.catalog.SaveItem(ctx, in); err != nil {
		return ItemView{}, false, unavailable("cannot save item", err)
	}
	created := it == nil
	if created {
		it = e.addItem(in)
	} else {
		in.Ended = it.cfg.Load().Ended
		it.cfg.Store(&in)
	}
	it.pool.Store(-1) // the next short purchase asks the pool
	return it.view(e.now()), created, nil
}

// refreshPools reads what each item's pool has left: units another node
// gave back are sold here, and stock_left lags the cluster by at most the
// refresh period (docs/api.md allows a second).
func (e *Engine) refreshPools() {
	if e.ledger == nil {
		return
	}
	for _, it := range e.items.Load().sorted {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		if n, err := e.ledger.Remaining(ctx, it.id); err == nil {
			it.pool.Store(n)
		}
		cancel()
	}
}

// idleLease is how long a node keeps leased units nobody here buys once the
// pool is empty, before it gives them back for others to sell.
const idleLease = time.Second

// returnIdleLeases gives back the units of items whose pool is empty and
// that this node has not sold for idleLease: no node sits on the last units
// while others answer "sold out", and once every unit is claimed every node
// knows every winner, and answers losers from memory. After a lease that
// failed without an answer, it also gives back what the ledger counts
// leased here beyond what the node holds (the units of purchases between
// their lease and their claim).
func (e *Engine) returnIdleLeases(now time.Time) {
	if e.ledger == nil {
		return
	}
	for _, it := range e.items.Load().sorted {
		n := it.stock.left()
		unsure := it.leaseUnsure.Load()
		if n == 0 && !unsure || it.pool.Load() != 0 || now.UnixNano()-it.lastSale.Load() < int64(idleLease) || n > 0 && !it.stock.take(n) {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		if got, err := e.ledger.Trim(ctx, it.id, it.pending.Load()); err != nil {
			it.stock.put(n)
		} else {
			it.leaseUnsure.Store(false)
			if got > 0 {
				it.pool.Store(-1) // others may lease them; look again
			}
		}
		cancel()
	}
}

// GiveBackAll returns every unit this node holds to the pool, for a
// graceful stop in cluster mode (a no-op standalone). Purchases should have
// stopped.
func (e *Engine) GiveBackAll(ctx context.Context) error {
	if e.ledger == nil {
		return nil
	}
	var errs []error
	for _, it := range e.items.Load().sorted {
		n := it.stock.left()
		if n == 0 || !it.stock.take(n) {
			continue
		}
		if err := e.ledger.GiveBack(ctx, it.id, n); err != nil {
			it.stock.put(n)
			errs = append(errs, fmt.Errorf("engine: cannot give back %d units of %q: %w", n, it.id, err))
		}
	}
	return errors.Join(errs...)
}
