package localstore

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/flashsale/flashsale/codes"
	"github.com/flashsale/flashsale/engine"
)

// Batches get numbers in order and a name once; redemptions commit with the
// orders of the moment, read back after a restart, and a second redemption
// of a code answers the first.
func TestCodes(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openStore(t, dir)
	keys, err := codes.NewKeyring(map[uint8][]byte{3: bytes.Repeat([]byte("s"), 32)})
	if err != nil {
		t.Fatal(err)
	}
	exp := t0.Add(24 * time.Hour)
	a, created, err := s.CreateBatch(ctx, codes.Batch{Name: "a", Key: 3, Count: 10, ValueCents: 500, Expires: exp})
	if err != nil || !created || a.Number != 1 {
		t.Fatalf("first batch: %+v %v %v", a, created, err)
	}
	b, created, err := s.CreateBatch(ctx, codes.Batch{Name: "b", Key: 3, Count: 5, ValueCents: 100})
	if err != nil || !created || b.Number != 2 {
		t.Fatalf("second batch: %+v %v %v", b, created, err)
	}
	if again, created, err := s.CreateBatch(ctx, codes.Batch{Name: "a", Key: 3, Count: 99}); err != nil || created || again != a {
		t.Fatalf("a name again: %+v %v %v", again, created, err)
	}
	r := &codes.Redemption{Batch: "a", Number: 1, Serial: 4, ValueCents: 500, UserID: "u1", At: t0}
	done := make(chan error, 1)
	go func() {
		done <- s.Append(ctx, &engine.Order{ID: 1, ItemID: "it", UserID: "u9", Quantity: 1, CreatedAt: t0})
	}()
	if first, err := s.Redeem(ctx, r); err != nil || first != r {
		t.Fatalf("redeem: %+v %v", first, err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	other := &codes.Redemption{Batch: "a", Number: 1, Serial: 4, ValueCents: 500, UserID: "u2", At: t0.Add(time.Second)}
	if first, err := s.Redeem(ctx, other); err != nil || first.UserID != "u1" || !first.At.Equal(t0) {
		t.Fatalf("the code again, by another: %+v %v", first, err)
	}
	s.Close()

	s = openStore(t, dir)
	defer s.Close()
	batches, err := s.Batches(ctx)
	if err != nil || len(batches) != 2 || batches[0] != a || batches[1] != b {
		t.Fatalf("batches after a restart: %+v %v", batches, err)
	}
	got, err := s.Redemptions(ctx, keys)
	if err != nil || len(got) != 1 || got[0].UserID != "u1" || got[0].Batch != "a" || got[0].ValueCents != 500 || !got[0].At.Equal(t0) {
		t.Fatalf("redemptions after a restart: %+v %v", got, err)
	}
	want, _ := keys.Make(nil, codes.Code{Key: 3, Batch: 1, Serial: 4, Expires: exp})
	if got[0].Code != string(want) {
		t.Fatalf("the code of a redemption read back: %q, want %q", got[0].Code, want)
	}
}
