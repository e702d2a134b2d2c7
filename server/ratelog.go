package server

import (
	"log/slog"
	"sync/atomic"
	"time"
)

// rateLog writes at most one line per interval, and says how many it kept
// back: a failing dependency under 40,000 req/s must not flood the log.
type rateLog struct {
	interval   time.Duration
	last       atomic.Int64 // unix nanoseconds of the last line
	suppressed atomic.Int64
}

func (l *rateLog) Error(msg string, args ...any) {
	now := time.Now().UnixNano()
	last := l.last.Load()
	if now-last < int64(l.interval) || !l.last.CompareAndSwap(last, now) {
		l.suppressed.Add(1)
		return
	}
	if n := l.suppressed.Swap(0); n > 0 {
		args = append(args, "suppressed", n)
	}
	slog.Error(msg, args...)
}
