package server

import (
	"crypto/subtle"
	"net/http"
	"net/http/pprof"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"
)

// adminHandler is the admin listener's entry: items, /metrics, pprof and
// the health endpoints, behind the bearer token when one is set.
func (s *Server) adminHandler() fasthttp.RequestHandler {
	r := s.newRouter()
	r.PUT("/api/v1/items/{id}", s.instrument("admin_item", s.putItem))
	r.DELETE("/api/v1/items/{id}", s.instrument("admin_item", s.deleteItem))
	r.GET("/api/v1/items", s.instrument("admin_items", s.listItems))
	r.GET("/api/v1/items/{id}", s.instrument("admin_item", s.getItem))
	metrics := fasthttpadaptor.NewFastHTTPHandler(promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{}))
	r.GET("/metrics", s.instrument("metrics", metrics))
	r.ANY("/debug/pprof/{profile:*}", s.instrument("pprof", pprofHandler()))
	s.health(r)
	h := r.Handler
	want := []byte("Bearer " + s.opts.AdminToken)
	return func(ctx *fasthttp.RequestCtx) {
		s.ids.set(ctx)
		if s.opts.AdminToken != "" && subtle.ConstantTimeCompare(ctx.Request.Header.Peek("Authorization"), want) != 1 {
			ctx.Response.Header.Set("WWW-Authenticate", `Bearer realm="flashsale-admin"`)
			writeError(ctx, codeUnauthorized, "admin requests need Authorization: Bearer <token>")
			s.metrics.other.count(fasthttp.StatusUnauthorized)
			return
		}
		h(ctx)
	}
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
