// Package sqlitestore is the standalone mode's durable store: orders and
// items in one SQLite file (modernc.org/sqlite, pure Go), written with group
// commit. It is the engine's OrderSink and Catalog, reads orders back, and
// rebuilds the engine at start (Load). It never decides a purchase: an order
// it is given is one the engine already took stock for.
//
// Group commit: Append puts the order in the open batch and waits. One writer
// goroutine takes the whole batch, writes it in one transaction and commits;
// with WAL and synchronous=FULL the commit returns after the fsync that makes
// every order of the batch durable. Orders that arrive meanwhile form the
// next batch, so one fsync (~0.3 ms here) serves every buyer of that moment.
package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/flashsale/flashsale/codes"
	"github.com/flashsale/flashsale/engine"
)

// FileName is the database file inside the data directory.
const FileName = "flashsale.db"

// Options configures a Store.
type Options struct {
	// Dir is the data directory; created if missing.
	Dir string
	// MaxBatch caps the orders written in one transaction; the rest wait for
	// the next. Default DefaultMaxBatch.
	MaxBatch int
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
var ErrClosed = errors.New("sqlitestore: store is closed")

// Store is the embedded order and item store.
type Store struct {
	opts Options
	w    *sql.DB // the writer: one connection, for commits and item saves
	r    *sql.DB // readers; WAL lets them run beside the writer
	lock *os.File

	mu      sync.Mutex
	open    *batch   // filling; taken whole by the writer
	sealed  []*batch // full batches (MaxBatch orders), committed first
	closing bool
	wake    chan struct{}
	done    chan struct{}

	lastErr atomic.Pointer[error]        // last commit's failure, nil once one succeeds
	inserts [rowsPerInsert + 1]*sql.Stmt // owned by the writer goroutine

	batchSize     prometheus.Histogram
	commitSeconds prometheus.Histogram
	commitErrors  prometheus.Counter
}

type batch struct {
	orders      []*engine.Order
	redemptions []*codes.Redemption
	inserted    []bool        // by redemption: false when its code was redeemed before
	done        chan struct{} // closed when err is set
	err         error
}

func (b *batch) size() int { return len(b.orders) + len(b.redemptions) }

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
	path := filepath.Join(opts.Dir, FileName)
	pragmas := "_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=busy_timeout(10000)"
	if s.w, err = sql.Open("sqlite", "file:"+path+"?_txlock=immediate&"+pragmas); err != nil {
		s.closeFiles()
		return nil, fmt.Errorf("cannot open order store %q: %w", path, err)
	}
	s.w.SetMaxOpenConns(1)
	s.w.SetConnMaxLifetime(0)
	if _, err := s.w.Exec(schema); err != nil {
		s.closeFiles()
		return nil, fmt.Errorf("cannot create the schema of order store %q: %w", path, err)
	}
	if err := s.migrate(); err != nil {
		s.closeFiles()
		return nil, fmt.Errorf("cannot migrate order store %q: %w", path, err)
	}
	if s.r, err = sql.Open("sqlite", "file:"+path+"?_pragma=query_only(1)&"+pragmas); err != nil {
		s.closeFiles()
		return nil, fmt.Errorf("cannot open order store %q for reading: %w", path, err)
	}
	s.r.SetMaxOpenConns(8)
	s.r.SetMaxIdleConns(8)
	s.initMetrics()
	go s.writer()
	return s, nil
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
	ended          INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS orders (
	id          INTEGER PRIMARY KEY, -- the engine's time-ordered order id
	item_id     TEXT NOT NULL,
	user_id     TEXT NOT NULL,
	quantity    INTEGER NOT NULL,
	price_cents INTEGER NOT NULL,
	request_id  TEXT,                -- NULL when the client sent none
	created_at  INTEGER NOT NULL     -- unix milliseconds
);
CREATE INDEX IF NOT EXISTS orders_by_user ON orders (user_id, id DESC);
CREATE TABLE IF NOT EXISTS probe (id INTEGER PRIMARY KEY, at INTEGER NOT NULL); -- Check's write
CREATE TABLE IF NOT EXISTS code_batches (
	number      INTEGER PRIMARY KEY, -- what the codes carry
	name        TEXT NOT NULL UNIQUE,
	key_id      INTEGER NOT NULL,
	count       INTEGER NOT NULL,
	value_cents INTEGER NOT NULL,
	expires_at  INTEGER              -- unix seconds, NULL for none
);
CREATE TABLE IF NOT EXISTS redemptions (
	batch       INTEGER NOT NULL,
	serial      INTEGER NOT NULL,
	user_id     TEXT NOT NULL,
	redeemed_at INTEGER NOT NULL,    -- unix milliseconds
	PRIMARY KEY (batch, serial)
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
	if b.size() >= s.opts.MaxBatch {
		s.sealed = append(s.sealed, b)
		s.open = newBatch()
	}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default: // the writer is already due to look
	}
	<-b.done
	return b.err
}

// writer is the one goroutine that commits orders. Woken, it commits batch
// after batch until none is waiting, then sleeps again.
func (s *Store) writer() {
	defer close(s.done)
	for range s.wake {
		for {
			b, closing := s.take()
			if b == nil {
				if closing {
					return
				}
				break
			}
			b.inserted = make([]bool, len(b.redemptions))
			b.err = s.commit(b.orders, b.redemptions, b.inserted)
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

// rowsPerInsert is how many orders one INSERT statement carries: fewer
// statements per batch, well under SQLite's limit of bound variables.
const rowsPerInsert = 128

const insertHead = "INSERT INTO orders (id, item_id, user_id, quantity, price_cents, request_id, created_at) VALUES "

// commit writes orders and redemptions in one transaction, durable when it
// returns nil; inserted says which redemptions went in (a code redeemed
// before keeps its first).
func (s *Store) commit(orders []*engine.Order, redemptions []*codes.Redemption, inserted []bool) (err error) {
	start, count := time.Now(), len(orders)+len(redemptions)
	defer func() {
		s.commitSeconds.Observe(time.Since(start).Seconds())
		s.batchSize.Observe(float64(count))
		if err != nil {
			s.commitErrors.Inc()
			err = fmt.Errorf("cannot commit %d orders and redemptions to the order store: %w", count, err)
			s.lastErr.Store(&err)
		} else {
			s.lastErr.Store(nil)
		}
	}()
	// Prepare before Begin: the writer has one connection, and the open
	// transaction would hold it.
	full, rest := len(orders)/rowsPerInsert, len(orders)%rowsPerInsert
	for _, n := range [2]int{rowsPerInsert * min(full, 1), rest} {
		if _, err := s.insertStmt(n); err != nil {
			return err
		}
	}
	tx, err := s.w.Begin()
	if err != nil {
		return err
	}
	defer tx.Rollback() // a no-op after Commit
	args := make([]any, 0, 7*rowsPerInsert)
	for len(orders) > 0 {
		n := min(len(orders), rowsPerInsert)
		args = args[:0]
		for _, o := range orders[:n] {
			var req any
			if o.RequestID != "" {
				req = o.RequestID
			}
			args = append(args, int64(o.ID), o.ItemID, o.UserID, o.Quantity, o.PriceCents, req, o.CreatedAt.UnixMilli())
		}
		stmt, err := s.insertStmt(n)
		if err != nil {
			return err
		}
		if _, err := tx.Stmt(stmt).Exec(args...); err != nil {
			return err
		}
		orders = orders[n:]
	}
	for i, r := range redemptions {
		res, err := tx.Exec(`INSERT INTO redemptions (batch, serial, user_id, redeemed_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING`,
			r.Number, r.Serial, r.UserID, r.At.UnixMilli())
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		inserted[i] = n == 1
	}
	return tx.Commit()
}

// insertStmt returns the prepared INSERT of rows orders. Statements are
// prepared once, by the writer goroutine only, on the writer's single
// connection: parsing SQL was a fifth of the writer's CPU (tuning.md).
func (s *Store) insertStmt(rows int) (*sql.Stmt, error) {
	if rows == 0 {
		return nil, nil
	}
	if st := s.inserts[rows]; st != nil {
		return st, nil
	}
	st, err := s.w.Prepare(insertHead + strings.TrimSuffix(strings.Repeat("(?,?,?,?,?,?,?),", rows), ","))
	if err != nil {
		return nil, err
	}
	s.inserts[rows] = st
	return st, nil
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
	for _, st := range s.inserts {
		if st != nil {
			st.Close()
		}
	}
	err := errors.Join(s.r.Close(), s.w.Close())
	s.lock.Close()
	return err
}

// Check reports whether the store can take orders. After a failed commit it
// probes with a small durable write of its own, and clears the failure when
// that succeeds: a node whose /readyz fails gets no purchases, so waiting for
// the next order's commit to clear it would keep the node out for ever.
func (s *Store) Check(ctx context.Context) error {
	if p := s.lastErr.Load(); p != nil {
		if _, err := s.w.ExecContext(ctx, `INSERT OR REPLACE INTO probe (id, at) VALUES (1, ?)`, time.Now().UnixNano()); err != nil {
			return fmt.Errorf("%w (probe write: %w)", *p, err)
		}
		s.lastErr.CompareAndSwap(p, nil)
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
