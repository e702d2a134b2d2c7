package tracing

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/flashsale/flashsale/engine"
)

// The engine does no I/O and knows nothing of tracing: its dependencies
// get their spans here, as the circuit breakers wrap them, so that a
// purchase's trace shows each Redis script and the store's commit under the
// decision. A call whose context carries no sampled span (most of them at
// a low ratio) goes straight through, creating nothing.

// Span runs f in a child span of ctx's span named name, when ctx's span is
// sampled; otherwise it just runs f. A nil t runs f.
func (t *Tracing) Span(ctx context.Context, name string, f func(context.Context) error, attrs ...attribute.KeyValue) error {
	if t == nil || !trace.SpanContextFromContext(ctx).IsSampled() {
		return f(ctx)
	}
	ctx, span := t.tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
	err := f(ctx)
	Fail(span, err)
	span.End()
	return err
}

// Ledger is l with a span around each call a purchase makes (claim,
// confirm, refuse, lease, unclaim). A nil t returns l.
func (t *Tracing) Ledger(l engine.Ledger) engine.Ledger {
	if t == nil {
		return l
	}
	return &ledger{Ledger: l, t: t}
}

type ledger struct {
	engine.Ledger
	t *Tracing
}

var redisSystem = attribute.String("db.system.name", "redis")

func (l *ledger) Claim(ctx context.Context, o *engine.Order, limit int64) (first *engine.Order, err error) {
	err = l.t.Span(ctx, "redis claim", func(ctx context.Context) error {
		first, err = l.Ledger.Claim(ctx, o, limit)
		return err
	}, redisSystem, attribute.Int64("flashsale.order_id", int64(o.ID)))
	return first, err
}

func (l *ledger) Confirm(ctx context.Context, o *engine.Order) error {
	return l.t.Span(ctx, "redis confirm", func(ctx context.Context) error { return l.Ledger.Confirm(ctx, o) }, redisSystem)
}

func (l *ledger) Unclaim(ctx context.Context, o *engine.Order) error {
	return l.t.Span(ctx, "redis unclaim", func(ctx context.Context) error { return l.Ledger.Unclaim(ctx, o) }, redisSystem)
}

func (l *ledger) Refuse(ctx context.Context, item, user, requestID string) (first *engine.Order, err error) {
	err = l.t.Span(ctx, "redis refuse", func(ctx context.Context) error {
		first, err = l.Ledger.Refuse(ctx, item, user, requestID)
		return err
	}, redisSystem)
	return first, err
}

func (l *ledger) Lease(ctx context.Context, item string, want int64) (granted, remaining int64, err error) {
	err = l.t.Span(ctx, "redis lease", func(ctx context.Context) error {
		granted, remaining, err = l.Ledger.Lease(ctx, item, want)
		return err
	}, redisSystem, attribute.Int64("flashsale.want", want))
	return granted, remaining, err
}

// Sink is s with a span named name around each Append (the embedded
// store's commit; in a cluster the kotel hooks trace the produce itself).
// A nil t returns s.
func (t *Tracing) Sink(name string, s engine.OrderSink) engine.OrderSink {
	if t == nil {
		return s
	}
	return &sink{inner: s, name: name, t: t}
}

type sink struct {
	inner engine.OrderSink
	name  string
	t     *Tracing
}

var _ engine.StandingSink = (*sink)(nil)

func (s *sink) Append(ctx context.Context, o *engine.Order) error {
	return s.t.Span(ctx, s.name, func(ctx context.Context) error { return s.inner.Append(ctx, o) },
		attribute.Int64("flashsale.order_id", int64(o.ID)))
}

func (s *sink) Stands(ctx context.Context, o *engine.Order) error {
	return engine.Stands(ctx, s.inner, o)
}
