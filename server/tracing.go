package server

// Tracing of the public API, when the edge was given a tracer (Extras):
// each /api/ request is a server span, child of the traceparent a trusted
// proxy sent (Nginx), with the admission and the decision as its children;
// the engine's Redis scripts and the store's commit or Kafka's produce are
// theirs (internal/tracing wraps them). Without a tracer none of this runs:
// publicHandler tests one pointer.

import (
	"context"
	"strconv"
	"time"

	"github.com/fasthttp/router"
	"github.com/valyala/fasthttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// traceKey is the user value holding a traced request's context.
const traceKey = "flashsale.trace"

// serveTraced serves an API request (admission, then serve) in a server
// span, when it is sampled: its proxy's traceparent says so, or, without
// one, the ratio (tracing.Head). A request not sampled is served as if
// tracing were off.
func (s *Server) serveTraced(ctx *fasthttp.RequestCtx, serve fasthttp.RequestHandler) {
	parent, traced := context.Background(), false
	if s.trusted(peerAddr(ctx)) && len(ctx.Request.Header.Peek("traceparent")) > 0 {
		// Only a proxy's traceparent is believed: anyone can send one. Its
		// sampled flag decides.
		parent = s.tracing.Propagator().Extract(parent, requestCarrier{&ctx.Request.Header})
		sc := trace.SpanContextFromContext(parent)
		traced = sc.IsSampled()
		if !sc.IsValid() {
			parent, traced = s.tracing.Head(parent)
		}
	} else {
		parent, traced = s.tracing.Head(parent)
	}
	if !traced {
		s.admitAndServe(ctx, serve)
		return
	}
	start := time.Now()
	method := string(ctx.Method())
	tctx, span := s.tracing.Tracer().Start(parent, method, trace.WithSpanKind(trace.SpanKindServer), trace.WithTimestamp(start))
	ctx.SetUserValue(traceKey, tctx)
	admitted := s.admit(ctx)
	if span.IsRecording() {
		_, a := s.tracing.Tracer().Start(tctx, "admission", trace.WithTimestamp(start),
			trace.WithAttributes(attribute.Bool("flashsale.admitted", admitted)))
		if !admitted {
			a.SetStatus(codes.Error, strconv.Itoa(ctx.Response.StatusCode()))
		}
		a.End()
	}
	if admitted {
		s.serveHolding(ctx, tctx, serve)
	}
	if span.IsRecording() {
		route := "other"
		if _, ok := purchaseItemID(ctx.Path()); ok && ctx.IsPost() {
			route = "/api/v1/items/{id}/purchase"
		} else if p, ok := ctx.UserValue(router.MatchedRoutePathParam).(string); ok {
			route = p
		}
		status := ctx.Response.StatusCode()
		span.SetName(method + " " + route)
		span.SetAttributes(attribute.String("http.request.method", method), attribute.String("http.route", route),
			attribute.Int("http.response.status_code", status),
			attribute.String("flashsale.request_id", string(ctx.Response.Header.Peek("X-Request-Id"))))
		if status >= 500 {
			span.SetStatus(codes.Error, strconv.Itoa(status))
		}
	}
	span.End()
}

// requestContext is the context a handler passes to the engine and the
// stores: the request's span's when it is traced, else Background.
func (s *Server) requestContext(ctx *fasthttp.RequestCtx) context.Context {
	if s.tracing != nil {
		if c, ok := ctx.UserValue(traceKey).(context.Context); ok {
			return c
		}
	}
	return context.Background()
}

// requestCarrier reads W3C trace context from request headers.
type requestCarrier struct{ h *fasthttp.RequestHeader }

func (c requestCarrier) Get(key string) string { return string(c.h.Peek(key)) }
func (c requestCarrier) Set(string, string)    {}
func (c requestCarrier) Keys() []string {
	var keys []string
	for k := range c.h.AllInOrder() {
		keys = append(keys, string(k))
	}
	return keys
}
