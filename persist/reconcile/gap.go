package reconcile

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flashsale/flashsale/ledger"
	"github.com/flashsale/flashsale/persist/orderlog"
)

// Gap settles the claims whose order never reached the order database: a
// node that died between its claim and the Kafka ack (or whose undo failed)
// leaves a pending claim, holding units nobody can sell. A pending claim is
// abandoned (units back to the pool) only once it is certain its record
// cannot still be stored:
//
//  1. the claim is older than the safety margin (twice the longest a
//     producer waits for an ack, plus the clock-skew allowance), so no
//     produce of it is in flight any more: a live node has long undone it
//     itself;
//  2. at a checkpoint t0 the topic's end offsets E were read, and now the
//     writers' committed offsets have reached E on every partition: every
//     record appended before t0 has been stored or dead-lettered.
//
// A claim created before t0 - margin that is still pending has no record
// below E, and none can be appended any more: it is abandoned. If a record
// of it does land later, the writers refuse it (the claim is aborted).
// Claims settled (stored or aborted) before the same point are forgotten.
// Several nodes may run this at once: the ledger's scripts compare and set.
type Gap struct {
	progress offsets
	ledger   ledger.Settler
	margin   time.Duration
	now      func() time.Time

	checkpoint *checkpoint

	abandoned prometheus.Counter
	forgotten prometheus.Counter
}

// offsets is where the orders topic ends and how far the writers have
// committed (orderlog.Progress).
type offsets interface {
	Topic() string
	EndOffsets(ctx context.Context) (map[int32]int64, error)
	Committed(ctx context.Context) (map[int32]int64, error)
	Close()
}

type checkpoint struct {
	at  time.Time
	end map[int32]int64
}

// GapOptions configures a Gap.
type GapOptions struct {
	Kafka  orderlog.Config // the topic, the writers' group, the produce deadline
	Ledger ledger.Settler  // required
	// Skew is the clock skew allowed between nodes; default DefaultSkew.
	Skew time.Duration
}

// DefaultSkew is the clock skew allowed between nodes.
const DefaultSkew = time.Second

// NewGap connects to Kafka for offsets.
func NewGap(o GapOptions) (*Gap, error) {
	o.Kafka = o.Kafka.WithDefaults()
	if o.Skew <= 0 {
		o.Skew = DefaultSkew
	}
	p, err := orderlog.NewProgress(o.Kafka)
	if err != nil {
		return nil, err
	}
	return &Gap{progress: p, ledger: o.Ledger, margin: 2*(o.Kafka.Timeout+orderlog.AckGrace) + o.Skew, now: time.Now,
		abandoned: prometheus.NewCounter(prometheus.CounterOpts{Name: "flashsale_claims_abandoned_total",
			Help: "Pending claims with no order in Kafka past the deadline, given back to the pool by this node."}),
		forgotten: prometheus.NewCounter(prometheus.CounterOpts{Name: "flashsale_claims_forgotten_total",
			Help: "Settled claims (stored or aborted) dropped from Redis by this node."}),
	}, nil
}

// Close closes the Kafka client.
func (g *Gap) Close() { g.progress.Close() }

// GapResult is what one pass did.
type GapResult struct {
	Abandoned, Forgotten int
	Pending              int  // pending claims left (not yet old enough, or no checkpoint passed)
	Passed               bool // a checkpoint was passed in this pass
}

// Pass runs one round over items: if the last checkpoint has been passed by
// the writers, settle what it makes certain; then take a new checkpoint.
func (g *Gap) Pass(ctx context.Context, items []string) (GapResult, error) {
	var res GapResult
	if g.checkpoint != nil {
		passed, err := g.passed(ctx, g.checkpoint.end)
		if err != nil {
			return res, err
		}
		if passed {
			res.Passed = true
			if err := g.settle(ctx, items, g.checkpoint.at.Add(-g.margin), &res); err != nil {
				return res, err
			}
		}
	}
	if g.checkpoint == nil || res.Passed {
		at := g.now()
		end, err := g.progress.EndOffsets(ctx)
		if err != nil {
			return res, err
		}
		g.checkpoint = &checkpoint{at: at, end: end}
	}
	return res, nil
}

// Settle takes a checkpoint, waits (up to wait) for the writers to pass it,
// and settles what it makes certain: one reconciliation by hand (fsctl).
func (g *Gap) Settle(ctx context.Context, items []string, wait time.Duration) (GapResult, error) {
	if _, err := g.Pass(ctx, items); err != nil { // the checkpoint
		return GapResult{}, err
	}
	deadline := time.Now().Add(wait)
	for {
		res, err := g.Pass(ctx, items)
		if err != nil || res.Passed {
			return res, err
		}
		if time.Now().After(deadline) {
			return res, fmt.Errorf("the writers did not pass the checkpoint of %s within %v: are they running?", g.progress.Topic(), wait)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (g *Gap) settle(ctx context.Context, items []string, before time.Time, res *GapResult) error {
	for _, item := range items {
		claims, err := g.ledger.Claims(ctx, item)
		if err != nil {
			return err
		}
		var settled []uint64
		for _, c := range claims {
			old := c.CreatedAt.Before(before)
			switch {
			case c.State == ledger.Pending && old:
				ok, err := g.ledger.Abandon(ctx, c)
				if err != nil {
					return err
				}
				if ok {
					res.Abandoned++
					g.abandoned.Inc()
					slog.Warn("abandoned a claim with no order in Kafka", "item", item, "order", c.OrderID,
						"user", c.UserID, "units", c.Quantity, "claimed_at", c.CreatedAt)
				}
			case c.State == ledger.Pending, c.State == ledger.Acked: // a writer will store an acked one
				res.Pending++
			case old:
				settled = append(settled, c.OrderID)
			}
		}
		if err := g.ledger.Forget(ctx, item, settled...); err != nil {
			return err
		}
		res.Forgotten += len(settled)
		g.forgotten.Add(float64(len(settled)))
	}
	return nil
}

// passed reports whether the writers' committed offsets reached end on
// every partition.
func (g *Gap) passed(ctx context.Context, end map[int32]int64) (bool, error) {
	committed, err := g.progress.Committed(ctx)
	if err != nil {
		return false, err
	}
	for p, e := range end {
		if e != 0 && committed[p] < e {
			return false, nil
		}
	}
	return true, nil
}

// Run passes every interval until ctx ends.
func (g *Gap) Run(ctx context.Context, interval time.Duration, items func() []string) {
	every(ctx, interval, func() {
		if _, err := g.Pass(ctx, items()); err != nil && ctx.Err() == nil {
			slog.Warn("cannot reconcile claims with Kafka", "err", err)
		}
	})
}

// Collectors are the reconciler's metrics, to register.
func (g *Gap) Collectors() []prometheus.Collector {
	return []prometheus.Collector{g.abandoned, g.forgotten}
}
