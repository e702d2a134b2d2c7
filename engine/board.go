package engine

import (
	"slices"
	"sync"
	"time"
)

// The fastest buyers of each item (GET /api/v1/items/{id}/leaderboard): a
// user's first order of the item, ranked by how soon after the sale's start
// it was made, ties in purchase order (order ids are time-ordered). The
// engine keeps the first BoardSize users of each item as winners are
// decided: memory is bounded by what the largest limit needs.

// BoardSize is the most entries a leaderboard answers.
const BoardSize = 100

// LeaderEntry is one row of a leaderboard.
type LeaderEntry struct {
	Rank         int
	UserID       string
	MsAfterStart int64
}

// BoardEntry is a user's first order of an item, as a board keeps it (and
// a store gives it back at start: Snapshot).
type BoardEntry struct {
	ItemID  string
	UserID  string
	OrderID uint64
	At      time.Time
}

type board struct {
	mu      sync.Mutex
	entries []BoardEntry // by order id, at most BoardSize
}

// add enters o's buyer, if among the first BoardSize users (by order id).
func (b *board) add(e BoardEntry) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.entries) == BoardSize && e.OrderID > b.entries[BoardSize-1].OrderID {
		return
	}
	for i := range b.entries {
		if b.entries[i].UserID == e.UserID {
			if e.OrderID >= b.entries[i].OrderID {
				return
			}
			b.entries = slices.Delete(b.entries, i, i+1) // an earlier order of the same user
			break
		}
	}
	i, _ := slices.BinarySearchFunc(b.entries, e.OrderID, func(x BoardEntry, id uint64) int {
		switch {
		case x.OrderID < id:
			return -1
		case x.OrderID > id:
			return 1
		}
		return 0
	})
	b.entries = slices.Insert(b.entries, i, e)
	if len(b.entries) > BoardSize {
		b.entries = b.entries[:BoardSize]
	}
}

// Leaderboard is an item's first limit buyers (1 to BoardSize), fastest
// first (Rank). ErrItemNotFound for an unknown item.
func (e *Engine) Leaderboard(id string, limit int) ([]LeaderEntry, error) {
	it := e.lookup(id)
	if it == nil {
		return nil, ErrItemNotFound
	}
	it.board.mu.Lock()
	defer it.board.mu.Unlock()
	return Rank(it.cfg.Load(), it.board.entries, limit), nil
}

// Rank ranks the first orders of an item's first buyers (by order id),
// timed from the sale's start: StartsAt, or when the item was created (or,
// for an item whose creation time is unknown, its first order).
func Rank(it *Item, firsts []BoardEntry, limit int) []LeaderEntry {
	start := it.StartsAt
	if start.IsZero() {
		start = it.Created
	}
	if start.IsZero() && len(firsts) > 0 {
		start = firsts[0].At
	}
	out := make([]LeaderEntry, 0, min(limit, len(firsts)))
	for i, b := range firsts {
		if i == limit {
			break
		}
		out = append(out, LeaderEntry{Rank: i + 1, UserID: b.UserID, MsAfterStart: max(b.At.Sub(start).Milliseconds(), 0)})
	}
	return out
}
