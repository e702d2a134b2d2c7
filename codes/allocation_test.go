//go:build !race

package codes_test

import (
	"context"
	"testing"
	"time"

	"github.com/flashsale/flashsale/codes"
)

// Checking a code, genuine or not, allocates nothing.
func TestCheckDoesNotAllocate(t *testing.T) {
	k := keyring(t, 1, 2)
	good := make1(t, k, codes.Code{Key: 2, Batch: 5, Serial: 6, Expires: now.Add(time.Hour)})
	expired := make1(t, k, codes.Code{Key: 1, Batch: 5, Serial: 7, Expires: now})
	forged := good[:len(good)-3] + "000"
	for _, s := range []string{good, expired, forged, "nonsense"} {
		k.Check(s, now) // warm the pool
		if n := testing.AllocsPerRun(1000, func() { k.Check(s, now) }); n != 0 {
			t.Fatalf("Check(%q): %v allocations", s, n)
		}
	}
}

// The desk's check (the code, then its batch, in memory) allocates nothing.
func TestDeskCheckDoesNotAllocate(t *testing.T) {
	d := codes.NewDesk(keyring(t, 1), newMemStore(), nil, nil, func() time.Time { return now })
	_, list, _, err := d.CreateBatch(context.Background(), "b", 2, 100, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{list[0], list[1][:20], "nonsense"} {
		d.Check(s)
		if n := testing.AllocsPerRun(1000, func() { d.Check(s) }); n != 0 {
			t.Fatalf("Check(%q): %v allocations", s, n)
		}
	}
}
