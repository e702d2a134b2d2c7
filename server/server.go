// Package server is the HTTP front of flashsale: fasthttp with
// fasthttp/router, sonic JSON and pooled objects. It serves the public
// listener (shoppers, behind Nginx) and the admin listener (items, metrics,
// pprof) of API.md, and maps every refusal to its status in one place
// (respond.go).
package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/fasthttp/router"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/flashsale/flashsale/engine"
	"github.com/flashsale/flashsale/server/admission"
)

// Options are the server's settings; every limit is explicit. Defaults()
// fills the zero ones.
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
	ShutdownDelay    time.Duration // /readyz fails this long before draining
	ReadyTimeout     time.Duration // bound on /readyz dependency checks; default 1 s

	// Admission control of the public API (/api/...).
	Limits         admission.Options // rate limits; zero rates are off
	MaxInflight    int               // requests served at once; default 128 per CPU
	MaxQueueWait   time.Duration     // wait for an in-flight slot before 503; 0: none
	TrustedProxies []netip.Prefix    // peers whose X-Real-IP / X-Forwarded-For are believed

	Identity Identity // where shoppers' user ids come from; default: the body
}

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
	def(&o.MaxBodySize, 4<<10)
	def(&o.MaxAdminBodySize, 64<<10)
	def(&o.MaxHeaderSize, 8<<10)
	def(&o.MaxConns, 100_000)
	def(&o.MaxInflight, 128*runtime.GOMAXPROCS(0))
	defd(&o.ReadTimeout, 5*time.Second)
	defd(&o.WriteTimeout, 5*time.Second)
	defd(&o.IdleTimeout, 60*time.Second)
	defd(&o.ReadyTimeout, time.Second)
	if o.Identity.Header == "" {
		o.Identity.Header = "X-User-Id"
	}
}

// CheckAdminAddr refuses an admin listener off loopback without a token.
func CheckAdminAddr(addr, token string) error {
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

// OrderReader reads orders back, from the store of the mode in use.
type OrderReader interface {
	// Order returns the order with id; ok is false when there is none.
	Order(ctx context.Context, id uint64) (o *engine.Order, ok bool, err error)
	// UserOrders returns a user's orders, newest first.
	UserOrders(ctx context.Context, user string) ([]*engine.Order, error)
}

// Check reports whether a dependency is reachable, for /readyz.
type Check struct {
	Name  string
	Check func(context.Context) error
}

// Server serves the public and the admin listener.
type Server struct {
	opts     Options
	eng      *engine.Engine
	orders   OrderReader
	checks   []Check
	registry *prometheus.Registry

	public, admin *fasthttp.Server
	draining      atomic.Bool
	limits        *admission.Limits
	inflight      *admission.Inflight
	stopJanitor   chan struct{}
	ids           *requestIDs
	metrics       *httpMetrics
	errLog        rateLog

	routePurchase fasthttp.RequestHandler
}

// New builds a server. Its metrics are registered on reg, which /metrics
// serves (with whatever else the caller registered there).
func New(opts Options, eng *engine.Engine, orders OrderReader, checks []Check, reg *prometheus.Registry) (*Server, error) {
	opts.Defaults()
	if err := opts.Identity.Validate(len(opts.TrustedProxies)); err != nil {
		return nil, err
	}
	s := &Server{
		opts:        opts,
		eng:         eng,
		orders:      orders,
		checks:      checks,
		registry:    reg,
		ids:         newRequestIDs(),
		errLog:      rateLog{interval: time.Second},
		limits:      admission.NewLimits(opts.Limits, time.Now()),
		inflight:    admission.NewInflight(opts.MaxInflight, opts.MaxQueueWait),
		stopJanitor: make(chan struct{}),
	}
	s.metrics = newHTTPMetrics(s)
	if err := reg.Register(s.metrics); err != nil {
		return nil, fmt.Errorf("cannot register HTTP metrics: %w", err)
	}
	s.public = s.newFastHTTP("flashsale-public", s.publicHandler(), opts.MaxBodySize)
	s.admin = s.newFastHTTP("flashsale-admin", s.adminHandler(), opts.MaxAdminBodySize)
	return s, nil
}

func (s *Server) newFastHTTP(name string, h fasthttp.RequestHandler, maxBody int) *fasthttp.Server {
	return &fasthttp.Server{
		Name:                         name,
		Handler:                      h,
		ErrorHandler:                 s.parseError,
		Logger:                       fasthttpLogger{&s.errLog},
		Concurrency:                  s.opts.MaxConns,
		ReadBufferSize:               s.opts.MaxHeaderSize, // also the bound on headers
		WriteBufferSize:              4 << 10,
		MaxRequestBodySize:           maxBody,
		ReadTimeout:                  s.opts.ReadTimeout,
		WriteTimeout:                 s.opts.WriteTimeout,
		IdleTimeout:                  s.opts.IdleTimeout,
		DisablePreParseMultipartForm: true,
		NoDefaultServerHeader:        true,
		NoDefaultContentType:         true,
		CloseOnShutdown:              true,
	}
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
	s.draining.Store(true)
	close(s.stopJanitor)
	select {
	case <-time.After(s.opts.ShutdownDelay):
	case <-ctx.Done():
	}
	return errors.Join(s.public.ShutdownWithContext(ctx), s.admin.ShutdownWithContext(ctx))
}

// publicHandler is the public listener's entry. The purchase route is
// matched here by hand, before the router: the router copies every path
// parameter into a new string and slice, and a sold-out answer must not
// allocate (allocation_test.go). The router still knows the route, for 405s.
func (s *Server) publicHandler() fasthttp.RequestHandler {
	r := s.newRouter()
	s.routePurchase = s.instrument("purchase", func(ctx *fasthttp.RequestCtx) {
		id, _ := purchaseItemID(ctx.Path())
		s.purchase(ctx, b2s(id))
	})
	r.GET("/api/v1/items", s.instrument("items", s.listItems))
	r.GET("/api/v1/items/{id}", s.instrument("item", s.getItem))
	r.POST("/api/v1/items/{id}/purchase", s.routePurchase)
	r.GET("/api/v1/orders/{order_id}", s.instrument("order", s.getOrder))
	r.GET("/api/v1/users/{user_id}/orders", s.instrument("user_orders", s.userOrders))
	s.health(r)
	h := r.Handler
	return func(ctx *fasthttp.RequestCtx) {
		s.ids.set(ctx)
		if !bytes.HasPrefix(ctx.Path(), apiPrefix) {
			h(ctx) // health endpoints and 404s are never refused
			return
		}
		if !s.admit(ctx) {
			return
		}
		defer s.inflight.Release()
		if ctx.IsPost() {
			if _, ok := purchaseItemID(ctx.Path()); ok {
				s.routePurchase(ctx)
				return
			}
		}
		h(ctx)
	}
}

var apiPrefix = []byte("/api/")

// admit applies the global and per-IP rate limits (429) and the in-flight
// bound (503) to a request of the public API. When it returns true the
// caller must release the in-flight slot.
func (s *Server) admit(ctx *fasthttp.RequestCtx) bool {
	if lim, wait := s.limits.Allow(s.clientIP(ctx), time.Now()); lim != admission.None {
		s.rateLimited(ctx, lim, wait)
		return false
	}
	if !s.inflight.Acquire() {
		s.metrics.shed.Inc()
		writeError(ctx, engine.CodeUnavailable, "the server is at its in-flight limit; retry shortly (operators: raise -max-inflight)")
		s.metrics.other.count(fasthttp.StatusServiceUnavailable)
		return false
	}
	s.metrics.admitted.Inc()
	return true
}

// rateLimited answers 429 with the wait in Retry-After.
func (s *Server) rateLimited(ctx *fasthttp.RequestCtx, lim admission.Limit, wait time.Duration) {
	s.metrics.limited[lim].Inc()
	switch lim {
	case admission.Global:
		writeError(ctx, codeRateLimited, "the server is at its global rate limit")
	case admission.Item:
		writeError(ctx, codeRateLimited, "this item is at its rate limit")
	default:
		writeError(ctx, codeRateLimited, "too many requests from this client")
	}
	var buf [20]byte
	ctx.Response.Header.SetBytesV("Retry-After", strconv.AppendInt(buf[:0], int64(admission.RetryAfter(wait)), 10))
	s.metrics.other.count(fasthttp.StatusTooManyRequests)
}

var (
	purchasePrefix = []byte("/api/v1/items/")
	purchaseSuffix = []byte("/purchase")
)

// purchaseItemID matches /api/v1/items/{id}/purchase as the router would:
// id is one non-empty path segment.
func purchaseItemID(path []byte) ([]byte, bool) {
	if !bytes.HasPrefix(path, purchasePrefix) || !bytes.HasSuffix(path, purchaseSuffix) {
		return nil, false
	}
	id := path[len(purchasePrefix) : len(path)-len(purchaseSuffix)]
	if len(path) < len(purchasePrefix)+len(purchaseSuffix) || len(id) == 0 || bytes.IndexByte(id, '/') >= 0 {
		return nil, false
	}
	return id, true
}

func (s *Server) newRouter() *router.Router {
	r := router.New()
	r.RedirectTrailingSlash = false // a redirected POST would be a second purchase attempt
	r.RedirectFixedPath = false
	r.NotFound = s.instrument("other", func(ctx *fasthttp.RequestCtx) {
		writeError(ctx, codeNotFound, "no such route")
	})
	r.MethodNotAllowed = s.instrument("other", func(ctx *fasthttp.RequestCtx) {
		writeError(ctx, codeMethodNotAllowed, "method ", b2s(ctx.Method()), " is not allowed here")
	})
	r.PanicHandler = func(ctx *fasthttp.RequestCtx, v any) {
		s.errLog.Error("BUG: handler panicked", "panic", v, "path", string(ctx.Path()))
		writeError(ctx, codeInternal, "internal error")
	}
	return r
}

// parseError answers a request fasthttp could not read.
func (s *Server) parseError(ctx *fasthttp.RequestCtx, err error) {
	s.ids.set(ctx)
	var small *fasthttp.ErrSmallBuffer
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		writeError(ctx, codeBodyTooLarge, "request body is over the limit")
	case errors.As(err, &small):
		writeError(ctx, engine.CodeInvalidRequest, "request headers are over the limit")
		ctx.Response.SetStatusCode(fasthttp.StatusRequestHeaderFieldsTooLarge)
	case isTimeout(err):
		writeError(ctx, engine.CodeInvalidRequest, "request not received in time")
		ctx.Response.SetStatusCode(fasthttp.StatusRequestTimeout)
	default:
		writeError(ctx, engine.CodeInvalidRequest, "malformed HTTP request")
	}
	s.metrics.other.count(ctx.Response.StatusCode())
}

// isTimeout reports a read deadline hit: any error in the chain with a
// Timeout method (net errors, and the in-memory pipe's, which is no net.Error).
func isTimeout(err error) bool {
	var te interface{ Timeout() bool }
	return errors.As(err, &te) && te.Timeout()
}

type fasthttpLogger struct{ l *rateLog }

func (f fasthttpLogger) Printf(format string, args ...any) {
	f.l.Error(fmt.Sprintf(format, args...), "component", "fasthttp")
}

// ioContext bounds a handler's store call by the write timeout. Handlers
// never pass the *fasthttp.RequestCtx itself as a context.Context: database/sql
// watches a context's Done from another goroutine, which may outlive the
// handler, and fasthttp recycles the RequestCtx as soon as the handler returns.
func (s *Server) ioContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), s.opts.WriteTimeout)
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
		}
	}
}
