package node

import (
	"github.com/flashsale/flashsale/persist/redisledger"
)

// startFeed follows the cluster's events until the node stops: the engine
// learns every winner, released claim, pool and item change at once, and
// the readers every acknowledged order.
func (e *Edge) startFeed(cl *clusterPart) {
	f := &redisledger.Follower{Engine: e.engine, Ledger: cl.ledger, Catalog: cl.catalog.shared, OnAcked: cl.acked.Add,
		OnGeneration: func(string) { cl.look() }}
	cl.follower = f
	e.registry.MustRegister(cl.feed.Collectors()...)
	go cl.feed.Run(cl.loops, f, e.engine.SetFeedUp)
}
