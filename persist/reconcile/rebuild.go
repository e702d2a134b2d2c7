package reconcile

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/flashsale/flashsale/engine"
	"github.com/flashsale/flashsale/ledger"
	"github.com/flashsale/flashsale/persist/orderlog"
)

// A rebuild makes the ledger in Redis again from the orders of record,
// when Redis lost it (restarted empty, flushed, failed over to a replica
// that had not got it) or it is not the ledger of record. Sold is what the
// stored orders hold; what is left is stock_total - sold; the users hold
// what their orders hold; the request ids of the idempotency window answer
// their first orders again. Nothing is sold meanwhile: every node stops
// selling as soon as it sees the ledger lost (Guard), and the rebuild's
// first step (the fence) drops every pool, so that no claim can succeed
// and no unit leased from the lost ledger can be given back into the new.
//
// The orders of record are the rows in MySQL once the writers have stored
// every record in Kafka: the rebuild waits until no produce of a claim made
// before the fence can still land (twice the longest a producer waits,
// plus clock skew), then until the writers' committed offsets pass the
// topic's end. While the ledger is lost or rebuilt, the writers store a
// record whose claim they cannot find (it was in the lost ledger) unless
// its purchase was answered 503 (a tombstone of record).

// LedgerStore is what a rebuild needs of the ledger in Redis
// (redisledger.Ledger).
type LedgerStore interface {
	Lock(ctx context.Context, token string, ttl time.Duration) (bool, error)
	Unlock(ctx context.Context, token string) error
	CurrentGeneration(ctx context.Context) (string, error)
	Pools(ctx context.Context, items []string) (map[string]ledger.PoolState, error)
	Fence(ctx context.Context, next string, items []string) error
	Restore(ctx context.Context, t ledger.Tally, gen string, now time.Time) error
	Activate(ctx context.Context, gen string) error
}

// Record is what a rebuild needs of the orders of record
// (mysqlstore.Store).
type Record interface {
	Generation(ctx context.Context) (string, error)
	SetGeneration(ctx context.Context, from, to string) error
	Items(ctx context.Context) ([]engine.Item, error)
	Tallies(ctx context.Context, items []engine.Item, since time.Time) ([]ledger.Tally, error)
	Marks(ctx context.Context) (map[string]int64, error)
}

// RebuildOptions configures a rebuild.
type RebuildOptions struct {
	Ledger  LedgerStore    // required
	Record  Record         // required
	Catalog engine.Catalog // the shared catalogue (Redis), written from the record; required
	Kafka   orderlog.Config
	// Window is the idempotency window: request ids younger than it answer
	// their first orders again. Default engine.DefaultIdempotencyWindow.
	Window time.Duration
	// WaitWriters bounds the wait for the writers to store what Kafka
	// holds; default DefaultWaitWriters.
	WaitWriters time.Duration
	// Skew is the clock skew allowed between nodes; default DefaultSkew.
	Skew time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Force rebuilds a ledger that is sound (fsctl rebuild); otherwise a
	// rebuild that finds the ledger sound once it holds the lock (another
	// rebuild just ended, or a "lost" answer was stale) does nothing.
	Force bool
}

// DefaultWaitWriters is how long a rebuild waits for the writers.
const DefaultWaitWriters = 2 * time.Minute

// ErrRebuilding: another process holds the rebuild's lock.
var ErrRebuilding = errors.New("reconcile: another process is rebuilding the ledger")

// ErrSound: the ledger needs no rebuild (without Force).
var ErrSound = errors.New("reconcile: the ledger is sound; nothing to rebuild")

// RebuildResult is what a rebuild did.
type RebuildResult struct {
	Generation string
	Items      []ledger.Tally
	Took       time.Duration
}

// Rebuild makes the ledger again from the orders of record (see above). It
// fails, leaving the ledger fenced (nothing sold), when the writers do not
// store what Kafka holds within WaitWriters: start them, and rebuild again.
func Rebuild(ctx context.Context, o RebuildOptions) (RebuildResult, error) {
	if o.Window <= 0 {
		o.Window = engine.DefaultIdempotencyWindow
	}
	if o.WaitWriters <= 0 {
		o.WaitWriters = DefaultWaitWriters
	}
	if o.Skew <= 0 {
		o.Skew = DefaultSkew
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	o.Kafka = o.Kafka.WithDefaults()
	begin := o.Now()
	token := NewGeneration()
	margin := 2*(o.Kafka.Timeout+orderlog.AckGrace) + o.Skew
	ok, err := o.Ledger.Lock(ctx, token, lockTTL)
	if err != nil {
		return RebuildResult{}, err
	}
	if !ok {
		return RebuildResult{}, ErrRebuilding
	}
	// A deadline for the whole: a hung dependency must not keep the ledger
	// fenced (the next check rebuilds again).
	ctx, stop := context.WithTimeout(ctx, margin+o.WaitWriters+10*time.Minute)
	defer stop()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go keepLock(ctx, cancel, o.Ledger, token)
	defer o.Ledger.Unlock(context.Background(), token)

	items, err := o.Record.Items(ctx)
	if err != nil {
		return RebuildResult{}, err
	}
	ids := make([]string, len(items))
	for i, it := range items {
		ids[i] = it.ID
	}
	rec, err := o.Record.Generation(ctx)
	if err != nil {
		return RebuildResult{}, err
	}
	if !o.Force {
		sound, err := ledgerSound(ctx, o.Ledger, rec, ids)
		if err != nil {
			return RebuildResult{}, err
		}
		if sound {
			return RebuildResult{}, ErrSound
		}
	}
	next := NewGeneration()
	if err := o.Ledger.Fence(ctx, next, ids); err != nil {
		return RebuildResult{}, err
	}
	slog.Warn("rebuilding the ledger from the orders of record; nothing is sold until it is done",
		"generation", next, "items", len(items), "waiting", margin)
	select { // no produce of a claim made before the fence can land after this
	case <-time.After(margin):
	case <-ctx.Done():
		return RebuildResult{}, context.Cause(ctx)
	}
	if err := waitForWriters(ctx, o.Kafka, o.WaitWriters); err != nil {
		return RebuildResult{}, err
	}
	res := RebuildResult{Generation: next}
	now := o.Now()
	tallies, err := o.Record.Tallies(ctx, items, now.Add(-o.Window))
	if err != nil {
		return res, err
	}
	marks, err := o.Record.Marks(ctx)
	if err != nil {
		return res, err
	}
	for _, t := range tallies {
		it := t.Item
		t.Seq = marks[it.ID]
		if err := o.Catalog.SaveItem(ctx, it); err != nil {
			return res, err
		}
		if err := o.Ledger.Restore(ctx, t, next, now); err != nil {
			return res, err
		}
		if t.Sold > it.Stock {
			slog.Error("BUG: the orders of record hold more units than the stock", "item", it.ID, "sold", t.Sold, "stock", it.Stock)
		}
		res.Items = append(res.Items, t)
	}
	// The record first: a node told of the new generation finds it there.
	// Two rebuilders that both got here: the first to record wins, the
	// other stops; a rebuild that fenced after this one makes Activate fail.
	if err := o.Record.SetGeneration(ctx, rec, next); err != nil {
		return res, err
	}
	if err := o.Ledger.Activate(ctx, next); err != nil {
		return res, err
	}
	res.Took = o.Now().Sub(begin)
	slog.Info("the ledger is rebuilt; selling resumes", "generation", next, "items", len(items), "took", res.Took)
	return res, nil
}

// ledgerSound reports whether Redis holds the ledger of record (generation
// rec) with every item's pool of that generation.
func ledgerSound(ctx context.Context, l LedgerStore, rec string, items []string) (bool, error) {
	cur, err := l.CurrentGeneration(ctx)
	if err != nil || cur != rec || rec == "" {
		return false, err
	}
	pools, err := l.Pools(ctx, items)
	if err != nil {
		return false, err
	}
	for _, p := range pools {
		if p.Gen != rec {
			return false, nil
		}
	}
	return true, nil
}

// lockTTL is how long the rebuild's lock outlives a rebuilder that died
// (kill -9): another node's guard rebuilds after it. The rebuilder extends
// it every lockTTL/3.
const lockTTL = 15 * time.Second

// keepLock extends the rebuild's lock until ctx ends, and ends the rebuild
// when the lock was lost (Redis lost it too, or the rebuilder stalled past
// its TTL): another may be rebuilding.
func keepLock(ctx context.Context, stop context.CancelCauseFunc, l LedgerStore, token string) {
	every(ctx, lockTTL/3, func() { // stop ends ctx, and so this
		if ok, err := l.Lock(ctx, token, lockTTL); err == nil && !ok {
			stop(ErrRebuilding)
		}
	})
}

// waitForWriters waits until the writers' committed offsets pass the
// orders topic's end as it is now: every record in Kafka is then stored
// (or dead-lettered).
func waitForWriters(ctx context.Context, k orderlog.Config, wait time.Duration) error {
	p, err := orderlog.NewProgress(k)
	if err != nil {
		return err
	}
	defer p.Close()
	end, err := p.EndOffsets(ctx)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(wait)
	for {
		committed, err := p.Committed(ctx)
		if err != nil {
			return err
		}
		passed := true
		for part, e := range end {
			if committed[part] < e {
				passed = false
				break
			}
		}
		if passed {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("reconcile: the writers did not store what Kafka holds within %v: are they running? The ledger stays fenced; rebuild again", wait)
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// NewGeneration names a generation (or a rebuild's lock): 16 random hex
// digits.
func NewGeneration() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
