// Package mysqlstore is the order database of cluster mode: orders in MySQL
// (MariaDB here), sharded by a hash of the user id across a fixed number of
// tables so that one user's orders sit in one table, written in batches of
// multi-row INSERT IGNORE statements on an ants worker pool. INSERT IGNORE on
// the order id makes a write idempotent: a batch redelivered after a crash
// adds nothing twice. It never decides which orders are stored (a writer
// hands it the orders whose claims it marked stored) and never updates or
// deletes a row.
package mysqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/fnv"
	"strings"
	"sync"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/panjf2000/ants/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flashsale/flashsale/engine"
)

// Options configures a Store.
type Options struct {
	// DSN is the go-sql-driver/mysql data source name. interpolateParams,
	// parseTime and loc=UTC are forced on.
	DSN string
	// Tables is the number of order tables (orders_00 ..); default
	// DefaultTables, at most MaxTables. It is fixed at the first migration:
	// a store refuses another number.
	Tables int
	// Workers bounds the concurrent INSERT statements (the ants pool);
	// default DefaultWorkers.
	Workers int
	// MaxRows bounds the rows of one INSERT statement; default DefaultMaxRows.
	MaxRows int
}

// The defaults and bounds of Options.
const (
	DefaultTables  = 32
	MaxTables      = 1000
	DefaultWorkers = 8
	DefaultMaxRows = 1000
)

// DefaultOptions are the defaults, with no DSN.
func DefaultOptions() Options {
	return Options{Tables: DefaultTables, Workers: DefaultWorkers, MaxRows: DefaultMaxRows}
}

// Validate checks the settings as given.
func (o Options) Validate() error {
	if o.Tables < 1 || o.Tables > MaxTables || o.Workers < 1 || o.MaxRows < 1 {
		return fmt.Errorf("-order-tables must be in [1, %d], -writer-pool and -writer-batch positive", MaxTables)
	}
	if _, err := mysql.ParseDSN(o.DSN); err != nil {
		return fmt.Errorf("mysqlstore: bad DSN: %w", err)
	}
	return nil
}

// Store writes and reads the orders tables.
type Store struct {
	db      *sql.DB
	tables  int
	maxRows int
	pool    *ants.Pool

	insertSeconds  prometheus.Histogram
	batchRows      prometheus.Histogram
	rowsWritten    prometheus.Counter
	rowsDuplicate  prometheus.Counter
	insertFailures prometheus.Counter
}

// Open connects, migrates the schema and starts the worker pool.
func Open(ctx context.Context, o Options) (*Store, error) {
	if o.Tables == 0 {
		o.Tables = DefaultTables
	}
	if o.Workers == 0 {
		o.Workers = DefaultWorkers
	}
	if o.MaxRows == 0 {
		o.MaxRows = DefaultMaxRows
	}
	if err := o.Validate(); err != nil {
		return nil, err
	}
	cfg, err := mysql.ParseDSN(o.DSN)
	if err != nil {
		return nil, fmt.Errorf("mysqlstore: bad DSN: %w", err)
	}
	cfg.InterpolateParams, cfg.ParseTime, cfg.Loc = true, true, time.UTC
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.ReadTimeout == 0 {
		cfg.ReadTimeout = 30 * time.Second
	}
	if cfg.WriteTimeout == 0 {
		cfg.WriteTimeout = 30 * time.Second
	}
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, fmt.Errorf("mysqlstore: %w", err)
	}
	db := sql.OpenDB(conn)
	db.SetMaxOpenConns(o.Workers + 8) // the writers, and readers beside them
	db.SetMaxIdleConns(o.Workers + 8)
	db.SetConnMaxLifetime(30 * time.Minute)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("mysqlstore: cannot reach MySQL: %w", err)
	}
	pool, err := ants.NewPool(o.Workers, ants.WithNonblocking(true), ants.WithPreAlloc(true))
	if err != nil {
		db.Close()
		return nil, err
	}
	s := &Store{db: db, tables: o.Tables, maxRows: o.MaxRows, pool: pool}
	s.initMetrics()
	if err := s.migrate(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Close stops the pool and closes the connections.
func (s *Store) Close() error {
	s.pool.Release()
	return s.db.Close()
}

// TableOf names the table that holds user's orders.
func (s *Store) TableOf(user string) string { return tableName(tableIndex(user, s.tables)) }

func tableIndex(user string, n int) int {
	h := fnv.New32a()
	h.Write([]byte(user))
	return int(h.Sum32() % uint32(n))
}

func tableName(i int) string { return fmt.Sprintf("orders_%02d", i) }

// migrate creates the schema. It is idempotent, and refuses a database
// migrated with another number of tables: orders would be looked for in
// the wrong table.
func (s *Store) migrate(ctx context.Context) error {
	_, err := s.db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS flashsale_schema (
		name VARCHAR(64) NOT NULL PRIMARY KEY,
		value VARCHAR(255) NOT NULL
	) ENGINE=InnoDB`)
	if err != nil {
		return fmt.Errorf("mysqlstore: cannot migrate: %w", err)
	}
	want := fmt.Sprint(s.tables)
	if _, err := s.db.ExecContext(ctx, `INSERT IGNORE INTO flashsale_schema (name, value) VALUES ('order_tables', ?), ('version', '1')`, want); err != nil {
		return fmt.Errorf("mysqlstore: cannot migrate: %w", err)
	}
	var have string
	if err := s.db.QueryRowContext(ctx, `SELECT value FROM flashsale_schema WHERE name = 'order_tables'`).Scan(&have); err != nil {
		return fmt.Errorf("mysqlstore: cannot read the schema: %w", err)
	}
	if have != want {
		return fmt.Errorf("mysqlstore: the database holds %s order tables, configured %s: keep %s (resharding is not supported)", have, want, have)
	}
	for _, ddl := range append(durableTables, codeTables...) {
		if _, err := s.db.ExecContext(ctx, ddl); err != nil {
			return fmt.Errorf("mysqlstore: cannot migrate: %w", err)
		}
	}
	for i := 0; i < s.tables; i++ {
		_, err := s.db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS `+tableName(i)+` (
			order_id    BIGINT UNSIGNED NOT NULL PRIMARY KEY,
			item_id     VARCHAR(64)  NOT NULL,
			user_id     VARCHAR(128) NOT NULL,
			quantity    INT          NOT NULL,
			price_cents BIGINT       NOT NULL,
			request_id  VARCHAR(128) NULL,
			created_at  DATETIME(3)  NOT NULL,
			stored_at   TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
			KEY user_orders (user_id, order_id)
		) ENGINE=InnoDB DEFAULT CHARSET=ascii COLLATE=ascii_bin`)
		if err != nil {
			return fmt.Errorf("mysqlstore: cannot create %s: %w", tableName(i), err)
		}
	}
	return nil
}

// Check pings the database, for /readyz.
func (s *Store) Check(ctx context.Context) error { return s.db.PingContext(ctx) }

// Write stores orders: one multi-row INSERT IGNORE per table (split at
// MaxRows), run concurrently on the worker pool. It returns once every
// statement committed, or the first error; a retry is safe.
func (s *Store) Write(ctx context.Context, orders []*engine.Order) error {
	if len(orders) == 0 {
		return nil
	}
	byTable := make(map[int][]*engine.Order)
	for _, o := range orders {
		i := tableIndex(o.UserID, s.tables)
		byTable[i] = append(byTable[i], o)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for i, os := range byTable {
		for len(os) > 0 {
			n := min(len(os), s.maxRows)
			chunk := os[:n]
			os = os[n:]
			task := func() {
				if err := s.insert(ctx, tableName(i), chunk); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
			wg.Add(1)
			if err := s.pool.Submit(func() { defer wg.Done(); task() }); err != nil {
				// The pool is busy (ErrPoolOverload) or closed: this
				// goroutine does the work, which slows the caller down.
				task()
				wg.Done()
			}
		}
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (s *Store) insert(ctx context.Context, table string, orders []*engine.Order) error {
	var b strings.Builder
	b.Grow(128 + len(orders)*24)
	b.WriteString("INSERT IGNORE INTO ")
	b.WriteString(table)
	b.WriteString(" (order_id, item_id, user_id, quantity, price_cents, request_id, created_at) VALUES ")
	args := make([]any, 0, len(orders)*7)
	for i, o := range orders {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString("(?,?,?,?,?,?,?)")
		var req any
		if o.RequestID != "" {
			req = o.RequestID
		}
		args = append(args, o.ID, o.ItemID, o.UserID, o.Quantity, o.PriceCents, req, o.CreatedAt.UTC())
	}
	start := time.Now()
	res, err := s.db.ExecContext(ctx, b.String(), args...)
	s.insertSeconds.Observe(time.Since(start).Seconds())
	if err != nil {
		s.insertFailures.Inc()
		return fmt.Errorf("mysqlstore: insert into %s: %w", table, err)
	}
	n, _ := res.RowsAffected()
	s.batchRows.Observe(float64(len(orders)))
	s.rowsWritten.Add(float64(n))
	s.rowsDuplicate.Add(float64(int64(len(orders)) - n))
	return nil
}

const orderColumns = `order_id, item_id, user_id, quantity, price_cents, request_id, created_at`

func scanOrder(sc interface{ Scan(...any) error }) (*engine.Order, error) {
	var o engine.Order
	var req sql.NullString
	if err := sc.Scan(&o.ID, &o.ItemID, &o.UserID, &o.Quantity, &o.PriceCents, &req, &o.CreatedAt); err != nil {
		return nil, err
	}
	o.RequestID = req.String
	o.CreatedAt = o.CreatedAt.UTC()
	o.Status = engine.Persisted
	return &o, nil
}

// Order reads the order with id. The id says nothing of the user, so every
// table is asked, by primary key, in one statement.
func (s *Store) Order(ctx context.Context, id uint64) (*engine.Order, bool, error) {
	var b strings.Builder
	args := make([]any, s.tables)
	for i := 0; i < s.tables; i++ {
		if i > 0 {
			b.WriteString(" UNION ALL ")
		}
		b.WriteString("SELECT " + orderColumns + " FROM " + tableName(i) + " WHERE order_id = ?")
		args[i] = id
	}
	o, err := scanOrder(s.db.QueryRowContext(ctx, b.String(), args...))
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil, false, nil
	case err != nil:
		return nil, false, fmt.Errorf("mysqlstore: cannot read order %d: %w", id, err)
	}
	return o, true, nil
}

// MaxUserOrders bounds the orders UserOrders returns.
const MaxUserOrders = 1000

// UserOrders reads a user's orders from the user's table, newest first
// (order ids are time-ordered), at most MaxUserOrders.
func (s *Store) UserOrders(ctx context.Context, user string) ([]*engine.Order, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT "+orderColumns+" FROM "+s.TableOf(user)+
		" WHERE user_id = ? ORDER BY order_id DESC LIMIT ?", user, MaxUserOrders)
	if err != nil {
		return nil, fmt.Errorf("mysqlstore: cannot read the orders of %q: %w", user, err)
	}
	defer rows.Close()
	var out []*engine.Order
	for rows.Next() {
		o, err := scanOrder(rows)
		if err != nil {
			return nil, fmt.Errorf("mysqlstore: cannot read the orders of %q: %w", user, err)
		}
		out = append(out, o)
	}
	return out, rows.Err()
}

// Count returns the rows of every order table (tests, audits).
func (s *Store) Count(ctx context.Context) (int64, error) {
	var total int64
	for i := 0; i < s.tables; i++ {
		var n int64
		if err := s.db.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+tableName(i)).Scan(&n); err != nil {
			return 0, err
		}
		total += n
	}
	return total, nil
}

// All reads every order (tests; not for the serving path).
func (s *Store) All(ctx context.Context) ([]*engine.Order, error) {
	var out []*engine.Order
	for i := 0; i < s.tables; i++ {
		rows, err := s.db.QueryContext(ctx, "SELECT "+orderColumns+" FROM "+tableName(i))
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			o, err := scanOrder(rows)
			if err != nil {
				rows.Close()
				return nil, err
			}
			out = append(out, o)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Sold sums the units stored per item (audits).
func (s *Store) Sold(ctx context.Context, item string) (int64, error) {
	var total int64
	for i := 0; i < s.tables; i++ {
		var n sql.NullInt64
		if err := s.db.QueryRowContext(ctx, "SELECT SUM(quantity) FROM "+tableName(i)+" WHERE item_id = ?", item).Scan(&n); err != nil {
			return 0, err
		}
		total += n.Int64
	}
	return total, nil
}

func (s *Store) initMetrics() {
	s.insertSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "flashsale_mysql_insert_seconds",
		Help:    "Time of one multi-row INSERT IGNORE into an orders table.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14), // 0.5 ms .. 4 s
	})
	s.batchRows = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "flashsale_mysql_insert_rows",
		Help:    "Rows per INSERT statement.",
		Buckets: prometheus.ExponentialBuckets(1, 2, 11), // 1 .. 1024
	})
	s.rowsWritten = prometheus.NewCounter(prometheus.CounterOpts{Name: "flashsale_mysql_rows_written_total",
		Help: "Order rows inserted into MySQL."})
	s.rowsDuplicate = prometheus.NewCounter(prometheus.CounterOpts{Name: "flashsale_mysql_rows_duplicate_total",
		Help: "Order rows already present (redelivered records), ignored."})
	s.insertFailures = prometheus.NewCounter(prometheus.CounterOpts{Name: "flashsale_mysql_insert_errors_total",
		Help: "INSERT statements that failed (retried by the writer)."})
}

// Collectors are the store's metrics, to register.
func (s *Store) Collectors() []prometheus.Collector {
	return []prometheus.Collector{s.insertSeconds, s.batchRows, s.rowsWritten, s.rowsDuplicate, s.insertFailures}
}
