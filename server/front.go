package server

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"sync/atomic"
	"time"

	"github.com/fasthttp/router"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"

	"github.com/flashsale/flashsale/engine"
)

// front is what every listener of the process has, whatever it serves:
// fasthttp with every limit set, request ids, the contract's JSON errors
// (also for what fasthttp cannot read), request metrics by route, /healthz
// and /readyz, and the admin routes (/metrics, pprof) behind the token. The
// edge's Server and the writer's Admin are both built on it.
type front struct {
	opts     Options
	checks   []Check
	registry *prometheus.Registry
	draining atomic.Bool
	ids      *requestIDs
	errLog   rateLog
	routes   *routeMetrics
}

func newFront(opts Options, checks []Check, reg *prometheus.Registry) (*front, error) {
	opts.Defaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	f := &front{opts: opts, checks: checks, registry: reg, ids: newRequestIDs(),
		errLog: rateLog{interval: time.Second}, routes: newRouteMetrics()}
	if err := reg.Register(f.routes); err != nil {
		return nil, fmt.Errorf("cannot register HTTP metrics: %w", err)
	}
	ready := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "flashsale_ready",
		Help: "1 when /readyz would answer 200 (every dependency answers), 0 when not or draining; asked at each scrape."},
		func() float64 {
			if f.ready() != nil {
				return 0
			}
			return 1
		})
	if err := reg.Register(ready); err != nil {
		return nil, fmt.Errorf("cannot register the readiness metric: %w", err)
	}
	return f, nil
}

// ready is /readyz's verdict: nil, or why not (the check's name and error).
func (f *front) ready() error {
	if f.draining.Load() {
		return errDraining
	}
	ctx, cancel := context.WithTimeout(context.Background(), f.opts.ReadyTimeout)
	defer cancel()
	for _, c := range f.checks {
		if err := c.Check(ctx); err != nil {
			return &notReady{name: c.Name, err: err}
		}
	}
	return nil
}

var errDraining = errors.New("shutting down")

type notReady struct {
	name string
	err  error
}

func (e *notReady) Error() string { return e.name + ": " + e.err.Error() }

// newFastHTTP is a fasthttp server for the listener named listener
// ("public", "admin"), with every limit set.
func (f *front) newFastHTTP(listener string, h fasthttp.RequestHandler, maxBody int) *fasthttp.Server {
	srv := &fasthttp.Server{
		Name:                         "flashsale-" + listener,
		Handler:                      h,
		ErrorHandler:                 f.parseError,
		Logger:                       fasthttpLogger{&f.errLog},
		Concurrency:                  f.opts.MaxConns,
		ReadBufferSize:               f.opts.MaxHeaderSize, // also the bound on headers
		WriteBufferSize:              4 << 10,
		MaxRequestBodySize:           maxBody,
		ReadTimeout:                  f.opts.ReadTimeout,
		WriteTimeout:                 f.opts.WriteTimeout,
		IdleTimeout:                  f.opts.IdleTimeout,
		DisablePreParseMultipartForm: true,
		NoDefaultServerHeader:        true,
		NoDefaultContentType:         true,
		CloseOnShutdown:              true,
	}
	f.routes.listen(listener, srv)
	return srv
}

func (f *front) newRouter() *router.Router {
	r := router.New()
	r.RedirectTrailingSlash = false // a redirected POST would be a second purchase attempt
	r.RedirectFixedPath = false
	r.NotFound = f.instrument("other", func(ctx *fasthttp.RequestCtx) {
		writeError(ctx, codeNotFound, "no such route")
	})
	r.MethodNotAllowed = f.instrument("other", func(ctx *fasthttp.RequestCtx) {
		writeError(ctx, codeMethodNotAllowed, "method ", b2s(ctx.Method()), " is not allowed here")
	})
	r.PanicHandler = func(ctx *fasthttp.RequestCtx, v any) {
		f.errLog.Error("BUG: handler panicked", "panic", v, "path", string(ctx.Path()))
		writeError(ctx, codeInternal, "internal error")
	}
	return r
}

// parseError answers a request fasthttp could not read.
func (f *front) parseError(ctx *fasthttp.RequestCtx, err error) {
	f.ids.set(ctx)
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
	f.routes.other.count(ctx.Response.StatusCode())
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

// health adds /healthz and /readyz to a listener's router.
func (f *front) health(r *router.Router) {
	r.GET("/healthz", f.instrument("healthz", func(ctx *fasthttp.RequestCtx) {
		ctx.Response.Header.SetContentTypeBytes(jsonContentType)
		ctx.SetBodyString(`{"status":"ok"}`)
	}))
	r.GET("/readyz", f.instrument("readyz", f.readyz))
}

// readyz is 200 once the process is built (it starts serving after its
// stores are open and the engine rebuilt) and every dependency answers; 503
// while one does not, and while draining for shutdown.
func (f *front) readyz(ctx *fasthttp.RequestCtx) {
	var nr *notReady
	switch err := f.ready(); {
	case err == nil:
		ctx.Response.Header.SetContentTypeBytes(jsonContentType)
		ctx.SetBodyString(`{"status":"ready"}`)
	case errors.As(err, &nr):
		f.errLog.Error("not ready", "dependency", nr.name, "err", nr.err)
		writeError(ctx, engine.CodeUnavailable, nr.name, " is unavailable")
	default:
		writeError(ctx, engine.CodeUnavailable, err.Error())
	}
}

// adminRoutes adds what every admin listener serves: /metrics, the pprof
// handlers, /healthz and /readyz.
func (f *front) adminRoutes(r *router.Router) {
	metrics := fasthttpadaptor.NewFastHTTPHandler(promhttp.HandlerFor(f.registry, promhttp.HandlerOpts{}))
	r.GET("/metrics", f.instrument("metrics", metrics))
	r.ANY("/debug/pprof/{profile:*}", f.instrument("pprof", pprofHandler()))
	f.health(r)
}

// adminGate is the admin listener's entry: a request id, then the bearer
// token when one is set (but for /healthz and /readyz).
func (f *front) adminGate(h fasthttp.RequestHandler) fasthttp.RequestHandler {
	want := []byte("Bearer " + f.opts.AdminToken)
	return func(ctx *fasthttp.RequestCtx) {
		f.ids.set(ctx)
		if f.opts.AdminToken != "" && !healthPath(ctx.Path()) && subtle.ConstantTimeCompare(ctx.Request.Header.Peek("Authorization"), want) != 1 {
			ctx.Response.Header.Set("WWW-Authenticate", `Bearer realm="flashsale-admin"`)
			writeError(ctx, codeUnauthorized, "admin requests need Authorization: Bearer <token>")
			f.routes.other.count(fasthttp.StatusUnauthorized)
			return
		}
		h(ctx)
	}
}

// healthPath reports whether path is /healthz or /readyz, which the admin
// listener answers without the token (they tell a prober only "up" or
// which dependency is down): probes and orchestrators need no secret.
func healthPath(path []byte) bool {
	return string(path) == "/healthz" || string(path) == "/readyz"
}

// pprofHandler serves the standard net/http/pprof handlers, index included
// (fasthttp's pprofhandler answers 404 at /debug/pprof/).
func pprofHandler() fasthttp.RequestHandler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return fasthttpadaptor.NewFastHTTPHandler(mux)
}

// drain turns /readyz to 503, waits ShutdownDelay for load balancers to
// notice (bounded by ctx), then stops srvs accepting and waits for the
// requests in flight.
func (f *front) drain(ctx context.Context, srvs ...*fasthttp.Server) error {
	f.draining.Store(true)
	select {
	case <-time.After(f.opts.ShutdownDelay):
	case <-ctx.Done():
	}
	var errs []error
	for _, s := range srvs {
		errs = append(errs, s.ShutdownWithContext(ctx))
	}
	return errors.Join(errs...)
}

// Admin serves an admin listener alone, for a process that serves no
// shoppers (the writer role): /metrics, pprof, /healthz and /readyz, behind
// the token, with the contract's JSON errors. It is the same handler as the
// edge's admin listener, without the item routes.
type Admin struct {
	*front
	srv *fasthttp.Server
}

// NewAdmin builds an admin listener whose /readyz asks checks and whose
// /metrics serves reg (its own request metrics are registered there).
func NewAdmin(opts Options, checks []Check, reg *prometheus.Registry) (*Admin, error) {
	f, err := newFront(opts, checks, reg)
	if err != nil {
		return nil, err
	}
	r := f.newRouter()
	f.adminRoutes(r)
	return &Admin{front: f, srv: f.newFastHTTP("admin", f.adminGate(r.Handler), f.opts.MaxAdminBodySize)}, nil
}

// Serve serves ln until Shutdown.
func (a *Admin) Serve(ln net.Listener) error { return a.srv.Serve(ln) }

// Shutdown fails /readyz, waits ShutdownDelay, then drains (bounded by ctx).
func (a *Admin) Shutdown(ctx context.Context) error { return a.drain(ctx, a.srv) }
