//go:build !race

package loadgen

import (
	"runtime"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/valyala/fasthttp"
)

func TestRecordingDoesNotAllocate(t *testing.T) {
	out := make(chan secondTally, 4)
	hfree := make(chan *hdrhistogram.Histogram, 4)
	for range 4 {
		hfree <- newHistogram(2)
	}
	go func() {
		for t := range out {
			t.hist.Reset()
			hfree <- t.hist
		}
	}()
	r := newRecorder(out, hfree)
	body := []byte(`{"error":{"code":"sold_out","message":"item x is sold out"}}`)
	sec := 0
	n := testing.AllocsPerRun(10000, func() {
		sec++ // a new second each time: the hand-off is exercised too
		r.record(sec/100, sec%2 == 0, 1500*time.Microsecond, 409, body)
	})
	if n != 0 {
		t.Fatalf("recording allocates %v times", n)
	}
	if r.statuses[409] == 0 || r.codes[3] == 0 {
		t.Fatal("nothing counted")
	}
}

// staticWorkload sends GET / and observes nothing: no allocation of its own.
type staticWorkload struct{}

func (staticWorkload) Fill(_ int, req *fasthttp.Request)   { req.SetRequestURI("/") }
func (staticWorkload) Done(int, *fasthttp.Response, error) {}

// TestSendLoopDoesNotAllocate runs whole loads and counts the mallocs of
// the process (the in-process server's included): a run allocates a fixed
// set-up (connections, histograms), nothing per request.
func TestSendLoopDoesNotAllocate(t *testing.T) {
	target := testServer(t)
	for _, cfg := range []Config{
		{Target: target, Conns: 8, Requests: 20000},              // closed loop
		{Target: target, Conns: 8, Rate: 20000, Requests: 20000}, // open loop
	} {
		if _, err := Run(Config{Target: target, Conns: cfg.Conns, Requests: 2000}, staticWorkload{}); err != nil {
			t.Fatal(err) // warm the pools of fasthttp and the runtime
		}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		if _, err := Run(cfg, staticWorkload{}); err != nil {
			t.Fatal(err)
		}
		runtime.ReadMemStats(&after)
		perRequest := float64(after.Mallocs-before.Mallocs) / float64(cfg.Requests)
		if perRequest > 0.1 { // fixed set-up is ~600 per run; one per request would be 1.0
			t.Fatalf("rate %v: %.3f allocations per request (%d in all)", cfg.Rate, perRequest, after.Mallocs-before.Mallocs)
		}
		t.Logf("rate %v: %.4f allocations per request", cfg.Rate, perRequest)
	}
}
