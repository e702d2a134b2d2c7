package orderlog

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
	"github.com/flashsale/flashsale/persist/redisledger"
)

// ClaimMarker settles the claims of orders about to be stored
// (redisledger.Ledger.Persist): Store for those to insert.
type ClaimMarker interface {
	Persist(ctx context.Context, orders []*engine.Order) ([]redisledger.Verdict, error)
}

// OrderWriter stores orders idempotently (mysqlstore.Store.Write).
type OrderWriter interface {
	Write(ctx context.Context, orders []*engine.Order) error
}

// WriterOptions configures a Writer.
type WriterOptions struct {
	Kafka    Config
	Group    string // consumer group; default "flashsale-writers"
	MaxBatch int    // records per poll, so per batch of inserts; default 2000
	// SessionTimeout: a writer silent this long (killed) loses its
	// partitions to the others; default 10 s.
	SessionTimeout time.Duration
	Claims         ClaimMarker
	Store          OrderWriter
	// crashAfterWrite, in tests, stops the writer after the rows of a batch
	// are written and before its offsets are committed, as a kill would.
	crashAfterWrite func() bool
}

// Writer moves orders from Kafka into MySQL: it polls a batch, settles each
// record's claim in Redis (so a record whose purchase was undone is
// refused), writes the rows with INSERT IGNORE, sends poison and refused
// records to the dead-letter topic with the reason, and only then commits
// the batch's offsets. A crash anywhere redelivers the batch, and the
// inserts and claim marks are idempotent: exactly once in effect.
type Writer struct {
	o  WriterOptions
	cl *kgo.Client

	batch      prometheus.Histogram
	batchSecs  prometheus.Histogram
	stored     prometheus.Counter
	deadLetter *prometheus.CounterVec
	retries    prometheus.Counter
	lag        *prometheus.GaugeVec
}

// NewWriter joins the consumer group.
func NewWriter(o WriterOptions) (*Writer, error) {
	o.Kafka.fill()
	if o.Group == "" {
		o.Group = "flashsale-writers"
	}
	if o.MaxBatch <= 0 {
		o.MaxBatch = 2000
	}
	if o.SessionTimeout <= 0 {
		o.SessionTimeout = 10 * time.Second
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
	opts := append(o.Kafka.clientOpts(), o.Kafka.producerOpts()...)
	opts = append(opts, kgo.ConsumerGroup(o.Group), kgo.ConsumeTopics(o.Kafka.Topic), kgo.DisableAutoCommit(),
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
		return nil, fmt.Errorf("orderlog: %w", err)
	}
	w.cl = cl
	return w, nil
}

// errCrashed stops a writer in tests as a kill would.
var errCrashed = errors.New("orderlog: writer crashed (test)")

// Run consumes until ctx ends or the writer fails for good, then leaves.
func (w *Writer) Run(ctx context.Context) error {
	defer func() {
		// Leaving the group waits for a rebalance that the polled batch
		// blocks: allow it first. Uncommitted records go to the next owner.
		w.cl.AllowRebalance()
		w.cl.Close()
	}()
	for {
		fetches := w.cl.PollRecords(ctx, w.o.MaxBatch)
		if ctx.Err() != nil || fetches.IsClientClosed() {
			return nil
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
			err := w.retry(ctx, func() error { return w.handle(ctx, recs) })
			if errors.Is(err, errCrashed) {
				return err
			}
			if err != nil { // ctx ended: the batch is not committed, and is redelivered
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

// retry runs f until it succeeds or ctx ends, backing off from 50 ms to 5 s.
func (w *Writer) retry(ctx context.Context, f func() error) error {
	backoff := 50 * time.Millisecond
	for {
		err := f()
		if err == nil || errors.Is(err, errCrashed) {
			return err
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
		o, err := Decode(r.Value)
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
		if v == redisledger.Store {
			keep = append(keep, orders[i])
			continue
		}
		dead = append(dead, deadLetter(w.o.Kafka.DLQTopic, from[i], v.String(), refusals[v]))
	}
	if err := w.o.Store.Write(ctx, keep); err != nil {
		return err
	}
	w.stored.Add(float64(len(keep)))
	if w.o.crashAfterWrite != nil && w.o.crashAfterWrite() {
		return errCrashed
	}
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
var refusals = map[redisledger.Verdict]string{
	redisledger.Aborted: "the claim of this order was undone (its purchase was answered 503): storing it would oversell",
	redisledger.Unknown: "no claim of this order in the ledger",
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
