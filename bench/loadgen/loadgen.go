// Package loadgen is flashsale's load generator: open-loop load at a fixed
// arrival rate over a fixed pool of keep-alive connections (or closed-loop
// at full speed), latency measured from each request's intended send time
// into HDR histograms, and the generator's own CPU use, so a reader can tell
// when the generator, not the server, is the limit. It never judges the
// answers: a scenario's verdict does.
//
// The send loop reuses its request, response and connection: a Workload
// fills the request in place and observes the response, and must not
// allocate either.
package loadgen

import (
	"fmt"
	"io"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/valyala/fasthttp"
)

// Workload makes the requests of a run and observes their answers. Both
// methods are called from many workers at once, for distinct n.
type Workload interface {
	// Fill writes request n into req, which was reset. Set the method, the
	// path (req.SetRequestURI("/api/...")), headers and body.
	Fill(n int, req *fasthttp.Request)
	// Done observes the answer to request n; err is a transport failure.
	// resp is reused after Done returns.
	Done(n int, resp *fasthttp.Response, err error)
}

// Config is one run.
type Config struct {
	Target   string        // base URL, e.g. http://127.0.0.1:8080; several, comma-separated, spread the connections
	Conns    int           // keep-alive connections, one per worker
	Rate     float64       // requests per second; 0 runs closed-loop, as fast as answers come
	Requests int           // requests to send; 0: Rate × Duration, or closed-loop until Duration
	Duration time.Duration // length of the run, warm-up included
	Warmup   time.Duration // requests due in the first Warmup are sent but not recorded
	Timeout  time.Duration // per request; default 5 s
	Progress io.Writer     // a line per second, when set
	// SpikeRate and SpikeRequests, when set (open loop), send the first
	// SpikeRequests at SpikeRate before the rest at Rate: a crowd
	// arriving as a sale opens.
	SpikeRate     float64
	SpikeRequests int
	// StampStart sends each request with X-Request-Start: its intended
	// send time, in microseconds, as a proxy stamps the time a request
	// reached it (the server's -max-queue-time reads it from trusted
	// proxies).
	StampStart bool
	// WarmPath, when set, is fetched once on every connection before the
	// run starts (not recorded): the connections are open when the load
	// begins, as a proxy's keep-alive connections are, instead of being
	// dialled by the first requests of a rush.
	WarmPath string
}

// Result is what a run measured, warm-up excluded.
type Result struct {
	Target     float64 // the asked rate; 0 for closed loop
	Sent       int     // requests sent, warm-up included
	Requests   int64   // answers recorded (failures included)
	Elapsed    time.Duration
	Throughput float64 // recorded answers per second
	Latency    *hdrhistogram.Histogram
	// Admitted is the latency of the answers that were not refusals (429,
	// 503) or transport failures: what the server's admitted requests got.
	Admitted *hdrhistogram.Histogram
	// Spike is the latency of every answer to a request due in the spike
	// (Config.SpikeRequests); empty without one.
	Spike *hdrhistogram.Histogram
	// Won and Lost are the latency of the 201s (winners: durable first)
	// and of the 409s (losers: sold out or over the limit, from memory).
	Won, Lost    *hdrhistogram.Histogram
	Statuses     map[int]int64
	Codes        map[string]int64
	Failures     int64 // transport errors and timeouts
	Timeline     []Second
	GeneratorCPU float64 // cores used by this process during the run
}

// Second is one second of the run, by intended send time.
type Second struct {
	Sec      int
	Requests int64
	Errors   int64 // failures, 5xx and 429
	P50, P99 time.Duration
	Max      time.Duration
	// Partial: the second was cut by the warm-up or by the end of the run,
	// so its count is not a rate.
	Partial bool
}

// Errors counts answers that mean the server did not cope: transport
// failures, 5xx and 429.
func (r *Result) Errors() int64 {
	n := r.Failures + r.Statuses[429]
	for s, c := range r.Statuses {
		if s >= 500 {
			n += c
		}
	}
	return n
}

// Refused is the share of answers that were refusals or failures.
func (r *Result) Refused() float64 {
	if r.Requests == 0 {
		return 0
	}
	return float64(r.Errors()) / float64(r.Requests)
}

// AdmittedQuantile returns a latency quantile (0-100) of the admitted answers.
func (r *Result) AdmittedQuantile(q float64) time.Duration {
	return time.Duration(r.Admitted.ValueAtQuantile(q)) * time.Microsecond
}

// Quantile returns a latency quantile (0-100) of the run.
func (r *Result) Quantile(q float64) time.Duration {
	return time.Duration(r.Latency.ValueAtQuantile(q)) * time.Microsecond
}

// Run sends the load and returns what it measured.
func Run(cfg Config, w Workload) (*Result, error) {
	var hosts []string
	for _, t := range strings.Split(cfg.Target, ",") {
		u, err := url.Parse(strings.TrimSpace(t))
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("loadgen: target %q is not a URL like http://127.0.0.1:8080", t)
		}
		hosts = append(hosts, u.Host)
	}
	if cfg.Conns <= 0 {
		return nil, fmt.Errorf("loadgen: need at least one connection")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	total := cfg.Requests
	if total == 0 && cfg.Rate > 0 {
		total = int(cfg.Rate * cfg.Duration.Seconds())
	}
	if total == 0 && cfg.Duration <= 0 {
		return nil, fmt.Errorf("loadgen: give Requests, or a Duration")
	}

	g := &run{cfg: cfg, w: w, total: total}
	g.out = make(chan secondTally, cfg.Conns*4)
	free := make(chan *hdrhistogram.Histogram, cfg.Conns*3)
	for range cap(free) {
		free <- newHistogram(2)
	}
	g.free = free
	g.timeline = map[int]*secondAgg{}
	collected := make(chan struct{})
	go g.collect(collected)

	clients := make([]*fasthttp.HostClient, cfg.Conns)
	for i := range clients {
		clients[i] = g.client(hosts[i%len(hosts)]) // connections spread over the targets
	}
	if cfg.WarmPath != "" {
		warm(clients, cfg.WarmPath)
	}
	var ru0 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	g.start = time.Now().Add(10 * time.Millisecond) // let the workers start first
	g.pace = pacer{start: g.start, rate: cfg.Rate}
	if cfg.SpikeRequests > 0 && cfg.SpikeRate > 0 {
		g.pace.spikeRate, g.pace.spikeN = cfg.SpikeRate, cfg.SpikeRequests
	}
	if cfg.Duration > 0 {
		g.deadline = g.start.Add(cfg.Duration)
	}
	g.measureFrom = g.start.Add(cfg.Warmup)

	recs := make([]*recorder, cfg.Conns)
	var wg sync.WaitGroup
	work := make(chan int, cfg.Conns)
	for i := range recs {
		recs[i] = newRecorder(g.out, free)
		wg.Go(func() { g.worker(clients[i], recs[i], work) })
	}
	stopProgress := g.progress()
	if cfg.Rate > 0 {
		for time.Now().Before(g.start) {
			time.Sleep(time.Millisecond)
		}
		g.pace.dispatch(total, time.Now, time.Sleep, func(n int) bool {
			if !g.deadline.IsZero() && time.Now().After(g.deadline.Add(cfg.Timeout)) {
				return false // far behind: the server is not keeping up; stop sending
			}
			work <- n
			g.sent.Add(1)
			return true
		})
	}
	close(work)
	wg.Wait()
	end := time.Now()
	stopProgress()
	var ru1 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	close(g.out)
	<-collected

	res := &Result{Target: cfg.Rate, Sent: int(g.sent.Load()), Latency: newHistogram(3), Admitted: newHistogram(3),
		Spike: newHistogram(3), Won: newHistogram(3), Lost: newHistogram(3), Statuses: map[int]int64{}, Codes: map[string]int64{}}
	for _, r := range recs {
		res.Latency.Merge(r.hist)
		res.Admitted.Merge(r.admitted)
		res.Spike.Merge(r.spike)
		res.Won.Merge(r.won)
		res.Lost.Merge(r.lost)
		res.Requests += r.recorded
		res.Failures += r.failures
		for s, c := range r.statuses {
			if c > 0 {
				res.Statuses[s] += c
			}
		}
		for i, c := range r.codes {
			if c > 0 {
				name := "unknown"
				if i < len(Codes) {
					name = Codes[i]
				}
				res.Codes[name] += c
			}
		}
	}
	res.Elapsed = end.Sub(g.measureFrom)
	if cfg.Rate > 0 {
		// Open loop: the measured period is the schedule's, not the drain's.
		res.Elapsed = min(res.Elapsed, g.pace.intended(total).Sub(g.measureFrom))
	}
	if res.Elapsed > 0 {
		res.Throughput = float64(res.Requests) / res.Elapsed.Seconds()
	}
	wall := end.Sub(g.start).Seconds()
	cpu := time.Duration(ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano()).Seconds()
	if wall > 0 {
		res.GeneratorCPU = cpu / wall
	}
	res.Timeline = g.seconds()
	last := end
	if cfg.Rate > 0 {
		last = g.pace.intended(total)
	}
	for i := range res.Timeline {
		from := g.start.Add(time.Duration(res.Timeline[i].Sec) * time.Second)
		res.Timeline[i].Partial = from.Before(g.measureFrom) || from.Add(time.Second).After(last)
	}
	return res, nil
}

type run struct {
	cfg                Config
	w                  Workload
	total              int
	start, measureFrom time.Time
	deadline           time.Time
	pace               pacer
	next               atomic.Int64 // closed loop: next request number
	sent, done, errs   atomic.Int64
	out                chan secondTally
	free               chan *hdrhistogram.Histogram
	mu                 sync.Mutex
	timeline           map[int]*secondAgg
}

type secondAgg struct {
	hist      *hdrhistogram.Histogram
	n, errors int64
}

// client is one connection to host.
func (g *run) client(host string) *fasthttp.HostClient {
	return &fasthttp.HostClient{
		Addr:                      host,
		MaxConns:                  1,
		ReadTimeout:               g.cfg.Timeout,
		WriteTimeout:              g.cfg.Timeout,
		MaxIdleConnDuration:       time.Minute,
		MaxIdemponentCallAttempts: 1, // never resend: counts must be what was sent
		NoDefaultUserAgentHeader:  true,
	}
}

// warm fetches path once on every connection, 64 at a time, so that each
// is open before the run.
func warm(clients []*fasthttp.HostClient, path string) {
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	for _, c := range clients {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			req.SetRequestURI("http://" + c.Addr + path)
			c.Do(req, resp) // a failure shows in the run itself
		})
	}
	wg.Wait()
}

// worker owns one connection, request and response for the whole run.
func (g *run) worker(c *fasthttp.HostClient, rec *recorder, work <-chan int) {
	host := c.Addr
	defer c.CloseIdleConnections()
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	stamp := make([]byte, 0, 32)
	for {
		n, intended, ok := g.take(work)
		if !ok {
			break
		}
		req.Reset()
		g.w.Fill(n, req)
		req.Header.SetHost(host)
		if g.cfg.StampStart {
			stamp = strconv.AppendInt(append(stamp[:0], "t="...), intended.UnixMicro(), 10)
			req.Header.SetBytesV("X-Request-Start", stamp)
		}
		err := c.Do(req, resp)
		end := time.Now()
		status := 0
		if err == nil {
			status = resp.StatusCode()
		} else {
			g.errs.Add(1)
		}
		if !intended.Before(g.measureFrom) {
			rec.record(int(intended.Sub(g.start)/time.Second), n < g.pace.spikeN, end.Sub(intended), status, resp.Body())
		}
		g.done.Add(1)
		g.w.Done(n, resp, err)
		resp.Reset()
	}
	rec.flush()
}

// take returns the next request: from the dispatcher in open loop, from a
// counter in closed loop (where its intended time is now).
func (g *run) take(work <-chan int) (int, time.Time, bool) {
	if g.cfg.Rate > 0 {
		n, ok := <-work
		return n, g.pace.intended(n), ok
	}
	now := time.Now()
	if now.Before(g.start) {
		time.Sleep(g.start.Sub(now))
		now = time.Now()
	}
	n := int(g.next.Add(1) - 1)
	if (g.total > 0 && n >= g.total) || (!g.deadline.IsZero() && now.After(g.deadline)) {
		return 0, now, false
	}
	g.sent.Add(1)
	return n, now, true
}

// collect merges the workers' finished seconds into the timeline.
func (g *run) collect(done chan<- struct{}) {
	defer close(done)
	for t := range g.out {
		g.mu.Lock()
		agg := g.timeline[t.sec]
		if agg == nil {
			agg = &secondAgg{hist: newHistogram(2)}
			g.timeline[t.sec] = agg
		}
		agg.hist.Merge(t.hist)
		agg.n += t.n
		agg.errors += t.errors
		g.mu.Unlock()
		t.hist.Reset()
		g.free <- t.hist
	}
}

func (g *run) seconds() []Second {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]Second, 0, len(g.timeline))
	for sec, agg := range g.timeline {
		out = append(out, Second{Sec: sec, Requests: agg.n, Errors: agg.errors,
			P50: time.Duration(agg.hist.ValueAtQuantile(50)) * time.Microsecond,
			P99: time.Duration(agg.hist.ValueAtQuantile(99)) * time.Microsecond,
			Max: time.Duration(agg.hist.Max()) * time.Microsecond})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Sec < out[j].Sec })
	return out
}

// progress prints a line per second until the returned func is called.
func (g *run) progress() func() {
	if g.cfg.Progress == nil {
		return func() {}
	}
	stop := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		var lastDone, lastErrs int64
		for {
			select {
			case <-stop:
				return
			case now := <-t.C:
				done, errs := g.done.Load(), g.errs.Load()
				fmt.Fprintf(g.cfg.Progress, "  %5.1fs  sent %-9d answered %-9d %7d/s  transport errors %d\n",
					now.Sub(g.start).Seconds(), g.sent.Load(), done, done-lastDone, errs-lastErrs)
				lastDone, lastErrs = done, errs
			}
		}
	}()
	return func() { close(stop); <-finished }
}
