package tracing

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"
)

func newTest(ratio float64) (*Tracing, *tracetest.InMemoryExporter) {
	exp := tracetest.NewInMemoryExporter()
	return New(Options{Service: "test", Ratio: ratio}, sdktrace.WithSyncer(exp)), exp
}

func remote(sampled bool) trace.SpanContext {
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, Remote: true})
	if sampled {
		sc = sc.WithTraceFlags(trace.FlagsSampled)
	}
	return sc
}

// Sampling: a parent decides; without one Head or a sampled link does;
// else nothing is traced.
func TestSampling(t *testing.T) {
	tr, _ := newTest(0)
	sampled := func(ctx context.Context, opts ...trace.SpanStartOption) bool {
		_, s := tr.Tracer().Start(ctx, "x", opts...)
		defer s.End()
		return s.SpanContext().IsSampled()
	}
	bg := context.Background()
	if sampled(bg) {
		t.Fatal("a root span sampled at ratio 0")
	}
	if !sampled(trace.ContextWithRemoteSpanContext(bg, remote(true))) || sampled(trace.ContextWithRemoteSpanContext(bg, remote(false))) {
		t.Fatal("a child must follow its parent's sampled flag")
	}
	if !sampled(bg, trace.WithLinks(trace.Link{SpanContext: remote(false)}, trace.Link{SpanContext: remote(true)})) {
		t.Fatal("a root span with a sampled link must be sampled")
	}
	if sampled(bg, trace.WithLinks(trace.Link{SpanContext: remote(false)})) {
		t.Fatal("a root span with only unsampled links is sampled")
	}
	// Even at ratio 1 a root span nobody chose (Head) is no trace: the
	// ratio is applied once, by Head, to requests.
	all, _ := newTest(1)
	if _, s := all.Tracer().Start(bg, "x"); s.SpanContext().IsSampled() {
		t.Fatal("a root span not chosen by Head is sampled")
	}
	if ctx, ok := all.Head(bg); !ok || !sampled(ctx) {
		t.Fatal("Head at ratio 1 must trace")
	}
	// Head: at the ratio, and a root span under its yes is sampled even
	// where the SDK's ratio would not.
	for range 100 {
		if _, yes := tr.Head(bg); yes {
			t.Fatal("Head said yes at ratio 0")
		}
	}
	half, _ := newTest(0.5)
	yes := 0
	for range 1000 {
		if ctx, ok := half.Head(bg); ok {
			yes++
			if !sampled(ctx) {
				t.Fatal("a root span under Head's yes is not sampled")
			}
		}
	}
	if yes < 400 || yes > 600 {
		t.Fatalf("Head at 0.5 said yes %d times in 1000", yes)
	}
}

// Span makes a child only of a sampled span, records a failure, and passes
// the callee's error on; off (nil) it only calls.
func TestSpan(t *testing.T) {
	tr, exp := newTest(0)
	boom := errors.New("boom")
	var off *Tracing
	if err := off.Span(context.Background(), "x", func(context.Context) error { return boom }); err != boom {
		t.Fatalf("off: %v", err)
	}
	unsampled := trace.ContextWithRemoteSpanContext(context.Background(), remote(false))
	tr.Span(unsampled, "x", func(context.Context) error { return nil })
	if n := len(exp.GetSpans()); n != 0 {
		t.Fatalf("%d spans under an unsampled parent", n)
	}
	ctx := trace.ContextWithRemoteSpanContext(context.Background(), remote(true))
	var inner trace.SpanContext
	err := tr.Span(ctx, "x", func(ctx context.Context) error {
		inner = trace.SpanContextFromContext(ctx)
		return boom
	})
	spans := exp.GetSpans()
	if err != boom || len(spans) != 1 || spans[0].Status.Code.String() != "Error" || spans[0].SpanContext.SpanID() != inner.SpanID() ||
		spans[0].Parent.SpanID() != remote(true).SpanID() {
		t.Fatalf("span of a failed call: %v %+v", err, spans)
	}
}

func TestOptions(t *testing.T) {
	for _, o := range []Options{{Ratio: -0.1}, {Ratio: 1.1}, {Endpoint: "collector:4318"}, {Endpoint: "ftp://x"}} {
		if o.Validate() == nil {
			t.Errorf("%+v accepted", o)
		}
	}
	for _, o := range []Options{{}, {Endpoint: "http://collector:4318", Ratio: 1}, {Endpoint: "https://x/otlp/v1/traces"}} {
		if err := o.Validate(); err != nil {
			t.Errorf("%+v: %v", o, err)
		}
	}
	if tr, err := Start(Options{}); tr != nil || err != nil {
		t.Fatal("no endpoint must be off")
	}
	for base, want := range map[string]string{"http://c:4318": "http://c:4318/v1/traces", "http://c:4318/": "http://c:4318/v1/traces",
		"https://c/custom/path": "https://c/custom/path"} {
		if got := joinPath(base, "/v1/traces"); got != want {
			t.Errorf("%s: %s, want %s", base, got, want)
		}
	}
}

// The exporter: spans reach an OTLP/HTTP receiver as the protocol's
// request, with the headers the environment names; a receiver's refusal
// is an error.
func TestOTLPHTTPExport(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_HEADERS", "Authorization=Bearer%20s3cret, x-tenant=shop")
	got := make(chan *coltrace.ExportTraceServiceRequest, 1)
	var header http.Header
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var req coltrace.ExportTraceServiceRequest
		if r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" || proto.Unmarshal(b, &req) != nil {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		header = r.Header
		got <- &req
	}))
	defer recv.Close()
	tr, err := Start(Options{Endpoint: recv.URL, Ratio: 1, Service: "flashsale-test"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, _ := tr.Head(context.Background())
	_, span := tr.Tracer().Start(ctx, "hello")
	span.End()
	if err := tr.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	req := <-got
	rs := req.ResourceSpans
	if len(rs) != 1 || len(rs[0].ScopeSpans) != 1 || rs[0].ScopeSpans[0].Spans[0].Name != "hello" {
		t.Fatalf("received %v", req)
	}
	if header.Get("Authorization") != "Bearer s3cret" || header.Get("X-Tenant") != "shop" {
		t.Fatalf("headers %v", header)
	}
	refusing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no", http.StatusServiceUnavailable)
	}))
	defer refusing.Close()
	c, _ := newOTLPHTTP(refusing.URL+"/v1/traces", time.Second)
	if err := c.UploadTraces(context.Background(), rs); err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("a refusal: %v", err)
	}
	t.Setenv("OTEL_EXPORTER_OTLP_HEADERS", "novalue")
	if _, err := Start(Options{Endpoint: recv.URL}); err == nil {
		t.Fatal("a malformed OTEL_EXPORTER_OTLP_HEADERS accepted")
	}
}
