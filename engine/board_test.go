package engine_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/flashsale/flashsale/engine"
)

// The leaderboard: each user's first order, fastest first, timed from the
// item's creation (no starts_at); capped at BoardSize; the same after a
// restart from what the store gives back.
func TestLeaderboard(t *testing.T) {
	f := newFixture(t, 4)
	f.put(t, "it", 500, 2)
	for u := range engine.BoardSize + 20 {
		f.clock.Advance(3 * time.Millisecond)
		if _, _, err := f.buy(fmt.Sprint("u", u), "", 1); err != nil {
			t.Fatal(err)
		}
		if u == 0 { // a second unit of the first buyer: still one entry, its first
			f.clock.Advance(time.Millisecond)
			if _, _, err := f.buy("u0", "", 1); err != nil {
				t.Fatal(err)
			}
		}
	}
	board, err := f.e.Leaderboard("it", engine.BoardSize)
	if err != nil || len(board) != engine.BoardSize {
		t.Fatalf("board: %d entries, %v", len(board), err)
	}
	for i, e := range board {
		want := engine.LeaderEntry{Rank: i + 1, UserID: fmt.Sprint("u", i), MsAfterStart: int64(3*(i+1) + min(i, 1))}
		if e != want {
			t.Fatalf("entry %d: %+v, want %+v", i, e, want)
		}
	}
	if top, _ := f.e.Leaderboard("it", 3); len(top) != 3 || top[2].UserID != "u2" {
		t.Fatalf("top 3: %+v", top)
	}
	if _, err := f.e.Leaderboard("nope", 10); !errors.Is(err, engine.ErrItemNotFound) {
		t.Fatalf("an unknown item: %v", err)
	}

	// A restart: the store gives back every user's first order, in any
	// order; the board is the same. starts_at, when set, is the start.
	var snap engine.Snapshot
	for _, o := range f.sink.Orders() {
		snap.Board = append([]engine.BoardEntry{{ItemID: "it", UserID: o.UserID, OrderID: o.ID, At: o.CreatedAt}}, snap.Board...)
	}
	it, _ := f.e.Item("it")
	start := it.Created.Add(-time.Second)
	it.Item.StartsAt = start
	snap.Items = []engine.ItemRecord{{Item: it.Item, Sold: it.Sold}}
	g := newFixture(t, 4)
	if err := g.e.Restore(snap); err != nil {
		t.Fatal(err)
	}
	again, _ := g.e.Leaderboard("it", engine.BoardSize)
	if len(again) != len(board) {
		t.Fatalf("%d entries after a restart, %d before", len(again), len(board))
	}
	for i := range again {
		if again[i].UserID != board[i].UserID || again[i].MsAfterStart != board[i].MsAfterStart+1000 {
			t.Fatalf("entry %d after a restart: %+v, before %+v", i, again[i], board[i])
		}
	}
}
