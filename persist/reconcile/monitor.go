// Package reconcile keeps cluster mode's ledger true when nodes die: it
// gives the units leased to dead nodes back to the pool (Leases, Monitor),
// settles the claims whose order can no longer reach the order database
// (Gap), and audits the stock equation of every item for Prometheus
// (Monitor). Every edge node runs both loops; `fsctl reconcile` runs them
// once by hand. It works on the ledger through package ledger's interfaces
// and reads Kafka only for offsets (orderlog.Progress); it never sells,
// stores or deletes an order.
package reconcile

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flashsale/flashsale/ledger"
)

// DefaultInterval is how often an edge node runs the reconcilers.
const DefaultInterval = 5 * time.Second

// Leases gives the units leased to dead nodes back to the pool of each item
// and says how many, by item. What they claimed stays claimed: sold is never
// sold again. It stops at the first error.
func Leases(ctx context.Context, pools ledger.Pools, items []string) (map[string]int64, error) {
	out := make(map[string]int64, len(items))
	for _, item := range items {
		n, err := pools.Reconcile(ctx, item)
		if err != nil {
			return out, err
		}
		out[item] = n
	}
	return out, nil
}

// Monitor reconciles dead nodes' leases every interval and audits the ledger
// of every item: a loop gives leases back, and, as a set of Prometheus
// collectors, it audits at each scrape, exporting the stock equation.
type Monitor struct {
	pools ledger.Pools
	items func() []string

	audit      *auditor
	reconciled prometheus.Counter
}

// NewMonitor watches the items that items lists.
func NewMonitor(pools ledger.Pools, items func() []string) *Monitor {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("flashsale_pool_"+name, help, []string{"item"}, nil)
	}
	return &Monitor{pools: pools, items: items,
		audit: &auditor{pools: pools, items: items,
			remaining:  d("remaining", "Units in the Redis pool, leased to no node."),
			leased:     d("leased", "Units leased to nodes and not yet claimed."),
			claimed:    d("claimed", "Units claimed by winners across all nodes."),
			pending:    d("pending", "Claimed units whose orders no writer has stored yet (orders through Kafka)."),
			difference: d("audit_difference", "stock_total - (remaining + leased + claimed): must be 0; alert on anything else."),
		},
		reconciled: prometheus.NewCounter(prometheus.CounterOpts{Name: "flashsale_pool_reconciled_units_total",
			Help: "Units leased to dead nodes and given back to the pool by this node."}),
	}
}

// Run reconciles every interval until ctx ends.
func (m *Monitor) Run(ctx context.Context, interval time.Duration) {
	every(ctx, interval, func() {
		for _, item := range m.items() {
			n, err := m.pools.Reconcile(ctx, item)
			if err != nil {
				slog.Warn("cannot reconcile", "item", item, "err", err)
				continue
			}
			if n > 0 {
				m.reconciled.Add(float64(n))
				slog.Info("gave back the units of dead nodes", "item", item, "units", n)
			}
		}
	})
}

// Collectors are the monitor's metrics, to register.
func (m *Monitor) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.audit, m.reconciled}
}

// auditor reads every item's ledger at each scrape.
type auditor struct {
	pools ledger.Pools
	items func() []string

	remaining, leased, claimed, pending, difference *prometheus.Desc
}

func (a *auditor) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{a.remaining, a.leased, a.claimed, a.pending, a.difference} {
		ch <- d
	}
}

func (a *auditor) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, item := range a.items() {
		au, err := a.pools.Audit(ctx, item)
		if err != nil {
			continue
		}
		g := func(d *prometheus.Desc, v int64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), item)
		}
		g(a.remaining, au.Remaining)
		g(a.leased, au.Leased())
		g(a.claimed, au.Claimed)
		g(a.pending, au.Pending)
		g(a.difference, au.Difference())
	}
}

// every runs f every interval until ctx ends.
func every(ctx context.Context, interval time.Duration, f func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f()
		}
	}
}
