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
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/rueidis"
	"github.com/sony/gobreaker/v2"

	"github.com/flashsale/flashsale/circuit"
	"github.com/flashsale/flashsale/engine"
	"github.com/flashsale/flashsale/persist/kafkasink"
	"github.com/flashsale/flashsale/persist/mysqlstore"
	"github.com/flashsale/flashsale/persist/orderlog"
	"github.com/flashsale/flashsale/persist/reconcile"
	"github.com/flashsale/flashsale/persist/redisledger"
	"github.com/flashsale/flashsale/persist/sqlitestore"
	"github.com/flashsale/flashsale/server"
)

// Edge is an edge node: the engine, its order sink and catalogue, the HTTP
// front and, in cluster mode, its registration in Redis and its
// reconcilers.
type Edge struct {
	cfg      Config
	registry *prometheus.Registry
	engine   *engine.Engine
	server   *server.Server
	lost     <-chan struct{} // closed when the node lost its registration; nil standalone
	steps    steps

	mu       sync.Mutex
	serving  bool // Serve was called
	stopping bool
	stopped  sync.Once
}

// Startup bounds.
const (
	connectTimeout = 15 * time.Second // topics checked, order database migrated
	stopTimeout    = 5 * time.Second  // a producer's flush, the leases given back
)

// edgeReadWorkers is the MySQL pool of an edge node, which only reads.
const edgeReadWorkers = 2

// NewEdge builds an edge node and starts everything but its listeners: the
// order sink (the embedded store, or Kafka with reads from MySQL), in
// cluster mode the node's registration in Redis and its reconcilers, and
// the engine, rebuilt from the stores. On error it stops what it started.
func NewEdge(ctx context.Context, cfg Config) (_ *Edge, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	begin := time.Now()
	e := &Edge{cfg: cfg, registry: newRegistry()}
	defer func() {
		if err != nil {
			e.steps.stop()
		}
	}()
	opts := cfg.Engine
	var checks []server.Check
	var reader server.OrderReader
	var sink engine.OrderSink
	var dependency string        // of the order sink: its breaker's name
	var store *sqlitestore.Store // standalone
	var cl *clusterPart          // cluster mode
	if cfg.RedisAddr != "" {
		// Cluster mode: the stock pool, the claims and the catalogue in
		// Redis, joined first so that Redis is the last to go at a stop (an
		// undo that comes late still reaches it); orders through Kafka,
		// read back from MySQL.
		if cl, err = e.joinCluster(ctx); err != nil {
			return nil, err
		}
		opts.NodeID, opts.Ledger, opts.Catalog = cl.reg.ID, cl.guarded, cl.catalog
		checks = append(checks, cl.checks...)
		p, db, err := e.openKafka(ctx)
		if err != nil {
			return nil, err
		}
		cl.acked = p.Acked()
		sink, reader, dependency = p, kafkasink.Reader{DB: db, Acked: cl.acked, Barrier: cl.feed.Barrier}, "kafka"
		checks = append(checks, server.Check{Name: "kafka", Check: p.Check}, server.Check{Name: "mysql", Check: db.Check})
	} else {
		if store, err = sqlitestore.Open(cfg.Store); err != nil {
			return nil, fmt.Errorf("cannot open the order store: %w", err)
		}
		e.steps.push("order store", store.Close)
		sink, reader, opts.Catalog, dependency = store, store, store, "order_store"
		checks = append(checks, server.Check{Name: "order store", Check: store.Check})
		e.registry.MustRegister(store.Collectors()...)
	}
	guarded := circuit.NewSink(dependency, sink, cfg.breaker())
	opts.Sink = guarded
	checks = append(checks, server.Check{Name: guarded.Dependency() + " circuit", Check: guarded.Check})
	e.registry.MustRegister(guarded.Collectors()...)

	if e.engine, err = engine.New(opts); err != nil {
		return nil, fmt.Errorf("cannot start the engine: %w", err)
	}
	eng := e.engine
	e.steps.push("engine", func() error { eng.Close(); return nil })
	snap, err := e.snapshot(ctx, store, cl)
	if err != nil {
		return nil, err
	}
	if err := eng.Restore(snap); err != nil {
		return nil, fmt.Errorf("cannot rebuild the engine from the order store: %w", err)
	}
	slog.Info("engine rebuilt", "items", len(snap.Items), "holdings", len(snap.Holdings),
		"replayable_requests", len(snap.Replays), "took", time.Since(begin))
	if cl != nil {
		e.steps.push("stock leases (given back to the pool)", func() error {
			ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
			defer cancel()
			return eng.GiveBackAll(ctx)
		})
		e.startFeed(cl)
		if err := e.reconcile(cl); err != nil {
			return nil, err
		}
	}
	if e.server, err = server.New(cfg.Server, eng, reader, checks, e.registry); err != nil {
		return nil, fmt.Errorf("cannot build the HTTP server: %w", err)
	}
	return e, nil
}

// Serve serves the public and the admin listener until Stop, or until one
// fails.
func (e *Edge) Serve(public, admin net.Listener) error {
	e.mu.Lock()
	if e.serving || e.stopping {
		e.mu.Unlock()
		return errors.New("node: the edge node is served already, or stopped")
	}
	e.serving = true
	e.mu.Unlock()
	return e.server.Serve(public, admin)
}

// Lost is closed when the node lost its registration in Redis (missed
// heartbeats): it must stop, since others may give its leases back. It is
// never closed standalone.
func (e *Edge) Lost() <-chan struct{} { return e.lost }

// Stop drains the listeners (readiness fails first, for -shutdown-delay),
// then stops every part in reverse order of start, timing each. Calls after
// the first do nothing.
func (e *Edge) Stop() {
	e.stopped.Do(func() {
		e.mu.Lock()
		e.stopping = true
		serving := e.serving
		e.mu.Unlock()
		if serving {
			t := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), e.cfg.Server.ShutdownDelay+e.cfg.Server.DrainTimeout)
			err := e.server.Shutdown(ctx)
			cancel()
			slog.Info("stopped HTTP server", "err", err, "took", time.Since(t))
		}
		e.steps.stop()
	})
}

// openKafka is the order sink of cluster mode: the topics
// checked (created when missing), the order database for reads, and an
// acks=all producer.
func (e *Edge) openKafka(ctx context.Context) (*kafkasink.Producer, *mysqlstore.Store, error) {
	cfg := e.cfg
	ctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	if err := orderlog.EnsureTopics(ctx, cfg.Kafka); err != nil {
		return nil, nil, fmt.Errorf("cannot reach Kafka (-kafka) or create the topics: %w", err)
	}
	mo := cfg.MySQL
	mo.Workers = edgeReadWorkers
	db, err := mysqlstore.Open(ctx, mo)
	if err != nil {
		return nil, nil, fmt.Errorf("cannot open the order database (-mysql): %w", err)
	}
	e.steps.push("order database", db.Close)
	p, err := kafkasink.NewProducer(cfg.Kafka)
	if err != nil {
		return nil, nil, fmt.Errorf("cannot start the Kafka producer: %w", err)
	}
	e.steps.push("kafka producer", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
		defer cancel()
		return p.Close(ctx)
	})
	e.registry.MustRegister(p.Collectors()...)
	k := cfg.Kafka.WithDefaults()
	slog.Info("orders go through Kafka into MySQL", "brokers", k.Brokers, "topic", k.Topic, "acks", k.Acks,
		"idempotent", k.Idempotent, "linger", k.Linger, "produce_timeout", k.Timeout)
	return p, db, nil
}

// clusterPart is what an edge node holds of the cluster.
type clusterPart struct {
	reg     *redisledger.Registration
	ledger  *redisledger.Ledger // this node's instance
	guarded *circuit.Ledger     // the engine's: ledger behind the Redis breaker
	catalog *redisledger.Catalog
	checks  []server.Check

	loops context.Context // the heartbeat's, the feed's and the reconcilers', ended at the stop
	gap   *reconcile.Gap
	feed  *redisledger.Feed
	acked *kafkasink.Acked // the orders acknowledged on every node
}

// joinCluster connects to Redis and registers the node.
func (e *Edge) joinCluster(ctx context.Context) (*clusterPart, error) {
	cfg := e.cfg
	// Client-side caching stays on: the catalogue is read through it.
	rc, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{cfg.RedisAddr}, ConnWriteTimeout: cfg.Redis.Timeout})
	if err != nil {
		return nil, fmt.Errorf("cannot connect to Redis (-redis): %w", err)
	}
	e.steps.push("redis client", func() error { rc.Close(); return nil })
	base := redisledger.New(rc, 0, cfg.ledgerOptions())
	rctx, cancel := context.WithTimeout(ctx, stopTimeout)
	reg, err := base.Register(rctx, cfg.Engine.NodeID, cfg.NodeTTL)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("cannot register this node in Redis: %w", err)
	}
	e.steps.push("node registration", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return reg.Release(ctx)
	})
	cl := &clusterPart{reg: reg, ledger: base.ForInstance(reg), catalog: redisledger.NewCatalog(rc, cfg.Redis.Prefix, redisledger.DefaultCacheTTL),
		feed: redisledger.NewFeed(rc, cfg.Redis.Prefix)}
	// The heartbeat and the reconcilers start once the engine is rebuilt,
	// and stop after it: the node stays registered while it gives its
	// leases back.
	loops, cancel := context.WithCancel(context.Background())
	cl.loops = loops
	e.steps.push("reconcilers, feed and heartbeat", func() error {
		cancel()
		if cl.gap != nil {
			cl.gap.Close()
		}
		return nil
	})
	cl.guarded = circuit.NewLedger("redis", cl.ledger, cfg.breaker())
	e.registry.MustRegister(cl.guarded.Collectors()...)
	cl.checks = []server.Check{{Name: "redis", Check: func(ctx context.Context) error {
		return rc.Do(ctx, rc.B().Ping().Build()).Error()
	}}, {Name: "redis circuit", Check: cl.guarded.Check}}
	slog.Info("cluster mode: stock pool and claims in Redis", "redis", cfg.RedisAddr, "node", reg.ID,
		"instance", reg.Instance(), "prefix", cfg.Redis.Prefix)
	return cl, nil
}

// snapshot reads what the engine is rebuilt from: standalone, the store
// (items, holdings, the request ids of the window); in cluster mode, the
// shared catalogue (stock, holdings and request ids are the ledger's).
func (e *Edge) snapshot(ctx context.Context, store *sqlitestore.Store, cl *clusterPart) (engine.Snapshot, error) {
	if store != nil {
		snap, err := store.Load(ctx, e.cfg.Engine.IdempotencyWindow, time.Now())
		if err != nil {
			return snap, fmt.Errorf("cannot load the order store: %w", err)
		}
		return snap, nil
	}
	items, err := cl.catalog.Items(ctx)
	if err != nil {
		return engine.Snapshot{}, fmt.Errorf("cannot read the item catalogue from Redis: %w", err)
	}
	var snap engine.Snapshot
	for _, it := range items {
		snap.Items = append(snap.Items, engine.ItemRecord{Item: it})
	}
	return snap, nil
}

// reconcile starts the node's part of keeping the cluster's ledger true:
// its heartbeat, the reconciliation of dead nodes' leases, the audit for
// /metrics and the claims with no order in Kafka. They run until the
// stop step joinCluster pushed.
func (e *Edge) reconcile(cl *clusterPart) error {
	itemIDs := func() []string {
		var ids []string
		for _, v := range e.engine.Items() {
			ids = append(ids, v.ID)
		}
		return ids
	}
	monitor := reconcile.NewMonitor(cl.ledger, itemIDs)
	e.registry.MustRegister(monitor.Collectors()...)
	go monitor.Run(cl.loops, e.cfg.ReconcileInterval)
	e.lost = cl.reg.Keep(cl.loops)
	gap, err := reconcile.NewGap(reconcile.GapOptions{Kafka: e.cfg.Kafka, Ledger: cl.ledger})
	if err != nil {
		return fmt.Errorf("cannot start the claim reconciler: %w", err)
	}
	cl.gap = gap
	e.registry.MustRegister(gap.Collectors()...)
	go gap.Run(cl.loops, e.cfg.ReconcileInterval, itemIDs)
	return nil
}

// ledgerOptions are the Redis ledger's: the engine's idempotency window,
// and claims tracked (orders go through Kafka).
func (c Config) ledgerOptions() redisledger.Options {
	o := c.Redis
	o.IdempotencyWindow = c.Engine.IdempotencyWindow
	o.TrackClaims = true
	return o
}

// breaker is every dependency's breaker configuration, with changes logged.
func (c Config) breaker() circuit.Options {
	o := c.Breaker
	o.OnStateChange = func(dependency string, from, to gobreaker.State) {
		slog.Warn("the circuit of "+dependency+" changed state", "from", from.String(), "to", to.String())
	}
	return o
}

// newRegistry is a process's metrics registry, with the Go runtime's and
// the process's own.
func newRegistry() *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return r
}
