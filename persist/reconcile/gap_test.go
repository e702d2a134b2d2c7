package reconcile

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flashsale/flashsale/ledger"
)

// topic is an orders topic whose end and whose writers' commits the test moves.
type topic struct {
	mu             sync.Mutex
	end, committed map[int32]int64
}

func (t *topic) Topic() string { return "orders" }
func (t *topic) Close()        {}
func (t *topic) EndOffsets(context.Context) (map[int32]int64, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return clone(t.end), nil
}
func (t *topic) Committed(context.Context) (map[int32]int64, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return clone(t.committed), nil
}
func (t *topic) produce(p int32) { t.mu.Lock(); t.end[p]++; t.mu.Unlock() }
func (t *topic) writersCatchUp() { t.mu.Lock(); t.committed = clone(t.end); t.mu.Unlock() }
func clone(m map[int32]int64) map[int32]int64 {
	out := map[int32]int64{}
	for k, v := range m {
		out[k] = v
	}
	return out
}

// claims is a ledger's tracked claims in memory, compared and set as the
// Lua scripts do.
type claims struct {
	mu   sync.Mutex
	byID map[uint64]ledger.Claim
}

func (c *claims) Claims(context.Context, string) ([]ledger.Claim, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []ledger.Claim
	for _, cl := range c.byID {
		out = append(out, cl)
	}
	return out, nil
}

func (c *claims) Abandon(_ context.Context, cl ledger.Claim) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cur, ok := c.byID[cl.OrderID]; !ok || cur != cl || cur.State != ledger.Pending {
		return false, nil
	}
	cl.State = ledger.Aborted
	c.byID[cl.OrderID] = cl
	return true, nil
}

func (c *claims) Forget(_ context.Context, _ string, ids ...uint64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, id := range ids {
		delete(c.byID, id)
	}
	return nil
}

func (c *claims) state(id uint64) (ledger.State, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cl, ok := c.byID[id]
	return cl.State, ok
}

// The two conditions of an abandon, one at a time: a pending claim is
// given back only once it is older than the margin before a checkpoint the
// writers have passed; a pending claim too young stays; settled claims
// before the same point are forgotten, younger ones kept.
func TestGapAbandonsOnlyPastACheckpointTheWritersPassed(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	now := t0
	tp := &topic{end: map[int32]int64{0: 10, 1: 0}, committed: map[int32]int64{0: 8}}
	cs := &claims{byID: map[uint64]ledger.Claim{}}
	add := func(id uint64, st ledger.State, at time.Time) {
		cs.byID[id] = ledger.Claim{OrderID: id, ItemID: "it", State: st, Quantity: 1, CreatedAt: at, UserID: "u"}
	}
	const margin = 3 * time.Second
	add(1, ledger.Pending, t0.Add(-10*time.Second)) // old, no record: to abandon
	add(2, ledger.Stored, t0.Add(-10*time.Second))  // old, settled: to forget
	add(3, ledger.Pending, t0.Add(-time.Second))    // too young
	add(4, ledger.Aborted, t0.Add(-time.Second))    // settled, too young to forget
	g := &Gap{progress: tp, ledger: cs, margin: margin, now: func() time.Time { return now },
		abandoned: prometheus.NewCounter(prometheus.CounterOpts{Name: "a"}),
		forgotten: prometheus.NewCounter(prometheus.CounterOpts{Name: "f"})}
	ctx := context.Background()
	pass := func() GapResult {
		t.Helper()
		res, err := g.Pass(ctx, []string{"it"})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	// The first pass only takes a checkpoint.
	if res := pass(); res.Passed || res.Abandoned != 0 {
		t.Fatalf("first pass: %+v", res)
	}
	// Records arrive after the checkpoint; the writers have not caught up:
	// nothing is settled, however old.
	tp.produce(0)
	now = t0.Add(time.Minute)
	if res := pass(); res.Passed || res.Abandoned != 0 {
		t.Fatalf("before the writers passed the checkpoint: %+v", res)
	}
	if st, _ := cs.state(1); st != ledger.Pending {
		t.Fatalf("claim 1 is %v before the checkpoint was passed", st)
	}
	// The writers pass it: the claims older than checkpoint - margin are
	// settled, the others stay.
	tp.writersCatchUp()
	res := pass()
	if !res.Passed || res.Abandoned != 1 || res.Forgotten != 1 || res.Pending != 1 {
		t.Fatalf("after the checkpoint: %+v", res)
	}
	if st, _ := cs.state(1); st != ledger.Aborted {
		t.Fatalf("claim 1 is %v, want aborted", st)
	}
	if _, ok := cs.state(2); ok {
		t.Fatal("the old stored claim was not forgotten")
	}
	if st, _ := cs.state(3); st != ledger.Pending {
		t.Fatalf("the young pending claim is %v", st)
	}
	if _, ok := cs.state(4); !ok {
		t.Fatal("a settled claim younger than the margin was forgotten")
	}
}
