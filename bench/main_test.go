package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"

	"github.com/flashsale/flashsale/bench/report"
	"github.com/flashsale/flashsale/bench/spawn"
)

// startBuilt builds the server into dir and starts it on a data directory
// there, until the test ends.
func startBuilt(t *testing.T, dir string) *spawn.Proc {
	t.Helper()
	bin := filepath.Join(dir, "flashsale")
	if out, err := exec.Command("go", "build", "-o", bin, "..").CombinedOutput(); err != nil {
		t.Fatalf("cannot build the server: %v\n%s", err, out)
	}
	p, err := spawn.Start(bin, filepath.Join(dir, "data"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return p
}

// TestFlashAgainstTheRealBinary runs short flash and mixed scenarios against
// the built server and asserts the verdict passes and the output is written.
func TestFlashAgainstTheRealBinary(t *testing.T) {
	dir := t.TempDir()
	p := startBuilt(t, dir)

	*users, *stock, *conns, *retryPct, *doublePct, *readPct = 600, 80, 16, 20, 20, 40
	*outDir = filepath.Join(dir, "out")
	b := &bench{target: p.Public, admin: p.Admin}
	var runs []report.Run
	for _, c := range []struct {
		name string
		read int
	}{{"flash", 0}, {"mixed", *readPct}} {
		run, err := b.flash(c.name, 3000, c.read)
		if err != nil {
			t.Fatal(err)
		}
		if !run.Verdict.Pass || run.Result.Requests == 0 || run.Result.Errors() != 0 {
			t.Fatalf("%s: %d requests, %d errors, verdict:\n%s", c.name, run.Result.Requests, run.Result.Errors(), run.Verdict)
		}
		runs = append(runs, run)
	}
	// The spike: the item opens 2 s after it is made, the crowd arrives at
	// once; every request is due in the spike, none before the opening.
	*spikeRate, *rate = 3000, 3000
	sp, err := b.spike()
	if err != nil {
		t.Fatal(err)
	}
	if !sp.Verdict.Pass || sp.Result.Errors() != 0 || sp.Result.Codes["sale_not_started"] != 0 || sp.Spike == nil ||
		sp.Spike.SoldOutAfter <= 0 || sp.Spike.SoldOutAfter > 5*time.Second || sp.Spike.Latency.TotalCount() != int64(sp.Spike.Requests) {
		t.Fatalf("spike: %+v %+v, verdict:\n%s", sp.Result.Codes, sp.Spike, sp.Verdict)
	}
	if err := b.write(runs); err != nil {
		t.Fatal(err)
	}
	var decided strings.Builder
	printDecisions(&decided, []string{p.Admin})
	if !regexp.MustCompile(`^node 0, decisions by the server's clock:.* refused [1-9][0-9]*: .* won [1-9][0-9]*: P50 <= [0-9.]+ ms, P99 <= [0-9.]+ ms, [0-9.]+% over 5ms;\n$`).MatchString(decided.String()) {
		t.Fatalf("the server's decisions: %q", decided.String())
	}
	files, _ := filepath.Glob(filepath.Join(*outDir, "*"))
	if len(files) != 3 {
		t.Fatalf("output files: %v", files)
	}
	for _, f := range files {
		if filepath.Ext(f) != ".json" {
			continue
		}
		var doc report.Document
		raw, _ := os.ReadFile(f)
		if err := json.Unmarshal(raw, &doc); err != nil || len(doc.Runs) != 2 || doc.Runs[0].Verdict == nil || !doc.Runs[0].Verdict.Pass {
			t.Fatalf("JSON output: %v %s", err, raw[:min(len(raw), 300)])
		}
	}
}

// -rounds alternates the bare handler and the scenario, each round's ratio
// from its own pair, against the built server.
func TestRoundsAlternateTheBareHandler(t *testing.T) {
	p := startBuilt(t, t.TempDir())
	t.Chdir("..") // startBare builds ./tools/bare

	*users, *stock, *conns, *retryPct, *doublePct, *rate, *duration = 400, 400, 8, 0, 0, 0, 300*time.Millisecond
	b := &bench{target: p.Public, admin: p.Admin}
	for _, bad := range []struct {
		name    string
		ceiling bool
		rounds  int
	}{{"flash", false, 2}, {"ramp", true, 2}, {"soldout", true, 2}, {"flash", true, 0}} {
		if _, _, err := b.measure(bad.name, bad.ceiling, bad.rounds); err == nil {
			t.Fatalf("%+v: no error", bad)
		}
	}
	runs, ratios, err := b.measure("flash", true, 2)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range runs {
		names = append(names, r.Name)
	}
	if got := strings.Join(names, ", "); got != "ceiling (bare) #1, flash #1, ceiling (bare) #2, flash #2" {
		t.Fatalf("runs: %s", got)
	}
	for i, r := range runs {
		ceil := runs[i/2*2].Result.Throughput
		if r.Result.Requests == 0 || r.Result.Errors() != 0 || r.Ceiling != ceil {
			t.Fatalf("%s: %d requests, %d errors, ceiling %v of %v", r.Name, r.Result.Requests, r.Result.Errors(), r.Ceiling, ceil)
		}
		if i%2 == 1 {
			if !r.Verdict.Pass || r.Result.Statuses[201] != int64(*users) {
				t.Fatalf("%s: %v, verdict:\n%s", r.Name, r.Result.Statuses, r.Verdict)
			}
			if want := r.Result.Throughput / ceil; ratios[i/2] != want {
				t.Fatalf("round %d: ratio %v, want %v", i/2+1, ratios[i/2], want)
			}
		}
	}
}

func TestMedian(t *testing.T) {
	rs := []float64{0.5, 0.3, 0.4}
	if m := median(rs); m != 0.4 || rs[0] != 0.5 {
		t.Fatalf("median %v, and %v after", m, rs)
	}
	if m := median([]float64{0.6, 0.2, 0.4, 0.3}); m != 0.35 {
		t.Fatalf("median of four: %v", m)
	}
}

// The quantiles and the share over the budget are read off the buckets.
func TestDecisionBuckets(t *testing.T) {
	h := &dto.Histogram{SampleCount: proto.Uint64(100)}
	for _, b := range []struct {
		le float64
		n  uint64
	}{{0.001, 50}, {0.005, 90}, {0.1, 99}, {1, 100}} {
		h.Bucket = append(h.Bucket, &dto.Bucket{UpperBound: proto.Float64(b.le), CumulativeCount: proto.Uint64(b.n)})
	}
	if p50, p99 := bound(h, 0.5), bound(h, 0.99); p50 != "1 ms" || p99 != "100 ms" {
		t.Fatalf("P50 %s, P99 %s", p50, p99)
	}
	if o := over(h, 0.005); o < 0.0999 || o > 0.1001 {
		t.Fatalf("over 5 ms: %v", o)
	}
}
