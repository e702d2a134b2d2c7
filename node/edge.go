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
	"github.com/flashsale/flashsale/codes"
	"github.com/flashsale/flashsale/engine"
	"github.com/flashsale/flashsale/internal/tracing"
	"github.com/flashsale/flashsale/persist/kafkasink"
	"github.com/flashsale/flashsale/persist/localstore"
	"github.com/flashsale/flashsale/persist/mysqlstore"
	"github.com/flashsale/flashsale/persist/orderlog"
	"github.com/flashsale/flashsale/persist/reconcile"
	"github.com/flashsale/flashsale/persist/redisledger"
	"github.com/flashsale/flashsale/server"
	"github.com/flashsale/flashsale/server/admission"
)

// Edge is an edge node: the engine, its order sink and catalogue, the HTTP
// front and, in cluster mode, its registration in Redis and its
// reconcilers.
type Edge struct {
	cfg      Config
	registry *prometheus.Registry
	tracing  *tracing.Tracing // nil: off
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
	if e.tracing, err = cfg.startTracing(&e.steps); err != nil {
		return nil, err
	}
	opts := cfg.Engine
	var checks []server.Check
	var reader server.OrderReader
	var sink engine.OrderSink
	var dependency string       // of the order sink: its breaker's name
	var appendSpan string       // of the order sink: the span of an Append, when traced
	var store *localstore.Store // standalone
	var cl *clusterPart         // cluster mode
	if cfg.RedisAddr != "" {
		// Cluster mode: the stock pool, the claims and the catalogue in
		// Redis, joined before the engine so that Redis goes after it at a
		// stop (an undo that comes late still reaches it); orders through
		// Kafka, read back from MySQL, which also keeps the item
		// definitions and the ledger's generation of record.
		db, err := e.openRecord(ctx)
		if err != nil {
			return nil, err
		}
		if cl, err = e.joinCluster(ctx, db); err != nil {
			return nil, err
		}
		opts.NodeID, opts.Catalog, opts.OnLedgerLost = cl.reg.ID, cl.catalog, cl.look
		// A purchase waiting on Redis gives its in-flight slot back
		// (admission.Park), as one waiting for the order sink does.
		opts.Ledger = admission.ParkingLedger(e.tracing.Ledger(cl.guarded))
		opts.SyncFeed = func(ctx context.Context) error {
			admission.Park(ctx)
			ctx, cancel := context.WithTimeout(ctx, feedSyncWait)
			defer cancel()
			return e.tracing.Span(ctx, "feed barrier", cl.feed.Barrier)
		}
		checks = append(checks, cl.checks...)
		p, err := e.openKafka(ctx, cl)
		if err != nil {
			return nil, err
		}
		cl.acked = p.Acked()
		sink, reader, dependency, appendSpan = p, kafkasink.Reader{DB: db, Acked: cl.acked, Barrier: cl.feed.Barrier}, "kafka", "kafka produce"
		checks = append(checks, server.Check{Name: "kafka", Check: p.Check}, server.Check{Name: "mysql", Check: db.Check})
	} else {
		if store, err = localstore.Open(cfg.Store); err != nil {
			return nil, fmt.Errorf("cannot open the order store: %w", err)
		}
		e.steps.push("order store", store.Close)
		sink, reader, opts.Catalog, dependency, appendSpan = store, store, store, "order_store", "store commit"
		checks = append(checks, server.Check{Name: "order store", Check: store.Check})
		e.registry.MustRegister(store.Collectors()...)
	}
	guarded := circuit.NewSink(dependency, sink, cfg.breaker())
	// A winner waiting for durability gives its in-flight slot back, so
	// that losers are never refused because winners wait (admission.Park).
	opts.Sink = admission.Parking(e.tracing.Sink(appendSpan, guarded))
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
		cl.look() // the guard looks first thing: the generation, the pools, the claim marks of record
		e.steps.push("stock leases (given back to the pool)", func() error {
			ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
			defer cancel()
			return eng.GiveBackAll(ctx)
		})
		e.startFeed(cl)
		if err := e.reconcile(cl); err != nil {
			return nil, err
		}
		checks = append(checks, server.Check{Name: "ledger", Check: cl.guard.Ready})
	}
	var desk *codes.Desk
	if store != nil {
		desk, err = e.codesDesk(ctx, store, func(keys *codes.Keyring) ([]*codes.Redemption, error) { return store.Redemptions(ctx, keys) })
	} else {
		desk, err = e.codesDesk(ctx, cl.db, nil) // the order database judges each redemption: none are kept in memory at start
	}
	if err != nil {
		return nil, err
	}
	extras := server.Extras{Codes: desk, Tracing: e.tracing}
	if cl != nil {
		extras.Boards = cl.ledger
	}
	if e.server, err = server.New(cfg.Server, eng, reader, extras, checks, e.registry); err != nil {
		return nil, fmt.Errorf("cannot build the HTTP server: %w", err)
	}
	return e, nil
}

// codesStore is where a node's redemption codes are kept: the embedded
// store, or the order database of a cluster.
type codesStore interface {
	codes.Store
	Batches(ctx context.Context) ([]codes.Batch, error)
}

// codesDesk is a node's redemption desk: the secrets from
// -codes-secret-file (none: codes are refused), the batches of store, and
// the redemptions redeemed gives (nil: none in memory at start).
func (e *Edge) codesDesk(ctx context.Context, store codesStore, redeemed func(*codes.Keyring) ([]*codes.Redemption, error)) (*codes.Desk, error) {
	var keys *codes.Keyring
	if e.cfg.CodesSecrets != "" {
		var err error
		if keys, err = codes.LoadKeyring(e.cfg.CodesSecrets); err != nil {
			return nil, fmt.Errorf("cannot load the secrets of redemption codes (-codes-secret-file): %w", err)
		}
	}
	batches, err := store.Batches(ctx)
	if err != nil {
		return nil, fmt.Errorf("cannot read the batches of codes: %w", err)
	}
	var known []*codes.Redemption
	if redeemed != nil {
		if known, err = redeemed(keys); err != nil {
			return nil, fmt.Errorf("cannot read the redemptions: %w", err)
		}
	}
	slog.Info("redemption codes", "configured", keys != nil, "batches", len(batches), "redeemed", len(known))
	return codes.NewDesk(keys, store, batches, known, nil), nil
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

// openRecord opens the order database of cluster mode: an edge node reads
// orders from it, writes the item definitions through it and keeps the
// ledger's generation of record there.
func (e *Edge) openRecord(ctx context.Context) (*mysqlstore.Store, error) {
	ctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	mo := e.cfg.MySQL
	mo.Workers = edgeReadWorkers
	db, err := mysqlstore.Open(ctx, mo)
	if err != nil {
		return nil, fmt.Errorf("cannot open the order database (-mysql): %w", err)
	}
	e.steps.push("order database", db.Close)
	return db, nil
}

// openKafka is the order sink of cluster mode: the topics checked (created
// when missing) and an acks=all producer, whose records carry the ledger's
// generation and whose failures are recorded aborted.
func (e *Edge) openKafka(ctx context.Context, cl *clusterPart) (*kafkasink.Producer, error) {
	cfg := e.cfg
	ctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	if err := orderlog.EnsureTopics(ctx, cfg.Kafka); err != nil {
		return nil, fmt.Errorf("cannot reach Kafka (-kafka) or create the topics: %w", err)
	}
	kc := cfg.Kafka
	kc.Hooks = e.tracing.KafkaHooks() // the trace goes on in each record's headers
	p, err := kafkasink.NewProducer(kc, kafkasink.Options{Generation: cl.ledger.Generation, Tombstones: cl.db})
	if err != nil {
		return nil, fmt.Errorf("cannot start the Kafka producer: %w", err)
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
	return p, nil
}

// clusterPart is what an edge node holds of the cluster.
type clusterPart struct {
	reg     *redisledger.Registration
	ledger  *redisledger.Ledger // this node's instance
	guarded *circuit.Ledger     // the engine's: ledger behind the Redis breaker
	catalog recordedCatalog
	db      *mysqlstore.Store // the order database: reads, and what is of record
	checks  []server.Check
	guard   *reconcile.Guard

	loops    context.Context // the heartbeat's, the feed's and the reconcilers', ended at the stop
	gap      *reconcile.Gap
	feed     *redisledger.Feed
	acked    *kafkasink.Acked // the orders acknowledged on every node
	kick     chan struct{}    // the guard looks now
	follower *redisledger.Follower
}

// look asks the guard to compare generations now.
func (cl *clusterPart) look() {
	select {
	case cl.kick <- struct{}{}:
	default:
	}
}

// joinCluster connects to Redis, checks its ledger against the generation
// of record (a new cluster's first node starts one), and registers the
// node.
func (e *Edge) joinCluster(ctx context.Context, db *mysqlstore.Store) (*clusterPart, error) {
	cfg := e.cfg
	// Client-side caching stays on: the catalogue is read through it.
	rc, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{cfg.RedisAddr}, ConnWriteTimeout: cfg.Redis.Timeout})
	if err != nil {
		return nil, fmt.Errorf("cannot connect to Redis (-redis): %w", err)
	}
	e.steps.push("redis client", func() error { rc.Close(); return nil })
	rctx, cancel := context.WithTimeout(ctx, stopTimeout)
	defer cancel()
	proposed := reconcile.NewGeneration()
	rec, err := db.StartGeneration(rctx, proposed)
	if err != nil {
		return nil, err
	}
	lo := cfg.ledgerOptions()
	lo.Generation = rec
	base := redisledger.New(rc, 0, lo)
	var cur string
	if rec == proposed { // a new cluster: Redis starts it, unless it holds items (a ledger without its record)
		cur, err = base.StartGeneration(rctx, rec)
	} else {
		cur, err = base.CurrentGeneration(rctx)
	}
	if err != nil {
		return nil, fmt.Errorf("cannot read the ledger's generation in Redis: %w", err)
	}
	if cur != rec {
		slog.Error("the ledger in Redis is not the ledger of record: this node sells nothing until it is rebuilt",
			"redis_generation", cur, "record_generation", rec)
	}
	reg, err := base.Register(rctx, cfg.Engine.NodeID, cfg.NodeTTL)
	if err != nil {
		return nil, fmt.Errorf("cannot register this node in Redis: %w", err)
	}
	e.steps.push("node registration", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return reg.Release(ctx)
	})
	cl := &clusterPart{reg: reg, ledger: base.ForInstance(reg), db: db, kick: make(chan struct{}, 1),
		catalog: recordedCatalog{record: db, shared: redisledger.NewCatalog(rc, cfg.Redis.Prefix, redisledger.DefaultCacheTTL)},
		feed:    redisledger.NewFeed(rc, cfg.Redis.Prefix)}
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
// catalogue of record and Redis's (stock, holdings and request ids are the
// ledger's).
func (e *Edge) snapshot(ctx context.Context, store *localstore.Store, cl *clusterPart) (engine.Snapshot, error) {
	if store != nil {
		snap, err := store.Load(ctx, e.cfg.Engine.IdempotencyWindow, time.Now())
		if err != nil {
			return snap, fmt.Errorf("cannot load the order store: %w", err)
		}
		return snap, nil
	}
	items, err := cl.catalog.all(ctx)
	if err != nil {
		return engine.Snapshot{}, fmt.Errorf("cannot read the item catalogue: %w", err)
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
	e.guard(cl) // before the heartbeat, whose rejoin asks it
	monitor := reconcile.NewMonitor(cl.ledger, itemIDs)
	e.registry.MustRegister(monitor.Collectors()...)
	go monitor.Run(cl.loops, e.cfg.ReconcileInterval)
	e.lost = cl.reg.Keep(cl.loops, e.rejoin(cl))
	gap, err := reconcile.NewGap(reconcile.GapOptions{Kafka: e.cfg.Kafka, Ledger: cl.ledger})
	if err != nil {
		return fmt.Errorf("cannot start the claim reconciler: %w", err)
	}
	// The writers' lag, from the brokers: visible here when every writer
	// is dead.
	lag, err := orderlog.NewLagCollector(e.cfg.Kafka)
	if err != nil {
		return fmt.Errorf("cannot read the consumer lag: %w", err)
	}
	e.steps.push("consumer lag reader", func() error { lag.Close(); return nil })
	e.registry.MustRegister(lag)
	cl.gap = gap
	e.registry.MustRegister(gap.Collectors()...)
	go gap.Run(cl.loops, e.cfg.ReconcileInterval, itemIDs)
	return nil
}

// guard watches that Redis holds the ledger of record: while it does not,
// the engine sells nothing, and (with AutoRebuild) one node rebuilds it
// from the orders of record; then every node sells from the rebuilt ledger,
// having dropped the units it leased from the lost one.
func (e *Edge) guard(cl *clusterPart) {
	eng := e.engine
	var rebuild func(ctx context.Context) error
	if e.cfg.AutoRebuild {
		rebuild = func(ctx context.Context) error {
			_, err := reconcile.Rebuild(ctx, reconcile.RebuildOptions{Ledger: cl.ledger, Record: cl.db,
				Catalog: cl.catalog.shared, Kafka: e.cfg.Kafka, Window: e.cfg.Engine.IdempotencyWindow})
			return err
		}
	}
	itemIDs := func() []string {
		var ids []string
		for _, v := range eng.Items() {
			ids = append(ids, v.ID)
		}
		return ids
	}
	cl.guard = reconcile.NewGuard(reconcile.GuardOptions{Redis: cl.ledger, Record: cl.db,
		Lost:       func(string) { eng.SetLedgerLost() },
		EngineLost: eng.LedgerLost,
		Sound:      eng.LedgerSound,
		Items:      itemIDs,
		Rebuilt: func(string) {
			eng.Rebuilt()
			// The winners of the rebuilt ledger are learnt before the
			// first purchase: a winner's retry is its replay at once.
			ctx, cancel := context.WithTimeout(cl.loops, 30*time.Second)
			err := cl.follower.Resync(ctx)
			cancel()
			if err != nil {
				slog.Error("cannot read the rebuilt ledger; the next check tries again", "err", err)
				return
			}
			eng.LedgerSound()
		},
		Rebuild: rebuild})
	e.registry.MustRegister(cl.guard.Collectors()...)
	go cl.guard.Run(cl.loops, guardInterval, cl.kick)
}

// rejoin says whether a node whose registration is gone may take it again:
// only when Redis lost the ledger too (its generation is not the one the
// node sells from, or the node found it lost lately: a rebuild may have
// ended before the heartbeat noticed). Its leases are then void: the node
// sells nothing until the ledger is rebuilt, and drops its leased units
// then. A registration
// that expired in a sound ledger (the node was cut off from Redis) may have
// had its leases given back to the pool by others: the node must stop.
func (e *Edge) rejoin(cl *clusterPart) func(context.Context) bool {
	return func(ctx context.Context) bool {
		cur, err := cl.ledger.CurrentGeneration(ctx)
		if err != nil || cur == cl.ledger.Generation() && !cl.guard.LostWithin(2*e.cfg.NodeTTL) {
			return false
		}
		if cur != cl.ledger.Generation() {
			e.engine.SetLedgerLost()
			cl.look()
		}
		if err := cl.reg.Rejoin(ctx); err != nil {
			slog.Error("cannot register this node again after Redis lost the ledger", "err", err)
			return false
		}
		slog.Warn("Redis lost this node's registration with the ledger; registered again, selling nothing until the ledger is rebuilt",
			"node", cl.reg.ID)
		return true
	}
}

// feedSyncWait bounds a purchase's wait for the feed (Options.SyncFeed):
// past it the purchase goes on (the claim still checks its own item).
const feedSyncWait = 50 * time.Millisecond

// guardInterval is how often a node compares the ledger's generation with
// the generation of record; the feed's generation events and a script
// that finds a pool gone make it look at once.
const guardInterval = time.Second

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
// the process's own. The runtime's scheduler metrics are among them:
// go_sched_latencies_seconds (how long runnable goroutines waited for a
// thread) is where a tail that is not the handlers' own shows.
func newRegistry() *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(collectors.MetricsScheduler)),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return r
}
