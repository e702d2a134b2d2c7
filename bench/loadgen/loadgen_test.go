package loadgen

import (
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

func TestPacerSendsOnTime(t *testing.T) {
	// A fake clock that only moves when the pacer sleeps: every send must
	// happen at or after its intended time, and no later than one nap after.
	start := time.Date(2026, 11, 11, 12, 0, 0, 0, time.UTC)
	f := func(rate float64, total int, spike ...float64) {
		t.Helper()
		now := start
		p := pacer{start: start, rate: rate}
		if len(spike) == 2 { // a crowd first: spike[1] requests at spike[0]/s
			p.spikeRate, p.spikeN = spike[0], int(spike[1])
		}
		sent := 0
		got := p.dispatch(total, func() time.Time { return now }, func(d time.Duration) {
			if d <= 0 {
				d = time.Microsecond
			}
			now = now.Add(d)
		}, func(n int) bool {
			if n != sent {
				t.Fatalf("sent %d out of order (want %d)", n, sent)
			}
			due := p.intended(n)
			if now.Before(due) {
				t.Fatalf("rate %v: request %d sent %v early", rate, n, due.Sub(now))
			}
			if late := now.Sub(due); late > maxSleep {
				t.Fatalf("rate %v: request %d sent %v late", rate, n, late)
			}
			sent++
			return true
		})
		if got != total || sent != total {
			t.Fatalf("rate %v: sent %d of %d", rate, sent, total)
		}
		// The whole schedule took what it says, within one nap.
		want := p.intended(total - 1).Sub(start)
		if took := now.Sub(start); took < want || took > want+maxSleep {
			t.Fatalf("rate %v: %d requests took %v, want %v", rate, total, took, want)
		}
	}
	f(40000, 100000)
	f(1000, 3000)
	f(7, 20)
	f(1e6, 50000)
	f(1000, 3000, 10000, 5000) // more in the spike than in the run: all at the spike's rate
	f(1000, 8000, 20000, 5000)
	if got := (pacer{start: start, rate: 1000, spikeRate: 20000, spikeN: 5000}).intended(5000).Sub(start); got != 250*time.Millisecond {
		t.Fatalf("the first request after the spike is due at %v, want 250ms", got)
	}

	// Counted at any instant: due(t) is how many intended times are <= t.
	p := pacer{start: start, rate: 1000}
	for _, c := range []struct {
		at   time.Duration
		want int
	}{{-time.Second, 0}, {0, 1}, {999 * time.Microsecond, 1}, {time.Millisecond, 2}, {time.Second, 1001}} {
		if got := p.due(start.Add(c.at)); got != c.want {
			t.Fatalf("due at %v: %d, want %d", c.at, got, c.want)
		}
	}
}

func TestCodeIndex(t *testing.T) {
	f := func(body string, want string) {
		t.Helper()
		i := codeIndex([]byte(body))
		got := "unknown"
		if i < len(Codes) {
			got = Codes[i]
		}
		if got != want {
			t.Fatalf("%s: %s, want %s", body, got, want)
		}
	}
	f(`{"error":{"code":"sold_out","message":"x"}}`, "sold_out")
	f(`{"error":{"code":"rate_limited","message":"x"}}`, "rate_limited")
	f(`{"error":{"code":"nope"}}`, "unknown")
	f(`plain text`, "unknown")
	f(`{"code":"sold_out`, "unknown")
}

// testServer answers GET / with 200 and POST with a sold-out error.
// warmed counts the requests to /warm, and newConns the connections any
// request came on first.
var warmed, newConns atomic.Int64

func testServer(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		if ctx.ConnRequestNum() == 1 {
			newConns.Add(1)
		}
		if string(ctx.Path()) == "/warm" {
			warmed.Add(1)
			return
		}
		if ctx.IsPost() {
			ctx.SetStatusCode(409)
			ctx.SetBodyString(`{"error":{"code":"sold_out","message":"gone"}}`)
			return
		}
		ctx.SetBodyString("ok")
	}}
	go s.Serve(ln)
	t.Cleanup(func() { s.Shutdown() })
	return "http://" + ln.Addr().String()
}

type countingWorkload struct {
	posts        bool
	filled, seen atomic.Int64
	maxN         atomic.Int64
}

func (w *countingWorkload) Fill(n int, req *fasthttp.Request) {
	w.filled.Add(1)
	if w.posts && n%2 == 1 {
		req.Header.SetMethod("POST")
	}
	req.SetRequestURI("/?n=" + strconv.Itoa(n))
}

func (w *countingWorkload) Done(n int, resp *fasthttp.Response, err error) {
	w.seen.Add(1)
	for {
		m := w.maxN.Load()
		if int64(n) <= m || w.maxN.CompareAndSwap(m, int64(n)) {
			return
		}
	}
}

func TestRunOpenLoop(t *testing.T) {
	target := testServer(t)
	w := &countingWorkload{posts: true}
	res, err := Run(Config{Target: target, Conns: 8, Rate: 4000, Requests: 2000, Warmup: 100 * time.Millisecond}, w)
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent != 2000 || w.filled.Load() != 2000 || w.seen.Load() != 2000 || w.maxN.Load() != 1999 {
		t.Fatalf("sent %d, filled %d, seen %d, max n %d", res.Sent, w.filled.Load(), w.seen.Load(), w.maxN.Load())
	}
	// The first 100 ms (400 requests) are warm-up: sent, not recorded.
	if res.Requests < 1500 || res.Requests > 1601 || res.Latency.TotalCount() != res.Requests {
		t.Fatalf("recorded %d (histogram %d), want ~1600", res.Requests, res.Latency.TotalCount())
	}
	if res.Statuses[200]+res.Statuses[409] != res.Requests || res.Codes["sold_out"] != res.Statuses[409] || res.Errors() != 0 ||
		res.Admitted.TotalCount() != res.Requests || res.Refused() != 0 {
		t.Fatalf("statuses %v codes %v", res.Statuses, res.Codes)
	}
	if res.Lost.TotalCount() != res.Statuses[409] || res.Won.TotalCount() != res.Statuses[201] || res.Lost.TotalCount() == 0 {
		t.Fatalf("losers %d, winners %d; statuses %v", res.Lost.TotalCount(), res.Won.TotalCount(), res.Statuses)
	}
	var inTimeline int64
	for _, s := range res.Timeline {
		inTimeline += s.Requests
	}
	if inTimeline != res.Requests || res.Throughput <= 0 || res.GeneratorCPU <= 0 {
		t.Fatalf("timeline %d of %d, throughput %v, cpu %v", inTimeline, res.Requests, res.Throughput, res.GeneratorCPU)
	}
}

// WarmPath opens every connection before the run, on a request of its own
// that is neither sent by the workload nor recorded.
func TestWarmConnections(t *testing.T) {
	target := testServer(t)
	warmed.Store(0)
	newConns.Store(0)
	w := &countingWorkload{}
	res, err := Run(Config{Target: target, Conns: 8, Rate: 2000, Requests: 200, WarmPath: "/warm"}, w)
	if err != nil {
		t.Fatal(err)
	}
	// Eight connections in all: the run's requests went on the warm ones.
	if warmed.Load() != 8 || newConns.Load() != 8 || w.filled.Load() != 200 || res.Requests != 200 {
		t.Fatalf("warmed %d; %d connections in all; workload %d, recorded %d", warmed.Load(), newConns.Load(), w.filled.Load(), res.Requests)
	}
}

func TestRunClosedLoopAndFailures(t *testing.T) {
	target := testServer(t)
	w := &countingWorkload{}
	res, err := Run(Config{Target: target, Conns: 4, Requests: 500}, w)
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent != 500 || res.Requests != 500 || res.Statuses[200] != 500 {
		t.Fatalf("closed loop: sent %d recorded %d %v", res.Sent, res.Requests, res.Statuses)
	}
	// Nobody listening: every request is a transport failure, counted.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := "http://" + ln.Addr().String()
	ln.Close()
	res, err = Run(Config{Target: dead, Conns: 2, Requests: 20, Timeout: time.Second}, &countingWorkload{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Failures != 20 || res.Errors() != 20 || res.Admitted.TotalCount() != 0 || res.Refused() != 1 {
		t.Fatalf("failures %d errors %d", res.Failures, res.Errors())
	}
	if _, err := Run(Config{Target: "not a url", Conns: 1, Requests: 1}, w); err == nil {
		t.Fatal("bad target accepted")
	}
}
