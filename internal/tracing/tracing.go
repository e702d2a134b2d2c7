// Package tracing is flashsale's OpenTelemetry tracing, off unless an OTLP
// endpoint is given: a tracer provider exporting OTLP/HTTP in batches, W3C
// trace context (traceparent, tracestate) as the propagation, franz-go's
// kotel hooks so that a trace crosses Kafka in the record headers, and
// wrappers that give the engine's Redis and store calls their spans
// (deps.go). Off, nothing here is built: callers hold a nil *Tracing and
// the hot paths test one pointer, so the loser path stays allocation-free.
//
// Sampling: a span with a parent follows its parent's decision (Nginx's
// sampled flag, or the edge's, carried in the record); a request without
// one is traced at the ratio given, decided before any span is built
// (Head); a writer's batch span is sampled when one of the records it
// links to is. No other span starts a trace.
package tracing

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kotel"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
)

// Options configure tracing.
type Options struct {
	// Endpoint is the OTLP/HTTP receiver's base URL (e.g.
	// http://otel-collector:4318; spans go to its /v1/traces). Empty: off.
	Endpoint string
	// Ratio is the share of traces that start here that are sampled
	// (0..1); a request whose traceparent says sampled is always traced.
	Ratio float64
	// Service is service.name in the spans' resource.
	Service string
	// Instance is service.instance.id (the node's id or host).
	Instance string
}

// DefaultRatio is the command's sampling ratio: one trace in a hundred.
const DefaultRatio = 0.01

// exportTimeout bounds one export of a batch of spans.
const exportTimeout = 5 * time.Second

// Validate checks the options as given.
func (o Options) Validate() error {
	if o.Ratio < 0 || o.Ratio > 1 {
		return fmt.Errorf("-trace-sample must be between 0 and 1, not %v", o.Ratio)
	}
	if o.Endpoint == "" {
		return nil
	}
	u, err := url.Parse(o.Endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("-otlp-endpoint must be an http(s) URL such as http://otel-collector:4318, not %q", o.Endpoint)
	}
	return nil
}

// Tracing is a process's tracer. A nil *Tracing is off.
type Tracing struct {
	ratio    float64
	provider *sdktrace.TracerProvider
	tracer   trace.Tracer
	prop     propagation.TextMapPropagator
	kafka    *kotel.Tracer
}

// Start builds tracing as o says: nil when o has no endpoint. The exporter
// connects lazily; spans that cannot be sent are dropped (and counted by the
// SDK), never waited for by a request.
func Start(o Options) (*Tracing, error) {
	if err := o.Validate(); err != nil || o.Endpoint == "" {
		return nil, err
	}
	client, err := newOTLPHTTP(joinPath(o.Endpoint, "/v1/traces"), exportTimeout)
	if err != nil {
		return nil, fmt.Errorf("tracing: %w", err)
	}
	exp, err := otlptrace.New(context.Background(), client)
	if err != nil {
		return nil, fmt.Errorf("tracing: %w", err)
	}
	otel.SetErrorHandler(&exportErrors{})
	return New(o, sdktrace.WithBatcher(exp)), nil
}

// exportErrors logs the SDK's errors (a receiver down: every batch fails)
// at most once a minute, with how many came since the last line.
type exportErrors struct {
	mu     sync.Mutex
	last   time.Time
	missed int
}

func (e *exportErrors) Handle(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if now := time.Now(); now.Sub(e.last) >= time.Minute {
		slog.Warn("tracing: spans dropped (the OTLP receiver?)", "err", err, "errors_since_last_line", e.missed)
		e.last, e.missed = now, 0
		return
	}
	e.missed++
}

// joinPath is base with path appended, unless base names a path already.
func joinPath(base, path string) string {
	u, err := url.Parse(base)
	if err != nil || (u.Path != "" && u.Path != "/") {
		return base
	}
	u.Path = path
	return u.String()
}

// New builds tracing with o's sampling and resource, exporting through
// export (sdktrace.WithBatcher or, in tests, WithSyncer of an in-memory
// exporter). The endpoint is not used.
func New(o Options, export sdktrace.TracerProviderOption) *Tracing {
	attrs := []attribute.KeyValue{semconv.ServiceName(o.Service)}
	if o.Instance != "" {
		attrs = append(attrs, semconv.ServiceInstanceID(o.Instance))
	}
	tp := sdktrace.NewTracerProvider(export,
		sdktrace.WithSampler(sdktrace.ParentBased(headOrLinked{})),
		sdktrace.WithResource(resource.NewWithAttributes(semconv.SchemaURL, attrs...)))
	prop := propagation.TraceContext{}
	return &Tracing{ratio: o.Ratio, provider: tp, tracer: tp.Tracer("github.com/flashsale/flashsale"), prop: prop,
		kafka: kotel.NewTracer(kotel.TracerProvider(tp), kotel.TracerPropagator(prop))}
}

// Head decides whether a request that came without a trace is traced: at
// the ratio, before anything is built, so that the requests not sampled
// (most, at a low ratio) cost one random number. When it says yes, a root
// span started with the context it returns is sampled.
func (t *Tracing) Head(ctx context.Context) (context.Context, bool) {
	if t.ratio <= 0 || rand.Float64() >= t.ratio {
		return ctx, false
	}
	return context.WithValue(ctx, headKey{}, true), true
}

type headKey struct{}

// Tracer is the process's tracer.
func (t *Tracing) Tracer() trace.Tracer { return t.tracer }

// Propagator reads and writes W3C trace context.
func (t *Tracing) Propagator() propagation.TextMapPropagator { return t.prop }

// KafkaHooks are the franz-go hooks that carry the trace in each record's
// headers: a publish span around each produce (child of the record's
// Context), a receive span per fetched record (child of the producer's).
// Nil when t is off.
func (t *Tracing) KafkaHooks() []kgo.Hook {
	if t == nil {
		return nil
	}
	return kotel.NewKotel(kotel.WithTracer(t.kafka)).Hooks()
}

// Shutdown exports what is buffered (bounded by ctx) and stops.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t == nil {
		return nil
	}
	return t.provider.Shutdown(ctx)
}

// headOrLinked samples a root span that Head chose, or one of whose links
// is sampled (a writer's batch, when one of its records' traces is), and no
// other: a span with no parent that nobody chose (franz-go's publish span
// of an untraced purchase) is not a new trace.
type headOrLinked struct{}

func (headOrLinked) ShouldSample(p sdktrace.SamplingParameters) sdktrace.SamplingResult {
	if p.ParentContext != nil && p.ParentContext.Value(headKey{}) != nil { // Head said yes
		return sdktrace.SamplingResult{Decision: sdktrace.RecordAndSample}
	}
	for _, l := range p.Links {
		if l.SpanContext.IsSampled() {
			return sdktrace.SamplingResult{Decision: sdktrace.RecordAndSample}
		}
	}
	return sdktrace.SamplingResult{Decision: sdktrace.Drop}
}

func (headOrLinked) Description() string { return "HeadOrLinked" }

// Fail marks span as failed with err, when err is not nil.
func Fail(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
}
