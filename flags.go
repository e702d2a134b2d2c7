package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"

	"github.com/flashsale/flashsale/engine"
	"github.com/flashsale/flashsale/internal/envflag"
	"github.com/flashsale/flashsale/internal/memlimit"
	"github.com/flashsale/flashsale/node"
	"github.com/flashsale/flashsale/server"
)

// command is what the command line asks for.
type command struct {
	cfg         node.Config
	checkConfig bool
	version     bool
	memoryLimit int64 // bytes; 0: the default (memlimit); -1: none
	// invalid is what makes the configuration invalid before Validate: a
	// bad environment variable, or a flag whose value cannot be read.
	invalid error
}

// parseFlags reads the command line, then the environment
// (FLASHSALE_<NAME>, for every flag the command line did not set), into a
// node.Config. Every flag's default is the one its package defines
// (node.DefaultConfig); the help text says the trade-off. It fails only on
// a command line that cannot be parsed; a value that cannot be read is in
// command.invalid.
func parseFlags(args []string, stderr io.Writer) (command, error) {
	fs := flag.NewFlagSet("flashsale", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := command{cfg: node.DefaultConfig()}
	cfg := &c.cfg
	role := fs.String("role", string(cfg.Role), "edge serves HTTP; writer moves orders from Kafka into MySQL (needs -kafka, -mysql and -redis).")
	fs.StringVar(&cfg.Listen, "listen", cfg.Listen, "Public listener: the shopper API, /healthz and /readyz. Put Nginx in front of it.")
	fs.StringVar(&cfg.AdminListen, "admin-listen", cfg.AdminListen, "Admin listener: item management, /metrics, /debug/pprof. Off loopback it needs -admin-token.")
	fs.StringVar(&cfg.Server.AdminToken, "admin-token", "", "Bearer token every admin request must carry. Required when -admin-listen is not on loopback.")
	fs.StringVar(&cfg.Store.Dir, "data-dir", cfg.Store.Dir, "Directory of the standalone order store (SQLite file, WAL). One process per directory.")
	fs.BoolVar(&c.checkConfig, "check-config", false, "Validate the configuration and exit: 0 when valid.")
	fs.Func("memory-limit", "The Go runtime's soft memory limit (GOMEMLIMIT), e.g. 1536MiB, or off. Default: nine tenths of the container's memory limit, or of the machine's memory; a GOMEMLIMIT in the environment wins over the default. Near it the collector works harder instead of growing the heap into an OOM kill; GOGC (environment) still sets how often it collects below it.",
		func(v string) error {
			n, err := memlimit.Parse(v)
			c.memoryLimit = n
			return err
		})
	fs.BoolVar(&c.version, "version", false, "Print the version and exit.")

	fs.IntVar(&cfg.Engine.NodeID, "node-id", 0, fmt.Sprintf("Node id carried in every order id, 0-%d. In cluster mode 0 takes the lowest free id from Redis; another value must not be held by a live node.", engine.MaxNodeID))
	fs.IntVar(&cfg.Engine.Shards, "shards", 0, "Stock shards per item; 0 means one per CPU available (GOMAXPROCS). More shards, less contention between cores.")
	fs.DurationVar(&cfg.Engine.IdempotencyWindow, "idempotency-window", cfg.Engine.IdempotencyWindow, "How long a winning request id is remembered, so a replay gets its first answer. Memory grows with the units sold in one window.")
	fs.IntVar(&cfg.Store.MaxBatch, "store-max-batch", cfg.Store.MaxBatch, "Most orders written in one group commit of the embedded store.")
	so := &cfg.Server
	fs.IntVar(&so.MaxBodySize, "max-body-size", so.MaxBodySize, "Largest public request body in bytes; larger ones get 413.")
	fs.IntVar(&so.MaxHeaderSize, "max-header-size", so.MaxHeaderSize, "Largest request line plus headers in bytes; larger ones get 431.")
	fs.DurationVar(&so.ReadTimeout, "read-timeout", so.ReadTimeout, "Time allowed to receive a whole request. Bounds slow clients.")
	fs.DurationVar(&so.WriteTimeout, "write-timeout", so.WriteTimeout, "Time allowed to send a whole response.")
	fs.DurationVar(&so.IdleTimeout, "idle-timeout", so.IdleTimeout, "How long a keep-alive connection may wait for its next request. Keep it above Nginx's keepalive_timeout to the upstream.")
	fs.IntVar(&so.MaxConns, "max-conns", so.MaxConns, "Most open connections per listener; more are refused.")
	fs.IntVar(&so.MaxConnsPerIP, "max-conns-per-ip", so.MaxConnsPerIP, "Most open connections from one IP; 0 is unlimited (behind Nginx every connection comes from Nginx).")
	fs.DurationVar(&so.ShutdownDelay, "shutdown-delay", so.ShutdownDelay, "On SIGTERM, how long /readyz answers 503 before the listeners close, so load balancers move traffic away.")
	fs.DurationVar(&so.DrainTimeout, "drain-timeout", so.DrainTimeout, "On SIGTERM, how long requests in flight may take to finish after the listeners close.")

	// Admission control of the public API (/api/...).
	fs.Float64Var(&so.Limits.Global, "rate-global", 0, "Global rate limit of the public API, requests per second; 0 is off. Over it: 429 with Retry-After.")
	fs.Float64Var(&so.Limits.Item, "rate-item", 0, "Purchase attempts per second per item; 0 is off.")
	fs.Float64Var(&so.Limits.IP, "rate-ip", 0, "Requests per second per client IP; 0 is off. Behind a proxy set -trusted-proxies, or every client is the proxy.")
	fs.DurationVar(&so.Limits.Warmup, "rate-warmup", so.Limits.Warmup, "After start and after a restock, rate limits climb from a third of their rate to the full rate over this period.")
	fs.IntVar(&so.MaxInflight, "max-inflight", 0, fmt.Sprintf("Public API requests served at once; past it (and -max-queue-wait) 503 with Retry-After. 0 sizes it to the machine: %d per CPU.", server.InflightPerCPU))
	fs.DurationVar(&so.MaxQueueWait, "max-queue-wait", so.MaxQueueWait, "How long a request may wait for an in-flight slot before 503. Keep it small: the point is to refuse fast.")
	fs.DurationVar(&so.MaxQueueTime, "max-queue-time", 0, "Refuse (503, Retry-After) a request that a trusted proxy (-trusted-proxies) stamped with X-Request-Start longer ago than this: under a crowd it waited in the queues before the server got to it, and serving it late helps nobody. 0 is off. Needs the proxy's clock in step with this machine's (same host, or NTP).")
	failures := fs.Uint("breaker-failures", uint(cfg.Breaker.Failures), "Failed (or slower than -breaker-slow) calls in a row to a dependency (order store, Kafka, Redis) that open its circuit: purchases that would win get 503 at once until a probe succeeds.")
	fs.DurationVar(&cfg.Breaker.Slow, "breaker-slow", cfg.Breaker.Slow, "A call slower than this counts as a failure for the circuit breaker (the order is still accepted).")
	fs.DurationVar(&cfg.Breaker.CoolDown, "breaker-cooldown", cfg.Breaker.CoolDown, "How long a circuit stays open before one probe purchase is let through.")
	proxies := fs.String("trusted-proxies", "", "Comma-separated CIDRs (e.g. 127.0.0.1/32,10.0.0.0/8) whose X-Real-IP / X-Forwarded-For are believed; other peers' headers are ignored.")

	// Shopper identity.
	identity := fs.String("identity", "body", "Where a shopper's user id comes from: body (user_id in the request: anyone can claim anyone; for load tests only), header (-identity-header set by an authenticating gateway, believed only from -trusted-proxies), or jwt (subject of an HMAC-signed token with an expiry in Authorization: Bearer).")
	fs.StringVar(&so.Identity.Header, "identity-header", so.Identity.Header, "With -identity=header: the header that carries the user id.")
	jwtSecretFile := fs.String("jwt-secret-file", "", "With -identity=jwt: file holding the HMAC key (at least 32 bytes). A file, not a flag value, so the key stays out of process listings.")
	fs.DurationVar(&so.Identity.JWTLeeway, "jwt-leeway", so.Identity.JWTLeeway, "With -identity=jwt: clock skew allowed on a token's exp and nbf.")

	// Cluster mode, part 1: the stock pool and the claims in Redis.
	fs.StringVar(&cfg.RedisAddr, "redis", "", "Redis address (host:port): cluster mode, with -kafka and -mysql. Nodes lease stock from a pool in Redis and confirm every winner there (per-user limit and request ids across nodes).")
	fs.StringVar(&cfg.Redis.Prefix, "redis-prefix", cfg.Redis.Prefix, "Prefix of the keys in Redis; nodes of one sale share it.")
	fs.DurationVar(&cfg.Redis.Timeout, "redis-timeout", cfg.Redis.Timeout, "Bound on each call to Redis; past it the purchase gets 503 and the call counts against the Redis circuit breaker.")
	fs.DurationVar(&cfg.NodeTTL, "node-ttl", cfg.NodeTTL, "Cluster mode: a node that misses its heartbeats this long is dead; others give its leased units back to the pool.")
	fs.StringVar(&cfg.CodesSecrets, "codes-secret-file", cfg.CodesSecrets, "Redemption codes: the files of the secrets that sign them, as <key id>:<path>, comma separated (a lone path is key 1); new codes use the highest key id, every listed one verifies (rotation). Each file holds at least 32 bytes, e.g. head -c 32 /dev/urandom | base64. Empty: codes are refused.")
	fs.Float64Var(&cfg.Server.InvalidCodesPerMinute, "codes-invalid-per-minute", cfg.Server.InvalidCodesPerMinute, "Redemption codes: invalid codes a client IP, and a user, may send per minute after a burst of 10; past it every redemption of theirs is 429 until the limit refills. 0 is off.")
	fs.BoolVar(&cfg.AutoRebuild, "auto-rebuild", cfg.AutoRebuild, "Cluster mode: when Redis lost the ledger (restarted empty, flushed, a failover that lost writes), rebuild it from the orders of record (MySQL, after the writers stored what Kafka holds); false: by hand, with fsctl rebuild. Nothing is sold meanwhile either way.")
	fs.DurationVar(&cfg.ReconcileInterval, "reconcile-interval", cfg.ReconcileInterval, "Cluster mode: how often a node looks for dead nodes' leases to give back.")
	fs.Int64Var(&cfg.Engine.MaxLease, "max-lease", cfg.Engine.MaxLease, "Most units one lease takes from the pool in cluster mode. Leases shrink near the end of the stock, so no node sits on the last units.")

	// Cluster mode, part 2: orders through Kafka into MySQL.
	k := &cfg.Kafka
	brokers := fs.String("kafka", "", "Kafka seed brokers, comma separated. With -redis, an order is durable when Kafka acknowledged it (acks=all), and -mysql is needed for order reads. Production points at a real Kafka cluster; tools/devbroker is for one machine.")
	fs.StringVar(&cfg.MySQL.DSN, "mysql", "", "MySQL DSN, e.g. user:pass@tcp(127.0.0.1:3306)/flashsale: the order database (writer role, and order reads in cluster mode).")
	fs.StringVar(&k.Topic, "kafka-topic", k.Topic, "Topic of the orders; dead letters go to <topic>.dlq.")
	partitions := fs.Int("kafka-partitions", int(k.Partitions), "Partitions of the topics when this process creates them (at start, if missing).")
	replication := fs.Int("kafka-replication", int(k.Replication), "Replication factor of the topics when this process creates them; -1 is the brokers' default. Use 3 in production.")
	fs.StringVar(&k.Acks, "kafka-acks", k.Acks, "Acknowledgement a produce waits for: all (every in-sync replica; the only setting under which a 201 survives a broker loss), leader, none.")
	fs.BoolVar(&k.Idempotent, "kafka-idempotent", k.Idempotent, "Idempotent producer: a retried produce is written once. Needs -kafka-acks=all.")
	fs.DurationVar(&k.Linger, "kafka-linger", k.Linger, "How long the producer waits to fill a batch; 0 sends at once (concurrent purchases still share batches while a request is in flight).")
	batchBytes := fs.Int("kafka-batch-bytes", int(k.BatchBytes), "Largest producer batch per partition, bytes.")
	fs.DurationVar(&k.Timeout, "kafka-produce-timeout", k.Timeout, "Produce deadline: without an ack by then the purchase gets 503 and its claim is undone.")
	fs.StringVar(&k.MaxVersion, "kafka-max-version", k.MaxVersion, "Cap the Kafka protocol to the versions of this Kafka release (e.g. 2.0.0), for brokers that announce versions they cannot serve, such as librdkafka's mock cluster; empty negotiates.")
	fs.StringVar(&k.Group, "kafka-group", k.Group, "Consumer group of the writers (and whose offsets the claim reconciler watches).")
	fs.DurationVar(&cfg.Writer.SessionTimeout, "kafka-session-timeout", cfg.Writer.SessionTimeout, "Writer role: how long the group waits for a writer that stopped heartbeating (killed) before its partitions move to another. Brokers bound it (group.min.session.timeout.ms, 6s by default).")
	fs.IntVar(&cfg.Writer.MaxBatch, "writer-batch", cfg.Writer.MaxBatch, "Writer role: most records handled (and rows inserted) per batch.")
	fs.IntVar(&cfg.MySQL.Workers, "writer-pool", cfg.MySQL.Workers, "Writer role: ants pool size, the INSERT statements run at once.")
	fs.IntVar(&cfg.MySQL.Tables, "order-tables", cfg.MySQL.Tables, "Order tables in MySQL (orders_00 ..), by hash of the user id. Fixed at the first migration.")

	// Tracing.
	fs.StringVar(&cfg.Tracing.Endpoint, "otlp-endpoint", "", "OpenTelemetry: the OTLP/HTTP receiver traces are sent to, e.g. http://otel-collector:4318 (spans go to /v1/traces). Empty: tracing is off and costs nothing. A traceparent header is believed only from -trusted-proxies (Nginx).")
	fs.Float64Var(&cfg.Tracing.Ratio, "trace-sample", cfg.Tracing.Ratio, "OpenTelemetry: the share of requests traced, 0 to 1, among those whose traceparent does not decide (none, or from an untrusted peer); a sampled traceparent from a trusted proxy is always traced, an unsampled one never.")

	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if c.version {
		return c, nil // the environment does not matter
	}
	var errs []error
	if err := envflag.Apply(fs, "FLASHSALE"); err != nil {
		errs = append(errs, fmt.Errorf("invalid environment: %w", err))
	}
	c.version = false // asked on the command line only
	// The flags that are not a Config field as they are.
	cfg.Role = node.Role(*role)
	cfg.Breaker.Failures = uint32(min(*failures, 1<<32-1))
	if k.Brokers = splitList(*brokers); len(k.Brokers) == 0 && strings.TrimSpace(*brokers) != "" {
		errs = append(errs, fmt.Errorf("-kafka %q names no broker", *brokers))
	}
	k.Partitions, k.Replication, k.BatchBytes = int32(*partitions), int16(*replication), int32(*batchBytes)
	var err error
	if so.TrustedProxies, err = parseCIDRs(*proxies); err != nil {
		errs = append(errs, err)
	}
	if so.Identity.Mode, err = server.ParseIdentityMode(*identity); err != nil {
		errs = append(errs, err)
	}
	if so.Identity.Mode == server.IdentityJWT && *jwtSecretFile != "" {
		key, err := os.ReadFile(*jwtSecretFile)
		if err != nil {
			errs = append(errs, fmt.Errorf("cannot read -jwt-secret-file: %w", err))
		}
		so.Identity.JWTSecret = []byte(strings.TrimSpace(string(key)))
	}
	c.invalid = errors.Join(errs...)
	return c, nil
}

// splitList reads a comma-separated list, ignoring spaces and empty items.
func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// parseCIDRs reads -trusted-proxies; a bare address is a /32 or /128.
func parseCIDRs(list string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range splitList(list) {
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
