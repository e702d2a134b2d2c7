package engine

import (
	"sync"
	"testing"
	"time"
)

func TestOrderIDsUniqueAndOrdered(t *testing.T) {
	g, err := newIDGen(517)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 11, 12, 0, 0, 0, time.UTC)
	const workers, per = 8, 20000 // far more than 4096 per ms: borrows ahead
	ids := make([][]uint64, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			prev := uint64(0)
			for range per {
				id := g.next(now)
				if id <= prev {
					t.Errorf("ids not increasing in one goroutine: %d after %d", id, prev)
					return
				}
				prev = id
				ids[w] = append(ids[w], id)
			}
		})
	}
	wg.Wait()
	seen := make(map[uint64]bool, workers*per)
	for _, l := range ids {
		for _, id := range l {
			if seen[id] {
				t.Fatalf("duplicate id %d", id)
			}
			seen[id] = true
			if orderIDNode(id) != 517 || int64(id) < 0 {
				t.Fatalf("id %d: node %d", id, orderIDNode(id))
			}
		}
	}
	first := g.next(now.Add(time.Hour))
	if got := OrderIDTime(first); !got.Equal(now.Add(time.Hour)) {
		t.Fatalf("time of id: %v, want %v", got, now.Add(time.Hour))
	}
	// A clock that steps back keeps ids increasing.
	if back := g.next(now.Add(-time.Hour)); back <= first {
		t.Fatalf("id after clock step back %d <= %d", back, first)
	}
	// observe moves the generator past a stored id.
	g2, _ := newIDGen(3)
	g2.observe(first)
	if id := g2.next(now); id <= first {
		t.Fatalf("id %d after observing %d", id, first)
	}
	if _, err := newIDGen(MaxNodeID + 1); err == nil {
		t.Fatal("node id out of range accepted")
	}
}
