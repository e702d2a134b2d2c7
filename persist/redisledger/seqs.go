package redisledger

import (
	"context"
	"log/slog"
	"maps"
	"strconv"
	"sync"
	"time"

	"github.com/flashsale/flashsale/engine"
)

// Every pool counts its claims in a field that only grows, "seq" (each
// claim script adds one and returns it). A Redis that went back in time (a
// failover to a replica that had not got the last writes, an AOF that lost
// its last second) has a smaller one than what was seen before. A node
// remembers, per item, the highest it has seen (its claims' answers and the
// feed's claim events) and refuses a claim that comes back no higher than
// what it had seen before asking: that claim may sell a unit sold already.
// It condemns the generation at once, so that the ledger is rebuilt from
// the orders of record. The writers record the highest sequence of the
// claims they stored (mysqlstore marks), which a node that starts, or the
// guard every second, compares with the pools: the same loss, seen by a
// node that has no memory of it.

// seqs is the highest claim sequence seen per item.
type seqs struct {
	mu sync.Mutex
	m  map[string]int64
}

func newSeqs() *seqs { return &seqs{m: map[string]int64{}} }

// seen is the highest sequence seen of item (0: none).
func (s *seqs) seen(item string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[item]
}

// note records seq of item if it is the highest seen.
func (s *seqs) note(item string, seq int64) {
	s.mu.Lock()
	if seq > s.m[item] {
		s.m[item] = seq
	}
	s.mu.Unlock()
}

// seqBase is where a pool made at now starts counting: a thousand per
// millisecond since 1970, so that a pool made again (a rebuild) counts on
// from above every sequence of the one it replaces (no item is claimed a
// thousand times a millisecond for long).
func seqBase(now time.Time) string { return strconv.FormatInt(now.UnixMilli()*1000, 10) }

// seqAbove is where a rebuilt pool starts: seqBase, or well above seen (the
// highest sequence recorded before the loss) when the rebuilder's clock is
// behind the one that made the pool; the margin covers what nodes saw and
// had not recorded yet (a second of claims).
func seqAbove(now time.Time, seen int64) string {
	return strconv.FormatInt(max(now.UnixMilli()*1000, seen+1_000_000), 10)
}

// Seen is the highest claim sequence seen per item.
func (l *Ledger) Seen() map[string]int64 {
	l.seqs.mu.Lock()
	defer l.seqs.mu.Unlock()
	return maps.Clone(l.seqs.m)
}

// NoteSeq records that item's pool had reached claim sequence seq (the
// writers' marks, at a node's start).
func (l *Ledger) NoteSeq(item string, seq int64) { l.seqs.note(item, seq) }

// wentBack answers a claim whose sequence is not above what was seen before
// it: the generation is condemned, and the claim is refused as of a lost
// ledger (its units are dropped by the engine; the rebuild counts only the
// orders of record, and this one has no record).
func (l *Ledger) wentBack(ctx context.Context, item string, seq, before int64) error {
	gen := l.Generation()
	slog.Error("Redis went back in time: a claim's sequence is not above one seen before it; condemning the ledger",
		"item", item, "seq", seq, "seen", before, "generation", gen)
	if err := l.Condemn(context.WithoutCancel(ctx), gen); err != nil {
		slog.Error("cannot condemn the ledger; the guard will find it", "err", err)
	}
	return engine.ErrLedgerLost
}
