// Package report turns load generator results into a table for people, a
// JSON document for machines, and PNG charts. It never runs load.
package report

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/flashsale/flashsale/bench/loadgen"
	"github.com/flashsale/flashsale/bench/scenario"
)

// Run is one measured run: a scenario, or one step of a ramp.
type Run struct {
	Name    string
	Result  *loadgen.Result
	Verdict *scenario.Verdict // nil when the run has none
	// Ceiling is the bare handler's throughput measured in the same
	// session with the same generator settings; 0 when not measured.
	Ceiling float64
	Spike   *Spike // a spike run's crowd; nil otherwise
}

// Spike is what a crowd arriving as the sale opens got.
type Spike struct {
	Requests     int     // due in the spike
	Rate         float64 // their arrival rate
	SoldOutAfter time.Duration
	Latency      *hdrhistogram.Histogram // of every answer to them, µs
}

func (s *Spike) quantile(q float64) time.Duration {
	return time.Duration(s.Latency.ValueAtQuantile(q)) * time.Microsecond
}

// msq is quantile q (0-100) of a histogram of microseconds, in ms.
func msq(h *hdrhistogram.Histogram, q float64) string {
	return ms(time.Duration(h.ValueAtQuantile(q)) * time.Microsecond)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f", float64(d)/float64(time.Millisecond)) }

// Table writes the readable summary.
func Table(w io.Writer, runs []Run) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "run\ttarget/s\tachieved/s\tvs ceiling\tP50 ms\tP90 ms\tP99 ms\tP99.9 ms\tmax ms\terrors\tgen CPU\tverdict\t")
	for _, r := range runs {
		res := r.Result
		target := "closed"
		if res.Target > 0 {
			target = fmt.Sprintf("%.0f", res.Target)
		}
		ratio := "-"
		if r.Ceiling > 0 {
			ratio = fmt.Sprintf("%.2f", res.Throughput/r.Ceiling)
		}
		verdict := "-"
		if r.Verdict != nil {
			verdict = "FAIL"
			if r.Verdict.Pass {
				verdict = "pass"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%.0f\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%.2f\t%s\t\n", r.Name, target, res.Throughput, ratio,
			ms(res.Quantile(50)), ms(res.Quantile(90)), ms(res.Quantile(99)), ms(res.Quantile(99.9)),
			ms(time.Duration(res.Latency.Max())*time.Microsecond), res.Errors(), res.GeneratorCPU, verdict)
	}
	tw.Flush()
	for _, r := range runs {
		if res := r.Result; res.Errors() > 0 {
			fmt.Fprintf(w, "\n%s: %.1f%% refused (429, 503, failures); admitted requests: P50 %s ms, P99 %s ms, P99.9 %s ms",
				r.Name, 100*res.Refused(), ms(res.AdmittedQuantile(50)), ms(res.AdmittedQuantile(99)), ms(res.AdmittedQuantile(99.9)))
		}
		if res := r.Result; res.Won.TotalCount() > 0 && res.Lost.TotalCount() > 0 {
			fmt.Fprintf(w, "\n%s: winners (%d x 201): P50 %s ms, P99 %s ms, max %s ms; losers (%d x 409): P50 %s ms, P99 %s ms, max %s ms",
				r.Name, res.Won.TotalCount(), msq(res.Won, 50), msq(res.Won, 99), msq(res.Won, 100),
				res.Lost.TotalCount(), msq(res.Lost, 50), msq(res.Lost, 99), msq(res.Lost, 100))
		}
		if sp := r.Spike; sp != nil {
			sold := "not sold out"
			if sp.SoldOutAfter > 0 {
				sold = fmt.Sprintf("sold out %s s after the sale opened", fmt.Sprintf("%.3f", sp.SoldOutAfter.Seconds()))
			}
			fmt.Fprintf(w, "\n%s: %d requests arrived in the spike at %.0f/s; %s; answers to them: P50 %s ms, P99 %s ms, max %s ms; %d requests of the run timed out or failed",
				r.Name, sp.Requests, sp.Rate, sold, ms(sp.quantile(50)), ms(sp.quantile(99)), ms(time.Duration(sp.Latency.Max())*time.Microsecond), r.Result.Failures)
		}
		fmt.Fprintf(w, "\n%s: answers %s\n", r.Name, answers(r.Result))
		if r.Verdict != nil {
			fmt.Fprint(w, r.Verdict.String())
		}
	}
}

// answers lists statuses and error codes, most frequent first.
func answers(res *loadgen.Result) string {
	type kv struct {
		k string
		v int64
	}
	var parts []kv
	for s, n := range res.Statuses {
		parts = append(parts, kv{fmt.Sprint(s), n})
	}
	for c, n := range res.Codes {
		parts = append(parts, kv{c, n})
	}
	if res.Failures > 0 {
		parts = append(parts, kv{"transport-failure", res.Failures})
	}
	sort.Slice(parts, func(i, j int) bool {
		return parts[i].v > parts[j].v || parts[i].v == parts[j].v && parts[i].k < parts[j].k
	})
	var b strings.Builder
	for i, p := range parts {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s=%d", p.k, p.v)
	}
	return b.String()
}

// Document is the JSON output.
type Document struct {
	Date    time.Time `json:"date"`
	Machine Machine   `json:"machine"`
	Command string    `json:"command"`
	Runs    []RunJSON `json:"runs"`
}

// Machine says where the figures come from.
type Machine struct {
	CPUs      int    `json:"cpus"`
	GoVersion string `json:"go_version"`
	OS        string `json:"os"`
	CPUModel  string `json:"cpu_model,omitempty"`
}

type RunJSON struct {
	Name       string             `json:"name"`
	TargetRate float64            `json:"target_rate"`
	Throughput float64            `json:"throughput"`
	Ceiling    float64            `json:"ceiling,omitempty"`
	Requests   int64              `json:"requests"`
	ElapsedS   float64            `json:"elapsed_s"`
	LatencyMS  map[string]float64 `json:"latency_ms"`
	// AdmittedLatencyMS is the latency of answers that were not refusals.
	AdmittedLatencyMS map[string]float64 `json:"admitted_latency_ms"`
	// WinnersLatencyMS (201s) and LosersLatencyMS (409s), apart.
	WinnersLatencyMS map[string]float64 `json:"winners_latency_ms"`
	LosersLatencyMS  map[string]float64 `json:"losers_latency_ms"`
	Refused          float64            `json:"refused_share"`
	Statuses         map[string]int64   `json:"statuses"`
	Codes            map[string]int64   `json:"codes"`
	Failures         int64              `json:"transport_failures"`
	Errors           int64              `json:"errors"`
	GeneratorCPU     float64            `json:"generator_cpu_cores"`
	Timeline         []SecondJSON       `json:"timeline"`
	Verdict          *scenario.Verdict  `json:"verdict,omitempty"`
	Spike            *SpikeJSON         `json:"spike,omitempty"`
}

type SpikeJSON struct {
	Requests      int                `json:"requests"`
	Rate          float64            `json:"rate"`
	SoldOutAfterS float64            `json:"sold_out_after_s"` // 0: not sold out
	LatencyMS     map[string]float64 `json:"latency_ms"`
}

type SecondJSON struct {
	Sec      int     `json:"sec"`
	Requests int64   `json:"requests"`
	Errors   int64   `json:"errors"`
	P50MS    float64 `json:"p50_ms"`
	P99MS    float64 `json:"p99_ms"`
	MaxMS    float64 `json:"max_ms"`
}

func msf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// NewDocument describes runs for machines.
func NewDocument(command string, runs []Run) Document {
	doc := Document{Date: time.Now().UTC(), Command: command,
		Machine: Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH, CPUModel: cpuModel()}}
	for _, r := range runs {
		res := r.Result
		j := RunJSON{Name: r.Name, TargetRate: res.Target, Throughput: res.Throughput, Ceiling: r.Ceiling,
			Requests: res.Requests, ElapsedS: res.Elapsed.Seconds(), Statuses: map[string]int64{}, Codes: res.Codes,
			Failures: res.Failures, Errors: res.Errors(), GeneratorCPU: res.GeneratorCPU, Verdict: r.Verdict,
			LatencyMS: map[string]float64{"p50": msf(res.Quantile(50)), "p90": msf(res.Quantile(90)), "p99": msf(res.Quantile(99)),
				"p99.9": msf(res.Quantile(99.9)), "max": msf(time.Duration(res.Latency.Max()) * time.Microsecond)},
			AdmittedLatencyMS: map[string]float64{"p50": msf(res.AdmittedQuantile(50)), "p99": msf(res.AdmittedQuantile(99)),
				"p99.9": msf(res.AdmittedQuantile(99.9))},
			WinnersLatencyMS: quantilesMS(res.Won), LosersLatencyMS: quantilesMS(res.Lost),
			Refused: res.Refused()}
		for s, n := range res.Statuses {
			j.Statuses[fmt.Sprint(s)] = n
		}
		for _, s := range res.Timeline {
			j.Timeline = append(j.Timeline, SecondJSON{Sec: s.Sec, Requests: s.Requests, Errors: s.Errors, P50MS: msf(s.P50), P99MS: msf(s.P99), MaxMS: msf(s.Max)})
		}
		if sp := r.Spike; sp != nil {
			j.Spike = &SpikeJSON{Requests: sp.Requests, Rate: sp.Rate, SoldOutAfterS: sp.SoldOutAfter.Seconds(),
				LatencyMS: map[string]float64{"p50": msf(sp.quantile(50)), "p99": msf(sp.quantile(99)), "max": msf(time.Duration(sp.Latency.Max()) * time.Microsecond)}}
		}
		doc.Runs = append(doc.Runs, j)
	}
	return doc
}

// WriteJSON writes the document to path.
func WriteJSON(path string, doc Document) error {
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// quantilesMS are a histogram's P50, P99, P99.9 and max, in ms.
func quantilesMS(h *hdrhistogram.Histogram) map[string]float64 {
	q := func(p float64) float64 { return msf(time.Duration(h.ValueAtQuantile(p)) * time.Microsecond) }
	return map[string]float64{"count": float64(h.TotalCount()), "p50": q(50), "p99": q(99), "p99.9": q(99.9), "max": q(100)}
}
