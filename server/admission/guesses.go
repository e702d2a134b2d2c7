package admission

import (
	"net/netip"
	"time"
)

// Guesses limits the failed attempts at something a client could guess (a
// redemption code): per client IP and per user, a burst of failures, then
// one per refill interval. A client over either limit is refused every
// attempt, right or wrong, until its bucket refills: guessing costs the
// guesser, and the check that would answer it is never run.
type Guesses struct {
	ips   *Keyed[netip.Addr]
	users *Keyed[string]
}

// NewGuesses allows burst failures, refilled at perMinute, per IP and per
// user, tracking at most maxKeys of each (0: DefaultMaxIPs); a client that
// is being refused is never the one forgotten to make room (while any key
// has a full bucket). perMinute <= 0 turns it off (nil).
func NewGuesses(perMinute float64, burst int, maxKeys int) *Guesses {
	if perMinute <= 0 {
		return nil
	}
	rate := perMinute / 60
	return &Guesses{ips: NewKeyed[netip.Addr](rate, float64(max(burst, 1)), maxKeys, 10*time.Minute),
		users: NewKeyed[string](rate, float64(max(burst, 1)), maxKeys, 10*time.Minute)}
}

// Blocked says whether ip or user (empty: none) is over its limit of
// failures, and how long until neither is. Pass a user only when it is
// authenticated: a user id anybody may name would let a guesser change it
// at will, and lock out the user it names.
func (g *Guesses) Blocked(ip netip.Addr, user string, now time.Time) (bool, time.Duration) {
	if g == nil {
		return false, 0
	}
	okIP, wait := g.ips.Get(ip, now).Ready(now)
	okUser := true
	if user != "" {
		var w time.Duration
		if okUser, w = g.users.Get(user, now).Ready(now); !okUser {
			wait = max(wait, w)
		}
	}
	return !okIP || !okUser, wait
}

// Failed counts a failed attempt of ip and user.
func (g *Guesses) Failed(ip netip.Addr, user string, now time.Time) {
	if g == nil {
		return
	}
	g.ips.Get(ip, now).Allow(now)
	if user != "" {
		g.users.Get(user, now).Allow(now)
	}
}

// Sweep forgets the clients idle for ten minutes.
func (g *Guesses) Sweep(now time.Time) {
	if g != nil {
		g.ips.Sweep(now)
		g.users.Sweep(now)
	}
}
