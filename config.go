package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/flashsale/flashsale/engine"
	"github.com/flashsale/flashsale/server"
)

// Flags. Each can also be set as FLASHSALE_<NAME> in the environment (upper
// case, '-' as '_'); the command line wins.
var (
	listen      = flag.String("listen", ":8080", "Public listener: the shopper API, /healthz and /readyz. Put Nginx in front of it.")
	adminListen = flag.String("admin-listen", "127.0.0.1:6060", "Admin listener: item management, /metrics, /debug/pprof. Off loopback it needs -admin-token.")
	adminToken  = flag.String("admin-token", "", "Bearer token every admin request must carry. Required when -admin-listen is not on loopback.")
	dataDir     = flag.String("data-dir", "./data", "Directory of the standalone order store (SQLite file, WAL). One process per directory.")
	checkConfig = flag.Bool("check-config", false, "Validate the configuration and exit: 0 when valid.")
	showVersion = flag.Bool("version", false, "Print the version and exit.")

	nodeID       = flag.Int("node-id", 0, fmt.Sprintf("Node id carried in every order id, 0-%d; unique among the nodes selling one stock.", engine.MaxNodeID))
	shards       = flag.Int("shards", 0, "Stock shards per item; 0 means one per CPU available (GOMAXPROCS). More shards, less contention between cores.")
	idemWindow   = flag.Duration("idempotency-window", engine.DefaultIdempotencyWindow, "How long a winning request id is remembered, so a replay gets its first answer. Memory grows with the units sold in one window.")
	storeBatch   = flag.Int("store-max-batch", 4096, "Most orders written in one group commit of the embedded store.")
	maxBody      = flag.Int("max-body-size", 4<<10, "Largest public request body in bytes; larger ones get 413.")
	maxHeader    = flag.Int("max-header-size", 8<<10, "Largest request line plus headers in bytes; larger ones get 431.")
	readTimeout  = flag.Duration("read-timeout", 5*time.Second, "Time allowed to receive a whole request. Bounds slow clients.")
	writeTimeout = flag.Duration("write-timeout", 5*time.Second, "Time allowed to send a whole response.")
	idleTimeout  = flag.Duration("idle-timeout", 60*time.Second, "How long a keep-alive connection may wait for its next request. Keep it above Nginx's keepalive_timeout to the upstream.")
	maxConns     = flag.Int("max-conns", 100_000, "Most open connections per listener; more are refused.")
	maxConnsIP   = flag.Int("max-conns-per-ip", 0, "Most open connections from one IP; 0 is unlimited (behind Nginx every connection comes from Nginx).")
	shutdownWait = flag.Duration("shutdown-delay", time.Second, "On SIGTERM, how long /readyz answers 503 before the listeners close, so load balancers move traffic away.")
	drainTimeout = flag.Duration("drain-timeout", 10*time.Second, "On SIGTERM, how long requests in flight may take to finish after the listeners close.")

	// Cluster mode and admission control come with later releases; their
	// flags are reserved so that scripts written for them fail loudly today.
	redisAddr      = flag.String("redis", "", "Redis address: cluster mode. Not available in this release.")
	kafkaBrokers   = flag.String("kafka", "", "Kafka seed brokers. Not available in this release.")
	mysqlDSN       = flag.String("mysql", "", "MySQL DSN. Not available in this release.")
	role           = flag.String("role", "edge", "edge serves HTTP; writer (moving orders from Kafka to MySQL) is not available in this release.")
	rateGlobal     = flag.Float64("rate-global", 0, "Global admission rate limit, requests per second. Not available in this release: must be 0.")
	rateItem       = flag.Float64("rate-item", 0, "Per-item admission rate limit. Not available in this release: must be 0.")
	rateIP         = flag.Float64("rate-ip", 0, "Per-client-IP admission rate limit. Not available in this release: must be 0.")
	maxInflight    = flag.Int("max-inflight", 0, "In-flight bound before shedding with 503. Not available in this release: must be 0.")
	trustedProxies = flag.String("trusted-proxies", "", "CIDRs whose X-Forwarded-For is believed. Not available in this release.")
)

// envOverlay sets every flag not given on the command line from its
// FLASHSALE_<NAME> environment variable.
func envOverlay() error {
	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs []error
	flag.VisitAll(func(f *flag.Flag) {
		if set[f.Name] {
			return
		}
		name := "FLASHSALE_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(name); ok {
			if err := f.Value.Set(v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %w", name, v, err))
			}
		}
	})
	return errors.Join(errs...)
}

// validate checks the rules that span flags, before anything starts.
func validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if err := server.CheckAdminAddr(*adminListen, *adminToken); err != nil {
		errs = append(errs, err)
	}
	if *nodeID < 0 || *nodeID > engine.MaxNodeID {
		bad("-node-id %d is out of range [0, %d]", *nodeID, engine.MaxNodeID)
	}
	if *shards < 0 || *shards > 1024 {
		bad("-shards %d is out of range [0, 1024]", *shards)
	}
	for name, d := range map[string]time.Duration{"-idempotency-window": *idemWindow, "-read-timeout": *readTimeout,
		"-write-timeout": *writeTimeout, "-idle-timeout": *idleTimeout} {
		if d <= 0 {
			bad("%s must be positive", name)
		}
	}
	if *shutdownWait < 0 || *drainTimeout <= 0 {
		bad("-shutdown-delay must not be negative and -drain-timeout must be positive")
	}
	if *maxBody < 64 || *maxHeader < 1024 || *maxConns < 1 || *maxConnsIP < 0 || *storeBatch < 1 {
		bad("-max-body-size >= 64, -max-header-size >= 1024, -max-conns >= 1, -max-conns-per-ip >= 0 and -store-max-batch >= 1 are required")
	}
	if *dataDir == "" {
		bad("-data-dir must not be empty")
	}
	if *redisAddr != "" || *kafkaBrokers != "" || *mysqlDSN != "" || *role != "edge" {
		bad("cluster mode (-redis, -kafka, -mysql, -role=writer) is not available in this release; run standalone")
	}
	if *rateGlobal != 0 || *rateItem != 0 || *rateIP != 0 || *maxInflight != 0 || *trustedProxies != "" {
		bad("admission control (-rate-*, -max-inflight, -trusted-proxies) is not available in this release")
	}
	return errors.Join(errs...)
}

func serverOptions() server.Options {
	return server.Options{
		AdminToken:    *adminToken,
		MaxBodySize:   *maxBody,
		MaxHeaderSize: *maxHeader,
		ReadTimeout:   *readTimeout,
		WriteTimeout:  *writeTimeout,
		IdleTimeout:   *idleTimeout,
		MaxConns:      *maxConns,
		MaxConnsPerIP: *maxConnsIP,
		ShutdownDelay: *shutdownWait,
	}
}
