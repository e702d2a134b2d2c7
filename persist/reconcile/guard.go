package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flashsale/flashsale/ledger"
)

// Generations is what a guard reads of the ledger in Redis
// (redisledger.Ledger): its generation now, and the one this node sells
// from.
type Generations interface {
	CurrentGeneration(ctx context.Context) (string, error)
	Generation() string
	SetGeneration(g string)
	Pools(ctx context.Context, items []string) (map[string]ledger.PoolState, error)
	// Seen is the highest claim sequence this node has seen per item.
	Seen() map[string]int64
	// NoteSeq records a sequence seen elsewhere (the marks of record).
	NoteSeq(item string, seq int64)
	// Condemn marks generation gen as having lost writes.
	Condemn(ctx context.Context, gen string) error
}

// GuardRecord is what a guard reads and keeps of record, outside Redis
// (mysqlstore): the generation of record, and the highest claim sequence
// any node has seen per item (redisledger/seqs.go).
type GuardRecord interface {
	Generation(ctx context.Context) (string, error)
	Marks(ctx context.Context) (map[string]int64, error)
	Mark(ctx context.Context, seen map[string]int64) error
}

// Guard watches, for one node, that the ledger in Redis is the ledger of
// record and the one the node sells from. When it is not (Redis has no
// generation: it lost its data; or another one; or one being rebuilt; or
// the engine found a pool gone), the node stops selling (Lost) and, when
// the guard may, the ledger is rebuilt (Rebuild, one node at a time). When
// the ledger of record is back under a new generation, the node sells from
// it (Rebuilt).
type Guard struct {
	redis  Generations
	record GuardRecord
	marked map[string]int64 // the sequences this node recorded last
	// Lost is told why the node must stop selling; EngineLost says whether
	// the engine stopped by itself (a script found a pool gone).
	lost       func(why string)
	engineLost func() bool
	sound      func()
	items      func() []string
	rebuilt    func(gen string)
	rebuild    func(ctx context.Context) error // nil: by hand only (fsctl rebuild)

	mu         sync.Mutex
	why        string       // "" while the ledger is sound
	lostAt     atomic.Int64 // unix ns when the node last found the ledger lost
	rebuilding atomic.Bool

	lostGauge prometheus.Gauge
	rebuilds  *prometheus.CounterVec
}

// GuardOptions configures a Guard.
type GuardOptions struct {
	Redis      Generations
	Record     GuardRecord
	Lost       func(why string)
	EngineLost func() bool
	// Sound is told that the engine's "lost" was stale: the generation and
	// every pool (of Items) are sound.
	Sound   func()
	Items   func() []string
	Rebuilt func(gen string)
	// Rebuild, when set, is run (in the background, once at a time) when
	// the ledger is found lost: the automatic rebuild.
	Rebuild func(ctx context.Context) error
}

// NewGuard returns a guard; run it with Run, or Check by hand.
func NewGuard(o GuardOptions) *Guard {
	return &Guard{redis: o.Redis, record: o.Record, marked: map[string]int64{}, lost: o.Lost, engineLost: o.EngineLost, sound: o.Sound, items: o.Items,
		rebuilt: o.Rebuilt, rebuild: o.Rebuild,
		lostGauge: prometheus.NewGauge(prometheus.GaugeOpts{Name: "flashsale_ledger_lost",
			Help: "1 while this node sells nothing because the ledger in Redis is lost or not the ledger of record (it is being rebuilt), else 0."}),
		rebuilds: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "flashsale_ledger_rebuilds_total",
			Help: "Rebuilds of the ledger from the orders of record this node tried, by result: done, elsewhere (another node held the lock), not_needed (sound once locked), failed."}, []string{"result"}),
	}
}

// LostWithin reports whether the node found the ledger lost within d: a
// registration gone then went with the ledger.
func (g *Guard) LostWithin(d time.Duration) bool {
	at := g.lostAt.Load()
	return at != 0 && time.Since(time.Unix(0, at)) <= d
}

// Why says why the node stops selling, "" while the ledger is sound: for
// /readyz.
func (g *Guard) Why() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.why
}

// Ready is /readyz's check: an error saying why while the node sells
// nothing for the ledger.
func (g *Guard) Ready(context.Context) error {
	if why := g.Why(); why != "" {
		return errors.New(why)
	}
	if g.engineLost() {
		return errors.New("a script found a pool of the ledger gone; checking the pools")
	}
	return nil
}

// Check compares the generations once and acts on what it finds; an
// automatic rebuild runs under ctx.
func (g *Guard) Check(ctx context.Context) error {
	cur, err := g.redis.CurrentGeneration(ctx)
	if err != nil {
		return err // Redis is down: the circuit breaker answers meanwhile
	}
	rec, err := g.record.Generation(ctx)
	if err != nil {
		return err
	}
	mine := g.redis.Generation()
	var why string
	switch {
	case cur == "":
		why = "Redis has no ledger: it lost its data"
	case ledger.IsRebuilding(cur):
		why = "the ledger is being rebuilt from the orders of record"
	case ledger.IsCondemned(cur):
		why = "the ledger was condemned for lost writes: orders whose claims it lacks, or a claim behind one seen before (a failover to a replica that had not got them?)"
	case cur != rec:
		why = fmt.Sprintf("the ledger in Redis (generation %s) is not the ledger of record (%s)", cur, rec)
	case cur != mine:
		g.redis.SetGeneration(cur) // rebuilt: sell from the new one
		g.set("")
		slog.Info("the ledger was rebuilt; selling from it", "generation", cur)
		g.rebuilt(cur)
		return nil
	default:
		if why, err = g.pools(ctx, mine); err != nil {
			return err
		}
		if why == "" {
			if g.engineLost() { // a script's answer that was stale (it ran across a switch)
				g.sound()
			}
			g.set("")
			return nil
		}
	}
	if g.set(why) {
		slog.Error("the ledger cannot be trusted; this node sells nothing until it is rebuilt", "why", why)
		g.lost(why)
	}
	if g.rebuild != nil && g.rebuilding.CompareAndSwap(false, true) { // the lock picks one rebuilder
		go func() {
			defer g.rebuilding.Store(false)
			err := g.rebuild(ctx)
			switch {
			case errors.Is(err, ErrRebuilding):
				g.rebuilds.WithLabelValues("elsewhere").Inc()
			case errors.Is(err, ErrSound):
				g.rebuilds.WithLabelValues("not_needed").Inc()
			case err != nil:
				g.rebuilds.WithLabelValues("failed").Inc()
				slog.Error("cannot rebuild the ledger; the next check tries again", "err", err)
			default:
				g.rebuilds.WithLabelValues("done").Inc()
			}
		}()
	}
	return nil
}

// pools checks the pools of the items this node sells: each of its
// generation, and none behind a claim sequence seen before (here, or by any
// node: the marks of record). It records the sequences this node saw, and
// condemns a generation that went back in time. It says why the ledger
// cannot be trusted, "" when it can.
func (g *Guard) pools(ctx context.Context, mine string) (string, error) {
	items := g.items()
	marks, err := g.record.Marks(ctx)
	if err != nil {
		return "", err
	}
	for item, seq := range marks {
		g.redis.NoteSeq(item, seq)
	}
	// What was seen before the pools are read: a pool read after can only
	// be at least there (claims go on meanwhile).
	seen := g.redis.Seen()
	pools, err := g.redis.Pools(ctx, items)
	if err != nil {
		return "", err
	}
	for _, item := range items {
		p := pools[item]
		if p.Gen != mine {
			return fmt.Sprintf("the pool of item %s is gone or not of the ledger's generation", item), nil
		}
		if p.Seq < seen[item] {
			if err := g.redis.Condemn(ctx, mine); err != nil {
				return "", err
			}
			return fmt.Sprintf("Redis went back in time: the pool of item %s is at claim %d, %d was seen before (a failover to a replica that had not got the last writes?)",
				item, p.Seq, seen[item]), nil
		}
	}
	news := map[string]int64{}
	for item, seq := range seen {
		if seq > g.marked[item] && seq > marks[item] {
			news[item] = seq
		}
	}
	if len(news) > 0 {
		if err := g.record.Mark(ctx, news); err != nil {
			return "", err
		}
		for item, seq := range news {
			g.marked[item] = seq
		}
	}
	return "", nil
}

// set records why (or "" when sound) and says whether it is newly lost.
func (g *Guard) set(why string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	newly := g.why == "" && why != ""
	g.why = why
	if why != "" {
		g.lostAt.Store(time.Now().UnixNano())
	}
	if why == "" {
		g.lostGauge.Set(0)
	} else {
		g.lostGauge.Set(1)
	}
	return newly
}

// Run checks every interval until ctx ends, and at once when kick is
// signalled (the feed saw the generation change).
func (g *Guard) Run(ctx context.Context, interval time.Duration, kick <-chan struct{}) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := g.Check(ctx); err != nil && ctx.Err() == nil {
			slog.Warn("cannot check the ledger's generation", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-kick:
		}
	}
}

// Collectors are the guard's metrics, to register.
func (g *Guard) Collectors() []prometheus.Collector {
	return []prometheus.Collector{g.lostGauge, g.rebuilds}
}
