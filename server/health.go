package server

import (
	"context"

	"github.com/fasthttp/router"
	"github.com/valyala/fasthttp"

	"github.com/flashsale/flashsale/engine"
)

// health adds /healthz and /readyz to a listener's router.
func (s *Server) health(r *router.Router) {
	r.GET("/healthz", s.instrument("healthz", func(ctx *fasthttp.RequestCtx) {
		ctx.Response.Header.SetContentTypeBytes(jsonContentType)
		ctx.SetBodyString(`{"status":"ok"}`)
	}))
	r.GET("/readyz", s.instrument("readyz", s.readyz))
}

// readyz is 200 once stock is loaded (the server starts after the engine is
// rebuilt) and every dependency answers; 503 while one does not, and while
// draining for shutdown.
func (s *Server) readyz(ctx *fasthttp.RequestCtx) {
	if s.draining.Load() {
		writeError(ctx, engine.CodeUnavailable, "shutting down")
		return
	}
	cctx, cancel := context.WithTimeout(context.Background(), s.opts.ReadyTimeout)
	defer cancel()
	for _, c := range s.checks {
		if err := c.Check(cctx); err != nil {
			s.errLog.Error("not ready", "dependency", c.Name, "err", err)
			writeError(ctx, engine.CodeUnavailable, c.Name, " is unavailable")
			return
		}
	}
	ctx.Response.Header.SetContentTypeBytes(jsonContentType)
	ctx.SetBodyString(`{"status":"ready"}`)
}
