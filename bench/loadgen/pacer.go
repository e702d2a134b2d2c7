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
//
// A spike comes first when set: the first spikeN requests at spikeRate (a
// crowd arriving as the sale opens), then the rest at rate.
type pacer struct {
	start     time.Time
	rate      float64 // requests per second
	spikeRate float64
	spikeN    int
}

// spikeEnd is when the spike's last request is due (plus one interval).
func (p pacer) spikeEnd() time.Duration {
	if p.spikeN <= 0 {
		return 0
	}
	return time.Duration(float64(p.spikeN) / p.spikeRate * float64(time.Second))
}

// intended is the time request n is due.
func (p pacer) intended(n int) time.Time {
	if n < p.spikeN {
		return p.start.Add(time.Duration(float64(n) / p.spikeRate * float64(time.Second)))
	}
	return p.start.Add(p.spikeEnd() + time.Duration(float64(n-max(p.spikeN, 0))/p.rate*float64(time.Second)))
}

// due is how many requests are due at now: requests 0 .. due-1.
func (p pacer) due(now time.Time) int {
	elapsed := now.Sub(p.start)
	if elapsed < 0 {
		return 0
	}
	if p.spikeN > 0 {
		if end := p.spikeEnd(); elapsed < end {
			return min(int(math.Floor(elapsed.Seconds()*p.spikeRate))+1, p.spikeN)
		} else {
			return p.spikeN + int(math.Floor((elapsed-end).Seconds()*p.rate)) + 1
		}
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
