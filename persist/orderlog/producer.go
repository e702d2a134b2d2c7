package orderlog

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flashsale/flashsale/engine"
)

// Config is what the edge and the writers share about Kafka. Every
// setting that matters in production is here, so main makes each a flag.
type Config struct {
	Brokers     []string
	Topic       string        // orders; default "flashsale.orders"
	DLQTopic    string        // dead letters; default Topic + ".dlq"
	Partitions  int32         // for topic creation; default 12
	Replication int16         // for topic creation; -1 is the broker's default
	Acks        string        // all (default), leader or none
	Idempotent  bool          // idempotent producer; needs acks=all
	Linger      time.Duration // how long a batch waits for company
	BatchBytes  int32         // largest batch per partition; default 1 MiB
	Timeout     time.Duration // produce deadline: no ack by then, 503; default 2 s
	ClientID    string
}

func (c *Config) fill() {
	if c.Topic == "" {
		c.Topic = "flashsale.orders"
	}
	if c.DLQTopic == "" {
		c.DLQTopic = c.Topic + ".dlq"
	}
	if c.Partitions <= 0 {
		c.Partitions = 12
	}
	if c.Replication == 0 {
		c.Replication = -1
	}
	if c.Acks == "" {
		c.Acks = "all"
	}
	if c.BatchBytes <= 0 {
		c.BatchBytes = 1 << 20
	}
	if c.Timeout <= 0 {
		c.Timeout = 2 * time.Second
	}
}

// Validate checks the settings that cannot work together.
func (c Config) Validate() error {
	c.fill()
	var errs []error
	if c.Acks != "all" && c.Acks != "leader" && c.Acks != "none" {
		errs = append(errs, fmt.Errorf("kafka acks %q: want all, leader or none", c.Acks))
	}
	if c.Idempotent && c.Acks != "all" {
		errs = append(errs, errors.New("an idempotent Kafka producer needs acks=all"))
	}
	if c.Linger < 0 || c.Timeout < time.Second {
		errs = append(errs, errors.New("kafka linger must not be negative and the produce timeout at least 1s (franz-go's least record timeout)"))
	}
	return errors.Join(errs...)
}

func (c Config) clientOpts() []kgo.Opt {
	opts := []kgo.Opt{kgo.SeedBrokers(c.Brokers...), kgo.DialTimeout(2 * time.Second)}
	if c.ClientID != "" {
		opts = append(opts, kgo.ClientID(c.ClientID))
	}
	return opts
}

func (c Config) producerOpts() []kgo.Opt {
	acks := map[string]kgo.Acks{"all": kgo.AllISRAcks(), "leader": kgo.LeaderAck(), "none": kgo.NoAck()}[c.Acks]
	opts := []kgo.Opt{kgo.RequiredAcks(acks), kgo.ProducerLinger(c.Linger), kgo.ProducerBatchMaxBytes(c.BatchBytes),
		kgo.RecordDeliveryTimeout(c.Timeout), kgo.ProduceRequestTimeout(c.Timeout), kgo.DefaultProduceTopic(c.Topic)}
	if !c.Idempotent {
		opts = append(opts, kgo.DisableIdempotentWrite())
	}
	return opts
}

// EnsureTopics creates the orders and dead-letter topics when missing, and
// checks that they exist. A topic that exists with another partition count
// is used as it is (ordering per user needs only a stable count).
func EnsureTopics(ctx context.Context, c Config) error {
	c.fill()
	cl, err := kgo.NewClient(c.clientOpts()...)
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	res, err := adm.CreateTopics(ctx, c.Partitions, c.Replication, nil, c.Topic, c.DLQTopic)
	if err != nil {
		return fmt.Errorf("orderlog: cannot create topics: %w", err)
	}
	for _, r := range res.Sorted() {
		if r.Err != nil && !errors.Is(r.Err, kerr.TopicAlreadyExists) {
			return fmt.Errorf("orderlog: cannot create topic %s: %w", r.Topic, r.Err)
		}
	}
	topics, err := adm.ListTopics(ctx, c.Topic, c.DLQTopic)
	if err != nil {
		return fmt.Errorf("orderlog: cannot list topics: %w", err)
	}
	for _, t := range []string{c.Topic, c.DLQTopic} {
		if d, ok := topics[t]; !ok || d.Err != nil || len(d.Partitions) == 0 {
			return fmt.Errorf("orderlog: topic %s is not available", t)
		}
	}
	return nil
}

// Producer is the edge's order sink (engine.OrderSink): each winner's
// order is one record, and Append returns once the brokers acknowledged it
// (acks=all: every in-sync replica has it). franz-go batches the records of
// concurrent purchases into one produce request per partition.
type Producer struct {
	cl      *kgo.Client
	topic   string
	timeout time.Duration
	recent  *recent

	seconds prometheus.Histogram
	errors  prometheus.Counter
}

var _ engine.OrderSink = (*Producer)(nil)

// NewProducer connects a producer; it does not wait for the brokers.
func NewProducer(c Config) (*Producer, error) {
	c.fill()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	cl, err := kgo.NewClient(append(c.clientOpts(), c.producerOpts()...)...)
	if err != nil {
		return nil, fmt.Errorf("orderlog: %w", err)
	}
	return &Producer{cl: cl, topic: c.Topic, timeout: c.Timeout, recent: newRecent(recentMax),
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
var errAckTimeout = errors.New("orderlog: no acknowledgement from Kafka within the produce deadline")

// ackGrace is how long past the produce deadline Append waits for franz-go,
// which cannot fail a record whose request is in flight.
const ackGrace = 250 * time.Millisecond

// Append produces o and waits for the acknowledgement (engine.OrderSink).
// The request's ctx is not used to cancel: a client going away must not
// turn an acknowledged order into a refused one. The deadline is the
// producer's own.
func (p *Producer) Append(_ context.Context, o *engine.Order) error {
	val, err := Encode(o)
	if err != nil {
		return err
	}
	rec := &kgo.Record{Topic: p.topic, Key: []byte(o.UserID), Value: val, Timestamp: o.CreatedAt,
		Headers: []kgo.RecordHeader{{Key: "order_id", Value: strconv.AppendUint(nil, o.ID, 10)}}}
	if o.RequestID != "" {
		rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: "request_id", Value: []byte(o.RequestID)})
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), p.timeout)
	defer cancel()
	done := make(chan error, 1)
	p.cl.Produce(ctx, rec, func(_ *kgo.Record, err error) { done <- err })
	t := time.NewTimer(p.timeout + ackGrace)
	defer t.Stop()
	select {
	case err = <-done:
	case <-t.C:
		err = errAckTimeout
	}
	p.seconds.Observe(time.Since(start).Seconds())
	if err != nil {
		p.errors.Inc()
		return fmt.Errorf("orderlog: cannot produce order %d: %w", o.ID, err)
	}
	p.recent.add(o)
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

// Recent returns an order this producer had acknowledged and still
// remembers, with status accepted.
func (p *Producer) Recent(id uint64) (*engine.Order, bool) { return p.recent.get(id) }

// RecentOf returns the user's acknowledged orders this producer remembers.
func (p *Producer) RecentOf(user string) []*engine.Order { return p.recent.ofUser(user) }

// Collectors are the producer's metrics, to register.
func (p *Producer) Collectors() []prometheus.Collector {
	return []prometheus.Collector{p.seconds, p.errors}
}

// recentMax bounds the acknowledged orders a producer remembers for reads
// (winners only: the stock bounds them; ~200 bytes each).
const recentMax = 100_000

// recent remembers the last acknowledged orders, oldest evicted first.
type recent struct {
	mu     sync.Mutex
	max    int
	ring   []*engine.Order
	next   int
	byID   map[uint64]*engine.Order
	byUser map[string][]*engine.Order
}

func newRecent(max int) *recent {
	return &recent{max: max, byID: map[uint64]*engine.Order{}, byUser: map[string][]*engine.Order{}}
}

func (r *recent) add(o *engine.Order) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.ring) < r.max {
		r.ring = append(r.ring, o)
	} else {
		old := r.ring[r.next]
		delete(r.byID, old.ID)
		list := r.byUser[old.UserID]
		for i, x := range list {
			if x == old {
				list = append(list[:i:i], list[i+1:]...)
				break
			}
		}
		if len(list) == 0 {
			delete(r.byUser, old.UserID)
		} else {
			r.byUser[old.UserID] = list
		}
		r.ring[r.next] = o
		r.next = (r.next + 1) % r.max
	}
	r.byID[o.ID] = o
	r.byUser[o.UserID] = append(r.byUser[o.UserID], o)
}

func (r *recent) get(id uint64) (*engine.Order, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	o, ok := r.byID[id]
	return o, ok
}

func (r *recent) ofUser(user string) []*engine.Order {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*engine.Order(nil), r.byUser[user]...)
}
