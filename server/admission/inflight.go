package admission

import (
	"sync"
	"time"
)

// Inflight bounds the requests being served at once. Past the bound a
// request waits at most maxWait for a slot, then is refused at once (503):
// under overload the admitted requests keep their latency instead of every
// request getting slow (VictoriaMetrics' writeconcurrencylimiter does this).
type Inflight struct {
	slots   chan struct{}
	maxWait time.Duration
	timers  sync.Pool
}

// NewInflight allows max requests at once, each waiting up to maxWait.
func NewInflight(max int, maxWait time.Duration) *Inflight {
	return &Inflight{slots: make(chan struct{}, max), maxWait: maxWait}
}

// Acquire takes a slot, waiting up to maxWait. Every true needs a Release.
func (f *Inflight) Acquire() bool {
	select {
	case f.slots <- struct{}{}:
		return true
	default:
	}
	if f.maxWait <= 0 {
		return false
	}
	t, _ := f.timers.Get().(*time.Timer)
	if t == nil {
		t = time.NewTimer(f.maxWait)
	} else {
		t.Reset(f.maxWait)
	}
	defer func() { t.Stop(); f.timers.Put(t) }()
	select {
	case f.slots <- struct{}{}:
		return true
	case <-t.C:
		return false
	}
}

// Release gives a slot back.
func (f *Inflight) Release() { <-f.slots }

// InUse is the number of requests holding a slot.
func (f *Inflight) InUse() int { return len(f.slots) }
