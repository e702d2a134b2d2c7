package node

import (
	"context"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/flashsale/flashsale/engine"
	"github.com/flashsale/flashsale/internal/tracing"
)

// A trace crosses Kafka: a sampled purchase's claim, produce and publish
// spans are in its trace on the edge, the writer's receive span continues
// it from the record's headers, and the batch that stored it (settle,
// insert, commit) is linked to it. An unsampled purchase leaves nothing,
// and neither does the batch that stored it alone.
func TestTraceCrossesKafka(t *testing.T) {
	c := newCluster(t)
	exp := tracetest.NewInMemoryExporter()
	tr := tracing.New(tracing.Options{Service: "test", Ratio: 0}, sdktrace.WithSyncer(exp))
	c.cfg.tracer = tr
	e := c.edge(1, 10)
	c.writer(0)

	remote := func(id string, sampled bool) context.Context {
		tid, _ := trace.TraceIDFromHex(id)
		sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
		sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, Remote: true})
		if sampled {
			sc = sc.WithTraceFlags(trace.FlagsSampled)
		}
		return trace.ContextWithRemoteSpanContext(context.Background(), sc)
	}
	const traced, untraced = "4bf92f3577b34da6a3ce929d0e0e4736", "5bf92f3577b34da6a3ce929d0e0e4737"
	purchase := func(ctx context.Context, user string) {
		if _, _, err := e.engine.Purchase(ctx, engine.PurchaseRequest{ItemID: "it", UserID: user, Quantity: 1}); err != nil {
			t.Fatal(err)
		}
	}
	purchase(remote(untraced, false), "u0")
	c.waitRows(1)
	purchase(remote(traced, true), "u1")
	c.waitRows(2)

	var batch sdktrace.ReadOnlySpan
	waitFor(t, "the writer's batch span linked to the traced purchase", func() bool {
		for _, s := range exp.GetSpans().Snapshots() {
			for _, l := range s.Links() {
				if s.Name() == "writer batch" && l.SpanContext.TraceID().String() == traced {
					batch = s
				}
			}
		}
		return batch != nil
	})
	byName := map[string][]sdktrace.ReadOnlySpan{}
	for _, s := range exp.GetSpans().Snapshots() {
		switch tid := s.SpanContext().TraceID().String(); {
		case tid == untraced:
			t.Fatalf("span %s of an unsampled purchase", s.Name())
		case tid == traced || tid == batch.SpanContext().TraceID().String():
			byName[s.Name()] = append(byName[s.Name()], s)
		case s.Name() == "writer batch":
			t.Fatalf("a batch span of an unsampled purchase alone (ratio 0): %v", s.Links())
		}
	}
	one := func(name string) sdktrace.ReadOnlySpan {
		t.Helper()
		if len(byName[name]) != 1 {
			t.Fatalf("%d spans %q; have %v", len(byName[name]), name, byName)
		}
		return byName[name][0]
	}
	claim, produce, publish, receive := one("redis claim"), one("kafka produce"), one("flashsale.orders publish"), one("flashsale.orders receive")
	for _, s := range []sdktrace.ReadOnlySpan{claim, produce, publish, receive} {
		if s.SpanContext().TraceID().String() != traced {
			t.Fatalf("%s is not in the purchase's trace", s.Name())
		}
	}
	if publish.Parent().SpanID() != produce.SpanContext().SpanID() || receive.Parent().SpanID() != publish.SpanContext().SpanID() ||
		!receive.Parent().IsRemote() {
		t.Fatal("the writer's receive span must continue the edge's publish span from the record's headers")
	}
	if batch.Links()[0].SpanContext.SpanID() != receive.SpanContext().SpanID() {
		t.Fatal("the batch must be linked to the record's receive span")
	}
	for _, name := range []string{"ledger settle", "mysql insert", "kafka commit"} {
		if s := one(name); s.Parent().SpanID() != batch.SpanContext().SpanID() {
			t.Fatalf("%s is not a child of the batch", name)
		}
	}
	if !batch.EndTime().After(one("mysql insert").EndTime().Add(-time.Nanosecond)) {
		t.Fatal("the batch ends after its insert")
	}
}
