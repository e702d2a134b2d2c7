package engine

import (
	"context"
	"time"
)

// Cluster mode: each node follows the cluster's events (the node's feed:
// persist/redisledger.Feed) and tells its engine what other nodes did, so
// that it answers from memory what it would otherwise have to ask Redis:
// a winner's retry (the first order of every request id that won anywhere),
// a pool that ran dry or filled again, an item created or changed. The
// events come in order; after a break the feed resynchronises first. None of
// this is needed for correctness where the ledger is asked anyway (a claim
// checks the request id in Redis); it is what keeps Redis off the losers'
// path and the answers the same on every node.

// Remember records a winner anywhere in the cluster: a replay of its
// request id is answered with o on this node too.
func (e *Engine) Remember(o *Order) {
	if o.RequestID != "" && ValidUserID(o.UserID) && ValidRequestID(o.RequestID) {
		var key idemKey
		key.set(o.UserID, o.RequestID)
		e.idem.learn(key.bytes(), o, e.now())
	}
}

// Release forgets a winner whose claim was given back (its purchase failed):
// its request id is free again. o needs ID, UserID and RequestID.
func (e *Engine) Release(o *Order) {
	if o.RequestID != "" && ValidUserID(o.UserID) && ValidRequestID(o.RequestID) {
		var key idemKey
		key.set(o.UserID, o.RequestID)
		e.idem.unlearn(key.bytes(), o.ID)
	}
}

// SetClaimed records how many units of item are claimed across the
// cluster, as of the feed's last event: when it is the item's stock (and
// the feed is up), every winner of the item is known here.
func (e *Engine) SetClaimed(item string, claimed int64) {
	if it := e.lookup(item); it != nil {
		it.claimed.Store(claimed)
	}
}

// SetPool records what the item's shared pool has left: a pool that ran
// dry is answered from memory at once, one that filled again is leased from.
func (e *Engine) SetPool(item string, remaining int64) {
	if it := e.lookup(item); it != nil {
		it.pool.Store(remaining)
	}
}

// SetFeedUp says whether the feed is up. While it is down the engine cannot
// be sure it knows every winner, and asks the ledger for a request id it
// does not know before answering "sold out".
func (e *Engine) SetFeedUp(up bool) { e.feedUp.Store(up) }

// SyncCatalog brings the engine's items in line with the shared catalogue
// (Catalog.Items): new items are added, changed definitions replace the
// old. A no-op standalone, where this engine is the catalogue's only writer.
// The janitor runs it twice a second as a safety net behind the feed.
func (e *Engine) SyncCatalog() error {
	if e.ledger == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	items, err := e.catalog.Items(ctx)
	if err != nil {
		return err
	}
	for _, in := range items {
		e.Follow(in)
	}
	return nil
}

// Follow brings one item in line with the shared catalogue: added when new,
// its definition replaced when changed (a changed total makes the next
// short purchase ask the pool again). A no-op standalone.
func (e *Engine) Follow(in Item) {
	if e.ledger == nil || in.Validate() != nil {
		return
	}
	e.adminMu.Lock()
	defer e.adminMu.Unlock()
	it := e.lookup(in.ID)
	if it == nil {
		e.addItem(in)
		return
	}
	cur := it.cfg.Load()
	if *cur == in {
		return
	}
	if cur.Stock != in.Stock {
		it.pool.Store(-1)
	}
	it.cfg.Store(&in)
}

// SetLedgerLost stops selling (ErrLedgerLost, a 503, for every purchase and
// item change; replays of known winners are still answered) when the shared
// ledger lost its data or is not the one this node sold from: what it says
// can no longer be trusted, and a pool made again would sell units that were
// sold already. Rebuilt resumes.
func (e *Engine) SetLedgerLost() { e.lost.Store(true) }

// ledgerLost stops selling because the ledger said a pool is gone.
func (e *Engine) ledgerLost() {
	e.lost.Store(true)
	if e.onLost != nil {
		e.onLost()
	}
}

// LedgerLost reports whether selling is stopped for a lost ledger.
func (e *Engine) LedgerLost() bool { return e.lost.Load() }

// Rebuilt prepares the engine to sell from a ledger rebuilt from the orders
// of record; it still sells nothing until LedgerSound. The units in this
// node's shards were leased from the lost ledger, and the rebuilt one
// counts them unsold in its pool: they are dropped. Pools and claimed
// counts are learnt afresh, and so are the winners (the caller learns the
// request ids the rebuilt ledger holds before LedgerSound): one learnt from
// the lost ledger may have been answered 503 after all, with no release
// event to say so.
func (e *Engine) Rebuilt() {
	e.adminMu.Lock()
	defer e.adminMu.Unlock()
	for _, it := range e.items.Load().sorted {
		for n := it.stock.left(); n > 0 && !it.stock.take(n); n = it.stock.left() {
		}
		it.pool.Store(-1)
		it.claimed.Store(-1)
	}
	e.idem.forgetFinished()
	e.lost.Store(true)
}

// LedgerSound resumes selling: after Rebuilt, or after a script's "lost"
// answer turned out stale (the pools and the generation are sound; the
// leased units stay).
func (e *Engine) LedgerSound() { e.lost.Store(false) }
