package codes_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flashsale/flashsale/codes"
)

// memStore is a codes.Store in memory, the decision under one lock as a
// store's would be (SQLite's primary key, Redis's script).
type memStore struct {
	mu       sync.Mutex
	batches  map[string]codes.Batch
	redeemed map[[2]uint32]*codes.Redemption
	calls    atomic.Int64
}

func newMemStore() *memStore {
	return &memStore{batches: map[string]codes.Batch{}, redeemed: map[[2]uint32]*codes.Redemption{}}
}

func (m *memStore) CreateBatch(_ context.Context, b codes.Batch) (codes.Batch, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if got, ok := m.batches[b.Name]; ok {
		return got, false, nil
	}
	b.Number = uint32(len(m.batches) + 1)
	m.batches[b.Name] = b
	return b, true, nil
}

func (m *memStore) Redeem(_ context.Context, r *codes.Redemption) (*codes.Redemption, error) {
	m.calls.Add(1)
	m.mu.Lock()
	defer m.mu.Unlock()
	k := [2]uint32{r.Number, r.Serial}
	if first := m.redeemed[k]; first != nil {
		return first, nil
	}
	m.redeemed[k] = r
	return r, nil
}

func TestDesk(t *testing.T) {
	ctx := context.Background()
	clock := now
	store := newMemStore()
	d := codes.NewDesk(keyring(t, 1), store, nil, nil, func() time.Time { return clock })
	b, list, created, err := d.CreateBatch(ctx, "b1", 3, 500, now.Add(48*time.Hour+30*time.Second))
	if err != nil || !created || len(list) != 3 || b.Number != 1 || !b.Expires.Equal(now.Add(48*time.Hour)) {
		t.Fatalf("create: %+v %d codes, created %v, %v", b, len(list), created, err)
	}
	// The same request again: the same codes; other settings: refused.
	if _, again, created, err := d.CreateBatch(ctx, "b1", 3, 500, now.Add(48*time.Hour)); err != nil || created || again[2] != list[2] {
		t.Fatalf("the same batch again: %v created %v, %v", again, created, err)
	}
	if _, _, _, err := d.CreateBatch(ctx, "b1", 4, 500, now.Add(48*time.Hour)); !errors.Is(err, codes.ErrBatchExists) {
		t.Fatalf("the name again with another count: %v", err)
	}

	r, replayed, err := d.Redeem(ctx, list[1], "u1")
	if err != nil || replayed || r.Batch != "b1" || r.Serial != 1 || r.ValueCents != 500 || r.UserID != "u1" || r.Code != list[1] {
		t.Fatalf("redeem: %+v %v %v", r, replayed, err)
	}
	calls := store.calls.Load()
	if again, replayed, err := d.Redeem(ctx, list[1], "u1"); err != nil || !replayed || *again != *r {
		t.Fatalf("the same user again: %+v %v %v", again, replayed, err)
	}
	if _, _, err := d.Redeem(ctx, list[1], "u2"); !errors.Is(err, codes.ErrUsed) {
		t.Fatalf("another user: %v", err)
	}
	if store.calls.Load() != calls {
		t.Fatal("a code known redeemed went to the store")
	}
	// Invalid: tampered, a batch the desk does not know, a serial past the
	// count, another expiry; expired once the clock passes. (other has the
	// desk's secret: its codes are genuine.)
	swap := map[bool]string{true: "B", false: "A"}[list[0][6] == 'A']
	tampered := list[0][:6] + swap + list[0][7:]
	other := keyring(t, 1)
	unknown, _ := other.Make(nil, codes.Code{Key: 1, Batch: 99, Serial: 0})
	past, _ := other.Make(nil, codes.Code{Key: 1, Batch: 1, Serial: 3, Expires: b.Expires})
	// A genuine code of the batch's number with another expiry (tools/codes
	// given the wrong one) is not one of its codes.
	reissued, _ := other.Make(nil, codes.Code{Key: 1, Batch: 1, Serial: 0, Expires: b.Expires.Add(time.Hour)})
	for _, c := range []string{tampered, string(unknown), string(past), string(reissued), ""} {
		if _, _, err := d.Redeem(ctx, c, "u1"); !errors.Is(err, codes.ErrInvalid) {
			t.Fatalf("%q: %v", c, err)
		}
	}
	clock = b.Expires
	if _, _, err := d.Redeem(ctx, list[0], "u1"); !errors.Is(err, codes.ErrExpired) {
		t.Fatalf("at expiry: %v", err)
	}
	// No keys, no codes.
	if _, _, err := codes.NewDesk(nil, store, nil, nil, nil).Redeem(ctx, list[0], "u1"); !errors.Is(err, codes.ErrNoKeys) {
		t.Fatalf("without keys: %v", err)
	}
}

// Many users at once on one code: exactly one wins; every other is told it
// is used (they wait for the winner's outcome).
func TestDeskOneWinner(t *testing.T) {
	ctx := context.Background()
	d := codes.NewDesk(keyring(t, 1), newMemStore(), nil, nil, func() time.Time { return now })
	_, list, _, err := d.CreateBatch(ctx, "b", 1, 100, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	var wins atomic.Int64
	var wg sync.WaitGroup
	for u := range 64 {
		wg.Go(func() {
			_, replayed, err := d.Redeem(ctx, list[0], fmt.Sprint("u", u))
			switch {
			case err == nil && !replayed:
				wins.Add(1)
			case errors.Is(err, codes.ErrUsed):
			default:
				t.Errorf("u%d: %v %v", u, replayed, err)
			}
		})
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d winners of one code", wins.Load())
	}
}
