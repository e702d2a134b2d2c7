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
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/flashsale/flashsale/engine"
	"github.com/flashsale/flashsale/internal/tracing"
	"github.com/flashsale/flashsale/ledger"
	"github.com/flashsale/flashsale/persist/orderlog"
)

// Store writes orders idempotently: writing an order twice stores it once
// (persist/mysqlstore's multi-row INSERT IGNORE). Settled says which
// orders' purchases were answered 503 (tombstones of record) and which are
// stored already.
type Store interface {
	Write(ctx context.Context, orders []*engine.Order) error
	Settled(ctx context.Context, orders []*engine.Order) (aborted, stored map[uint64]bool, err error)
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
	// Tracing, when set, traces each batch: a span linked to the
	// records' traces (Kafka.Hooks carry them), with the settle, the insert
	// and the dead letters as its children. Nil: off.
	Tracing *tracing.Tracing
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
	lostLedger prometheus.Counter
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
		lostLedger: prometheus.NewCounter(prometheus.CounterOpts{Name: "flashsale_writer_orders_of_lost_ledger_total",
			Help: "Orders stored whose claim was in a ledger Redis lost: counted by the rebuild."}),
	}
	opts := append(o.Kafka.ClientOpts(), o.Kafka.ProducerOpts()...)
	opts = append(opts, kgo.ConsumerGroup(o.Kafka.Group), kgo.ConsumeTopics(o.Kafka.Topic), kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(), kgo.FetchMaxWait(100*time.Millisecond), kgo.SessionTimeout(o.SessionTimeout),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
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
		recs := fetches.Records()
		if len(recs) > 0 && !w.batchDone(ctx, recs) {
			return nil // ctx ended: the batch is not committed, and is redelivered
		}
		w.cl.AllowRebalance()
	}
}

// batchDone handles a batch and commits its offsets, retrying each until it
// succeeds; false when ctx ended first.
func (w *Writer) batchDone(ctx context.Context, recs []*kgo.Record) bool {
	start := time.Now()
	ctx, span := w.batchSpan(ctx, recs)
	defer span.End()
	if err := w.retry(ctx, func() error { return w.handle(ctx, recs) }); err != nil {
		return false
	}
	if err := w.retry(ctx, func() error {
		return w.o.Tracing.Span(ctx, "kafka commit", func(ctx context.Context) error { return w.cl.CommitRecords(ctx, recs...) })
	}); err != nil {
		return false
	}
	w.batch.Observe(float64(len(recs)))
	w.batchSecs.Observe(time.Since(start).Seconds())
	return true
}

// maxLinks bounds the links of a batch's span (the SDK keeps 128).
const maxLinks = 128

// batchSpan starts a batch's span when tracing is on: a new root, linked to
// the sampled traces of its records (the edges' purchases), and sampled
// when one of them is. Off, it is a no-op span.
func (w *Writer) batchSpan(ctx context.Context, recs []*kgo.Record) (context.Context, trace.Span) {
	if w.o.Tracing == nil {
		return ctx, noSpan
	}
	var links []trace.Link
	for _, r := range recs {
		if r.Context == nil || len(links) == maxLinks {
			continue
		}
		if sc := trace.SpanContextFromContext(r.Context); sc.IsSampled() {
			links = append(links, trace.Link{SpanContext: sc})
		}
	}
	return w.o.Tracing.Tracer().Start(ctx, "writer batch", trace.WithNewRoot(), trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithLinks(links...), trace.WithAttributes(attribute.Int("messaging.batch.message_count", len(recs))))
}

var noSpan = noop.Span{}

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
	var verdicts []ledger.Verdict
	if err := w.o.Tracing.Span(ctx, "ledger settle", func(ctx context.Context) (err error) {
		verdicts, err = w.o.Claims.Persist(ctx, orders)
		return err
	}); err != nil {
		return err
	}
	unknown, err := w.unknownClaims(ctx, orders, from, verdicts)
	if err != nil {
		return err
	}
	keep := orders[:0]
	for i, v := range verdicts {
		reason, detail := v.String(), refusals[v]
		switch {
		case v == ledger.Store:
			keep = append(keep, orders[i])
			continue
		case v == ledger.Unknown && unknown[i] == "":
			keep = append(keep, orders[i]) // of a lost ledger: an order of record
			w.lostLedger.Inc()
			continue
		case v == ledger.Unknown && unknown[i] == "-":
			continue
		case v == ledger.Unknown:
			reason, detail = unknown[i], unknownReasons[unknown[i]]
		}
		dead = append(dead, deadLetter(w.o.Kafka.DLQTopic, from[i], reason, detail))
	}
	if err := w.o.Tracing.Span(ctx, "mysql insert", func(ctx context.Context) error { return w.o.Store.Write(ctx, keep) },
		attribute.Int("flashsale.orders", len(keep))); err != nil {
		return err
	}
	// Stored: on the leaderboards (idempotent, as the rest).
	if err := w.o.Tracing.Span(ctx, "redis board", func(ctx context.Context) error { return w.o.Claims.Board(ctx, keep) }); err != nil {
		return err
	}
	w.stored.Add(float64(len(keep)))
	if len(dead) > 0 {
		if err := w.o.Tracing.Span(ctx, "dead letters", func(ctx context.Context) error {
			return w.cl.ProduceSync(ctx, dead...).FirstErr()
		}); err != nil {
			return fmt.Errorf("cannot write dead letters: %w", err)
		}
		for _, d := range dead {
			w.deadLetter.WithLabelValues(string(d.Headers[0].Value)).Inc()
		}
	}
	return nil
}

// unknownClaims decides the records whose claim the ledger does not have:
// by index, "" to store it, "-" to drop it (stored already: a redelivery
// after its claim was forgotten), else the reason to refuse it.
//
// Every record a node's producer writes carries the generation of its claim
// (a record without one, in a sound ledger, is refused: no node wrote it),
// and a claim is forgotten only once no record of it can arrive. So a
// missing claim was in a ledger that lost it (Redis restarted empty or was flushed;
// a failover to a replica that had not got it; the ledger rebuilt): the
// record is an order of record, stored, unless its purchase was answered
// 503 (a tombstone of record). When the ledger says it is sound, it is not
// (or was rebuilt without this order): the writer condemns it, and the
// nodes stop selling and rebuild it, counting this order.
func (w *Writer) unknownClaims(ctx context.Context, orders []*engine.Order, from []*kgo.Record, verdicts []ledger.Verdict) (map[int]string, error) {
	var missing []*engine.Order
	for i, v := range verdicts {
		if v == ledger.Unknown {
			missing = append(missing, orders[i])
		}
	}
	out := map[int]string{}
	if len(missing) == 0 {
		return out, nil
	}
	cur, err := w.o.Claims.CurrentGeneration(ctx)
	if err != nil {
		return nil, err
	}
	aborted, stored, err := w.o.Store.Settled(ctx, missing)
	if err != nil {
		return nil, err
	}
	sound := cur != "" && !ledger.IsRebuilding(cur) && !ledger.IsCondemned(cur)
	condemn := false
	for i, v := range verdicts {
		if v != ledger.Unknown {
			continue
		}
		id := orders[i].ID
		gen := header(from[i], orderlog.GenerationHeader)
		switch {
		case stored[id]:
			out[i] = "-"
		case aborted[id]:
			out[i] = ledger.Refuse.String()
		case sound && gen == "":
			out[i] = ledger.Unknown.String() // no producer of a node wrote it
		case sound && gen != cur:
			// Its claim was in a ledger rebuilt before it arrived (a
			// produce slower than the rebuild's wait): the rebuild did not
			// count it, and its buyer got a 201. It is stored, and the
			// ledger condemned, so that the next rebuild counts it.
			slog.Error("an order arrived after the ledger its claim was in was rebuilt; storing it and condemning the ledger",
				"order", id, "generation", gen, "current", cur)
			out[i] = ""
			condemn = true
		default:
			out[i] = ""
			condemn = condemn || sound
		}
	}
	if condemn {
		slog.Error("orders whose claims the ledger does not have: it lost writes (a failover to a replica that had not got them?); condemning it, to be rebuilt",
			"generation", cur)
		if err := w.o.Claims.Condemn(ctx, cur); err != nil {
			return nil, err
		}
	}
	return out, nil
}

var unknownReasons = map[string]string{
	ledger.Unknown.String(): "no claim of this order in the ledger, and no generation: no node's producer wrote it",
	ledger.Refuse.String():  "the purchase of this order was answered 503 (a tombstone of record): storing it would oversell",
}

func header(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// refusals explain, in a dead letter, why a claim refused its order.
var refusals = map[ledger.Verdict]string{
	ledger.Refuse:  "the claim of this order was undone (its purchase was answered 503): storing it would oversell",
	ledger.Unknown: "no claim of this order in the ledger",
}

// deadLetter is a copy of r for the dead-letter topic, with why it could
// not be stored and where it came from in the headers.
func deadLetter(topic string, r *kgo.Record, reason, detail string) *kgo.Record {
	return &kgo.Record{Topic: topic, Key: r.Key, Value: r.Value, Context: r.Context, Headers: append([]kgo.RecordHeader{
		{Key: "reason", Value: []byte(reason)},
		{Key: "detail", Value: []byte(detail)},
		{Key: "source", Value: fmt.Appendf(nil, "%s/%d/%d", r.Topic, r.Partition, r.Offset)},
	}, r.Headers...)}
}

// Collectors are the writer's metrics, to register.
func (w *Writer) Collectors() []prometheus.Collector {
	return []prometheus.Collector{w.batch, w.batchSecs, w.stored, w.deadLetter, w.retries, w.lostLedger}
}
