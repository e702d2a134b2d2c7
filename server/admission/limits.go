package admission

import (
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Limit names the limit that refused a request.
type Limit uint8

const (
	None Limit = iota
	Global
	Item
	IP
)

var limitNames = [...]string{None: "none", Global: "global", Item: "item", IP: "ip"}

func (l Limit) String() string { return limitNames[l] }

// Options configures the rate limits; a rate of 0 turns its limit off.
type Options struct {
	Global, Item, IP float64       // requests per second; 0 is off
	Warmup           time.Duration // climb from a third to the full rate; default DefaultWarmup
	// MaxIPs bounds the clients tracked by the per-IP limit; when full, idle
	// clients are evicted first. Default DefaultMaxIPs.
	MaxIPs int
	// IPIdle is how long a client may be silent before the sweep forgets
	// it. Default DefaultIPIdle.
	IPIdle time.Duration
}

// The defaults of Options.
const (
	DefaultWarmup = 10 * time.Second
	DefaultMaxIPs = 100_000
	DefaultIPIdle = time.Minute
)

// Validate checks the settings as given; zero is off (rates) or the default.
func (o Options) Validate() error {
	if o.Global < 0 || o.Item < 0 || o.IP < 0 || o.Warmup < 0 || o.MaxIPs < 0 || o.IPIdle < 0 {
		return errors.New("-rate-* and -rate-warmup must not be negative")
	}
	return nil
}

// burstFor is the bucket of a limit: a tenth of a second's worth.
func burstFor(rate float64) float64 { return max(1, rate/10) }

// Limits holds the three rate limits.
type Limits struct {
	opts   Options
	global *Bucket

	itemsMu sync.Mutex // guards the writes of items; reads are lock-free
	items   atomic.Pointer[map[string]*Bucket]

	ips *Keyed[netip.Addr]
}

// NewLimits returns the limits, cold at now.
func NewLimits(o Options, now time.Time) *Limits {
	if o.Warmup <= 0 {
		o.Warmup = DefaultWarmup
	}
	if o.MaxIPs <= 0 {
		o.MaxIPs = DefaultMaxIPs
	}
	if o.IPIdle <= 0 {
		o.IPIdle = DefaultIPIdle
	}
	l := &Limits{opts: o, ips: NewKeyed[netip.Addr](o.IP, burstFor(o.IP), o.MaxIPs, o.IPIdle)}
	if o.Global > 0 {
		l.global = NewBucket(o.Global, burstFor(o.Global), o.Warmup, now)
	}
	l.items.Store(&map[string]*Bucket{})
	return l
}

// Allow applies the global and the per-IP limit to a request from ip.
func (l *Limits) Allow(ip netip.Addr, now time.Time) (Limit, time.Duration) {
	if ok, wait := l.global.Allow(now); !ok {
		return Global, wait
	}
	if l.opts.IP > 0 {
		if ok, wait := l.ips.Get(ip, now).Allow(now); !ok {
			return IP, wait
		}
	}
	return None, 0
}

// AllowItem applies the per-item limit. The caller passes only items that
// exist, so hostile item ids cannot grow the table.
func (l *Limits) AllowItem(item string, now time.Time) (Limit, time.Duration) {
	if l.opts.Item <= 0 {
		return None, 0
	}
	b := (*l.items.Load())[item]
	if b == nil {
		b = l.newItemBucket(item, now)
	}
	if ok, wait := b.Allow(now); !ok {
		return Item, wait
	}
	return None, 0
}

func (l *Limits) newItemBucket(item string, now time.Time) *Bucket {
	l.itemsMu.Lock()
	defer l.itemsMu.Unlock()
	old := *l.items.Load()
	if b := old[item]; b != nil {
		return b
	}
	next := make(map[string]*Bucket, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	b := NewBucket(l.opts.Item, burstFor(l.opts.Item), l.opts.Warmup, now)
	next[string([]byte(item))] = b // item may alias a request buffer
	l.items.Store(&next)
	return b
}

// Rewarm restarts the warm-up of an item's limit, after a restock.
func (l *Limits) Rewarm(item string, now time.Time) {
	if b := (*l.items.Load())[item]; b != nil {
		b.Rewarm(now)
	}
}

// Sweep forgets clients idle longer than IPIdle.
func (l *Limits) Sweep(now time.Time) { l.ips.Sweep(now) }

// Clients is the number of clients the per-IP limit tracks.
func (l *Limits) Clients() int { return l.ips.Len() }

// TrackedItems is the number of items the per-item limit tracks.
func (l *Limits) TrackedItems() int { return len(*l.items.Load()) }
