package server

import (
	"crypto/subtle"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"
	"github.com/valyala/fasthttp/pprofhandler"
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
	r.ANY("/debug/pprof/{profile:*}", s.instrument("pprof", pprofhandler.PprofHandler))
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
