// Package kafkasink is the edge node's order sink in cluster mode: each
// winner's order becomes one Kafka record, and Append returns once the
// brokers acknowledged it (acks=all), which is when the shopper gets 201.
// It also answers reads of the orders this node acknowledged that the
// writers have not stored yet (reader.go). It never consumes the topic and
// never touches the ledger: a failed Append is undone by the engine through
// its Ledger.
package kafkasink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/trace"

	"github.com/flashsale/flashsale/engine"
	"github.com/flashsale/flashsale/persist/orderlog"
)

// Producer is the edge's order sink (engine.OrderSink): each winner's
// order is one record, and Append returns once the brokers acknowledged it
// (acks=all: every in-sync replica has it). franz-go batches the records of
// concurrent purchases into one produce request per partition.
type Producer struct {
	cl      *kgo.Client
	topic   string
	timeout time.Duration
	acked   *Acked

	seconds prometheus.Histogram
	errors  prometheus.Counter
	o       Options
}

var _ engine.OrderSink = (*Producer)(nil)

// Options are what a producer is told besides Kafka's settings.
type Options struct {
	// Generation, when set, is the generation of the ledger the claims are
	// made in, carried in each record (orderlog.GenerationHeader).
	Generation func() string
	// Tombstones, when set, records the orders whose produce failed: the
	// purchase is answered 503, and a record of it that lands later must
	// not be stored even if the ledger's own tombstone was lost.
	Tombstones interface {
		Abort(ctx context.Context, id uint64) error
		Unabort(ctx context.Context, id uint64) error
	}
}

var _ engine.StandingSink = (*Producer)(nil)

// Stands drops o's tombstone: its produce failed for this producer, yet a
// writer stored it (engine.StandingSink), and its buyer got a 201.
func (p *Producer) Stands(_ context.Context, o *engine.Order) error {
	if p.o.Tombstones == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.timeout)
	defer cancel()
	if err := p.o.Tombstones.Unabort(ctx, o.ID); err != nil {
		slog.Error("cannot drop the tombstone of an order that stands; a record of it after a loss of Redis would be refused", "order", o.ID, "err", err)
		return err
	}
	return nil
}

// NewProducer connects a producer; it does not wait for the brokers.
func NewProducer(c orderlog.Config, o Options) (*Producer, error) {
	c = c.WithDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	cl, err := kgo.NewClient(append(c.ClientOpts(), c.ProducerOpts()...)...)
	if err != nil {
		return nil, fmt.Errorf("kafkasink: %w", err)
	}
	return &Producer{cl: cl, topic: c.Topic, timeout: c.Timeout, acked: NewAcked(0), o: o,
		seconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "flashsale_kafka_produce_seconds",
			Help:    "Time from a winner's produce to the brokers' acknowledgement (or failure).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16)}), // 0.1 ms .. 3.3 s
		errors: prometheus.NewCounter(prometheus.CounterOpts{Name: "flashsale_kafka_produce_errors_total",
			Help: "Produces that failed or timed out; their purchases got 503 and their claims were undone."}),
	}, nil
}

// errAckTimeout: the brokers did not answer within the produce deadline
// (and the grace franz-go may need to give up an in-flight request). The
// record may still land: the claim's tombstone makes the writers refuse it.
var errAckTimeout = errors.New("kafkasink: no acknowledgement from Kafka within the produce deadline")

// Append produces o and waits for the acknowledgement (engine.OrderSink).
// The request's ctx is not used to cancel: a client going away must not
// turn an acknowledged order into a refused one. The deadline is the
// producer's own, and it gives up at most orderlog.AckGrace after it.
// ctx's span, when traced, is the parent of the record's publish span, whose
// trace context the record carries (orderlog.Config.Hooks).
func (p *Producer) Append(ctx context.Context, o *engine.Order) error {
	val, err := orderlog.Encode(o)
	if err != nil {
		return err
	}
	rec := &kgo.Record{Topic: p.topic, Key: []byte(o.UserID), Value: val, Timestamp: o.CreatedAt,
		Headers: []kgo.RecordHeader{{Key: "order_id", Value: strconv.AppendUint(nil, o.ID, 10)}}}
	if o.RequestID != "" {
		rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: "request_id", Value: []byte(o.RequestID)})
	}
	if p.o.Generation != nil {
		rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: orderlog.GenerationHeader, Value: []byte(p.o.Generation())})
	}
	// The record may outlive the request (franz-go keeps it past a timeout),
	// so it never holds the request's context (a pooled admission.Slot):
	// only its span, when there is one, for the publish span's parent.
	if span := trace.SpanFromContext(ctx); span.SpanContext().IsValid() {
		rec.Context = trace.ContextWithSpan(context.Background(), span)
	}
	start := time.Now()
	pctx, cancel := context.WithTimeout(context.Background(), p.timeout)
	defer cancel()
	done := make(chan error, 1)
	p.cl.Produce(pctx, rec, func(_ *kgo.Record, err error) { done <- err })
	t := time.NewTimer(p.timeout + orderlog.AckGrace)
	defer t.Stop()
	select {
	case err = <-done:
	case <-t.C:
		err = errAckTimeout
	}
	p.seconds.Observe(time.Since(start).Seconds())
	if err != nil {
		p.errors.Inc()
		if p.o.Tombstones != nil {
			tctx, cancel := context.WithTimeout(context.Background(), p.timeout)
			if terr := p.o.Tombstones.Abort(tctx, o.ID); terr != nil {
				err = errors.Join(err, terr)
			}
			cancel()
		}
		return fmt.Errorf("kafkasink: cannot produce order %d: %w", o.ID, err)
	}
	p.acked.Add(o)
	return nil
}

// Check asks a broker for the cluster's metadata, for /readyz.
func (p *Producer) Check(ctx context.Context) error { return p.cl.Ping(ctx) }

// Close flushes what is buffered (bounded by ctx) and closes the client.
func (p *Producer) Close(ctx context.Context) error {
	err := p.cl.Flush(ctx)
	p.cl.Close()
	return err
}

// Acked is what the producer remembers of acknowledged orders, for reads;
// a cluster's feed adds the other nodes' to it.
func (p *Producer) Acked() *Acked { return p.acked }

// Collectors are the producer's metrics, to register.
func (p *Producer) Collectors() []prometheus.Collector {
	return []prometheus.Collector{p.seconds, p.errors}
}
