package e2e

import (
	"compress/gzip"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// otlpReceiver is an OTLP/HTTP trace receiver on loopback: what the
// binary exports, decoded with the protocol's own types.
type otlpReceiver struct {
	URL   string
	mu    sync.Mutex
	spans []receivedSpan
}

type receivedSpan struct {
	service string
	*tracepb.Span
}

func startOTLPReceiver(t *testing.T) *otlpReceiver {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &otlpReceiver{URL: "http://" + ln.Addr().String()}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path != "/v1/traces" || req.Header.Get("Content-Type") != "application/x-protobuf" {
			http.Error(w, "unexpected "+req.URL.Path+" "+req.Header.Get("Content-Type"), http.StatusNotFound)
			return
		}
		var body io.Reader = req.Body
		if req.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(req.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			body = zr
		}
		b, _ := io.ReadAll(body)
		var in coltrace.ExportTraceServiceRequest
		if err := proto.Unmarshal(b, &in); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		for _, rs := range in.ResourceSpans {
			service := ""
			for _, a := range rs.GetResource().GetAttributes() {
				if a.Key == "service.name" {
					service = a.GetValue().GetStringValue()
				}
			}
			for _, ss := range rs.ScopeSpans {
				for _, s := range ss.Spans {
					r.spans = append(r.spans, receivedSpan{service, s})
				}
			}
		}
		r.mu.Unlock()
		out, _ := proto.Marshal(&coltrace.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.Write(out)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return r
}

func (r *otlpReceiver) received() []receivedSpan {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]receivedSpan(nil), r.spans...)
}

// TestTraceFromEdgeToWriter runs a cluster edge and a writer exporting
// OTLP/HTTP to a receiver of the test's own: a purchase sent with a sampled
// traceparent (the edge trusts loopback as its proxy) comes back as the
// edge's server span in that trace, with the decision, the claim and the
// produce under it, and the writer's batch that stored the order is linked
// to it. Purchases without a traceparent, at a ratio of 0, export nothing.
func TestTraceFromEdgeToWriter(t *testing.T) {
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "100") // the SDK's batch delay, ms (5 s by default)
	recv := startOTLPReceiver(t)
	port := freePort(t)
	ownRedis(t, port)
	common, _ := clusterArgs(t, fmt.Sprintf("127.0.0.1:%d", port))
	common = append(common, "-otlp-endpoint", recv.URL, "-trace-sample", "0")
	startWriter(t, common)
	edge := start(t, t.TempDir(), append(common, "-node-id", "1", "-trusted-proxies", "127.0.0.1")...)
	if code, _, b := call(t, "PUT", edge.Admin+"/api/v1/items/it", `{"name":"x","price_cents":1,"stock":10,"per_user_limit":1}`); code != 201 {
		t.Fatalf("put: %d %s", code, b)
	}
	for i := range 3 {
		if code, _, b := call(t, "POST", edge.Public+"/api/v1/items/it/purchase", fmt.Sprintf(`{"user_id":"quiet%d"}`, i)); code != 201 {
			t.Fatalf("untraced purchase: %d %s", code, b)
		}
	}
	const traceID, parentID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	if code, _, b := call(t, "POST", edge.Public+"/api/v1/items/it/purchase", `{"user_id":"traced"}`,
		"traceparent: 00-"+traceID+"-"+parentID+"-01"); code != 201 {
		t.Fatalf("traced purchase: %d %s", code, b)
	}

	var batch *receivedSpan
	deadline := time.Now().Add(20 * time.Second)
	for batch == nil {
		if time.Now().After(deadline) {
			t.Fatalf("no writer batch linked to the purchase's trace; received %s", names(recv.received()))
		}
		time.Sleep(100 * time.Millisecond)
		for _, s := range recv.received() {
			for _, l := range s.Links {
				if s.service == "flashsale-writer" && s.Name == "writer batch" && hex.EncodeToString(l.TraceId) == traceID {
					batch = &s
				}
			}
		}
	}
	byName := map[string]receivedSpan{}
	for _, s := range recv.received() {
		tid := hex.EncodeToString(s.TraceId)
		switch {
		case tid == traceID || string(s.TraceId) == string(batch.TraceId):
			byName[s.Name] = s
		case s.service == "flashsale-edge":
			t.Fatalf("the edge exported %q of an untraced purchase (ratio 0)", s.Name)
		}
	}
	srv, ok := byName["POST /api/v1/items/{id}/purchase"]
	if !ok || srv.service != "flashsale-edge" || hex.EncodeToString(srv.ParentSpanId) != parentID || srv.Kind != tracepb.Span_SPAN_KIND_SERVER {
		t.Fatalf("the edge's server span is not the child of the sent traceparent: %v", names(recv.received()))
	}
	for _, name := range []string{"admission", "purchase decision", "redis claim", "kafka produce", "flashsale.orders publish",
		"flashsale.orders receive", "ledger settle", "mysql insert", "kafka commit"} {
		if _, ok := byName[name]; !ok {
			t.Errorf("no span %q in the trace; have %s", name, names(recv.received()))
		}
	}
	if r := byName["flashsale.orders receive"]; r.service != "flashsale-writer" || string(r.ParentSpanId) != string(byName["flashsale.orders publish"].SpanId) {
		t.Errorf("the writer's receive span does not continue the edge's publish span")
	}
}

func names(spans []receivedSpan) string {
	var out []string
	for _, s := range spans {
		out = append(out, s.service+":"+s.Name+":"+hex.EncodeToString(s.TraceId)[:8])
	}
	return strings.Join(out, " ")
}
