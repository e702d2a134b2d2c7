// Package orderwriter is the writer role of cluster mode: it moves orders
// from the Kafka topic into the order database. Per batch it settles each
// record's claim in the ledger (ledger.Marker), writes the rows idempotently
// (Store), sends poison and refused records to the dead-letter topic with
// the reason, and only then commits the batch's offsets. It never decides a
// purchase and never gives units back: a record whose claim was aborted is
// refused, not stored.
package orderwriter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flashsale/flashsale/engine"
	"github.com/flashsale/flashsale/ledger"
	"github.com/flashsale/flashsale/persist/orderlog"
)

// Store writes orders idempotently: writing an order twice stores it once
// (persist/mysqlstore's multi-row INSERT IGNORE).
type Store interface {
	Write(ctx context.Context, orders []*engine.Order) error
}

// Options configures a Writer. Zero fields take the defaults.
type Options struct {
	Kafka orderlog.Config // brokers, topics and the writers' group
	// MaxBatch is the most records handled per poll, so per batch of
	// inserts; default DefaultMaxBatch.
	MaxBatch int
	// SessionTimeout: a writer silent this long (killed) loses its
	// partitions to the others; default DefaultSessionTimeout.
	SessionTimeout time.Duration
	Claims         ledger.Marker // required
	Store          Store         // required
}

// The defaults of Options.
const (
	DefaultMaxBatch       = 2000
	DefaultSessionTimeout = 10 * time.Second
	// MinSessionTimeout is the least session timeout accepted.
	MinSessionTimeout = time.Second
)

// WithDefaults returns o with its zero fields set to the defaults.
func (o Options) WithDefaults() Options {
	o.Kafka = o.Kafka.WithDefaults()
	if o.MaxBatch <= 0 {
		o.MaxBatch = DefaultMaxBatch
	}
	if o.SessionTimeout <= 0 {
		o.SessionTimeout = DefaultSessionTimeout
	}
	return o
}

// DefaultOptions are the defaults, with no dependencies.
func DefaultOptions() Options {
	return Options{Kafka: orderlog.DefaultConfig(), MaxBatch: DefaultMaxBatch, SessionTimeout: DefaultSessionTimeout}
}

// Validate checks the writer's own settings as given (New also checks
// Kafka's).
func (o Options) Validate() error {
	if o.MaxBatch < 1 || o.SessionTimeout < MinSessionTimeout {
		return fmt.Errorf("-writer-batch must be positive and -kafka-session-timeout at least %v", MinSessionTimeout)
	}
	return nil
}

// Writer moves orders from Kafka into MySQL: it polls a batch, settles each
// record's claim in the ledger (so a record whose purchase was undone is
// refused), writes the rows with INSERT IGNORE, sends poison and refused
// records to the dead-letter topic with the reason, and only then commits
// the batch's offsets. A crash anywhere redelivers the batch, and the
// inserts and claim marks are idempotent: exactly once in effect.
type Writer struct {
	o  Options
	cl *kgo.Client

	batch      prometheus.Histogram
	batchSecs  prometheus.Histogram
	stored     prometheus.Counter
	deadLetter *prometheus.CounterVec
	retries    prometheus.Counter
	lag        *prometheus.GaugeVec
}

// New joins the writers' consumer group.
func New(o Options) (*Writer, error) {
	o = o.WithDefaults()
	if err := errors.Join(o.Validate(), o.Kafka.Validate()); err != nil {
		return nil, err
	}
	if o.Claims == nil || o.Store == nil {
		return nil, errors.New("orderwriter: Options.Claims and Options.Store are required")
	}
	w := &Writer{o: o,
		batch: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "flashsale_writer_batch_records",
			Help: "Records per batch a writer handles.", Buckets: prometheus.ExponentialBuckets(1, 2, 14)}),
		batchSecs: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "flashsale_writer_batch_seconds",
			Help:    "Time from a batch's poll to its offsets committed (claims, inserts, dead letters).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}),
		stored: prometheus.NewCounter(prometheus.CounterOpts{Name: "flashsale_writer_orders_stored_total",
			Help: "Order records written to MySQL (redeliveries included)."}),
		deadLetter: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "flashsale_writer_dead_letters_total",
			Help: "Records sent to the dead-letter topic, by reason."}, []string{"reason"}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{Name: "flashsale_writer_retries_total",
			Help: "Batches retried after Redis, MySQL or Kafka failed."}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "flashsale_writer_lag_records",
			Help: "Records behind the end of each partition this writer consumes, as of its last poll."}, []string{"partition"}),
	}
	opts := append(o.Kafka.ClientOpts(), o.Kafka.ProducerOpts()...)
	opts = append(opts, kgo.ConsumerGroup(o.Kafka.Group), kgo.ConsumeTopics(o.Kafka.Topic), kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(), kgo.FetchMaxWait(100*time.Millisecond), kgo.SessionTimeout(o.SessionTimeout),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.OnPartitionsRevoked(func(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
			for _, ps := range lost {
				for _, p := range ps {
					w.lag.DeleteLabelValues(strconv.Itoa(int(p)))
				}
			}
		}))
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("orderwriter: %w", err)
	}
	w.cl = cl
	return w, nil
}

// Run consumes until ctx ends. A batch in hand when ctx ends is left
// uncommitted: the next owner of its partitions writes it again. It fails
// only when the Kafka client closed under it. Close the writer afterwards.
func (w *Writer) Run(ctx context.Context) error {
	for {
		fetches := w.cl.PollRecords(ctx, w.o.MaxBatch)
		if ctx.Err() != nil {
			return nil
		}
		if fetches.IsClientClosed() {
			return errors.New("orderwriter: the Kafka client closed")
		}
		fetches.EachError(func(t string, p int32, err error) {
			slog.Warn("kafka fetch failed", "topic", t, "partition", p, "err", err)
		})
		fetches.EachPartition(func(p kgo.FetchTopicPartition) {
			if n := len(p.Records); n > 0 {
				w.lag.WithLabelValues(strconv.Itoa(int(p.Partition))).Set(float64(p.HighWatermark - p.Records[n-1].Offset - 1))
			}
		})
		recs := fetches.Records()
		if len(recs) > 0 {
			start := time.Now()
			if err := w.retry(ctx, func() error { return w.handle(ctx, recs) }); err != nil {
				// ctx ended: the batch is not committed, and is redelivered.
				return nil
			}
			if err := w.retry(ctx, func() error { return w.cl.CommitRecords(ctx, recs...) }); err != nil {
				return nil
			}
			w.batch.Observe(float64(len(recs)))
			w.batchSecs.Observe(time.Since(start).Seconds())
		}
		w.cl.AllowRebalance()
	}
}

// Close leaves the consumer group; the records not committed go to the
// next owner of their partitions. Call it once Run has returned (or
// instead of Run).
func (w *Writer) Close() {
	// Leaving the group waits for a rebalance that a polled batch blocks:
	// allow it first.
	w.cl.AllowRebalance()
	w.cl.Close()
}

// retry runs f until it succeeds or ctx ends, backing off from 50 ms to 5 s.
func (w *Writer) retry(ctx context.Context, f func() error) error {
	backoff := 50 * time.Millisecond
	for {
		err := f()
		if err == nil {
			return nil
		}
		w.retries.Inc()
		slog.Warn("writer batch failed; retrying", "err", err, "backoff", backoff)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// handle stores one batch: decode, settle the claims, insert, dead-letter.
// Every step is idempotent, so a retry of the whole batch is safe.
func (w *Writer) handle(ctx context.Context, recs []*kgo.Record) error {
	orders := make([]*engine.Order, 0, len(recs))
	from := make([]*kgo.Record, 0, len(recs))
	var dead []*kgo.Record
	for _, r := range recs {
		o, err := orderlog.Decode(r.Value)
		if err != nil {
			dead = append(dead, deadLetter(w.o.Kafka.DLQTopic, r, "undecodable", err.Error()))
			continue
		}
		orders = append(orders, o)
		from = append(from, r)
	}
	verdicts, err := w.o.Claims.Persist(ctx, orders)
	if err != nil {
		return err
	}
	keep := orders[:0]
	for i, v := range verdicts {
		if v == ledger.Store {
			keep = append(keep, orders[i])
			continue
		}
		dead = append(dead, deadLetter(w.o.Kafka.DLQTopic, from[i], v.String(), refusals[v]))
	}
	if err := w.o.Store.Write(ctx, keep); err != nil {
		return err
	}
	w.stored.Add(float64(len(keep)))
	if len(dead) > 0 {
		if err := w.cl.ProduceSync(ctx, dead...).FirstErr(); err != nil {
			return fmt.Errorf("cannot write dead letters: %w", err)
		}
		for _, d := range dead {
			w.deadLetter.WithLabelValues(string(d.Headers[0].Value)).Inc()
		}
	}
	return nil
}

// refusals explain, in a dead letter, why a claim refused its order.
var refusals = map[ledger.Verdict]string{
	ledger.Refuse:  "the claim of this order was undone (its purchase was answered 503): storing it would oversell",
	ledger.Unknown: "no claim of this order in the ledger",
}

// deadLetter is a copy of r for the dead-letter topic, with why it could
// not be stored and where it came from in the headers.
func deadLetter(topic string, r *kgo.Record, reason, detail string) *kgo.Record {
	return &kgo.Record{Topic: topic, Key: r.Key, Value: r.Value, Headers: append([]kgo.RecordHeader{
		{Key: "reason", Value: []byte(reason)},
		{Key: "detail", Value: []byte(detail)},
		{Key: "source", Value: fmt.Appendf(nil, "%s/%d/%d", r.Topic, r.Partition, r.Offset)},
	}, r.Headers...)}
}

// Collectors are the writer's metrics, to register.
func (w *Writer) Collectors() []prometheus.Collector {
	return []prometheus.Collector{w.batch, w.batchSecs, w.stored, w.deadLetter, w.retries, w.lag}
}
