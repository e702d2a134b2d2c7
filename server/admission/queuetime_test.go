package admission

import (
	"strconv"
	"testing"
	"time"
)

func TestRequestStart(t *testing.T) {
	want := time.Unix(1700000000, 123_000_000)
	for _, v := range []string{"t=1700000000.123", "1700000000.123", " t=1700000000.123000 ", "t=1700000000123", "t=1700000000123000"} {
		got, ok := RequestStart([]byte(v))
		if !ok || !got.Equal(want) {
			t.Errorf("%q: %v %v, want %v", v, got, ok, want)
		}
	}
	if got, ok := RequestStart([]byte("t=1700000000")); !ok || !got.Equal(time.Unix(1700000000, 0)) {
		t.Errorf("whole seconds: %v %v", got, ok)
	}
	for _, v := range []string{"", "t=", "t=abc", "t=1.2.3", "t=-5", "t=17000000001.5", "t=12345678901234567", "t=1e9", "x=1700000000"} {
		if _, ok := RequestStart([]byte(v)); ok {
			t.Errorf("%q accepted", v)
		}
	}
}

func TestQueueTime(t *testing.T) {
	now := time.Unix(1700000000, 500_000_000)
	stamp := func(d time.Duration) []byte {
		return []byte("t=" + strconv.FormatInt(now.Add(-d).UnixMicro(), 10))
	}
	if d, ok := QueueTime(stamp(30*time.Millisecond), now); !ok || d != 30*time.Millisecond {
		t.Fatalf("30 ms ago: %v %v", d, ok)
	}
	if d, ok := QueueTime(stamp(-2*time.Millisecond), now); !ok || d != 0 {
		t.Fatalf("a stamp slightly ahead (clocks a little apart) counts as no wait: %v %v", d, ok)
	}
	for _, d := range []time.Duration{2 * time.Minute, -2 * time.Minute} {
		if _, ok := QueueTime(stamp(d), now); ok {
			t.Fatalf("a stamp %v off is a clock out of step, not a queue", d)
		}
	}
	if _, ok := QueueTime(nil, now); ok {
		t.Fatal("no header")
	}
	if n := testing.AllocsPerRun(100, func() { QueueTime([]byte("t=1700000000.123"), now) }); n != 0 {
		t.Fatalf("QueueTime allocates %v", n)
	}
}

// FuzzRequestStart: any header value is read or refused, never a panic,
// and what is read is within the range the formats allow.
func FuzzRequestStart(f *testing.F) {
	for _, s := range []string{"t=1700000000.123", "1700000000123456", "t=", "t=.5", "t=1.", "9999999999.999999999999"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, v []byte) {
		got, ok := RequestStart(v)
		if ok && (got.Before(time.Unix(0, 0)) || got.After(time.Unix(1e10, 0))) {
			t.Fatalf("%q read as %v", v, got)
		}
	})
}
