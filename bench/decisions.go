package main

import (
	"fmt"
	"io"
	"net/http"
	"slices"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// decisionBudget is the line the summary counts answers over (docs/design.md:
// P99 under 5 ms).
const decisionBudget = 5 * time.Millisecond

// printDecisions writes, for each spawned node, the server's own view of the
// run: flashsale_purchase_decision_seconds by result (won, replayed,
// refused), with P50 and P99 as the upper bounds of the buckets they fall in
// and the share over decisionBudget. It is the engine's time alone, without
// the generator's queueing or the connections': where a loser waited.
func printDecisions(w io.Writer, admins []string) {
	for i, admin := range admins {
		fams, err := scrape(admin + "/metrics")
		if err != nil {
			fmt.Fprintf(w, "node %d: cannot read its metrics: %v\n", i, err)
			continue
		}
		fam := fams["flashsale_purchase_decision_seconds"]
		if fam == nil {
			continue
		}
		fmt.Fprintf(w, "node %d, decisions by the server's clock:", i)
		for _, m := range fam.GetMetric() {
			h := m.GetHistogram()
			if h.GetSampleCount() == 0 {
				continue
			}
			var result string
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" {
					result = l.GetValue()
				}
			}
			fmt.Fprintf(w, " %s %d: P50 <= %s, P99 <= %s, %.1f%% over %v;", result, h.GetSampleCount(),
				bound(h, 0.50), bound(h, 0.99), 100*over(h, decisionBudget.Seconds()), decisionBudget)
		}
		fmt.Fprintln(w)
	}
}

func scrape(url string) (map[string]*dto.MetricFamily, error) {
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(resp.Body)
}

// bound is the upper bound of the bucket the q-quantile falls in.
func bound(h *dto.Histogram, q float64) string {
	want := uint64(q*float64(h.GetSampleCount()) + 0.5)
	for _, b := range h.GetBucket() {
		if b.GetCumulativeCount() >= want {
			return fmt.Sprintf("%.3g ms", b.GetUpperBound()*1e3)
		}
	}
	return "+Inf"
}

// over is the share of observations above limit seconds, counted from the
// first bucket whose upper bound reaches it.
func over(h *dto.Histogram, limit float64) float64 {
	buckets := h.GetBucket()
	i := slices.IndexFunc(buckets, func(b *dto.Bucket) bool { return b.GetUpperBound() >= limit })
	if i < 0 {
		return 0
	}
	return 1 - float64(buckets[i].GetCumulativeCount())/float64(h.GetSampleCount())
}
