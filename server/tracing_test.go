package server

import (
	"net/netip"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/flashsale/flashsale/engine"
	"github.com/flashsale/flashsale/internal/tracing"
)

// A traced edge: a purchase that comes from a trusted proxy with a sampled
// traceparent is a server span of that trace, with the admission, the
// decision and the store's commit under it; a loser has no commit and is no
// error; a failed commit is an error up to the server span. An untrusted
// peer's traceparent is not believed, and an unsampled one is not traced.
func TestTracedPurchase(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tr := tracing.New(tracing.Options{Service: "test", Ratio: 0}, sdktrace.WithSyncer(exp))
	ts := newTracedTestServer(t, Options{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}},
		func(s engine.OrderSink) engine.OrderSink { return tr.Sink("store commit", s) }, tr)
	ts.putItem("it", `{"name":"Phone","price_cents":100,"stock":1,"per_user_limit":1}`)
	proxy, stranger := ts.clientFrom("10.0.0.2:1000"), ts.clientFrom("203.0.113.5:1000")
	const traceID, parentID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	sampled := "traceparent: 00-" + traceID + "-" + parentID + "-01"
	spansOf := func() map[string]sdktrace.ReadOnlySpan {
		out := map[string]sdktrace.ReadOnlySpan{}
		for _, s := range exp.GetSpans().Snapshots() {
			out[s.Name()] = s
		}
		return out
	}
	childOf := func(c, p sdktrace.ReadOnlySpan) bool {
		return c.Parent().SpanID() == p.SpanContext().SpanID() && c.SpanContext().TraceID() == p.SpanContext().TraceID()
	}

	// The winner.
	if r := ts.do(proxy, "POST", "/api/v1/items/it/purchase", `{"user_id":"u1"}`, sampled); r.status != 201 {
		t.Fatalf("purchase: %d %s", r.status, r.body)
	}
	spans := spansOf()
	srv, adm, dec, commit := spans["POST /api/v1/items/{id}/purchase"], spans["admission"], spans["purchase decision"], spans["store commit"]
	if srv == nil || adm == nil || dec == nil || commit == nil {
		t.Fatalf("spans of a traced winner: %v", spans)
	}
	if srv.SpanContext().TraceID().String() != traceID || srv.Parent().SpanID().String() != parentID || !srv.Parent().IsRemote() ||
		srv.SpanKind() != trace.SpanKindServer {
		t.Fatalf("server span %v, parent %v: not a server child of the proxy's traceparent", srv.SpanContext(), srv.Parent())
	}
	if !childOf(adm, srv) || !childOf(dec, srv) || !childOf(commit, dec) {
		t.Fatal("admission and decision must be children of the server span, the commit of the decision")
	}
	if !hasAttr(srv, "http.response.status_code", "201") || !hasAttr(srv, "http.route", "/api/v1/items/{id}/purchase") {
		t.Fatalf("server span attributes: %v", srv.Attributes())
	}

	// A loser: decided, nothing committed, no error.
	exp.Reset()
	if r := ts.do(proxy, "POST", "/api/v1/items/it/purchase", `{"user_id":"u2"}`, sampled); r.status != 409 {
		t.Fatalf("sold out: %d %s", r.status, r.body)
	}
	spans = spansOf()
	if spans["purchase decision"] == nil || spans["store commit"] != nil || spans["purchase decision"].Status().Code != 0 {
		t.Fatalf("spans of a loser: %v", spans)
	}

	// The store failing: the commit and the request are errors.
	ts.putItem("more", `{"name":"Phone","price_cents":100,"stock":5,"per_user_limit":1}`)
	ts.sink.mode.Store(sinkFail)
	exp.Reset()
	if r := ts.do(proxy, "POST", "/api/v1/items/more/purchase", `{"user_id":"u3"}`, sampled); r.status != 503 {
		t.Fatalf("store down: %d %s", r.status, r.body)
	}
	ts.sink.mode.Store(sinkPass)
	spans = spansOf()
	for _, name := range []string{"store commit", "purchase decision", "POST /api/v1/items/{id}/purchase"} {
		if s := spans[name]; s == nil || s.Status().Code.String() != "Error" {
			t.Fatalf("%s of a failed commit: %v", name, s)
		}
	}

	// Other routes are named for their route.
	exp.Reset()
	ts.do(proxy, "GET", "/api/v1/items/it", "", sampled)
	if spansOf()["GET /api/v1/items/{id}"] == nil {
		t.Fatalf("spans of an item read: %v", spansOf())
	}

	// Not believed, or not sampled: nothing (the ratio is 0).
	exp.Reset()
	ts.do(stranger, "POST", "/api/v1/items/more/purchase", `{"user_id":"u4"}`, sampled)
	ts.do(proxy, "POST", "/api/v1/items/more/purchase", `{"user_id":"u5"}`, "traceparent: 00-"+traceID+"-"+parentID+"-00")
	if n := len(exp.GetSpans()); n != 0 {
		t.Fatalf("%d spans for a stranger's traceparent and an unsampled one", n)
	}
}

// At ratio 1 every request is traced, and a stranger's traceparent starts
// a trace of the edge's own.
func TestTraceOfAStrangerIsNew(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tr := tracing.New(tracing.Options{Service: "test", Ratio: 1}, sdktrace.WithSyncer(exp))
	ts := newTracedTestServer(t, Options{}, nil, tr)
	ts.putItem("it", phone)
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	ts.do(ts.clientFrom("203.0.113.5:1000"), "POST", "/api/v1/items/it/purchase", `{"user_id":"u1"}`,
		"traceparent: 00-"+traceID+"-00f067aa0ba902b7-01")
	spans := exp.GetSpans().Snapshots()
	if len(spans) == 0 {
		t.Fatal("no spans at ratio 1")
	}
	for _, s := range spans {
		if s.SpanContext().TraceID().String() == traceID || s.Parent().IsRemote() {
			t.Fatalf("span %s continues a stranger's trace", s.Name())
		}
	}
}

func hasAttr(s sdktrace.ReadOnlySpan, key, value string) bool {
	for _, a := range s.Attributes() {
		if string(a.Key) == key && a.Value.String() == value {
			return true
		}
	}
	return false
}
