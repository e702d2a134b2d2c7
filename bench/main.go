// Command bench is flashsale's load generator. It runs a scenario against a
// server (or one it starts with -spawn), with open-loop load at a fixed
// arrival rate, latency from the intended send time, and a verdict on the
// sale's correctness; -ceiling measures a bare fasthttp handler with the
// same settings so that throughput can be quoted as a ratio. It never
// touches a server's stores: it creates its items through the admin API and
// reads everything back through the public one.
//
//	go run ./bench -spawn bin/flashsale -scenario flash -ceiling
//	go run ./bench -target http://127.0.0.1:8080 -admin http://127.0.0.1:6060 -scenario ramp
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"time"

	"github.com/flashsale/flashsale/bench/loadgen"
	"github.com/flashsale/flashsale/bench/report"
	"github.com/flashsale/flashsale/bench/scenario"
	"github.com/flashsale/flashsale/bench/spawn"
)

var (
	scenarioName = flag.String("scenario", "flash", "flash, spike, soldout, browse, mixed or ramp")
	target       = flag.String("target", "http://127.0.0.1:8080", "base URL of the public listener")
	admin        = flag.String("admin", "http://127.0.0.1:6060", "base URL of the admin listener (to create items)")
	adminToken   = flag.String("admin-token", "", "bearer token for the admin listener")
	spawnBinary  = flag.String("spawn", "", "start this flashsale binary on a fresh data directory and loopback ports for the run (overrides -target and -admin)")
	spawnNodes   = flag.Int("spawn-nodes", 1, "with -spawn and -redis: start this many cluster nodes and spread the connections over them")
	redisAddr    = flag.String("redis", "", "with -spawn: run the spawned nodes in cluster mode on this Redis (a fresh key prefix per run); needs -kafka and -mysql, and one writer is spawned too")
	kafka        = flag.String("kafka", "", "with -spawn and -redis: the cluster's Kafka brokers (tools/devbroker on one machine)")
	mysqlDSN     = flag.String("mysql", "", "with -spawn and -redis: the cluster's order database")
	ceiling      = flag.Bool("ceiling", false, "also measure a bare fasthttp handler (tools/bare, built with go build) closed-loop with the same connections, and print ratios to it")
	rounds       = flag.Int("rounds", 1, "with -ceiling: alternate this many rounds of the bare handler and the scenario (flash, mixed, browse or spike), each round's ratio its own, and print the median: a machine whose speed drifts moves both sides of a round alike")
	rate         = flag.Float64("rate", 40000, "arrival rate, requests per second; 0 runs closed-loop, as fast as answers come")
	conns        = flag.Int("conns", 64, "keep-alive connections (one per worker)")
	duration     = flag.Duration("duration", 10*time.Second, "length of browse runs, of closed-loop runs, and of the ceiling")
	warmup       = flag.Duration("warmup", time.Second, "requests due in the first part of a run are sent but not recorded (at most a tenth of the run)")
	timeout      = flag.Duration("timeout", 5*time.Second, "per-request timeout")
	users        = flag.Int("users", 20000, "distinct shoppers in a flash sale")
	stock        = flag.Int64("stock", 1000, "units of the item on sale")
	retryPct     = flag.Int("retry-pct", 5, "percent of shoppers who send their purchase again (same request id) after everyone's first try")
	doublePct    = flag.Int("double-pct", 5, "percent of shoppers who send a second request id at the same time")
	readPct      = flag.Int("read-pct", 50, "percent of requests that read the item, in mixed and ramp")
	rampStart    = flag.Float64("ramp-start", 10000, "first rate of a ramp")
	rampStep     = flag.Float64("ramp-step", 10000, "rate added at each step of a ramp")
	rampMax      = flag.Float64("ramp-max", 200000, "last rate a ramp tries")
	rampStepDur  = flag.Duration("ramp-step-duration", 5*time.Second, "length of each ramp step")
	p99Budget    = flag.Duration("p99-budget", 5*time.Millisecond, "a ramp step holds when its P99 is within this and it has no errors")
	outDir       = flag.String("out", "bench-results", "directory for the JSON and PNG output")
	quiet        = flag.Bool("quiet", false, "no progress lines")
	cpuProfile   = flag.String("cpuprofile", "", "write the generator's own CPU profile to this file")
	spikeRate    = flag.Float64("spike-rate", 160000, "spike: the crowd's arrival rate as the sale opens, requests per second (several times what the server serves); then -rate")
	spikeDur     = flag.Duration("spike-duration", time.Second, "spike: how long the crowd arrives at -spike-rate")
	stampStart   = flag.Bool("stamp-start", false, "send X-Request-Start with each request's intended send time, as a proxy stamps when a request reached it (the server's -max-queue-time, with -trusted-proxies 127.0.0.1); on by default in spike")
	spawnArgs    = flag.String("spawn-args", "", "with -spawn: more flags for the spawned nodes, space separated (e.g. \"-max-queue-time 3ms -trusted-proxies 127.0.0.1\")")
)

func main() {
	log.SetFlags(0)
	flag.Parse()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			log.Fatal(err)
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	var admins []string // the spawned nodes'
	if *spawnBinary != "" {
		dir, err := os.MkdirTemp("", "flashsale-bench")
		if err != nil {
			log.Fatal(err)
		}
		defer os.RemoveAll(dir)
		var publics []string
		prefix := fmt.Sprintf("bench%d", time.Now().UnixNano()/1000)
		var cluster []string
		if *redisAddr != "" {
			cluster = []string{"-redis", *redisAddr, "-redis-prefix", prefix, "-kafka", *kafka, "-mysql", *mysqlDSN}
			w, err := spawn.StartWriter(*spawnBinary, nil, append([]string{"-admin-token", *adminToken}, cluster...)...)
			if err != nil {
				log.Fatal(err)
			}
			defer w.Stop()
		}
		for i := 0; i < max(1, *spawnNodes); i++ {
			args := append(append([]string{"-admin-token", *adminToken}, cluster...), strings.Fields(*spawnArgs)...)
			p, err := spawn.Start(*spawnBinary, filepath.Join(dir, fmt.Sprint("node", i)), nil, args...)
			if err != nil {
				log.Fatal(err)
			}
			defer p.Stop()
			publics = append(publics, p.Public)
			admins = append(admins, p.Admin)
			if i == 0 {
				*admin = p.Admin
			}
			log.Printf("spawned %s: public %s, admin %s", *spawnBinary, p.Public, p.Admin)
			if *redisAddr == "" {
				break // standalone nodes do not share stock: one
			}
		}
		*target = strings.Join(publics, ",")
	}
	b := &bench{target: *target, admin: *admin, token: *adminToken}
	if !*quiet {
		b.progress = os.Stderr
	}
	runs, ratios, err := b.measure(*scenarioName, *ceiling, *rounds)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println()
	report.Table(os.Stdout, runs)
	if len(ratios) > 1 {
		fmt.Printf("\n%s against the bare handler, round by round: %s; median %.2f\n",
			*scenarioName, strings.Join(ratioTexts(ratios), ", "), median(ratios))
	}
	printDecisions(os.Stdout, admins)
	if err := b.write(runs); err != nil {
		log.Fatal(err)
	}
	for _, r := range runs {
		if r.Verdict != nil && !r.Verdict.Pass {
			os.Exit(1)
		}
	}
}

type bench struct {
	target, admin, token string
	progress             io.Writer
	bare                 string // the bare handler's address, with -ceiling
	rampHeld             float64
}

// measure runs the scenario, and with withCeiling the bare handler before
// it, rounds times in turn (more than one round only for a scenario of one
// run). It returns every run in order and, with the ceiling, each round's
// ratio of the scenario's throughput to the bare handler's.
func (b *bench) measure(name string, withCeiling bool, rounds int) (runs []report.Run, ratios []float64, err error) {
	switch {
	case rounds < 1:
		return nil, nil, fmt.Errorf("-rounds %d: at least 1", rounds)
	case rounds > 1 && !withCeiling:
		return nil, nil, errors.New("-rounds needs -ceiling: a round is the bare handler, then the scenario")
	case rounds > 1 && (name == "ramp" || name == "soldout"):
		return nil, nil, fmt.Errorf("-rounds: the %s scenario compares within itself; use flash, mixed, browse or spike", name)
	}
	if withCeiling {
		addr, stop, err := startBare()
		if err != nil {
			return nil, nil, err
		}
		defer stop()
		b.bare = addr
	}
	for r := 1; r <= rounds; r++ {
		var ceil report.Run
		if withCeiling {
			if ceil, err = b.ceiling(); err != nil {
				return nil, nil, err
			}
			if ceil.Result.Throughput <= 0 {
				return nil, nil, fmt.Errorf("the bare handler answered nothing in %v (errors: %d)", *duration, ceil.Result.Errors())
			}
		}
		got, err := b.scenario(name)
		if err != nil {
			return nil, nil, err
		}
		if withCeiling {
			got = append([]report.Run{ceil}, got...)
			for i := range got {
				got[i].Ceiling = ceil.Result.Throughput
			}
			ratios = append(ratios, got[1].Result.Throughput/ceil.Result.Throughput)
		}
		if rounds > 1 {
			for i := range got {
				got[i].Name += fmt.Sprintf(" #%d", r)
			}
		}
		runs = append(runs, got...)
	}
	return runs, ratios, nil
}

func ratioTexts(rs []float64) []string {
	t := make([]string, len(rs))
	for i, r := range rs {
		t[i] = fmt.Sprintf("%.2f", r)
	}
	return t
}

// median of rs, which it leaves as they are.
func median(rs []float64) float64 {
	rs = slices.Sorted(slices.Values(rs))
	n := len(rs)
	if n%2 == 1 {
		return rs[n/2]
	}
	return (rs[n/2-1] + rs[n/2]) / 2
}

func (b *bench) config(rate float64, requests int, dur time.Duration) loadgen.Config {
	// Warm-up is at most a tenth of the run: a short flash sale is all rush.
	length := dur
	if rate > 0 && requests > 0 {
		length = time.Duration(float64(requests) / rate * float64(time.Second))
	}
	return loadgen.Config{Target: b.target, Conns: *conns, Rate: rate, Requests: requests, Duration: dur,
		Warmup: min(*warmup, length/10), Timeout: *timeout, Progress: b.progress, WarmPath: "/healthz"}
}

func (b *bench) scenario(name string) ([]report.Run, error) {
	switch name {
	case "flash":
		r, err := b.flash("flash", *rate, 0)
		return []report.Run{r}, err
	case "mixed":
		r, err := b.flash("mixed", *rate, *readPct)
		return []report.Run{r}, err
	case "browse":
		item, err := b.newItem("browse", *stock)
		if err != nil {
			return nil, err
		}
		log.Printf("browse: GET item %s at %.0f/s for %v over %d connections", item, *rate, *duration, *conns)
		res, err := loadgen.Run(b.config(*rate, 0, *duration), scenario.NewBrowse(item))
		return []report.Run{{Name: "browse", Result: res}}, err
	case "ramp":
		return b.ramp()
	case "spike":
		r, err := b.spike()
		return []report.Run{r}, err
	case "soldout":
		return b.soldOut()
	}
	return nil, fmt.Errorf("unknown -scenario %q: use flash, spike, soldout, browse, mixed or ramp", name)
}

// flash runs a flash sale on a fresh item and judges it.
func (b *bench) flash(name string, rate float64, readPct int) (report.Run, error) {
	item, err := b.newItem(name, *stock)
	if err != nil {
		return report.Run{}, err
	}
	fl := scenario.NewFlash(scenario.FlashOptions{Item: item, Prefix: item, Users: *users, RetryPct: *retryPct,
		DoublePct: *doublePct, ReadPct: readPct, Seed: uint64(time.Now().UnixNano())})
	log.Printf("%s: %d shoppers, %d requests for %d units of %s at %s over %d connections",
		name, *users, fl.Requests(), *stock, item, rateText(rate), *conns)
	return b.judged(name, item, fl, b.config(rate, fl.Requests(), 0))
}

// judged runs a flash sale's load and judges it from what the server says.
func (b *bench) judged(name, item string, fl *scenario.Flash, cfg loadgen.Config) (report.Run, error) {
	res, err := loadgen.Run(cfg, fl)
	if err != nil {
		return report.Run{}, err
	}
	srv, err := b.serverState(item, fl.OrderIDs())
	if err != nil {
		return report.Run{}, fmt.Errorf("cannot read the sale back for the verdict: %w", err)
	}
	v := fl.Judge(*stock, srv)
	return report.Run{Name: name, Result: res, Verdict: &v}, nil
}

// spike is a flash sale as it opens: the item goes on sale at starts_at,
// the crowd arrives in the first -spike-duration at -spike-rate (several
// times what the server serves), then the sold-out flood at -rate. Every
// request is stamped with X-Request-Start (the time it "reached the
// proxy"), unless -stamp-start=false is given explicitly.
func (b *bench) spike() (report.Run, error) {
	opensAt := time.Now().Add(2 * time.Second).Truncate(time.Millisecond)
	item, err := b.newItemOpening("spike", *stock, opensAt)
	if err != nil {
		return report.Run{}, err
	}
	fl := scenario.NewFlash(scenario.FlashOptions{Item: item, Prefix: item, Users: *users, RetryPct: *retryPct,
		DoublePct: *doublePct, Seed: uint64(time.Now().UnixNano())})
	cfg := b.config(*rate, fl.Requests(), 0)
	cfg.Warmup = 0 // the spike is the point
	cfg.SpikeRate, cfg.SpikeRequests = *spikeRate, min(fl.Requests(), int(*spikeRate*spikeDur.Seconds()))
	cfg.StampStart = *stampStart || !flagSet("stamp-start")
	log.Printf("spike: %d shoppers, %d requests for %d units of %s: the sale opens at %s; %d arrive in the first %v (%s), then %s, over %d connections",
		*users, fl.Requests(), *stock, item, opensAt.Format("15:04:05.000"), cfg.SpikeRequests, *spikeDur, rateText(*spikeRate), rateText(*rate), *conns)
	time.Sleep(time.Until(opensAt.Add(-10 * time.Millisecond))) // the run starts 10 ms after it is called
	run, err := b.judged("spike", item, fl, cfg)
	if err != nil {
		return report.Run{}, err
	}
	run.Spike = &report.Spike{Requests: cfg.SpikeRequests, Rate: *spikeRate, Latency: run.Result.Spike}
	if at := fl.SoldOutAt(); !at.IsZero() {
		run.Spike.SoldOutAfter = at.Sub(opensAt)
	}
	return run, nil
}

// flagSet reports whether the flag was given on the command line.
func flagSet(name string) bool {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// ramp steps the rate of the mixed scenario up until P99 passes the budget
// or errors appear, and reports the highest rate that held.
func (b *bench) ramp() ([]report.Run, error) {
	var runs []report.Run
	saved := *users
	defer func() { *users = saved }()
	for r := *rampStart; r <= *rampMax; r += *rampStep {
		// Enough shoppers that purchases fill the step at this rate.
		*users = max(1, int(r*rampStepDur.Seconds()*float64(100-*readPct)/100/1.1))
		run, err := b.flash(fmt.Sprintf("ramp-%.0f", r), r, *readPct)
		if err != nil {
			return runs, err
		}
		runs = append(runs, run)
		p99, errs := run.Result.Quantile(99), run.Result.Errors()
		held := p99 <= *p99Budget && errs == 0 && run.Result.Throughput >= 0.95*r
		log.Printf("ramp: %.0f/s achieved %.0f/s, P99 %v, %d errors: %s", r, run.Result.Throughput, p99, errs, map[bool]string{true: "held", false: "did not hold"}[held])
		if !held {
			break
		}
		b.rampHeld = r
	}
	log.Printf("ramp: highest rate that held (P99 <= %v, no errors): %.0f/s", *p99Budget, b.rampHeld)
	return runs, nil
}

// ceiling measures the bare handler, closed-loop, with the same settings.
func (b *bench) ceiling() (report.Run, error) {
	log.Printf("ceiling: bare fasthttp handler closed-loop for %v over %d connections", *duration, *conns)
	cfg := b.config(0, 0, *duration)
	cfg.Target = "http://" + b.bare
	res, err := loadgen.Run(cfg, scenario.NewBrowse("x"))
	if err != nil {
		return report.Run{}, err
	}
	return report.Run{Name: "ceiling (bare)", Result: res}, nil
}

// startBare builds and starts tools/bare (a fasthttp handler that answers
// every request with a sold-out body) on a free loopback port.
func startBare() (addr string, stop func(), err error) {
	dir, err := os.MkdirTemp("", "flashsale-bare")
	if err != nil {
		return "", nil, err
	}
	bin := filepath.Join(dir, "bare")
	if out, err := exec.Command("go", "build", "-o", bin, "./tools/bare").CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return "", nil, fmt.Errorf("cannot build tools/bare (run from the repository root): %v\n%s", err, out)
	}
	if addr, err = freeAddr(); err != nil {
		os.RemoveAll(dir)
		return "", nil, err
	}
	cmd := exec.Command(bin, "-listen", addr)
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return "", nil, err
	}
	for i := 0; i < 100; i++ {
		if resp, err := http.Get("http://" + addr + "/"); err == nil {
			resp.Body.Close()
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	return addr, func() { cmd.Process.Kill(); cmd.Wait(); os.RemoveAll(dir) }, nil
}

// soldOut is the sold-out flood, open loop at -rate: every request a
// distinct user with a request id, for an item with nothing left; then the
// same load against the bare fasthttp handler at the same rate and
// connections, in the same run, so that the tails compare as a ratio.
func (b *bench) soldOut() ([]report.Run, error) {
	item, err := b.newItem("soldout", 0)
	if err != nil {
		return nil, err
	}
	n := int(*rate * duration.Seconds())
	flood := func() *scenario.Flash {
		return scenario.NewFlash(scenario.FlashOptions{Item: item, Prefix: item, Users: n, Seed: uint64(time.Now().UnixNano())})
	}
	log.Printf("soldout: %d distinct shoppers for sold-out %s at %s over %d connections, then the bare handler alike",
		n, item, rateText(*rate), *conns)
	res, err := loadgen.Run(b.config(*rate, n, 0), flood())
	if err != nil {
		return nil, err
	}
	addr, stop, err := startBare()
	if err != nil {
		return nil, err
	}
	defer stop()
	cfg := b.config(*rate, n, 0)
	cfg.Target = "http://" + addr
	bare, err := loadgen.Run(cfg, flood())
	if err != nil {
		return nil, err
	}
	log.Printf("soldout: P99 %v against the bare handler's %v: %.2f times", res.Quantile(99), bare.Quantile(99),
		float64(res.Quantile(99))/float64(max(bare.Quantile(99), time.Microsecond)))
	return []report.Run{{Name: "sold out", Result: res}, {Name: "bare handler", Result: bare}}, nil
}

func rateText(r float64) string {
	if r == 0 {
		return "full speed (closed loop)"
	}
	return fmt.Sprintf("%.0f/s", r)
}

// newItem creates an item for one run, with per-user limit 1.
func (b *bench) newItem(kind string, stock int64) (string, error) {
	return b.newItemOpening(kind, stock, time.Time{})
}

// newItemOpening is newItem with the sale opening at opens (zero: now).
func (b *bench) newItemOpening(kind string, stock int64, opens time.Time) (string, error) {
	id := fmt.Sprintf("%s-%d", kind, time.Now().UnixNano())
	body := fmt.Sprintf(`{"name":"bench %s","price_cents":100,"stock":%d,"per_user_limit":1}`, kind, stock)
	if !opens.IsZero() {
		body = fmt.Sprintf(`{"name":"bench %s","price_cents":100,"stock":%d,"per_user_limit":1,"starts_at":%q}`,
			kind, stock, opens.UTC().Format(time.RFC3339Nano))
	}
	code, resp, err := b.call("PUT", b.admin+"/api/v1/items/"+id, body)
	if err != nil {
		return "", fmt.Errorf("cannot create the item on %s: %w", b.admin, err)
	}
	if code != http.StatusCreated {
		return "", fmt.Errorf("cannot create the item: %d %s", code, resp)
	}
	// In cluster mode the other nodes learn the item from the catalogue
	// within a second: start once every target sells it.
	for _, t := range strings.Split(b.target, ",") {
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			code, resp, err := b.call("GET", t+"/api/v1/items/"+id, "")
			if err == nil && code == http.StatusOK && (stock == 0 || !bytes.Contains(resp, []byte(`"stock_left":0,`))) {
				break
			}
			if time.Now().After(deadline) {
				return "", fmt.Errorf("%s does not sell item %s 5 s after it was created: %d %s %v", t, id, code, resp, err)
			}
		}
	}
	return id, nil
}

var client = &http.Client{Timeout: 10 * time.Second}

func (b *bench) call(method, url, body string) (int, []byte, error) {
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if b.token != "" && strings.HasPrefix(url, b.admin) {
		req.Header.Set("Authorization", "Bearer "+b.token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	return resp.StatusCode, out, err
}

// serverState asks the server what the verdict compares: the item's stock
// and every order answered with 201.
func (b *bench) serverState(item string, ids []uint64) (scenario.ServerState, error) {
	st := scenario.ServerState{Orders: map[uint64]scenario.StoredOrder{}}
	targets := strings.Split(b.target, ",")
	code, body, err := b.call("GET", targets[len(targets)-1]+"/api/v1/items/"+item, "")
	if err != nil || code != 200 {
		return st, fmt.Errorf("GET item: %d %v", code, err)
	}
	var it struct {
		StockTotal int64 `json:"stock_total"`
		StockLeft  int64 `json:"stock_left"`
	}
	if err := json.NewDecoder(bytes.NewReader(body)).Decode(&it); err != nil {
		return st, err
	}
	st.StockTotal, st.StockLeft = it.StockTotal, it.StockLeft
	for _, id := range ids {
		// In cluster mode (part 1) each node stores its own orders.
		var code int
		var body []byte
		for _, t := range targets {
			if code, body, err = b.call("GET", fmt.Sprintf("%s/api/v1/orders/%d", t, id), ""); err != nil {
				return st, err
			}
			if code == 200 {
				break
			}
		}
		if code != 200 {
			continue // missing: the verdict says so
		}
		var o struct {
			UserID string `json:"user_id"`
			ItemID string `json:"item_id"`
		}
		if err := json.Unmarshal(body, &o); err != nil {
			return st, err
		}
		st.Orders[id] = scenario.StoredOrder{UserID: o.UserID, ItemID: o.ItemID}
	}
	return st, nil
}

// write saves the JSON document and the charts.
func (b *bench) write(runs []report.Run) error {
	if err := os.MkdirAll(*outDir, 0o755); err != nil {
		return err
	}
	stamp := time.Now().UTC().Format("20060102-150405")
	base := filepath.Join(*outDir, *scenarioName+"-"+stamp)
	doc := report.NewDocument(strings.Join(os.Args, " "), runs)
	if err := report.WriteJSON(base+".json", doc); err != nil {
		return err
	}
	if err := report.LatencyChart(base+"-latency.png", runs); err != nil {
		return err
	}
	if err := report.TimelineChart(base+"-timeline.png", runs); err != nil {
		return err
	}
	fmt.Printf("\nwrote %s.json, %s-latency.png, %s-timeline.png\n", base, base, base)
	if *scenarioName == "ramp" {
		fmt.Printf("ramp: highest rate that held (P99 <= %v, no errors): %.0f/s\n", *p99Budget, b.rampHeld)
	}
	return nil
}
