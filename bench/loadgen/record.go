package loadgen

import (
	"bytes"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Latencies are recorded in microseconds, from 1 µs to 60 s, to 3
// significant digits; the per-second timeline uses 2.
const (
	minLatencyUS = 1
	maxLatencyUS = 60_000_000
)

func newHistogram(digits int) *hdrhistogram.Histogram {
	return hdrhistogram.New(minLatencyUS, maxLatencyUS, digits)
}

// Codes are the error codes of docs/api.md, counted from error bodies.
var Codes = []string{
	"invalid_request", "item_not_found", "order_not_found", "sold_out", "limit_exceeded",
	"sale_not_started", "sale_ended", "request_in_progress", "idempotency_key_reused",
	"body_too_large", "unsupported_media_type", "rate_limited", "unavailable", "unauthorized",
	"stock_below_sold", "invalid_code", "code_expired", "code_used", "not_found",
	"method_not_allowed", "internal",
}

var codeKey = []byte(`"code":"`)

// codeIndex finds the error code in an error body without allocating:
// an index into Codes, or len(Codes) for a body without a known code.
func codeIndex(body []byte) int {
	i := bytes.Index(body, codeKey)
	if i < 0 {
		return len(Codes)
	}
	rest := body[i+len(codeKey):]
	end := bytes.IndexByte(rest, '"')
	if end < 0 {
		return len(Codes)
	}
	for j, c := range Codes {
		if string(rest[:end]) == c {
			return j
		}
	}
	return len(Codes)
}

// recorder is one worker's tally; only its worker writes it, so recording
// needs no lock. Finished seconds of the timeline are handed to the
// collector, which merges them.
type recorder struct {
	hist     *hdrhistogram.Histogram
	admitted *hdrhistogram.Histogram // answers that were not refusals (429, 503) or failures
	spike    *hdrhistogram.Histogram // answers to requests due in the spike
	won      *hdrhistogram.Histogram // 201s: the winners, whose answer waits for durability
	lost     *hdrhistogram.Histogram // 409s: the losers, answered from memory
	statuses [600]int64
	codes    []int64 // by index into Codes, last: unknown
	failures int64   // transport errors and timeouts
	recorded int64

	sec     int // second of the timeline being filled, -1 before the first
	secHist *hdrhistogram.Histogram
	secN    int64
	secErr  int64
	out     chan<- secondTally
	free    <-chan *hdrhistogram.Histogram
}

type secondTally struct {
	sec       int
	hist      *hdrhistogram.Histogram
	n, errors int64
}

func newRecorder(out chan<- secondTally, free <-chan *hdrhistogram.Histogram) *recorder {
	return &recorder{hist: newHistogram(3), admitted: newHistogram(3), spike: newHistogram(3), won: newHistogram(3), lost: newHistogram(3), codes: make([]int64, len(Codes)+1), sec: -1, out: out, free: free}
}

// record counts one answer. sec is the second of the run its request was
// due in, spike whether it was due in the spike; status is 0 for a
// transport failure.
func (r *recorder) record(sec int, spike bool, latency time.Duration, status int, body []byte) {
	us := max(latency.Microseconds(), minLatencyUS)
	r.hist.RecordValue(min(us, maxLatencyUS))
	if spike {
		r.spike.RecordValue(min(us, maxLatencyUS))
	}
	switch status {
	case 201:
		r.won.RecordValue(min(us, maxLatencyUS))
	case 409:
		r.lost.RecordValue(min(us, maxLatencyUS))
	}
	r.recorded++
	isErr := status == 0 || status >= 500 || status == 429
	if !isErr {
		r.admitted.RecordValue(min(us, maxLatencyUS))
	}
	switch {
	case status == 0:
		r.failures++
	case status < len(r.statuses):
		r.statuses[status]++
	}
	if status >= 400 {
		r.codes[codeIndex(body)]++
	}
	if sec != r.sec {
		r.flush()
		r.sec = sec
		r.secHist = <-r.free
	}
	r.secHist.RecordValue(min(us, maxLatencyUS))
	r.secN++
	if isErr {
		r.secErr++
	}
}

// flush hands the second being filled to the collector.
func (r *recorder) flush() {
	if r.secHist != nil {
		r.out <- secondTally{sec: r.sec, hist: r.secHist, n: r.secN, errors: r.secErr}
	}
	r.secHist, r.secN, r.secErr = nil, 0, 0
}
