package loadgen

import (
	"math"
	"time"
)

// pacer is the open-loop schedule: request n is due at start + n/rate,
// whatever happened to the requests before it. Latency is measured from
// that intended time, so a server (or a generator) that falls behind shows
// up as latency instead of silently lowering the rate (no coordinated
// omission).
type pacer struct {
	start time.Time
	rate  float64 // requests per second
}

// intended is the time request n is due.
func (p pacer) intended(n int) time.Time {
	return p.start.Add(time.Duration(float64(n) / p.rate * float64(time.Second)))
}

// due is how many requests are due at now: requests 0 .. due-1.
func (p pacer) due(now time.Time) int {
	elapsed := now.Sub(p.start)
	if elapsed < 0 {
		return 0
	}
	return int(math.Floor(elapsed.Seconds()*p.rate)) + 1
}

// maxSleep bounds the pacer's naps: the dispatcher wakes at least this
// often, and sends every request that fell due meanwhile.
const maxSleep = time.Millisecond

// dispatch hands out request numbers as they fall due, until total are sent
// or stop is closed. send blocks when every connection is busy; the
// requests it holds back keep their intended times.
func (p pacer) dispatch(total int, now func() time.Time, sleep func(time.Duration), send func(n int) bool) int {
	n := 0
	for n < total {
		due := min(p.due(now()), total)
		for ; n < due; n++ {
			if !send(n) {
				return n
			}
		}
		if n < total {
			sleep(min(maxSleep, max(0, p.intended(n).Sub(now()))))
		}
	}
	return n
}
