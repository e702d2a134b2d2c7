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

	start := time.Now()
	store, err := sqlitestore.Open(sqlitestore.Options{Dir: *dataDir, MaxBatch: *storeBatch})
	if err != nil {
		fatal("cannot open the order store", err)
	}
	breaker := func(name string) circuit.Options {
		return circuit.Options{Failures: uint32(*breakerFailures), Slow: *breakerSlow, CoolDown: *breakerCoolDown,
			OnStateChange: func(from, to gobreaker.State) {
				slog.Warn(name+" circuit changed state", "from", from.String(), "to", to.String())
			}}
	}
	sink := circuit.New("order store", store, breaker("order store"))
	opts := engine.Options{Shards: *shards, NodeID: *nodeID, IdempotencyWindow: *idemWindow, Sink: sink, Catalog: store}
	checks := []server.Check{{Name: "order store", Check: store.Check}, {Name: "order store circuit", Check: sink.Check}}
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
		base := redisledger.New(rc, 0, redisledger.Options{Prefix: *redisPrefix, IdempotencyWindow: *idemWindow, Timeout: *redisTimeout})
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
	snap, err := store.Load(context.Background(), *idemWindow, time.Now())
	if err != nil {
		fatal("cannot load the order store", err)
	}
	if catalog != nil {
		// In cluster mode items live in Redis; this node's store has its
		// orders.
		items, err := catalog.Items(context.Background())
		if err != nil {
			fatal("cannot read the item catalogue from Redis", err)
		}
		snap = clusterSnapshot(snap, items)
	}
	if err := eng.Restore(snap); err != nil {
		fatal("cannot rebuild the engine from the order store", err)
	}
	slog.Info("engine rebuilt from the order store", "dir", *dataDir, "items", len(snap.Items),
		"holdings", len(snap.Holdings), "replayable_requests", len(snap.Replays), "took", time.Since(start))

	registry := prometheus.NewRegistry()
	registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), store,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "flashsale_circuit_state",
			Help: "State of the order store's circuit breaker: 0 closed, 1 half-open, 2 open.",
		}, func() float64 { return float64(sink.State()) }))
	lost := make(chan struct{})
	stopCluster := func() {}
	if pool != nil {
		monitor := redisledger.NewMonitor(ledger, func() []string {
			var ids []string
			for _, v := range eng.Items() {
				ids = append(ids, v.ID)
			}
			return ids
		})
		registry.MustRegister(monitor, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "flashsale_redis_circuit_state",
			Help: "State of the Redis circuit breaker: 0 closed, 1 half-open, 2 open.",
		}, func() float64 { return float64(pool.State()) }))
		ctx, cancel := context.WithCancel(context.Background())
		stopCluster = cancel
		go monitor.Run(ctx, *reconcileInt)
		go keepRegistration(ctx, reg, *nodeTTL, lost)
	}
	srv, err := server.New(serverOptions(), eng, store, checks, registry)
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
	step("order store", store.Close)
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
