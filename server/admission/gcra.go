// Package admission decides, before any work, whether a request may come
// in: token-bucket rate limits (global, per item, per client IP) with
// Sentinel-style warm-up, and a bound on requests in flight. Every decision
// is lock-free on the hot path and allocation-free, and says which limit
// refused and how long to wait. It never reads a request's body and never
// asks the engine: a refusal costs nothing but the decision.
package admission

import (
	"math"
	"sync/atomic"
	"time"
)

// Bucket is a token bucket kept as GCRA (the generic cell rate algorithm):
// one atomic "theoretical arrival time" advanced by compare-and-swap, so a
// decision takes no lock. Rate climbs from a third of the limit to the full
// limit over the warm-up after start and after Rewarm (a restock), as
// Sentinel's WarmUp does, so a cold system is not hit with the full rate.
type Bucket struct {
	rate   float64      // full rate, per second
	burst  float64      // requests admitted at once from a full bucket
	warmup int64        // ns
	cold   atomic.Int64 // ns: when the current warm-up began
	tat    atomic.Int64 // ns: theoretical arrival time
}

// NewBucket returns a bucket of rate per second and burst, starting cold at
// now. A rate of 0 or less admits everything.
func NewBucket(rate, burst float64, warmup time.Duration, now time.Time) *Bucket {
	b := &Bucket{rate: rate, burst: max(burst, 1), warmup: int64(warmup)}
	b.Rewarm(now)
	return b
}

// Rewarm starts the warm-up again (after a restock).
func (b *Bucket) Rewarm(now time.Time) {
	b.cold.Store(now.UnixNano())
	// Full bucket at the start: the burst is available at once, at the
	// warm-up's rate.
	b.tat.Store(now.UnixNano() - int64(b.burst*float64(time.Second)/b.rateAt(now.UnixNano())))
}

// rateAt is the admitted rate at now: a third of the limit when cold,
// growing linearly to the full limit over the warm-up.
func (b *Bucket) rateAt(now int64) float64 {
	if b.warmup <= 0 {
		return b.rate
	}
	f := float64(now-b.cold.Load()) / float64(b.warmup)
	f = min(max(f, 0), 1)
	return b.rate * (1 + 2*f) / 3
}

// Allow takes one token at now. When there is none it returns false and the
// time until there will be one.
func (b *Bucket) Allow(now time.Time) (bool, time.Duration) {
	if b == nil || b.rate <= 0 {
		return true, 0
	}
	t := now.UnixNano()
	interval := int64(float64(time.Second) / b.rateAt(t))
	tau := int64((b.burst - 1) * float64(interval)) // tolerance: burst-1 early arrivals
	for {
		tat := b.tat.Load()
		at := max(tat, t)
		if at-t > tau {
			return false, time.Duration(at - t - tau)
		}
		if b.tat.CompareAndSwap(tat, at+interval) {
			return true, 0
		}
	}
}

// Ready reports whether a token is there at now, without taking it, and
// otherwise the time until there will be one.
func (b *Bucket) Ready(now time.Time) (bool, time.Duration) {
	if b == nil || b.rate <= 0 {
		return true, 0
	}
	t := now.UnixNano()
	interval := int64(float64(time.Second) / b.rateAt(t))
	tau := int64((b.burst - 1) * float64(interval))
	if at := max(b.tat.Load(), t); at-t > tau {
		return false, time.Duration(at - t - tau)
	}
	return true, 0
}

// Full reports whether the bucket holds its whole burst at now: forgetting
// it would change nothing.
func (b *Bucket) Full(now time.Time) bool {
	if b == nil || b.rate <= 0 {
		return true
	}
	return b.tat.Load() <= now.UnixNano()
}

// RetryAfter turns a wait into the whole seconds of a Retry-After header,
// at least 1.
func RetryAfter(wait time.Duration) int {
	return max(1, int(math.Ceil(wait.Seconds())))
}
