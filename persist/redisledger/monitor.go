package redisledger

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Monitor reconciles dead nodes' leases and audits the ledger of every
// item: a loop gives leases back, and, as a prometheus.Collector, it audits
// at each scrape, exporting the balance of the stock equation.
type Monitor struct {
	l     *Ledger
	items func() []string

	remaining, leased, claimed, pending, difference *prometheus.Desc
	reconciled                                      prometheus.Counter
}

// NewMonitor watches the items that items lists.
func NewMonitor(l *Ledger, items func() []string) *Monitor {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("flashsale_pool_"+name, help, []string{"item"}, nil)
	}
	return &Monitor{l: l, items: items,
		remaining:  d("remaining", "Units in the Redis pool, leased to no node."),
		leased:     d("leased", "Units leased to nodes and not yet claimed."),
		claimed:    d("claimed", "Units claimed by winners across all nodes."),
		pending:    d("pending", "Claimed units whose orders no writer has stored yet (orders through Kafka)."),
		difference: d("audit_difference", "stock_total - (remaining + leased + claimed): must be 0; alert on anything else."),
		reconciled: prometheus.NewCounter(prometheus.CounterOpts{Name: "flashsale_pool_reconciled_units_total",
			Help: "Units leased to dead nodes and given back to the pool by this node."}),
	}
}

// Run reconciles every interval until ctx ends.
func (m *Monitor) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			for _, item := range m.items() {
				n, err := m.l.Reconcile(ctx, item)
				if err != nil {
					slog.Warn("cannot reconcile", "item", item, "err", err)
					continue
				}
				if n > 0 {
					m.reconciled.Add(float64(n))
					slog.Info("gave back the units of dead nodes", "item", item, "units", n)
				}
			}
		}
	}
}

func (m *Monitor) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.remaining
	ch <- m.leased
	ch <- m.claimed
	ch <- m.pending
	ch <- m.difference
	m.reconciled.Describe(ch)
}

func (m *Monitor) Collect(ch chan<- prometheus.Metric) {
	m.reconciled.Collect(ch)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, item := range m.items() {
		a, err := m.l.Audit(ctx, item)
		if err != nil {
			continue
		}
		g := func(d *prometheus.Desc, v int64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), item)
		}
		g(m.remaining, a.Remaining)
		g(m.leased, a.Leased())
		g(m.claimed, a.Claimed)
		g(m.pending, a.Pending)
		g(m.difference, a.Total-a.Remaining-a.Leased()-a.Claimed)
	}
}
