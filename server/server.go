// Package server is the HTTP front of flashsale: fasthttp with
// fasthttp/router, sonic JSON and pooled objects. It serves the public
// listener (shoppers, behind Nginx) and the admin listener (items, metrics,
// pprof) of docs/api.md (Server), or an admin listener alone for the writer
// role (Admin, front.go), and maps every refusal to its status in one place
// (respond.go). It owns admission control (admission/, admit) and shopper
// identity (identity.go). It never decides a purchase (the engine does)
// and never touches a store but through the engine and an OrderReader.
package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/flashsale/flashsale/codes"
	"github.com/flashsale/flashsale/engine"
	"github.com/flashsale/flashsale/internal/tracing"
	"github.com/flashsale/flashsale/server/admission"
)

// Options are the server's settings; every limit is explicit. Zero fields
// take the defaults (Defaults), which are the command's flag defaults.
type Options struct {
	AdminToken string // required when the admin listener is not on loopback

	MaxBodySize      int           // public request bodies; default 4 KiB
	MaxAdminBodySize int           // admin request bodies; default 64 KiB
	MaxHeaderSize    int           // request line and headers; default 8 KiB
	ReadTimeout      time.Duration // whole request, headers and body; default 5 s
	WriteTimeout     time.Duration // whole response; default 5 s
	IdleTimeout      time.Duration // keep-alive between requests; default 60 s
	MaxConns         int           // open connections per listener; default 100,000
	MaxConnsPerIP    int           // public listener, per client IP; 0: unlimited (Nginx is one IP)
	ShutdownDelay    time.Duration // /readyz fails this long before draining; 0: none
	DrainTimeout     time.Duration // after the delay, for requests in flight to finish; default 10 s
	ReadyTimeout     time.Duration // bound on /readyz dependency checks; default 1 s

	// Admission control of the public API (/api/...).
	Limits       admission.Options // rate limits; zero rates are off
	MaxInflight  int               // requests served at once; default 128 per CPU
	MaxQueueWait time.Duration     // wait for an in-flight slot before 503; 0: none
	// MaxQueueTime refuses (503) a request a trusted proxy stamped
	// (X-Request-Start) longer ago than this: it waited too long before
	// the server got to it. 0: off.
	MaxQueueTime   time.Duration
	TrustedProxies []netip.Prefix // peers whose X-Real-IP / X-Forwarded-For are believed

	Identity Identity // where shoppers' user ids come from; default: the body

	// InvalidCodesPerMinute limits the redemptions of codes that are not
	// valid, per client IP and per user: a burst of invalidCodesBurst, then
	// this many a minute; past it every redemption of theirs is 429. 0 is
	// off.
	InvalidCodesPerMinute float64
}

// invalidCodesBurst is the invalid codes a client may send at once.
const invalidCodesBurst = 10

// The defaults of Options.
const (
	DefaultMaxBodySize      = 4 << 10
	DefaultMaxAdminBodySize = 64 << 10
	DefaultMaxHeaderSize    = 8 << 10
	DefaultReadTimeout      = 5 * time.Second
	DefaultWriteTimeout     = 5 * time.Second
	DefaultIdleTimeout      = 60 * time.Second
	DefaultMaxConns         = 100_000
	DefaultShutdownDelay    = time.Second // the command's; the zero Options has none
	DefaultDrainTimeout     = 10 * time.Second
	DefaultReadyTimeout     = time.Second
	DefaultMaxQueueWait     = time.Millisecond // the command's; the zero Options waits not at all
	InflightPerCPU          = 128
	// DefaultInvalidCodesPerMinute is the command's limit of invalid codes.
	DefaultInvalidCodesPerMinute = 10
)

// Defaults fills the zero fields of o.
func (o *Options) Defaults() {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defd := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&o.MaxBodySize, DefaultMaxBodySize)
	def(&o.MaxAdminBodySize, DefaultMaxAdminBodySize)
	def(&o.MaxHeaderSize, DefaultMaxHeaderSize)
	def(&o.MaxConns, DefaultMaxConns)
	def(&o.MaxInflight, InflightPerCPU*runtime.GOMAXPROCS(0))
	defd(&o.ReadTimeout, DefaultReadTimeout)
	defd(&o.WriteTimeout, DefaultWriteTimeout)
	defd(&o.IdleTimeout, DefaultIdleTimeout)
	defd(&o.DrainTimeout, DefaultDrainTimeout)
	defd(&o.ReadyTimeout, DefaultReadyTimeout)
	if o.Identity.Header == "" {
		o.Identity.Header = DefaultIdentityHeader
	}
}

// DefaultOptions are the command's defaults: those of Defaults, and a
// shutdown delay, a queue wait, a JWT leeway and a limit of invalid codes
// (zero in the zero Options).
func DefaultOptions() Options {
	o := Options{ShutdownDelay: DefaultShutdownDelay, MaxQueueWait: DefaultMaxQueueWait, InvalidCodesPerMinute: DefaultInvalidCodesPerMinute}
	o.Limits.Warmup = admission.DefaultWarmup
	o.Identity.JWTLeeway = DefaultJWTLeeway
	o.Defaults()
	o.MaxInflight = 0 // sized to the machine at start
	return o
}

// Validate checks the settings as given, and the rules between them.
func (o Options) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if o.MaxBodySize < 64 || o.MaxAdminBodySize < 64 || o.MaxHeaderSize < 1024 || o.MaxConns < 1 {
		bad("-max-body-size >= 64, -max-header-size >= 1024, -max-conns >= 1 and an admin body limit >= 64 are required")
	}
	if o.MaxConnsPerIP < 0 || o.MaxInflight < 0 || o.MaxQueueWait < 0 || o.MaxQueueTime < 0 || o.InvalidCodesPerMinute < 0 {
		bad("-max-conns-per-ip, -max-inflight, -max-queue-wait, -max-queue-time and -codes-invalid-per-minute must not be negative")
	}
	if o.ReadTimeout <= 0 || o.WriteTimeout <= 0 || o.IdleTimeout <= 0 || o.ReadyTimeout <= 0 {
		bad("-read-timeout, -write-timeout, -idle-timeout and the readiness timeout must be positive")
	}
	if o.ShutdownDelay < 0 || o.DrainTimeout <= 0 {
		bad("-shutdown-delay must not be negative and -drain-timeout must be positive")
	}
	if err := o.Limits.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := o.Identity.Validate(len(o.TrustedProxies)); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// OrderReader reads orders back, from the store of the mode in use.
type OrderReader interface {
	// Order returns the order with id; ok is false when there is none.
	Order(ctx context.Context, id uint64) (o *engine.Order, ok bool, err error)
	// UserOrders returns a user's orders, newest first.
	UserOrders(ctx context.Context, user string) ([]*engine.Order, error)
}

// Extras are what an edge serves besides purchases: redemption codes (nil:
// not available) and, in a cluster, the leaderboards the writers keep (nil:
// the engine's own).
type Extras struct {
	Codes  *codes.Desk
	Boards Boards
	// Tracing, when set, traces every request of the public API
	// (tracing.go); nil: off, at no cost.
	Tracing *tracing.Tracing
}

// Check reports whether a dependency is reachable, for /readyz.
type Check struct {
	Name  string
	Check func(context.Context) error
}

// Server serves the public and the admin listener of an edge node.
type Server struct {
	*front
	eng     *engine.Engine
	orders  OrderReader
	codes   *codes.Desk        // redemption codes; nil answers 503 (not configured)
	boards  Boards             // a cluster's leaderboards; nil: the engine's
	tracing *tracing.Tracing   // nil: off
	guesses *admission.Guesses // invalid codes per client and user; nil: unlimited

	public, admin *fasthttp.Server
	limits        *admission.Limits
	inflight      *admission.Inflight
	stopJanitor   chan struct{}
	metrics       *edgeMetrics

	routePurchase fasthttp.RequestHandler
}

// New builds a server. Its metrics are registered on reg, which /metrics
// serves (with whatever else the caller registered there); /readyz asks
// checks.
func New(opts Options, eng *engine.Engine, orders OrderReader, extras Extras, checks []Check, reg *prometheus.Registry) (*Server, error) {
	f, err := newFront(opts, checks, reg)
	if err != nil {
		return nil, err
	}
	if err := compileJSON(); err != nil {
		return nil, fmt.Errorf("cannot compile the JSON codecs: %w", err)
	}
	s := &Server{
		front:       f,
		eng:         eng,
		orders:      orders,
		codes:       extras.Codes,
		boards:      extras.Boards,
		tracing:     extras.Tracing,
		guesses:     admission.NewGuesses(f.opts.InvalidCodesPerMinute, invalidCodesBurst, f.opts.Limits.MaxIPs),
		limits:      admission.NewLimits(f.opts.Limits, time.Now()),
		inflight:    admission.NewInflight(f.opts.MaxInflight, f.opts.MaxQueueWait),
		stopJanitor: make(chan struct{}),
	}
	s.metrics = newEdgeMetrics(s)
	if err := reg.Register(s.metrics); err != nil {
		return nil, fmt.Errorf("cannot register HTTP metrics: %w", err)
	}
	s.public = s.newFastHTTP("public", s.publicHandler(), f.opts.MaxBodySize)
	s.admin = s.newFastHTTP("admin", s.adminHandler(), f.opts.MaxAdminBodySize)
	return s, nil
}

// Serve serves the two listeners until Shutdown, or until one fails.
func (s *Server) Serve(public, admin net.Listener) error {
	go s.janitor()
	errc := make(chan error, 2)
	go func() { errc <- s.public.Serve(s.limitConnsPerIP(public)) }()
	go func() { errc <- s.admin.Serve(admin) }()
	return <-errc
}

// Shutdown turns /readyz to 503, waits ShutdownDelay for load balancers to
// notice, then stops accepting and waits for requests in flight (bounded by
// ctx). Answers given while draining carry Connection: close.
func (s *Server) Shutdown(ctx context.Context) error {
	close(s.stopJanitor)
	return s.drain(ctx, s.public, s.admin)
}

// ioContext bounds a handler's store call by the write timeout. Handlers
// never pass the *fasthttp.RequestCtx itself as a context.Context: database/sql
// watches a context's Done from another goroutine, which may outlive the
// handler, and fasthttp recycles the RequestCtx as soon as the handler returns.
func (s *Server) ioContext(ctx *fasthttp.RequestCtx) (context.Context, context.CancelFunc) {
	return context.WithTimeout(s.requestContext(ctx), s.opts.WriteTimeout)
}

// janitor forgets idle clients of the per-IP limit, until Shutdown.
func (s *Server) janitor() {
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-s.stopJanitor:
			return
		case now := <-t.C:
			s.limits.Sweep(now)
			s.guesses.Sweep(now)
		}
	}
}
