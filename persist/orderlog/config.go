package orderlog

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kversion"
)

// Config is what the edge nodes, the writers and the reconcilers share about
// Kafka. Every setting that matters in production is here, so that the
// command makes each a flag. Zero fields take the defaults below.
type Config struct {
	Brokers     []string
	Topic       string        // the orders; default DefaultTopic
	DLQTopic    string        // dead letters; default Topic + ".dlq"
	Group       string        // the writers' consumer group; default DefaultGroup
	Partitions  int32         // for topic creation; default DefaultPartitions
	Replication int16         // for topic creation; default DefaultReplication (the brokers')
	Acks        string        // all, leader or none; default DefaultAcks
	Idempotent  bool          // idempotent producer; needs acks=all
	Linger      time.Duration // how long a batch waits for company; default 0
	BatchBytes  int32         // largest batch per partition; default DefaultBatchBytes
	Timeout     time.Duration // produce deadline: no ack by then, 503; default DefaultTimeout
	// MaxVersion caps the protocol versions to those of a Kafka release
	// ("2.0.0"), for brokers that announce versions they cannot serve
	// (librdkafka's mock cluster); empty negotiates with the brokers.
	MaxVersion string
	// Hooks are added to the clients that produce and consume orders
	// (ProducerOpts): tracing's, which carry a trace in the records'
	// headers. Not a flag.
	Hooks []kgo.Hook
}

// The defaults of Config.
const (
	DefaultTopic       = "flashsale.orders"
	DefaultGroup       = "flashsale-writers"
	DefaultPartitions  = 12
	DefaultReplication = -1 // the brokers' default.replication.factor
	DefaultAcks        = "all"
	DefaultBatchBytes  = 1 << 20
	DefaultTimeout     = 2 * time.Second
	// MinTimeout is franz-go's least record delivery timeout.
	MinTimeout = time.Second
)

// AckGrace is how long past the produce deadline a producer waits for
// franz-go, which cannot fail a record whose request is in flight. A
// producer has given up on a record at most Timeout + AckGrace after it
// began, which is what the claim reconciler's margin is built on.
const AckGrace = 250 * time.Millisecond

// DefaultConfig is the configuration with every default, the producer
// idempotent, and no brokers.
func DefaultConfig() Config {
	c := Config{Idempotent: true}.WithDefaults()
	c.DLQTopic = "" // follows Topic
	return c
}

// WithDefaults returns c with its zero fields set to the defaults.
func (c Config) WithDefaults() Config {
	if c.Topic == "" {
		c.Topic = DefaultTopic
	}
	if c.DLQTopic == "" {
		c.DLQTopic = c.Topic + ".dlq"
	}
	if c.Group == "" {
		c.Group = DefaultGroup
	}
	if c.Partitions <= 0 {
		c.Partitions = DefaultPartitions
	}
	if c.Replication == 0 {
		c.Replication = DefaultReplication
	}
	if c.Acks == "" {
		c.Acks = DefaultAcks
	}
	if c.BatchBytes <= 0 {
		c.BatchBytes = DefaultBatchBytes
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	return c
}

// Validate checks the settings as given (an empty DLQTopic follows Topic),
// and the ones that cannot work together. Whether brokers are needed is the
// caller's rule.
func (c Config) Validate() error {
	var errs []error
	if c.Topic == "" || c.Group == "" {
		errs = append(errs, errors.New("-kafka-topic and -kafka-group must not be empty"))
	}
	if c.Partitions < 1 || c.Replication == 0 || c.Replication < -1 || c.BatchBytes < 1024 {
		errs = append(errs, errors.New("-kafka-partitions >= 1, -kafka-replication -1 or >= 1 and -kafka-batch-bytes >= 1024 are required"))
	}
	if c.Acks != "all" && c.Acks != "leader" && c.Acks != "none" {
		errs = append(errs, fmt.Errorf("kafka acks %q: want all, leader or none", c.Acks))
	}
	if c.Idempotent && c.Acks != "all" {
		errs = append(errs, errors.New("an idempotent Kafka producer needs acks=all"))
	}
	if c.MaxVersion != "" && kversion.FromString(c.MaxVersion) == nil {
		errs = append(errs, fmt.Errorf("-kafka-max-version %q is no Kafka release (e.g. 2.0.0)", c.MaxVersion))
	}
	if c.Linger < 0 || c.Timeout < MinTimeout {
		errs = append(errs, fmt.Errorf("kafka linger must not be negative and the produce timeout at least %v (franz-go's least record timeout)", MinTimeout))
	}
	return errors.Join(errs...)
}

// ClientOpts are the options every client of the cluster starts from.
func (c Config) ClientOpts() []kgo.Opt {
	opts := []kgo.Opt{kgo.SeedBrokers(c.Brokers...), kgo.DialTimeout(2 * time.Second)}
	if v := kversion.FromString(c.MaxVersion); c.MaxVersion != "" && v != nil {
		opts = append(opts, kgo.MaxVersions(v))
	}
	return opts
}

// ProducerOpts are the options of a client that produces orders (the edge)
// or consumes them and produces dead letters (the writers).
func (c Config) ProducerOpts() []kgo.Opt {
	c = c.WithDefaults()
	acks := map[string]kgo.Acks{"all": kgo.AllISRAcks(), "leader": kgo.LeaderAck(), "none": kgo.NoAck()}[c.Acks]
	opts := []kgo.Opt{kgo.RequiredAcks(acks), kgo.ProducerLinger(c.Linger), kgo.ProducerBatchMaxBytes(c.BatchBytes),
		kgo.RecordDeliveryTimeout(c.Timeout), kgo.ProduceRequestTimeout(c.Timeout), kgo.DefaultProduceTopic(c.Topic)}
	if !c.Idempotent {
		opts = append(opts, kgo.DisableIdempotentWrite())
	}
	if len(c.Hooks) > 0 {
		opts = append(opts, kgo.WithHooks(c.Hooks...))
	}
	return opts
}

// EnsureTopics creates the orders and dead-letter topics when missing, and
// checks that they exist. A topic that exists with another partition count
// is used as it is (ordering per user needs only a stable count). Topics
// that exist are not created again: a client that may not create topics
// (ACLs), or a broker that cannot (librdkafka's mock), works when an
// operator made them.
func EnsureTopics(ctx context.Context, c Config) error {
	c = c.WithDefaults()
	cl, err := kgo.NewClient(c.ClientOpts()...)
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	missing := func() ([]string, error) {
		topics, err := adm.ListTopics(ctx, c.Topic, c.DLQTopic)
		if err != nil {
			return nil, fmt.Errorf("orderlog: cannot list topics: %w", err)
		}
		var out []string
		for _, t := range []string{c.Topic, c.DLQTopic} {
			if d, ok := topics[t]; !ok || d.Err != nil || len(d.Partitions) == 0 {
				out = append(out, t)
			}
		}
		return out, nil
	}
	absent, err := missing()
	if err != nil || len(absent) == 0 {
		return err
	}
	res, err := adm.CreateTopics(ctx, c.Partitions, c.Replication, nil, absent...)
	if err != nil {
		return fmt.Errorf("orderlog: cannot create topics %v: %w", absent, err)
	}
	for _, r := range res.Sorted() {
		if r.Err != nil && !errors.Is(r.Err, kerr.TopicAlreadyExists) {
			return fmt.Errorf("orderlog: cannot create topic %s: %w", r.Topic, r.Err)
		}
	}
	return nil // (a second listing would be answered from the client's metadata cache)
}
