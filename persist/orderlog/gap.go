package orderlog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flashsale/flashsale/persist/redisledger"
)

// ClaimLedger is what the gap reconciler needs of the Redis ledger.
type ClaimLedger interface {
	Claims(ctx context.Context, item string) ([]redisledger.Claim, error)
	Abandon(ctx context.Context, c redisledger.Claim) (bool, error)
	Forget(ctx context.Context, item string, ids ...uint64) error
}

// GapReconciler settles the claims whose order never reached the order
// database: a node that died between its Redis claim and the Kafka ack
// (or whose undo failed) leaves a pending claim, holding units nobody can
// sell. A pending claim is abandoned (units back to the pool) only once it
// is certain its record cannot still be stored:
//
//  1. the claim is older than the safety margin (twice the produce
//     deadline plus the clock-skew allowance), so no produce of it is in
//     flight any more: a live node has long undone it itself;
//  2. at a checkpoint t0 the topic's end offsets E were read, and now the
//     writers' committed offsets have reached E on every partition: every
//     record appended before t0 has been stored or dead-lettered.
//
// A claim created before t0 - margin that is still pending has no record
// below E, and none can be appended any more: it is abandoned. If a record
// of it does land later, the writers refuse it (the claim is a tombstone).
// Claims settled (stored or aborted) before the same point are forgotten.
// Several nodes may run this at once: the scripts compare and set.
type GapReconciler struct {
	adm    *kadm.Client
	cl     *kgo.Client
	ledger ClaimLedger
	topic  string
	group  string
	margin time.Duration
	now    func() time.Time

	checkpoint *checkpoint

	abandoned prometheus.Counter
	forgotten prometheus.Counter
}

type checkpoint struct {
	at  time.Time
	end map[int32]int64
}

// GapOptions configures a GapReconciler.
type GapOptions struct {
	Kafka  Config
	Group  string        // the writers' consumer group
	Ledger ClaimLedger   // the Redis ledger
	Skew   time.Duration // clock skew allowed between nodes; default 1 s
}

// NewGapReconciler connects to Kafka for offsets.
func NewGapReconciler(o GapOptions) (*GapReconciler, error) {
	o.Kafka.fill()
	if o.Group == "" {
		o.Group = "flashsale-writers"
	}
	if o.Skew <= 0 {
		o.Skew = time.Second
	}
	cl, err := kgo.NewClient(o.Kafka.clientOpts()...)
	if err != nil {
		return nil, err
	}
	return &GapReconciler{adm: kadm.NewClient(cl), cl: cl, ledger: o.Ledger, topic: o.Kafka.Topic, group: o.Group,
		margin: 2*(o.Kafka.Timeout+ackGrace) + o.Skew, now: time.Now,
		abandoned: prometheus.NewCounter(prometheus.CounterOpts{Name: "flashsale_claims_abandoned_total",
			Help: "Pending claims with no order in Kafka past the deadline, given back to the pool by this node."}),
		forgotten: prometheus.NewCounter(prometheus.CounterOpts{Name: "flashsale_claims_forgotten_total",
			Help: "Settled claims (stored or aborted) dropped from Redis by this node."}),
	}, nil
}

// Close closes the Kafka client.
func (g *GapReconciler) Close() { g.cl.Close() }

// GapResult is what one pass did.
type GapResult struct {
	Abandoned, Forgotten int
	Pending              int  // pending claims left (not yet old enough, or no checkpoint passed)
	Passed               bool // a checkpoint was passed in this pass
}

// Pass runs one round over items: if the last checkpoint has been passed by
// the writers, settle what it makes certain; then take a new checkpoint.
func (g *GapReconciler) Pass(ctx context.Context, items []string) (GapResult, error) {
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
		end, err := g.endOffsets(ctx)
		if err != nil {
			return res, err
		}
		g.checkpoint = &checkpoint{at: at, end: end}
	}
	return res, nil
}

func (g *GapReconciler) settle(ctx context.Context, items []string, before time.Time, res *GapResult) error {
	for _, item := range items {
		claims, err := g.ledger.Claims(ctx, item)
		if err != nil {
			return err
		}
		var settled []uint64
		for _, c := range claims {
			old := c.CreatedAt.Before(before)
			switch {
			case c.State == redisledger.ClaimPending && old:
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
			case c.State == redisledger.ClaimPending:
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

func (g *GapReconciler) endOffsets(ctx context.Context) (map[int32]int64, error) {
	offs, err := g.adm.ListEndOffsets(ctx, g.topic)
	if err != nil {
		return nil, fmt.Errorf("orderlog: cannot list end offsets: %w", err)
	}
	if err := offs.Error(); err != nil {
		return nil, fmt.Errorf("orderlog: cannot list end offsets: %w", err)
	}
	end := map[int32]int64{}
	offs.Each(func(o kadm.ListedOffset) { end[o.Partition] = o.Offset })
	if len(end) == 0 {
		return nil, fmt.Errorf("orderlog: topic %s has no partitions", g.topic)
	}
	return end, nil
}

// passed reports whether the writers' committed offsets reached end on
// every partition.
func (g *GapReconciler) passed(ctx context.Context, end map[int32]int64) (bool, error) {
	committed, err := g.committed(ctx)
	if err != nil {
		return false, err
	}
	for p, e := range end {
		if e == 0 {
			continue
		}
		c, ok := committed.Lookup(g.topic, p)
		if !ok || c.Err != nil || c.At < e {
			return false, nil
		}
	}
	return true, nil
}

// committed reads the writers' committed offsets; a group that does not
// exist yet has committed nothing.
func (g *GapReconciler) committed(ctx context.Context) (kadm.OffsetResponses, error) {
	committed, err := g.adm.FetchOffsets(ctx, g.group)
	if errors.Is(err, kerr.GroupIDNotFound) {
		return kadm.OffsetResponses{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("orderlog: cannot fetch the writers' offsets: %w", err)
	}
	return committed, nil
}

// Lag is, per partition, how many records the writers have not committed.
func (g *GapReconciler) Lag(ctx context.Context) (map[int32]int64, error) {
	end, err := g.endOffsets(ctx)
	if err != nil {
		return nil, err
	}
	committed, err := g.committed(ctx)
	if err != nil {
		return nil, err
	}
	lag := map[int32]int64{}
	for p, e := range end {
		at := int64(0)
		if c, ok := committed.Lookup(g.topic, p); ok && c.At > 0 {
			at = c.At
		}
		lag[p] = e - at
	}
	return lag, nil
}

// Run passes every interval until ctx ends.
func (g *GapReconciler) Run(ctx context.Context, interval time.Duration, items func() []string) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := g.Pass(ctx, items()); err != nil && ctx.Err() == nil {
				slog.Warn("cannot reconcile claims with Kafka", "err", err)
			}
		}
	}
}

// Collectors are the reconciler's metrics, to register.
func (g *GapReconciler) Collectors() []prometheus.Collector {
	return []prometheus.Collector{g.abandoned, g.forgotten}
}
