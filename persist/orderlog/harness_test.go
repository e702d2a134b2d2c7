package orderlog

import (
	"context"
	"errors"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/rueidis"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flashsale/flashsale/engine"
	"github.com/flashsale/flashsale/persist/mysqlstore"
	"github.com/flashsale/flashsale/persist/mysqlstore/mysqltest"
	"github.com/flashsale/flashsale/persist/redisledger"
	"github.com/flashsale/flashsale/persist/redisledger/redistest"
)

// harness is one cluster for a test: kfake for Kafka (in process), and the
// real Redis and MariaDB, each with keys or a database of the test's own.
type harness struct {
	t      *testing.T
	kf     *kfake.Cluster
	cfg    Config
	rc     rueidis.Client
	prefix string
	db     *mysqlstore.Store
}

func newHarness(t *testing.T, kopts ...kfake.Opt) *harness {
	t.Helper()
	h := &harness{t: t, rc: redistest.Client(t)}
	h.prefix = redistest.Prefix(t, h.rc)
	db, err := mysqlstore.Open(context.Background(), mysqlstore.Options{DSN: mysqltest.DSN(t), Tables: 8, Workers: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	h.db = db
	h.startKafka(kopts...)
	h.cfg = Config{Brokers: h.kf.ListenAddrs(), Partitions: 4, Idempotent: true, Timeout: time.Second}
	h.cfg.fill()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := EnsureTopics(ctx, h.cfg); err != nil {
		t.Fatal(err)
	}
	return h
}

func (h *harness) startKafka(kopts ...kfake.Opt) {
	kf, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1)}, kopts...)...)
	if err != nil {
		h.t.Fatal(err)
	}
	h.kf = kf
	h.t.Cleanup(kf.Close)
}

// ledger is a node's tracked ledger.
func (h *harness) ledger(node int) *redisledger.Ledger {
	return redisledger.New(h.rc, node, redisledger.Options{Prefix: h.prefix, TrackClaims: true, Timeout: 2 * time.Second})
}

func (h *harness) producer(cfg Config) *Producer {
	p, err := NewProducer(cfg)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { p.cl.Close() })
	return p
}

type nopCatalog struct{}

func (nopCatalog) SaveItem(context.Context, engine.Item) error { return nil }

// engine is an edge node: its engine, leasing from the shared pool and
// claiming in Redis, with sink (a producer, possibly wrapped) for orders.
func (h *harness) engine(node int, sink engine.OrderSink, stock int64) *engine.Engine {
	h.t.Helper()
	l := h.ledger(node)
	e, err := engine.New(engine.Options{NodeID: node, Sink: sink, Catalog: nopCatalog{}, Ledger: l, Stock: l})
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(e.Close)
	if _, _, err := e.PutItem(context.Background(), engine.Item{ID: "it", Name: "x", PriceCents: 500, Stock: stock, PerUserLimit: 1}); err != nil {
		h.t.Fatal(err)
	}
	return e
}

// writer runs a writer until the test ends or stop is called; stop waits
// for it to leave.
func (h *harness) writer(o WriterOptions) (w *Writer, stop func() error) {
	h.t.Helper()
	o.Kafka, o.Claims, o.Store = h.cfg, h.ledger(0), h.db
	w, err := NewWriter(o)
	if err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var once sync.Once
	var runErr error
	stop = func() error {
		once.Do(func() { cancel(); runErr = <-done })
		return runErr
	}
	h.t.Cleanup(func() { stop() })
	return w, stop
}

// waitRows waits until the orders tables hold n rows.
func (h *harness) waitRows(n int64) {
	h.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err := h.db.Count(context.Background())
		if err == nil && got == n {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("orders tables hold %d rows (%v), want %d", got, err, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (h *harness) audit() redisledger.Audit {
	h.t.Helper()
	a, err := h.ledger(0).Audit(context.Background(), "it")
	if err != nil {
		h.t.Fatal(err)
	}
	if !a.Balanced() {
		h.t.Fatalf("ledger out of balance: %+v", a)
	}
	return a
}

// deadLetters reads the dead-letter topic until it holds n records.
func (h *harness) deadLetters(n int) []*kgo.Record {
	h.t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(h.cfg.Brokers...), kgo.ConsumeTopics(h.cfg.Topic+".dlq"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		h.t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var out []*kgo.Record
	for len(out) < n {
		f := cl.PollFetches(ctx)
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			h.t.Fatalf("dead letters: %d, want %d", len(out), n)
		}
		out = append(out, f.Records()...)
	}
	return out
}

func header(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// counter sums every series of the counter name among cs (0 when none).
func counter(cs []prometheus.Collector, name string) float64 {
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(cs...)
	mfs, _ := reg.Gather()
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.Metric {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

func histogramCount(h prometheus.Histogram) uint64 {
	var d dto.Metric
	h.Write(&d)
	return d.Histogram.GetSampleCount()
}

func portOf(t *testing.T, addr string) int {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(port)
	return n
}
