package main

import (
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/flashsale/flashsale/engine"
	"github.com/flashsale/flashsale/persist/orderlog"
	"github.com/flashsale/flashsale/server"
	"github.com/flashsale/flashsale/server/admission"
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

	nodeID       = flag.Int("node-id", 0, fmt.Sprintf("Node id carried in every order id, 0-%d. In cluster mode 0 takes the lowest free id from Redis; another value must not be held by a live node.", engine.MaxNodeID))
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

	// Admission control of the public API (/api/...).
	rateGlobal      = flag.Float64("rate-global", 0, "Global rate limit of the public API, requests per second; 0 is off. Over it: 429 with Retry-After.")
	rateItem        = flag.Float64("rate-item", 0, "Purchase attempts per second per item; 0 is off.")
	rateIP          = flag.Float64("rate-ip", 0, "Requests per second per client IP; 0 is off. Behind a proxy set -trusted-proxies, or every client is the proxy.")
	rateWarmup      = flag.Duration("rate-warmup", 10*time.Second, "After start and after a restock, rate limits climb from a third of their rate to the full rate over this period.")
	maxInflight     = flag.Int("max-inflight", 0, "Public API requests served at once; past it (and -max-queue-wait) 503 with Retry-After. 0 sizes it to the machine: 128 per CPU.")
	maxQueueWait    = flag.Duration("max-queue-wait", time.Millisecond, "How long a request may wait for an in-flight slot before 503. Keep it small: the point is to refuse fast.")
	breakerFailures = flag.Uint("breaker-failures", 5, "Failed (or slower than -breaker-slow) order-store commits in a row that open the circuit: purchases that would win get 503 at once until a probe succeeds.")
	breakerSlow     = flag.Duration("breaker-slow", time.Second, "A commit slower than this counts as a failure for the circuit breaker (the order is still accepted).")
	breakerCoolDown = flag.Duration("breaker-cooldown", 5*time.Second, "How long the circuit stays open before one probe purchase is let through.")
	trustedProxies  = flag.String("trusted-proxies", "", "Comma-separated CIDRs (e.g. 127.0.0.1/32,10.0.0.0/8) whose X-Real-IP / X-Forwarded-For are believed; other peers' headers are ignored.")

	// Shopper identity.
	identity       = flag.String("identity", "body", "Where a shopper's user id comes from: body (user_id in the request: anyone can claim anyone; for load tests only), header (-identity-header set by an authenticating gateway, believed only from -trusted-proxies), or jwt (subject of an HMAC-signed token with an expiry in Authorization: Bearer).")
	identityHeader = flag.String("identity-header", "X-User-Id", "With -identity=header: the header that carries the user id.")
	jwtSecretFile  = flag.String("jwt-secret-file", "", "With -identity=jwt: file holding the HMAC key (at least 32 bytes). A file, not a flag value, so the key stays out of process listings.")
	jwtLeeway      = flag.Duration("jwt-leeway", 30*time.Second, "With -identity=jwt: clock skew allowed on a token's exp and nbf.")

	// Cluster mode, part 1: the stock pool and the claims in Redis.
	redisAddr    = flag.String("redis", "", "Redis address (host:port): cluster mode. Nodes lease stock from a pool in Redis and confirm every winner there (per-user limit and request ids across nodes). Needs -node-id >= 1, unique per node.")
	redisPrefix  = flag.String("redis-prefix", "fs", "Prefix of the keys in Redis; nodes of one sale share it.")
	redisTimeout = flag.Duration("redis-timeout", 500*time.Millisecond, "Bound on each call to Redis; past it the purchase gets 503 and the call counts against the Redis circuit breaker.")
	nodeTTL      = flag.Duration("node-ttl", 10*time.Second, "Cluster mode: a node that misses its heartbeats this long is dead; others give its leased units back to the pool.")
	reconcileInt = flag.Duration("reconcile-interval", 5*time.Second, "Cluster mode: how often a node looks for dead nodes' leases to give back.")
	maxLease     = flag.Int64("max-lease", 64, "Most units one lease takes from the pool in cluster mode. Leases shrink near the end of the stock, so no node sits on the last units.")
	// Cluster mode, part 2: orders through Kafka into MySQL.
	kafkaBrokers    = flag.String("kafka", "", "Kafka seed brokers, comma separated. With -redis, an order is durable when Kafka acknowledged it (acks=all), and -mysql is needed for order reads. Production points at a real Kafka cluster; tools/devbroker is for one machine.")
	mysqlDSN        = flag.String("mysql", "", "MySQL DSN, e.g. user:pass@tcp(127.0.0.1:3306)/flashsale: the order database (writer role, and order reads in cluster mode).")
	role            = flag.String("role", "edge", "edge serves HTTP; writer moves orders from Kafka into MySQL (needs -kafka, -mysql and -redis).")
	kafkaTopic      = flag.String("kafka-topic", "flashsale.orders", "Topic of the orders; dead letters go to <topic>.dlq.")
	kafkaPartitions = flag.Int("kafka-partitions", 12, "Partitions of the topics when this process creates them (at start, if missing).")
	kafkaReplicas   = flag.Int("kafka-replication", -1, "Replication factor of the topics when this process creates them; -1 is the brokers' default. Use 3 in production.")
	kafkaAcks       = flag.String("kafka-acks", "all", "Acknowledgement a produce waits for: all (every in-sync replica; the only setting under which a 201 survives a broker loss), leader, none.")
	kafkaIdem       = flag.Bool("kafka-idempotent", true, "Idempotent producer: a retried produce is written once. Needs -kafka-acks=all.")
	kafkaLinger     = flag.Duration("kafka-linger", 0, "How long the producer waits to fill a batch; 0 sends at once (concurrent purchases still share batches while a request is in flight).")
	kafkaBatchBytes = flag.Int("kafka-batch-bytes", 1<<20, "Largest producer batch per partition, bytes.")
	kafkaTimeout    = flag.Duration("kafka-produce-timeout", 2*time.Second, "Produce deadline: without an ack by then the purchase gets 503 and its claim is undone.")
	kafkaGroup      = flag.String("kafka-group", "flashsale-writers", "Consumer group of the writers (and whose offsets the claim reconciler watches).")
	kafkaSession    = flag.Duration("kafka-session-timeout", 10*time.Second, "Writer role: how long the group waits for a writer that stopped heartbeating (killed) before its partitions move to another. Brokers bound it (group.min.session.timeout.ms, 6s by default).")
	writerBatch     = flag.Int("writer-batch", 2000, "Writer role: most records handled (and rows inserted) per batch.")
	writerPool      = flag.Int("writer-pool", 8, "Writer role: ants pool size, the INSERT statements run at once.")
	orderTables     = flag.Int("order-tables", 32, "Order tables in MySQL (orders_00 ..), by hash of the user id. Fixed at the first migration.")
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
	switch *role {
	case "edge":
		if *kafkaBrokers != "" && (*redisAddr == "" || *mysqlDSN == "") {
			bad("-kafka needs -redis (claims) and -mysql (order reads)")
		}
		if *mysqlDSN != "" && *kafkaBrokers == "" {
			bad("-mysql on an edge node needs -kafka: without it orders stay in the embedded store")
		}
	case "writer":
		if *kafkaBrokers == "" || *mysqlDSN == "" || *redisAddr == "" {
			bad("-role=writer needs -kafka, -mysql and -redis")
		}
	default:
		bad("-role %q: want edge or writer", *role)
	}
	if *kafkaBrokers != "" {
		if err := kafkaConfig().Validate(); err != nil {
			errs = append(errs, err)
		}
		if *kafkaPartitions < 1 || *kafkaReplicas == 0 || *kafkaReplicas < -1 || *kafkaBatchBytes < 1024 {
			bad("-kafka-partitions >= 1, -kafka-replication -1 or >= 1 and -kafka-batch-bytes >= 1024 are required")
		}
	}
	if *kafkaSession < time.Second {
		bad("-kafka-session-timeout must be at least 1s")
	}
	if *writerBatch < 1 || *writerPool < 1 || *orderTables < 1 || *orderTables > 1000 {
		bad("-writer-batch and -writer-pool must be positive, -order-tables in [1, 1000]")
	}
	if *redisTimeout <= 0 || *maxLease < 1 || *nodeTTL < time.Second/2 || *reconcileInt <= 0 {
		bad("-redis-timeout, -max-lease and -reconcile-interval must be positive, -node-ttl at least 500ms")
	}
	if *rateGlobal < 0 || *rateItem < 0 || *rateIP < 0 || *maxInflight < 0 || *maxQueueWait < 0 || *rateWarmup < 0 {
		bad("-rate-*, -rate-warmup, -max-inflight and -max-queue-wait must not be negative")
	}
	if *breakerFailures == 0 || *breakerSlow <= 0 || *breakerCoolDown <= 0 {
		bad("-breaker-failures, -breaker-slow and -breaker-cooldown must be positive")
	}
	proxies, err := parseCIDRs(*trustedProxies)
	if err != nil {
		errs = append(errs, err)
	}
	if id, err := identityOptions(); err != nil {
		errs = append(errs, err)
	} else if err := id.Validate(len(proxies)); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func identityOptions() (server.Identity, error) {
	mode, err := server.ParseIdentityMode(*identity)
	if err != nil {
		return server.Identity{}, err
	}
	id := server.Identity{Mode: mode, Header: *identityHeader, JWTLeeway: *jwtLeeway}
	if mode == server.IdentityJWT && *jwtSecretFile != "" {
		key, err := os.ReadFile(*jwtSecretFile)
		if err != nil {
			return id, fmt.Errorf("cannot read -jwt-secret-file: %w", err)
		}
		id.JWTSecret = []byte(strings.TrimSpace(string(key)))
	}
	return id, nil
}

// parseCIDRs reads -trusted-proxies; a bare address is a /32 or /128.
func parseCIDRs(list string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(list, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if !strings.Contains(f, "/") {
			a, err := netip.ParseAddr(f)
			if err != nil {
				return nil, fmt.Errorf("-trusted-proxies: %q is not a CIDR or an address", f)
			}
			out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			return nil, fmt.Errorf("-trusted-proxies: %q is not a CIDR", f)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

func serverOptions() server.Options {
	proxies, _ := parseCIDRs(*trustedProxies) // validated
	id, _ := identityOptions()                // validated
	return server.Options{
		Identity:       id,
		AdminToken:     *adminToken,
		MaxBodySize:    *maxBody,
		MaxHeaderSize:  *maxHeader,
		ReadTimeout:    *readTimeout,
		WriteTimeout:   *writeTimeout,
		IdleTimeout:    *idleTimeout,
		MaxConns:       *maxConns,
		MaxConnsPerIP:  *maxConnsIP,
		ShutdownDelay:  *shutdownWait,
		Limits:         admission.Options{Global: *rateGlobal, Item: *rateItem, IP: *rateIP, Warmup: *rateWarmup},
		MaxInflight:    *maxInflight,
		MaxQueueWait:   *maxQueueWait,
		TrustedProxies: proxies,
	}
}

// kafkaConfig is the Kafka part of the flags.
func kafkaConfig() orderlog.Config {
	var brokers []string
	for _, b := range strings.Split(*kafkaBrokers, ",") {
		if b = strings.TrimSpace(b); b != "" {
			brokers = append(brokers, b)
		}
	}
	return orderlog.Config{Brokers: brokers, Topic: *kafkaTopic, Partitions: int32(*kafkaPartitions),
		Replication: int16(*kafkaReplicas), Acks: *kafkaAcks, Idempotent: *kafkaIdem, Linger: *kafkaLinger,
		BatchBytes: int32(*kafkaBatchBytes), Timeout: *kafkaTimeout}
}
