package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/flashsale/flashsale/bench/report"
	"github.com/flashsale/flashsale/bench/spawn"
)

// TestFlashAgainstTheRealBinary runs short flash and mixed scenarios against
// the built server and asserts the verdict passes and the output is written.
func TestFlashAgainstTheRealBinary(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "flashsale")
	if out, err := exec.Command("go", "build", "-o", bin, "..").CombinedOutput(); err != nil {
		t.Fatalf("cannot build the server: %v\n%s", err, out)
	}
	p, err := spawn.Start(bin, filepath.Join(dir, "data"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()

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
