package admission

import (
	"net/netip"
	"testing"
	"time"
)

// A burst of failures, then refused until the bucket refills; per IP and
// per user apart; successes cost nothing.
func TestGuesses(t *testing.T) {
	g := NewGuesses(6, 3, 100) // 3 at once, then one each 10 s
	now := time.Unix(1000, 0)
	a, b := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	for i := range 3 {
		if blocked, _ := g.Blocked(a, "u", now); blocked {
			t.Fatalf("blocked after %d failures", i)
		}
		g.Failed(a, "u", now)
	}
	if blocked, wait := g.Blocked(a, "u", now); !blocked || wait <= 0 || wait > 10*time.Second {
		t.Fatalf("after the burst: blocked %v, wait %v", blocked, wait)
	}
	if blocked, _ := g.Blocked(b, "v", now); blocked {
		t.Fatal("another IP and user are blocked too")
	}
	if blocked, _ := g.Blocked(b, "u", now); !blocked {
		t.Fatal("the user is not blocked from another IP")
	}
	if blocked, _ := g.Blocked(a, "", now); !blocked {
		t.Fatal("the IP is not blocked for another user")
	}
	if blocked, _ := g.Blocked(a, "u", now.Add(11*time.Second)); blocked {
		t.Fatal("still blocked once a failure's worth refilled")
	}
	var off *Guesses = NewGuesses(0, 3, 100)
	off.Failed(a, "u", now)
	if blocked, _ := off.Blocked(a, "u", now); blocked {
		t.Fatal("a limit turned off blocks")
	}
}

// A guesser who is being refused is not forgotten to make room for other
// clients: they are (their buckets full), and the default tracks 100,000.
func TestGuessesKeepTheBlocked(t *testing.T) {
	now := time.Unix(1000, 0)
	guesser := netip.MustParseAddr("10.9.9.9")
	for _, g := range []*Guesses{NewGuesses(6, 3, 640), NewGuesses(6, 3, 0)} {
		for range 3 {
			g.Failed(guesser, "", now)
		}
		for i := range 5000 {
			g.Blocked(netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), "", now)
		}
		if blocked, _ := g.Blocked(guesser, "", now); !blocked {
			t.Fatal("the guesser was forgotten while blocked")
		}
	}
}
