package admission

import (
	"bytes"
	"time"
)

// Queue time: how long a request waited before the server got to it, from
// the time its proxy stamped on it (X-Request-Start). Under a flash crowd
// the queue is in front of the handlers (sockets, the proxy, the
// scheduler), where the in-flight bound cannot see it; a request that
// already waited past its budget is refused at once (503, Retry-After),
// CoDel-style, so that the server spends itself on requests that can still
// be answered in time and the queue drains instead of piling up.

// maxSkew bounds a believable stamp: one further in the past or the future
// is a clock out of step, not a queue (a proxy gives up on a request long
// before), and is ignored.
const maxSkew = time.Minute

// RequestStart reads an X-Request-Start value: "t=" (optional) and the
// Unix time in seconds with a fraction ("1700000000.123", Nginx's $msec),
// or whole milliseconds or microseconds (told apart by their size).
// Allocation-free.
func RequestStart(v []byte) (time.Time, bool) {
	v = bytes.TrimSpace(v)
	v = bytes.TrimPrefix(v, []byte("t="))
	if len(v) == 0 || len(v) > 24 {
		return time.Time{}, false
	}
	var whole, frac, scale int64 = 0, 0, 1
	digits, dot := 0, false
	for _, c := range v {
		switch {
		case c == '.' && !dot:
			dot = true
		case c >= '0' && c <= '9':
			if !dot {
				whole = whole*10 + int64(c-'0')
				digits++
			} else if scale < 1e9 { // nanoseconds are enough
				frac = frac*10 + int64(c-'0')
				scale *= 10
			}
		default:
			return time.Time{}, false
		}
	}
	if digits == 0 || digits > 16 {
		return time.Time{}, false
	}
	var ns int64
	switch { // each bound keeps the nanoseconds within an int64 (year 2255)
	case (dot || digits <= 10) && whole <= 9e9: // seconds (with a fraction)
		ns = whole*1e9 + frac*(1e9/scale)
	case !dot && digits > 10 && digits <= 13 && whole <= 9e12: // milliseconds
		ns = whole * 1e6
	case !dot && digits > 13 && whole <= 9e15: // microseconds
		ns = whole * 1e3
	default:
		return time.Time{}, false
	}
	return time.Unix(0, ns), true
}

// QueueTime is how long ago a request was stamped (v, X-Request-Start)
// as of now; ok is false without a believable stamp.
func QueueTime(v []byte, now time.Time) (time.Duration, bool) {
	if len(v) == 0 {
		return 0, false
	}
	t, ok := RequestStart(v)
	if !ok {
		return 0, false
	}
	d := now.Sub(t)
	if d > maxSkew || d < -maxSkew {
		return 0, false
	}
	return max(d, 0), true
}
