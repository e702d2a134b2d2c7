package main

import (
	"context"
	"crypto/subtle"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/rueidis"

	"github.com/flashsale/flashsale/persist/mysqlstore"
	"github.com/flashsale/flashsale/persist/orderlog"
	"github.com/flashsale/flashsale/persist/redisledger"
	"github.com/flashsale/flashsale/server"
)

// stop is one step of the shutdown, run in reverse order of start.
type stop struct {
	name string
	f    func() error
}

// kafkaSink is the edge's order sink in cluster mode with Kafka: the
// topics checked (created when missing), an acks=all producer, and order
// reads from MySQL with the node's acknowledged orders as accepted.
func kafkaSink(stops *[]stop) (*orderlog.Producer, orderlog.Reader, []server.Check) {
	cfg := kafkaConfig()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := orderlog.EnsureTopics(ctx, cfg); err != nil {
		fatal("cannot reach Kafka (-kafka) or create the topics", err)
	}
	db, err := mysqlstore.Open(ctx, mysqlstore.Options{DSN: *mysqlDSN, Tables: *orderTables, Workers: 2})
	if err != nil {
		fatal("cannot open the order database (-mysql)", err)
	}
	*stops = append(*stops, stop{"order database", db.Close})
	p, err := orderlog.NewProducer(cfg)
	if err != nil {
		fatal("cannot start the Kafka producer", err)
	}
	*stops = append(*stops, stop{"kafka producer", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return p.Close(ctx)
	}})
	slog.Info("orders go through Kafka into MySQL", "brokers", cfg.Brokers, "topic", cfg.Topic, "acks", cfg.Acks,
		"idempotent", cfg.Idempotent, "linger", cfg.Linger, "produce_timeout", cfg.Timeout)
	return p, orderlog.Reader{DB: db, Producer: p}, []server.Check{{Name: "kafka", Check: p.Check}, {Name: "mysql", Check: db.Check}}
}

// runWriter is the writer role: Kafka -> claims settled in Redis -> MySQL,
// with /metrics, /healthz, /readyz and pprof on the admin listener.
func runWriter() {
	cfg := kafkaConfig()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	if err := orderlog.EnsureTopics(ctx, cfg); err != nil {
		fatal("cannot reach Kafka (-kafka) or create the topics", err)
	}
	db, err := mysqlstore.Open(ctx, mysqlstore.Options{DSN: *mysqlDSN, Tables: *orderTables, Workers: *writerPool,
		MaxRows: *writerBatch})
	cancel()
	if err != nil {
		fatal("cannot open the order database (-mysql)", err)
	}
	defer db.Close()
	rc, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{*redisAddr}, DisableCache: true,
		ConnWriteTimeout: *redisTimeout})
	if err != nil {
		fatal("cannot connect to Redis (-redis)", err)
	}
	defer rc.Close()
	ledger := redisledger.New(rc, 0, redisledger.Options{Prefix: *redisPrefix, Timeout: *redisTimeout, TrackClaims: true})
	w, err := orderlog.NewWriter(orderlog.WriterOptions{Kafka: cfg, Group: *kafkaGroup, MaxBatch: *writerBatch,
		SessionTimeout: *kafkaSession, Claims: ledger, Store: db})
	if err != nil {
		fatal("cannot join the writers' consumer group", err)
	}
	registry := prometheus.NewRegistry()
	registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	registry.MustRegister(append(w.Collectors(), db.Collectors()...)...)

	ready := func(ctx context.Context) error {
		return errors.Join(db.Check(ctx), rc.Do(ctx, rc.B().Ping().Build()).Error())
	}
	adm, err := net.Listen("tcp", *adminListen)
	if err != nil {
		fatal("cannot listen on -admin-listen", err)
	}
	hs := &http.Server{Handler: writerAdmin(registry, ready), ReadHeaderTimeout: 5 * time.Second}
	go hs.Serve(adm)

	runCtx, stopRun := context.WithCancel(context.Background())
	defer stopRun()
	done := make(chan error, 1)
	go func() { done <- w.Run(runCtx) }()
	slog.Info("writer running", "brokers", cfg.Brokers, "topic", cfg.Topic, "group", *kafkaGroup,
		"batch", *writerBatch, "pool", *writerPool, "tables", *orderTables, "admin", adm.Addr().String())

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case s := <-sig:
		slog.Info("shutting down the writer", "signal", s.String())
		stopRun()
		<-done // the batch in hand is finished or left uncommitted: redelivered
	case err := <-done:
		if err != nil {
			fatal("writer stopped", err)
		}
	}
	ctx, cancel = context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	hs.Shutdown(ctx)
	slog.Info("bye")
}

// writerAdmin serves the writer's admin endpoints, behind -admin-token
// when one is set.
func writerAdmin(reg *prometheus.Registry, ready func(context.Context) error) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), time.Second)
		defer cancel()
		if err := ready(ctx); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n"))
	})
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	if *adminToken == "" {
		return mux
	}
	want := []byte("Bearer " + *adminToken)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			w.Write([]byte(`{"error":{"code":"unauthorized","message":"admin token required"}}` + "\n"))
			return
		}
		mux.ServeHTTP(w, r)
	})
}
