package admission

import (
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 11, 12, 0, 0, 0, time.UTC)

// admitted counts what a bucket admits from requests spread evenly over d
// at rate offered, on a deterministic clock.
func admitted(b *Bucket, start time.Time, d time.Duration, offered float64) int {
	n := int(offered * d.Seconds())
	ok := 0
	for i := 0; i < n; i++ {
		if a, _ := b.Allow(start.Add(time.Duration(float64(i) / offered * float64(time.Second)))); a {
			ok++
		}
	}
	return ok
}

func TestBucketBurstAndRetryAfter(t *testing.T) {
	b := NewBucket(100, 10, 0, t0)
	// A burst at one instant: exactly the bucket, then refusals.
	for i := 0; i < 10; i++ {
		if ok, _ := b.Allow(t0); !ok {
			t.Fatalf("request %d of the burst refused", i)
		}
	}
	ok, wait := b.Allow(t0)
	if ok || wait != 10*time.Millisecond || RetryAfter(wait) != 1 {
		t.Fatalf("over the burst: ok=%v wait=%v", ok, wait)
	}
	// A token comes back every 10 ms.
	if ok, _ := b.Allow(t0.Add(10 * time.Millisecond)); !ok {
		t.Fatal("no token after one interval")
	}
	// A slow bucket asks for a long wait, in whole seconds.
	slow := NewBucket(0.2, 1, 0, t0)
	slow.Allow(t0)
	if ok, wait := slow.Allow(t0); ok || RetryAfter(wait) != 5 {
		t.Fatalf("slow bucket: ok=%v retry-after=%d", ok, RetryAfter(wait))
	}
	// Off: admits everything.
	var off *Bucket
	if ok, _ := off.Allow(t0); !ok {
		t.Fatal("nil bucket refused")
	}
}

func TestBucketSteadyRate(t *testing.T) {
	// Offered twice the limit for 10 s: about the limit is admitted.
	b := NewBucket(1000, 50, 0, t0)
	got := admitted(b, t0, 10*time.Second, 2000)
	if got < 10000 || got > 10000+50 {
		t.Fatalf("admitted %d of 20000 at a limit of 1000/s for 10 s", got)
	}
}

func TestWarmup(t *testing.T) {
	// Offered the full limit: the first second admits about a third, the
	// rate climbs, and after the warm-up all is admitted.
	b := NewBucket(3000, 10, 10*time.Second, t0)
	first := admitted(b, t0, time.Second, 3000)
	if first < 1000 || first > 1250 {
		t.Fatalf("first second of warm-up admitted %d of 3000, want about 1/3 (~1100)", first)
	}
	mid := admitted(b, t0.Add(5*time.Second), time.Second, 3000)
	if mid < 1900 || mid > 2200 {
		t.Fatalf("half-way admitted %d, want about 2/3", mid)
	}
	late := admitted(b, t0.Add(10*time.Second), time.Second, 3000)
	if late < 2990 {
		t.Fatalf("after warm-up admitted %d of 3000", late)
	}
	// A restock starts the warm-up again.
	b.Rewarm(t0.Add(20 * time.Second))
	if again := admitted(b, t0.Add(20*time.Second), time.Second, 3000); again > 1200 {
		t.Fatalf("after rewarm admitted %d, want about 1/3", again)
	}
}
