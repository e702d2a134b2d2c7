package orderlog

import (
	"context"
	"log/slog"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
)

// LagCollector exports the writers' consumer lag as the brokers see it, at
// each scrape: per partition, the records between the group's committed
// offset and the topic's end, and how old the oldest of them is. It reads
// the brokers, not a writer's memory, so it is right when every writer is
// dead (edge nodes export it too) and never stale.
type LagCollector struct {
	p       *Progress
	c       Config
	records *prometheus.Desc
	seconds *prometheus.Desc
	up      *prometheus.Desc
}

// NewLagCollector reads the lag of c's group on c's topic.
func NewLagCollector(c Config) (*LagCollector, error) {
	p, err := NewProgress(c)
	if err != nil {
		return nil, err
	}
	return &LagCollector{p: p, c: c.WithDefaults(),
		records: prometheus.NewDesc("flashsale_consumer_lag_records", "Records of the orders topic the writers' group has not committed, by partition (read from the brokers at the scrape).", []string{"partition"}, nil),
		seconds: prometheus.NewDesc("flashsale_consumer_lag_seconds", "Age of the oldest record of the orders topic the writers' group has not committed, by partition; 0 when none (read from the brokers at the scrape).", []string{"partition"}, nil),
		up:      prometheus.NewDesc("flashsale_consumer_lag_up", "1 when the last scrape could read the lag from the brokers, else 0.", nil, nil),
	}, nil
}

// Close closes the collector's clients.
func (l *LagCollector) Close() { l.p.Close() }

func (l *LagCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- l.records
	ch <- l.seconds
	ch <- l.up
}

// lagScrapeTimeout bounds a scrape's reads of the brokers.
const lagScrapeTimeout = 2 * time.Second

func (l *LagCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), lagScrapeTimeout)
	defer cancel()
	lag, ages, err := l.Lag(ctx)
	if err != nil {
		slog.Warn("cannot read the consumer lag from the brokers", "err", err)
		ch <- prometheus.MustNewConstMetric(l.up, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(l.up, prometheus.GaugeValue, 1)
	for part, n := range lag {
		p := strconv.Itoa(int(part))
		ch <- prometheus.MustNewConstMetric(l.records, prometheus.GaugeValue, float64(n), p)
		ch <- prometheus.MustNewConstMetric(l.seconds, prometheus.GaugeValue, ages[part].Seconds(), p)
	}
}

// Lag reads, per partition, the records not committed and the age of the
// oldest of them (0 when none): the committed offsets and the ends from
// the brokers, then the first uncommitted record of each lagging partition.
func (l *LagCollector) Lag(ctx context.Context) (map[int32]int64, map[int32]time.Duration, error) {
	end, err := l.p.EndOffsets(ctx)
	if err != nil {
		return nil, nil, err
	}
	committed, err := l.p.Committed(ctx)
	if err != nil {
		return nil, nil, err
	}
	lag := map[int32]int64{}
	from := map[int32]kgo.Offset{}
	for part, e := range end {
		at := max(committed[part], 0) // no commit yet: from the start
		if lag[part] = e - at; lag[part] > 0 {
			from[part] = kgo.NewOffset().At(at)
		}
	}
	ages := map[int32]time.Duration{}
	if len(from) == 0 {
		return lag, ages, nil
	}
	cl, err := kgo.NewClient(append(l.c.ClientOpts(), kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{l.c.Topic: from}),
		kgo.FetchMaxWait(100*time.Millisecond))...)
	if err != nil {
		return nil, nil, err
	}
	defer cl.Close()
	now := time.Now()
	for len(ages) < len(from) && ctx.Err() == nil {
		fs := cl.PollRecords(ctx, len(from))
		fs.EachRecord(func(r *kgo.Record) {
			if _, seen := ages[r.Partition]; !seen {
				ages[r.Partition] = max(now.Sub(r.Timestamp), 0)
			}
		})
	}
	return lag, ages, nil
}
