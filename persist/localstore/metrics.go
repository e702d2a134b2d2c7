package localstore

import "github.com/prometheus/client_golang/prometheus"

func (s *Store) initMetrics() {
	s.batchSize = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "flashsale_store_commit_batch_orders",
		Help:    "Orders written per group commit of the embedded store.",
		Buckets: prometheus.ExponentialBuckets(1, 2, 14), // 1 .. 8192
	})
	s.commitSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "flashsale_store_commit_seconds",
		Help:    "Time of one group commit of the embedded store, fsync included.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 14), // 0.1 ms .. 0.8 s
	})
	s.commitErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "flashsale_store_commit_errors_total",
		Help: "Group commits of the embedded store that failed; their orders were answered 503.",
	})
}

// Collectors are the store's metrics, to register.
func (s *Store) Collectors() []prometheus.Collector {
	return []prometheus.Collector{s.batchSize, s.commitSeconds, s.commitErrors,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "flashsale_store_log_bytes",
			Help: "Bytes of the embedded store's order log (never compacted: it grows with every order and redemption).",
		}, func() float64 { n, _ := s.log.Size(); return float64(n) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "flashsale_store_log_segments",
			Help: "Segment files of the embedded store's order log.",
		}, func() float64 { _, n := s.log.Size(); return float64(n) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "flashsale_store_log_direct_writes",
			Help: "1 when the order log's commits are direct writes (O_DIRECT|O_DSYNC); 0 before the first commit and where the filesystem refused them (a write and an fdatasync instead).",
		}, func() float64 {
			if s.log.Direct() {
				return 1
			}
			return 0
		}),
	}
}
