package server

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"

	"github.com/flashsale/flashsale/engine"
	"github.com/flashsale/flashsale/engine/enginetest"
	"github.com/flashsale/flashsale/internal/tracing"
)

// BenchmarkTracing is what tracing costs a purchase through the whole
// front (HTTP parsing, admission, the engine, the answer), off, at 1% and
// at 100% sampling, exporting OTLP/HTTP in batches to a receiver that
// discards; the order sink discards too, so that the cost is not hidden
// behind an fsync. Compare the sub-benchmarks of one run (tuning.md).
func BenchmarkTracing(b *testing.B) {
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	defer recv.Close()
	for _, path := range []string{"sold_out", "won"} {
		for _, m := range []struct {
			name  string
			ratio float64
		}{{"off", -1}, {"1pct", 0.01}, {"100pct", 1}} {
			b.Run(path+"/"+m.name, func(b *testing.B) {
				var tr *tracing.Tracing
				if m.ratio >= 0 {
					var err error
					if tr, err = tracing.Start(tracing.Options{Endpoint: recv.URL, Service: "bench", Ratio: m.ratio}); err != nil {
						b.Fatal(err)
					}
					defer tr.Shutdown(context.Background())
				}
				benchPurchases(b, tr, path == "won")
			})
		}
	}
}

func benchPurchases(b *testing.B, tr *tracing.Tracing, win bool) {
	eng, err := engine.New(engine.Options{Sink: tr.Sink("store commit", enginetest.Discard{}), Catalog: &enginetest.Catalog{}})
	if err != nil {
		b.Fatal(err)
	}
	defer eng.Close()
	stock := int64(0)
	if win {
		stock = engine.MaxStock
	}
	if _, _, err := eng.PutItem(context.Background(), engine.Item{ID: "it", Name: "x", Stock: stock, PerUserLimit: 1}); err != nil {
		b.Fatal(err)
	}
	srv, err := New(Options{}, eng, nil, Extras{Tracing: tr}, nil, prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	pubL, admL := fasthttputil.NewInmemoryListener(), fasthttputil.NewInmemoryListener()
	go srv.Serve(pubL, admL)
	defer srv.Shutdown(context.Background())
	client := &fasthttp.HostClient{Addr: "bench", Dial: func(string) (net.Conn, error) { return pubL.Dial() }, MaxConns: 256}
	want := fasthttp.StatusConflict
	if win {
		want = fasthttp.StatusCreated
	}
	var next atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		req.Header.SetMethod("POST")
		req.SetRequestURI("http://bench/api/v1/items/it/purchase")
		req.Header.SetContentType("application/json")
		body := make([]byte, 0, 64)
		for pb.Next() {
			body = append(strconv.AppendInt(append(body[:0], `{"user_id":"u`...), next.Add(1), 10), `"}`...)
			req.SetBody(body)
			if err := client.Do(req, resp); err != nil || resp.StatusCode() != want {
				b.Fatalf("%v %d %s", err, resp.StatusCode(), resp.Body())
			}
		}
	})
}
