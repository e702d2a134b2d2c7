// Command flashsale is an edge server for flash sales: it decides in memory
// who wins, never sells a unit twice and never loses an order it said yes to.
// See README.md; the HTTP contract is API.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"github.com/bytedance/sonic"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/rueidis"
	"github.com/sony/gobreaker/v2"

	"github.com/flashsale/flashsale/engine"
	"github.com/flashsale/flashsale/engine/circuit"
	"github.com/flashsale/flashsale/persist/orderlog"
	"github.com/flashsale/flashsale/persist/redisledger"
	"github.com/flashsale/flashsale/persist/sqlitestore"
	"github.com/flashsale/flashsale/server"
)

// version is stamped by the Makefile with -ldflags -X.
var version = "dev"

func main() {
	flag.Parse()
	if *showVersion {
		fmt.Println("flashsale", version)
		return
	}
	if err := envOverlay(); err != nil {
		fatal("invalid environment", err)
	}
	if err := validate(); err != nil {
		fatal("invalid configuration", err)
	}
	if *checkConfig {
		fmt.Println("configuration is valid")
		return
	}
	mode := "standalone"
	if *redisAddr != "" {
		mode = "cluster"
	}
	slog.Info("starting flashsale", "version", version, "mode", mode, "gomaxprocs", runtime.GOMAXPROCS(0), "sonic_api", sonic.APIKind)
	if sonic.APIKind != sonic.UseSonicJSON {
		slog.Warn("sonic runs in its encoding/json fallback on this platform: JSON is slower")
	}

	if *role == "writer" {
		runWriter()
		return
	}

	start := time.Now()
	registry := prometheus.NewRegistry()
	registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	breaker := func(name string) circuit.Options {
		return circuit.Options{Failures: uint32(*breakerFailures), Slow: *breakerSlow, CoolDown: *breakerCoolDown,
			OnStateChange: func(from, to gobreaker.State) {
				slog.Warn(name+" circuit changed state", "from", from.String(), "to", to.String())
			}}
	}
	// stops are run in reverse order at shutdown, after the HTTP server.
	var stops []stop
	var checks []server.Check
	opts := engine.Options{Shards: *shards, NodeID: *nodeID, IdempotencyWindow: *idemWindow}

	// The order sink: the embedded store (standalone, and cluster mode
	// without Kafka) or Kafka, with order reads from MySQL.
	var rawSink engine.OrderSink
	var reader server.OrderReader
	var store *sqlitestore.Store
	var producer *orderlog.Producer
	if *kafkaBrokers == "" {
		var err error
		store, err = sqlitestore.Open(sqlitestore.Options{Dir: *dataDir, MaxBatch: *storeBatch})
		if err != nil {
			fatal("cannot open the order store", err)
		}
		rawSink, reader, opts.Catalog = store, store, store
		checks = append(checks, server.Check{Name: "order store", Check: store.Check})
		registry.MustRegister(store)
		stops = append(stops, stop{"order store", store.Close})
	} else {
		var more []server.Check
		producer, reader, more = kafkaSink(&stops)
		rawSink = producer
		checks = append(checks, more...)
		registry.MustRegister(producer.Collectors()...)
	}
	sink := circuit.New("order sink", rawSink, breaker("order sink"))
	opts.Sink = sink
	checks = append(checks, server.Check{Name: "order sink circuit", Check: sink.Check})
	registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "flashsale_circuit_state",
		Help: "State of the order sink's circuit breaker (embedded store or Kafka): 0 closed, 1 half-open, 2 open.",
	}, func() float64 { return float64(sink.State()) }))

	var pool *circuit.Ledger
	var catalog *redisledger.Catalog
	var ledger *redisledger.Ledger
	var reg *redisledger.Registration
	if *redisAddr != "" {
		// Client-side caching stays on: the catalogue is read through it.
		rc, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{*redisAddr}, ConnWriteTimeout: *redisTimeout})
		if err != nil {
			fatal("cannot connect to Redis (-redis)", err)
		}
		defer rc.Close()
		base := redisledger.New(rc, 0, redisledger.Options{Prefix: *redisPrefix, IdempotencyWindow: *idemWindow,
			Timeout: *redisTimeout, TrackClaims: *kafkaBrokers != ""})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		reg, err = base.Register(ctx, *nodeID, *nodeTTL)
		cancel()
		if err != nil {
			fatal("cannot register this node in Redis", err)
		}
		opts.NodeID = reg.ID
		ledger = base.ForInstance(reg)
		pool = circuit.NewLedger("redis", ledger, breaker("redis"))
		catalog = redisledger.NewCatalog(rc, *redisPrefix, time.Second)
		opts.Ledger, opts.Stock, opts.MaxLease = pool, pool, *maxLease
		opts.Catalog, opts.Sync = catalog, catalog
		checks = append(checks, server.Check{Name: "redis", Check: func(ctx context.Context) error {
			return rc.Do(ctx, rc.B().Ping().Build()).Error()
		}}, server.Check{Name: "redis circuit", Check: pool.Check})
		slog.Info("cluster mode: stock pool and claims in Redis", "redis", *redisAddr, "node", reg.ID, "instance", reg.Instance(), "prefix", *redisPrefix)
	}
	eng, err := engine.New(opts)
	if err != nil {
		fatal("cannot start the engine", err)
	}
	var snap engine.Snapshot
	if store != nil {
		if snap, err = store.Load(context.Background(), *idemWindow, time.Now()); err != nil {
			fatal("cannot load the order store", err)
		}
	}
	if catalog != nil {
		// In cluster mode items live in Redis; this node's store, if any,
		// has its orders.
		items, err := catalog.Items(context.Background())
		if err != nil {
			fatal("cannot read the item catalogue from Redis", err)
		}
		snap = clusterSnapshot(snap, items)
	}
	if err := eng.Restore(snap); err != nil {
		fatal("cannot rebuild the engine from the order store", err)
	}
	slog.Info("engine rebuilt", "items", len(snap.Items), "holdings", len(snap.Holdings),
		"replayable_requests", len(snap.Replays), "took", time.Since(start))

	lost := make(chan struct{})
	stopCluster := func() {}
	if pool != nil {
		itemIDs := func() []string {
			var ids []string
			for _, v := range eng.Items() {
				ids = append(ids, v.ID)
			}
			return ids
		}
		monitor := redisledger.NewMonitor(ledger, itemIDs)
		registry.MustRegister(monitor, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "flashsale_redis_circuit_state",
			Help: "State of the Redis circuit breaker: 0 closed, 1 half-open, 2 open.",
		}, func() float64 { return float64(pool.State()) }))
		ctx, cancel := context.WithCancel(context.Background())
		stopCluster = cancel
		go monitor.Run(ctx, *reconcileInt)
		go keepRegistration(ctx, reg, *nodeTTL, lost)
		if producer != nil {
			gap, err := orderlog.NewGapReconciler(orderlog.GapOptions{Kafka: kafkaConfig(), Group: *kafkaGroup, Ledger: ledger})
			if err != nil {
				fatal("cannot start the claim reconciler", err)
			}
			registry.MustRegister(gap.Collectors()...)
			go gap.Run(ctx, *reconcileInt, itemIDs)
			stops = append(stops, stop{"claim reconciler", func() error { gap.Close(); return nil }})
		}
	}
	srv, err := server.New(serverOptions(), eng, reader, checks, registry)
	if err != nil {
		fatal("cannot build the HTTP server", err)
	}
	pub, err := net.Listen("tcp", *listen)
	if err != nil {
		fatal("cannot listen on -listen", err)
	}
	adm, err := net.Listen("tcp", *adminListen)
	if err != nil {
		fatal("cannot listen on -admin-listen", err)
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(pub, adm) }()
	greet(pub.Addr().String(), adm.Addr().String())

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case s := <-sig:
		slog.Info("shutting down", "signal", s.String(), "shutdown_delay", *shutdownWait)
	case err := <-serveErr:
		fatal("HTTP server failed", err)
	case <-lost:
		slog.Error("this node lost its registration in Redis (missed heartbeats); stopping, since others may give its leases back")
	}

	// Stop in reverse order of start, timing each step.
	step := func(name string, f func() error) {
		t := time.Now()
		if err := f(); err != nil {
			slog.Error("stopping "+name, "err", err, "took", time.Since(t))
			return
		}
		slog.Info("stopped "+name, "took", time.Since(t))
	}
	step("HTTP server", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), *shutdownWait+*drainTimeout)
		defer cancel()
		return srv.Shutdown(ctx)
	})
	step("stock leases (given back to the pool)", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return eng.GiveBackAll(ctx)
	})
	step("engine", func() error { eng.Close(); return nil })
	if reg != nil {
		stopCluster()
		step("node registration", func() error {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			return reg.Release(ctx)
		})
	}
	for i := len(stops) - 1; i >= 0; i-- {
		step(stops[i].name, stops[i].f)
	}
	slog.Info("bye")
}

// greet tells a newcomer how to use what just started.
func greet(pub, adm string) {
	slog.Info("serving", "public", pub, "admin", adm)
	fmt.Fprintf(os.Stderr, `
  flashsale is ready. Create an item on the admin port, then buy it:

    curl -X PUT http://%[2]s/api/v1/items/phone-1 -H 'Content-Type: application/json' \
         -d '{"name":"Phone","price_cents":19900,"stock":1000,"per_user_limit":1}'
    curl -X POST http://%[1]s/api/v1/items/phone-1/purchase -H 'Content-Type: application/json' \
         -d '{"user_id":"u-42","request_id":"r-1"}'
    curl http://%[1]s/api/v1/items/phone-1
    curl http://%[2]s/metrics

`, hostport(pub), hostport(adm))
}

// hostport makes a listen address usable in a URL (":8080" -> "localhost:8080").
func hostport(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "localhost"
	}
	return net.JoinHostPort(host, port)
}

func fatal(msg string, err error) {
	slog.Error(msg, "err", err)
	os.Exit(1)
}

// clusterSnapshot rebuilds a node from the shared catalogue and its own
// orders: the items are the catalogue's, this node's units sold come from
// its holdings, and orders of items the catalogue no longer has are left out.
func clusterSnapshot(local engine.Snapshot, items []engine.Item) engine.Snapshot {
	known := map[string]bool{}
	sold := map[string]int64{}
	for _, h := range local.Holdings {
		sold[h.ItemID] += h.Units
	}
	out := engine.Snapshot{LastOrderID: local.LastOrderID}
	for _, it := range items {
		known[it.ID] = true
		out.Items = append(out.Items, engine.ItemRecord{Item: it, Sold: min(sold[it.ID], it.Stock)})
	}
	for _, h := range local.Holdings {
		if known[h.ItemID] {
			out.Holdings = append(out.Holdings, h)
		}
	}
	for _, o := range local.Replays {
		if known[o.ItemID] {
			out.Replays = append(out.Replays, o)
		}
	}
	return out
}

// keepRegistration beats the node's heartbeat until ctx ends, and closes
// lost when the node no longer holds its id.
func keepRegistration(ctx context.Context, reg *redisledger.Registration, ttl time.Duration, lost chan<- struct{}) {
	t := time.NewTicker(ttl / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			hctx, cancel := context.WithTimeout(ctx, ttl/3)
			ok, err := reg.Heartbeat(hctx)
			cancel()
			if err != nil {
				slog.Warn("heartbeat to Redis failed; retrying", "err", err)
			}
			if !ok {
				close(lost)
				return
			}
		}
	}
}
