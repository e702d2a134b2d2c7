// Package localstore is the standalone mode's durable store. Orders and
// code redemptions go to an append-only log of checksummed records
// (persist/seglog), written with group commit, with indexes in memory; item
// definitions and code batches, which change rarely and are read as tables,
// go to one SQLite file (modernc.org/sqlite, pure Go). It is the engine's
// OrderSink and Catalog, reads orders back, and rebuilds the engine at start
// (Load). It never decides a purchase: an order it is given is one the
// engine already took stock for.
//
// Group commit: Append puts the order in the open batch and waits. One writer
// goroutine takes the whole batch and appends it to the log with one durable
// write (seglog: direct, or a write and an fdatasync); orders that arrive
// meanwhile form the next batch, so one trip to the disk (~0.2 ms here)
// serves every buyer of that moment.
// The log replaced SQLite for orders because SQLite's commit was a third of
// the server's CPU on the winning path (tuning.md); a store made by an
// earlier version has its orders moved into the log at Open.
package localstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/flashsale/flashsale/codes"
	"github.com/flashsale/flashsale/engine"
	"github.com/flashsale/flashsale/persist/seglog"
)

// FileName is the database file inside the data directory; LogDir the
// directory of the order log's segments.
const (
	FileName = "flashsale.db"
	LogDir   = "orders"
)

// Options configures a Store.
type Options struct {
	// Dir is the data directory; created if missing.
	Dir string
	// MaxBatch caps the orders written in one group commit; the rest wait
	// for the next. Default DefaultMaxBatch.
	MaxBatch int
	// SegmentBytes is the size of the order log's segments; default
	// seglog.DefaultSegmentBytes.
	SegmentBytes int64
	// Fault, for tests, is handed to the log (seglog.Options.Fault).
	Fault func(op string) error
	// Unsure is called, and the writer stops, when a commit failed and
	// could not be undone (seglog.ErrUnsure): its orders may or may not be
	// stored. Default: log it and exit the process with status 70, so that
	// the restart's recovery decides (as PostgreSQL does on a failed
	// fsync); tests set their own.
	Unsure func(error)
}

func (o Options) unsure(err error) {
	if o.Unsure != nil {
		o.Unsure(err)
		return
	}
	slog.Error("the order log cannot say whether a batch of orders is stored; exiting so that the restart's recovery decides (no buyer of that batch was answered)", "err", err)
	os.Exit(70)
}

// DefaultMaxBatch is the most orders one group commit writes.
const DefaultMaxBatch = 4096

// Validate checks the settings as given.
func (o Options) Validate() error {
	if o.Dir == "" || o.MaxBatch < 1 {
		return errors.New("the order store needs a data directory (-data-dir) and a batch of at least 1 (-store-max-batch)")
	}
	return nil
}

// ErrClosed is returned by Append after Close.
var ErrClosed = errors.New("localstore: store is closed")

// Store is the embedded order and item store.
type Store struct {
	opts Options
	w    *sql.DB // items and code batches: one connection
	r    *sql.DB // readers of those
	log  *seglog.Log
	lock *os.File

	mu      sync.Mutex
	open    *batch   // filling; taken whole by the writer
	sealed  []*batch // full batches (MaxBatch orders), committed first
	closing bool
	wake    chan struct{}
	done    chan struct{}

	lastErr atomic.Pointer[error] // last commit's failure, nil once one succeeds
	rec     []byte                // the writer's: a record being encoded

	idx index

	batchSize     prometheus.Histogram
	commitSeconds prometheus.Histogram
	commitErrors  prometheus.Counter
}

// index is what the store keeps in memory of the log: where each order is,
// each user's orders, and every code's first redemption. The writer
// goroutine is its only writer, after the commit that made the records
// durable: an order is readable once its Append has returned.
type index struct {
	sync.RWMutex
	byID     map[uint64]located
	byUser   map[string]uint64 // the user's last order committed; the others by located.prev
	redeemed map[codeKey]*codes.Redemption
	lastID   uint64
}

type codeKey struct{ number, serial uint32 }

// located is where an order is, and the id of the same user's order
// committed before it (0: none): each user's orders are a chain, so that
// indexing an order allocates nothing beyond the maps' own growth.
type located struct {
	pos  seglog.Pos
	prev uint64
}

func (x *index) addOrder(o *engine.Order, pos seglog.Pos) { x.add(o.ID, o.UserID, pos) }

// add indexes an order whose id is not indexed yet (a chain must never
// loop): commit checks its batch's ids before writing, replay keeps an id's
// first record.
func (x *index) add(id uint64, user string, pos seglog.Pos) {
	prev := x.byUser[user]
	x.byUser[user] = id
	x.byID[id] = located{pos: pos, prev: prev}
	x.lastID = max(x.lastID, id)
}

type batch struct {
	orders      []*engine.Order
	redemptions []*codes.Redemption
	probes      int           // Check's probes waiting for this batch
	inserted    []bool        // by redemption: false when its code was redeemed before
	done        chan struct{} // closed when err is set
	err         error
}

func (b *batch) size() int { return len(b.orders) + len(b.redemptions) + b.probes }

func newBatch() *batch { return &batch{done: make(chan struct{})} }

// Open opens (or creates) the store in opts.Dir and starts its writer. Only
// one process may use a data directory at a time.
func Open(opts Options) (*Store, error) {
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = DefaultMaxBatch
	}
	if err := os.MkdirAll(opts.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("cannot create data directory %q: %w", opts.Dir, err)
	}
	lock, err := lockDir(opts.Dir)
	if err != nil {
		return nil, err
	}
	s := &Store{opts: opts, lock: lock, open: newBatch(), wake: make(chan struct{}, 1), done: make(chan struct{})}
	s.idx = index{byID: map[uint64]located{}, byUser: map[string]uint64{}, redeemed: map[codeKey]*codes.Redemption{}}
	if err := s.openFiles(); err != nil {
		s.closeFiles()
		return nil, err
	}
	s.initMetrics()
	s.zeroAhead()
	go s.writer()
	return s, nil
}

// zeroAhead has the log write its zeros ahead now, when nobody waits for a
// commit, rather than with the next batch (seglog.Log.ZeroAhead). Only the
// writer, or Open before it starts, calls it. A failure costs nothing but
// the time it saves: the commits write the zeros themselves.
func (s *Store) zeroAhead() {
	if err := s.log.ZeroAhead(); err != nil {
		slog.Warn("the order log could not write its zeros ahead; commits will", "err", err)
	}
}

func (s *Store) openFiles() (err error) {
	path := filepath.Join(s.opts.Dir, FileName)
	pragmas := "_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=busy_timeout(10000)"
	if s.w, err = sql.Open("sqlite", "file:"+path+"?_txlock=immediate&"+pragmas); err != nil {
		return fmt.Errorf("cannot open order store %q: %w", path, err)
	}
	s.w.SetMaxOpenConns(1)
	s.w.SetConnMaxLifetime(0)
	if _, err := s.w.Exec(schema); err != nil {
		return fmt.Errorf("cannot create the schema of order store %q: %w", path, err)
	}
	if err := s.migrate(); err != nil {
		return fmt.Errorf("cannot migrate order store %q: %w", path, err)
	}
	if s.r, err = sql.Open("sqlite", "file:"+path+"?_pragma=query_only(1)&"+pragmas); err != nil {
		return fmt.Errorf("cannot open order store %q for reading: %w", path, err)
	}
	s.r.SetMaxOpenConns(8)
	s.r.SetMaxIdleConns(8)
	dir := filepath.Join(s.opts.Dir, LogDir)
	s.log, err = seglog.Open(seglog.Options{Dir: dir, SegmentBytes: s.opts.SegmentBytes, Fault: s.opts.Fault}, s.replay)
	if err != nil {
		return fmt.Errorf("cannot open the order log %q: %w", dir, err)
	}
	if direct, err := seglog.TakesDirect(dir); err == nil && !direct {
		slog.Warn("the order log's filesystem refuses O_DIRECT: each commit is a write and an fdatasync instead of one direct write (about a quarter more CPU and time per commit; tuning.md)", "dir", dir)
	}
	if n := s.log.Cut(); n > 0 {
		slog.Warn("the order log ended in a torn write (a crash in the middle of a commit, whose orders were never acknowledged); cut it off",
			"dir", dir, "bytes", n)
	}
	if err := s.moveOrders(); err != nil {
		return fmt.Errorf("cannot move the orders of order store %q into its log: %w", path, err)
	}
	return nil
}

// replay indexes a record of the log at Open.
func (s *Store) replay(pos seglog.Pos, rec []byte) error {
	switch rec[0] { // never empty: seglog.Add
	case kindOrder:
		// Only what the index keeps: at start, with a million orders,
		// decoding whole orders was most of Open's time.
		id, user, err := orderKey(rec)
		if err != nil {
			return fmt.Errorf("the record at %d:%d: %w", pos.Segment(), pos.Offset(), err)
		}
		if id <= s.idx.lastID { // ids grow with time: only one below the last can be a duplicate
			if _, dup := s.idx.byID[id]; dup {
				return nil // an id keeps its first record
			}
		}
		s.idx.add(id, string(user), pos)
	case kindRedemption:
		r, err := decodeRedemption(rec)
		if err != nil {
			return fmt.Errorf("the record at %d:%d: %w", pos.Segment(), pos.Offset(), err)
		}
		if k := (codeKey{r.Number, r.Serial}); s.idx.redeemed[k] == nil {
			s.idx.redeemed[k] = r
		}
	case kindProbe:
	default:
		return fmt.Errorf("the record at %d:%d is of kind %d, unknown to this version (written by a newer one?)", pos.Segment(), pos.Offset(), rec[0])
	}
	return nil
}

const schema = `
CREATE TABLE IF NOT EXISTS items (
	id             TEXT PRIMARY KEY,
	name           TEXT NOT NULL,
	price_cents    INTEGER NOT NULL,
	stock          INTEGER NOT NULL,
	per_user_limit INTEGER NOT NULL,
	starts_at      INTEGER, -- unix nanoseconds, NULL for none
	ends_at        INTEGER,
	ended          INTEGER NOT NULL DEFAULT 0,
	created_at     INTEGER  -- unix milliseconds, NULL: unknown
);
CREATE TABLE IF NOT EXISTS code_batches (
	number      INTEGER PRIMARY KEY, -- what the codes carry
	name        TEXT NOT NULL UNIQUE,
	key_id      INTEGER NOT NULL,
	count       INTEGER NOT NULL,
	value_cents INTEGER NOT NULL,
	expires_at  INTEGER              -- unix seconds, NULL for none
);
`

// migrate adds the columns a store made by an earlier version lacks.
func (s *Store) migrate() error {
	var n int
	if err := s.w.QueryRow(`SELECT COUNT(*) FROM pragma_table_info('items') WHERE name = 'created_at'`).Scan(&n); err != nil {
		return err
	}
	if n == 0 {
		if _, err := s.w.Exec(`ALTER TABLE items ADD COLUMN created_at INTEGER`); err != nil { // unix ms; NULL: unknown
			return err
		}
	}
	return nil
}

func lockDir(dir string) (*os.File, error) {
	path := filepath.Join(dir, "LOCK")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o640)
	if err != nil {
		return nil, fmt.Errorf("cannot open lock file %q: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("data directory %q is in use by another process (lock %q: %w); stop it or pass another -data-dir", dir, path, err)
	}
	return f, nil
}

func (s *Store) closeFiles() {
	if s.w != nil {
		s.w.Close()
	}
	if s.r != nil {
		s.r.Close()
	}
	if s.log != nil {
		s.log.Close()
	}
	s.lock.Close() // releases the flock
}

// Append makes o durable: it returns after the commit that holds o, or with
// the error that kept that commit from happening (then o is not stored).
// It never gives up waiting early: see engine.OrderSink.
func (s *Store) Append(_ context.Context, o *engine.Order) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return ErrClosed
	}
	b := s.open
	b.orders = append(b.orders, o)
	return s.wait(b)
}

// wait seals b when full, wakes the writer and waits for b's commit. The
// caller holds mu, which wait releases.
func (s *Store) wait(b *batch) error {
	s.submit(b)
	<-b.done
	return b.err
}

// submit seals b when full and wakes the writer. The caller holds mu, which
// submit releases.
func (s *Store) submit(b *batch) {
	if b.size() >= s.opts.MaxBatch {
		s.sealed = append(s.sealed, b)
		s.open = newBatch()
	}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default: // the writer is already due to look
	}
}

// writer is the one goroutine that commits orders. Woken, it commits batch
// after batch until none is waiting, writes the log's zeros ahead if they
// run short, then sleeps again.
func (s *Store) writer() {
	defer close(s.done)
	for range s.wake {
		for {
			b, closing := s.take()
			if b == nil {
				if closing {
					return
				}
				s.zeroAhead()
				break
			}
			b.err = s.commit(b)
			if errors.Is(b.err, seglog.ErrUnsure) {
				// Its orders may stand or not: telling their buyers
				// "failed" would give the units back to be sold again.
				// They get no answer; the restart's recovery decides.
				s.opts.unsure(b.err)
				return
			}
			close(b.done)
		}
	}
}

// take returns the next batch to commit, or nil when there is none.
func (s *Store) take() (b *batch, closing bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case len(s.sealed) > 0:
		b = s.sealed[0]
		s.sealed[0] = nil
		s.sealed = s.sealed[1:]
	case s.open.size() > 0:
		b = s.open
		s.open = newBatch()
	}
	return b, s.closing
}

// errDuplicateID fails a batch with an order id the log holds already: the
// engine's ids are unique, so this is a bug, and storing both would leave
// one of them unreadable.
var errDuplicateID = errors.New("an order id that is stored already")

// commit appends b's orders and redemptions to the log, durable when it
// returns nil, and indexes them; b.inserted says which redemptions went in
// (a code redeemed before keeps its first).
func (s *Store) commit(b *batch) (err error) {
	start, count, wrote := time.Now(), len(b.orders)+len(b.redemptions), false
	defer func() {
		s.commitSeconds.Observe(time.Since(start).Seconds())
		s.batchSize.Observe(float64(count))
		if err != nil {
			s.commitErrors.Inc()
			err = fmt.Errorf("cannot commit %d orders and redemptions to the order store: %w", count, err)
			s.lastErr.Store(&err)
		} else if wrote { // only a write says the disk takes writes again
			s.lastErr.Store(nil)
		}
	}()
	if err := s.log.Begin(); err != nil {
		return err
	}
	if err := s.checkIDs(b.orders); err != nil {
		return err
	}
	pos := make([]seglog.Pos, len(b.orders))
	for i, o := range b.orders {
		s.rec = appendOrder(s.rec[:0], o)
		pos[i] = s.log.Add(s.rec)
		wrote = true
	}
	b.inserted = make([]bool, len(b.redemptions))
	var first map[codeKey]bool // this batch's first redemption of each code
	for i, r := range b.redemptions {
		k := codeKey{r.Number, r.Serial}
		if s.idx.redeemed[k] != nil || first[k] {
			continue
		}
		if first == nil {
			first = map[codeKey]bool{}
		}
		first[k], b.inserted[i] = true, true
		s.rec = appendRedemption(s.rec[:0], r)
		s.log.Add(s.rec)
		wrote = true
	}
	if b.probes > 0 {
		s.log.Add([]byte{kindProbe})
		wrote = true
	}
	if err := s.log.Commit(); err != nil {
		return err
	}
	s.idx.Lock()
	for i, o := range b.orders {
		s.idx.addOrder(o, pos[i])
	}
	for i, r := range b.redemptions {
		if b.inserted[i] {
			s.idx.redeemed[codeKey{r.Number, r.Serial}] = r
		}
	}
	s.idx.Unlock()
	return nil
}

// checkIDs refuses a batch with an order id stored already or twice in it.
// Reading the index without its lock: this goroutine is its only writer.
// Ids grow with time, so only an id at or below every one before it can be
// a duplicate; the batch's own ids are put in a set only then.
func (s *Store) checkIDs(orders []*engine.Order) error {
	top := s.idx.lastID
	var batch map[uint64]bool
	for i, o := range orders {
		if o.ID <= top {
			if batch == nil {
				batch = make(map[uint64]bool, len(orders))
				for _, p := range orders[:i] {
					batch[p.ID] = true
				}
			}
			if _, dup := s.idx.byID[o.ID]; dup || batch[o.ID] {
				return fmt.Errorf("order %d: %w", o.ID, errDuplicateID)
			}
		}
		if batch != nil {
			batch[o.ID] = true
		}
		top = max(top, o.ID)
	}
	return nil
}

// Close commits what is waiting, stops the writer and closes the files.
// Appends after Close fail with ErrClosed.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return nil
	}
	s.closing = true
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	<-s.done
	err := errors.Join(s.r.Close(), s.w.Close(), s.log.Close())
	s.lock.Close()
	return err
}

// Check reports whether the store can take orders. After a failed commit it
// probes with a small durable write of its own, and clears the failure when
// that succeeds: a node whose /readyz fails gets no purchases, so waiting for
// the next order's commit to clear it would keep the node out for ever.
func (s *Store) Check(ctx context.Context) error {
	if p := s.lastErr.Load(); p != nil {
		s.mu.Lock()
		if s.closing {
			s.mu.Unlock()
			return ErrClosed
		}
		b := s.open
		b.probes++
		s.submit(b)
		select {
		case <-b.done:
		case <-ctx.Done():
			return fmt.Errorf("%w (probe write: %w)", *p, ctx.Err())
		}
		if b.err != nil {
			return fmt.Errorf("%w (probe write: %w)", *p, b.err)
		}
	}
	return s.r.PingContext(ctx)
}

// SaveItem writes an item definition (the engine's Catalog).
func (s *Store) SaveItem(ctx context.Context, it engine.Item) error {
	_, err := s.w.ExecContext(ctx, `
INSERT INTO items (id, name, price_cents, stock, per_user_limit, starts_at, ends_at, ended, created_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET name = excluded.name, price_cents = excluded.price_cents,
	stock = excluded.stock, per_user_limit = excluded.per_user_limit,
	starts_at = excluded.starts_at, ends_at = excluded.ends_at, ended = excluded.ended,
	created_at = COALESCE(items.created_at, excluded.created_at)`,
		it.ID, it.Name, it.PriceCents, it.Stock, it.PerUserLimit, nanos(it.StartsAt), nanos(it.EndsAt), it.Ended, millis(it.Created))
	if err != nil {
		return fmt.Errorf("cannot save item %q: %w", it.ID, err)
	}
	return nil
}

func nanos(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixNano()
}

func millis(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixMilli()
}

func fromNanos(n sql.NullInt64) time.Time {
	if !n.Valid {
		return time.Time{}
	}
	return time.Unix(0, n.Int64).UTC()
}
