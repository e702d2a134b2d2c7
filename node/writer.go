package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/rueidis"

	"github.com/flashsale/flashsale/persist/mysqlstore"
	"github.com/flashsale/flashsale/persist/orderlog"
	"github.com/flashsale/flashsale/persist/orderwriter"
	"github.com/flashsale/flashsale/persist/redisledger"
	"github.com/flashsale/flashsale/server"
)

// Writer is the writer role: orders from Kafka, their claims settled in
// Redis, into MySQL; with the same admin listener as an edge node's, less
// the item routes.
type Writer struct {
	cfg      Config
	registry *prometheus.Registry
	writer   *orderwriter.Writer
	admin    *server.Admin
	steps    steps

	mu       sync.Mutex
	running  bool // Serve started consuming
	stopping bool
	run      context.Context
	stopRun  context.CancelFunc
	done     chan error // Run's end
	stopped  sync.Once
}

// NewWriter builds a writer: the topics checked (created when missing), the
// order database migrated, Redis connected and the consumer group joined.
// On error it stops what it started.
func NewWriter(ctx context.Context, cfg Config) (_ *Writer, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Role != RoleWriter {
		return nil, fmt.Errorf("node: NewWriter with role %q", cfg.Role)
	}
	w := &Writer{cfg: cfg, registry: newRegistry(), done: make(chan error, 1)}
	w.run, w.stopRun = context.WithCancel(context.Background())
	defer func() {
		if err != nil {
			w.steps.stop()
		}
	}()
	tr, err := cfg.startTracing(&w.steps)
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	if err := orderlog.EnsureTopics(cctx, cfg.Kafka); err != nil {
		return nil, fmt.Errorf("cannot reach Kafka (-kafka) or create the topics: %w", err)
	}
	mo := cfg.MySQL
	mo.MaxRows = cfg.Writer.MaxBatch // a batch is one INSERT per table
	db, err := mysqlstore.Open(cctx, mo)
	if err != nil {
		return nil, fmt.Errorf("cannot open the order database (-mysql): %w", err)
	}
	w.steps.push("order database", db.Close)
	rc, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{cfg.RedisAddr}, DisableCache: true,
		ConnWriteTimeout: cfg.Redis.Timeout})
	if err != nil {
		return nil, fmt.Errorf("cannot connect to Redis (-redis): %w", err)
	}
	w.steps.push("redis client", func() error { rc.Close(); return nil })
	checks := []server.Check{{Name: "mysql", Check: db.Check}, {Name: "redis", Check: func(ctx context.Context) error {
		return rc.Do(ctx, rc.B().Ping().Build()).Error()
	}}}
	so := cfg.Server
	so.ShutdownDelay = 0 // no load balancer sends a writer traffic
	if w.admin, err = server.NewAdmin(so, checks, w.registry); err != nil {
		return nil, err
	}
	wo := cfg.Writer
	wo.Kafka, wo.Claims, wo.Store, wo.Tracing = cfg.Kafka, redisledger.New(rc, 0, cfg.ledgerOptions()), db, tr
	wo.Kafka.Hooks = tr.KafkaHooks() // each record's trace, read from its headers
	if w.writer, err = orderwriter.New(wo); err != nil {
		return nil, fmt.Errorf("cannot join the writers' consumer group: %w", err)
	}
	w.registry.MustRegister(append(w.writer.Collectors(), db.Collectors()...)...)
	lag, err := orderlog.NewLagCollector(cfg.Kafka)
	if err != nil {
		return nil, fmt.Errorf("cannot read the consumer lag: %w", err)
	}
	w.steps.push("consumer lag reader", func() error { lag.Close(); return nil })
	w.registry.MustRegister(lag)
	ow := w.writer
	w.steps.push("consumer group", func() error { ow.Close(); return nil })
	return w, nil
}

// Serve serves the admin listener and consumes, until Stop, or until the
// listener or the consumer fails.
func (w *Writer) Serve(admin net.Listener) error {
	w.mu.Lock()
	if w.running || w.stopping {
		w.mu.Unlock()
		return errors.New("node: the writer is served already, or stopped")
	}
	w.running = true
	w.mu.Unlock()
	go func() { w.done <- w.writer.Run(w.run) }()
	served := make(chan error, 1)
	go func() { served <- w.admin.Serve(admin) }()
	k := w.cfg.Kafka.WithDefaults()
	slog.Info("writer running", "brokers", k.Brokers, "topic", k.Topic, "group", k.Group,
		"batch", w.cfg.Writer.MaxBatch, "pool", w.cfg.MySQL.Workers, "tables", w.cfg.MySQL.Tables, "admin", admin.Addr().String())
	select {
	case err := <-served:
		return err
	case err := <-w.done:
		w.done <- err // for Stop
		if err == nil {
			err = errors.New("the writer stopped consuming")
		}
		return err
	}
}

// Stop stops consuming (the batch in hand is finished or left uncommitted:
// redelivered), closes the admin listener, then every part in reverse order.
// Calls after the first do nothing.
func (w *Writer) Stop() {
	w.stopped.Do(func() {
		w.mu.Lock()
		w.stopping = true
		running := w.running
		w.mu.Unlock()
		w.stopRun()
		if running {
			<-w.done
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		w.admin.Shutdown(ctx)
		cancel()
		w.steps.stop()
	})
}
