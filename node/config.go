// Package node assembles a flashsale process from a typed Config: an edge
// node (NewEdge: the engine, its stores, the HTTP front and, in cluster mode,
// its place in the cluster) or a writer (NewWriter: Kafka into MySQL). It is
// the one place that chooses the mode and wires the packages together; the
// parts never ask which mode they are in. It returns errors instead of
// exiting, starts every background part it builds, and stops them in reverse
// order (Stop). The command (the root package), the in-process cluster tests
// and bench/pipeline all build their processes here. It never decides a
// purchase, stores an order or serves a request itself: it only assembles
// the packages that do.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/flashsale/flashsale/circuit"
	"github.com/flashsale/flashsale/engine"
	"github.com/flashsale/flashsale/internal/tracing"
	"github.com/flashsale/flashsale/persist/localstore"
	"github.com/flashsale/flashsale/persist/mysqlstore"
	"github.com/flashsale/flashsale/persist/orderlog"
	"github.com/flashsale/flashsale/persist/orderwriter"
	"github.com/flashsale/flashsale/persist/reconcile"
	"github.com/flashsale/flashsale/persist/redisledger"
	"github.com/flashsale/flashsale/server"
)

// Role is what a process does.
type Role string

const (
	// RoleEdge serves shoppers over HTTP (the default).
	RoleEdge Role = "edge"
	// RoleWriter moves orders from Kafka into MySQL.
	RoleWriter Role = "writer"
)

// Config is a whole process's configuration. Each part is the
// configuration of the package it belongs to, with that package's defaults
// (DefaultConfig) and validation; Validate adds the rules between parts.
// The mode follows from what is set: RedisAddr (with Kafka.Brokers and
// MySQL.DSN, which cluster mode needs) makes an edge node a cluster node.
type Config struct {
	Role        Role   // RoleEdge or RoleWriter
	Listen      string // public listener (edge)
	AdminListen string // admin listener

	// Engine holds the engine's settings (Shards, NodeID,
	// IdempotencyWindow, MaxLease); the node sets its dependencies.
	Engine engine.Options
	Server server.Options     // the HTTP front's limits, admission, identity, admin token
	Store  localstore.Options // the embedded order store (standalone)
	// CodesSecrets is where the secrets of redemption codes are
	// (codes.LoadKeyring's <key id>:<path>,...); empty: no codes.
	CodesSecrets string
	Breaker      circuit.Options // the circuit breaker in front of each dependency

	// Cluster mode: the shared ledger in Redis, orders through Kafka into
	// MySQL.
	RedisAddr         string
	Redis             redisledger.Options // Prefix, Timeout; the node sets IdempotencyWindow (the engine's) and TrackClaims
	NodeTTL           time.Duration       // a silent node counts as dead after this
	ReconcileInterval time.Duration       // how often dead nodes' leases and claims are settled
	// AutoRebuild lets the node rebuild the ledger from the orders of
	// record when Redis lost it (one node at a time); without it, fsctl
	// rebuild does.
	AutoRebuild bool

	Kafka  orderlog.Config
	MySQL  mysqlstore.Options  // the order database: the writers write it, edge nodes read it
	Writer orderwriter.Options // MaxBatch, SessionTimeout; the node sets Kafka (the above), Claims and Store

	// Tracing: OpenTelemetry over OTLP/HTTP, off without an endpoint; the
	// node sets the service and instance names.
	Tracing tracing.Options
	tracer  *tracing.Tracing // tests of this package: used instead of Tracing
}

// The defaults of Config's own fields.
const (
	DefaultListen      = ":8080"
	DefaultAdminListen = "127.0.0.1:6060"
	DefaultDataDir     = "./data"
)

// DefaultConfig is the configuration with every part's defaults: a
// standalone edge node. The command's flags start from it, and so should a
// Config built by hand: Validate checks the values as given, so a zero
// field is an error where zero means nothing.
func DefaultConfig() Config {
	return Config{
		Role:              RoleEdge,
		Listen:            DefaultListen,
		AdminListen:       DefaultAdminListen,
		Engine:            engine.DefaultOptions(),
		Server:            server.DefaultOptions(),
		Store:             localstore.Options{Dir: DefaultDataDir, MaxBatch: localstore.DefaultMaxBatch},
		Breaker:           circuit.DefaultOptions(),
		Redis:             redisledger.DefaultOptions(),
		NodeTTL:           redisledger.DefaultNodeTTL,
		ReconcileInterval: reconcile.DefaultInterval,
		AutoRebuild:       true,
		Kafka:             orderlog.DefaultConfig(),
		MySQL:             mysqlstore.DefaultOptions(),
		Writer:            orderwriter.DefaultOptions(),
		Tracing:           tracing.Options{Ratio: tracing.DefaultRatio},
	}
}

// Mode names the mode the configuration makes, for logs.
func (c Config) Mode() string {
	switch {
	case c.Role == RoleWriter:
		return "writer"
	case c.RedisAddr == "":
		return "standalone"
	}
	return "cluster"
}

// Validate checks every part, and the rules between them, before anything
// starts.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if err := checkAdminAddr(c.AdminListen, c.Server.AdminToken); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, c.Engine.Validate(), c.Server.Validate(), c.Store.Validate(), c.Breaker.Validate(),
		c.Redis.Validate(), c.MySQL.Validate(), c.Writer.Validate(), c.Tracing.Validate())
	kafka, mysql, redis := len(c.Kafka.Brokers) > 0, c.MySQL.DSN != "", c.RedisAddr != ""
	if kafka || c.Role == RoleWriter {
		errs = append(errs, c.Kafka.Validate())
	}
	switch c.Role {
	case RoleEdge:
		if redis && (!kafka || !mysql) {
			bad("cluster mode (-redis) needs -kafka and -mysql: a node's orders must be readable on every node and outlive the node, so they go through Kafka into MySQL")
		}
		if kafka && (!redis || !mysql) {
			bad("-kafka needs -redis (claims) and -mysql (order reads)")
		}
		if mysql && !kafka {
			bad("-mysql on an edge node needs -kafka: without it orders stay in the embedded store")
		}
	case RoleWriter:
		if !kafka || !mysql || !redis {
			bad("-role=writer needs -kafka, -mysql and -redis")
		}
	default:
		bad("-role %q: want edge or writer", c.Role)
	}
	if c.NodeTTL < redisledger.MinNodeTTL || c.ReconcileInterval <= 0 {
		bad("-reconcile-interval must be positive and -node-ttl at least %v", redisledger.MinNodeTTL)
	}
	return errors.Join(errs...)
}

// checkAdminAddr refuses an admin listener off loopback without a token.
func checkAdminAddr(addr, token string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("cannot parse admin listen address %q: %w", addr, err)
	}
	ip := net.ParseIP(host)
	if host == "localhost" || ip != nil && ip.IsLoopback() || token != "" {
		return nil
	}
	return fmt.Errorf("admin listener %q is not on loopback: set -admin-token, or bind it to 127.0.0.1", addr)
}

// startTracing starts the process's tracing (nil when off), named for its
// role, and pushes its flush as the last step of the stop.
func (c Config) startTracing(s *steps) (*tracing.Tracing, error) {
	if c.tracer != nil {
		return c.tracer, nil
	}
	o := c.Tracing
	o.Service = "flashsale-" + string(c.Role)
	o.Instance, _ = os.Hostname()
	t, err := tracing.Start(o)
	if err != nil || t == nil {
		return nil, err
	}
	slog.Info("tracing", "otlp_endpoint", o.Endpoint, "sample", o.Ratio)
	s.push("tracing (spans flushed)", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
		defer cancel()
		return t.Shutdown(ctx)
	})
	return t, nil
}
