package mysqlstore

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/flashsale/flashsale/engine"
	"github.com/flashsale/flashsale/ledger"
)

// What a cluster keeps of record outside Redis, beside the orders, so that
// a Redis that lost its data can be rebuilt: the item catalogue (every node
// writes it through, before Redis), the ledger's generation of record, and
// the orders whose purchase was answered 503 (tombstones, in case their
// record lands at a moment Redis's own tombstone was lost).
var durableTables = []string{
	`CREATE TABLE IF NOT EXISTS flashsale_items (
		id             VARCHAR(64)   NOT NULL PRIMARY KEY,
		name           VARCHAR(1024) NOT NULL,
		price_cents    BIGINT        NOT NULL,
		stock          BIGINT        NOT NULL,
		per_user_limit BIGINT        NOT NULL,
		starts_at      BIGINT        NULL, -- unix nanoseconds, NULL for none
		ends_at        BIGINT        NULL,
		ended          TINYINT       NOT NULL DEFAULT 0,
		saved_at       TIMESTAMP(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3)
	) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
	`CREATE TABLE IF NOT EXISTS flashsale_claim_marks (
		item_id VARCHAR(64) NOT NULL PRIMARY KEY,
		seq     BIGINT      NOT NULL
	) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
	`CREATE TABLE IF NOT EXISTS flashsale_aborted (
		order_id   BIGINT UNSIGNED NOT NULL PRIMARY KEY,
		aborted_at TIMESTAMP(3)    NOT NULL DEFAULT CURRENT_TIMESTAMP(3)
	) ENGINE=InnoDB`,
}

// SaveItem writes an item definition (an engine.Catalog's write).
func (s *Store) SaveItem(ctx context.Context, it engine.Item) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO flashsale_items (id, name, price_cents, stock, per_user_limit, starts_at, ends_at, ended)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)
		ON DUPLICATE KEY UPDATE name = VALUES(name), price_cents = VALUES(price_cents), stock = VALUES(stock),
			per_user_limit = VALUES(per_user_limit), starts_at = VALUES(starts_at), ends_at = VALUES(ends_at), ended = VALUES(ended)`,
		it.ID, it.Name, it.PriceCents, it.Stock, it.PerUserLimit, nanos(it.StartsAt), nanos(it.EndsAt), it.Ended)
	if err != nil {
		return fmt.Errorf("mysqlstore: cannot save item %q: %w", it.ID, err)
	}
	return nil
}

// Recorded says whether item id has a definition of record.
func (s *Store) Recorded(ctx context.Context, id string) (bool, error) {
	var n int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM flashsale_items WHERE id = ?`, id).Scan(&n); err != nil {
		return false, fmt.Errorf("mysqlstore: cannot read item %q: %w", id, err)
	}
	return n > 0, nil
}

// Items reads every item definition of record, ordered by id.
func (s *Store) Items(ctx context.Context) ([]engine.Item, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, name, price_cents, stock, per_user_limit, starts_at, ends_at, ended FROM flashsale_items ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("mysqlstore: cannot read the items: %w", err)
	}
	defer rows.Close()
	var out []engine.Item
	for rows.Next() {
		var it engine.Item
		var starts, ends sql.NullInt64
		if err := rows.Scan(&it.ID, &it.Name, &it.PriceCents, &it.Stock, &it.PerUserLimit, &starts, &ends, &it.Ended); err != nil {
			return nil, fmt.Errorf("mysqlstore: cannot read the items: %w", err)
		}
		it.StartsAt, it.EndsAt = fromNanos(starts), fromNanos(ends)
		out = append(out, it)
	}
	return out, rows.Err()
}

func nanos(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixNano()
}

func fromNanos(n sql.NullInt64) time.Time {
	if !n.Valid {
		return time.Time{}
	}
	return time.Unix(0, n.Int64).UTC()
}

// Generation is the ledger's generation of record, "" before the first.
func (s *Store) Generation(ctx context.Context) (string, error) {
	var g string
	err := s.db.QueryRowContext(ctx, `SELECT value FROM flashsale_schema WHERE name = 'ledger_generation'`).Scan(&g)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("mysqlstore: cannot read the ledger's generation: %w", err)
	}
	return g, nil
}

// StartGeneration records g as the ledger's generation when there is none
// yet (the first node of a new cluster), and returns the generation of
// record.
func (s *Store) StartGeneration(ctx context.Context, g string) (string, error) {
	if _, err := s.db.ExecContext(ctx, `INSERT IGNORE INTO flashsale_schema (name, value) VALUES ('ledger_generation', ?)`, g); err != nil {
		return "", fmt.Errorf("mysqlstore: cannot record the ledger's generation: %w", err)
	}
	return s.Generation(ctx)
}

// ErrGenerationMoved: the generation of record is not the one a rebuild
// started from (another rebuild recorded its own).
var ErrGenerationMoved = errors.New("mysqlstore: the ledger's generation of record changed meanwhile")

// SetGeneration records to as the ledger's generation, if from is still
// the generation of record (a rebuild's last step).
func (s *Store) SetGeneration(ctx context.Context, from, to string) error {
	if from == "" { // none recorded yet
		g, err := s.StartGeneration(ctx, to)
		if err == nil && g != to {
			err = ErrGenerationMoved
		}
		return err
	}
	res, err := s.db.ExecContext(ctx, `UPDATE flashsale_schema SET value = ? WHERE name = 'ledger_generation' AND value = ?`, to, from)
	if err != nil {
		return fmt.Errorf("mysqlstore: cannot record the ledger's generation: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil || n != 1 {
		if g, _ := s.Generation(ctx); g == to {
			return nil // recorded already
		}
		return ErrGenerationMoved
	}
	return nil
}

// Marks reads the highest claim sequence seen per item (redisledger's
// seqs.go): a Redis whose pool is behind one went back in time.
func (s *Store) Marks(ctx context.Context) (map[string]int64, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT item_id, seq FROM flashsale_claim_marks`)
	if err != nil {
		return nil, fmt.Errorf("mysqlstore: cannot read the claim marks: %w", err)
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var item string
		var seq int64
		if err := rows.Scan(&item, &seq); err != nil {
			return nil, fmt.Errorf("mysqlstore: cannot read the claim marks: %w", err)
		}
		out[item] = seq
	}
	return out, rows.Err()
}

// Mark records claim sequences seen, keeping the highest of each item.
func (s *Store) Mark(ctx context.Context, seen map[string]int64) error {
	if len(seen) == 0 {
		return nil
	}
	args := make([]any, 0, 2*len(seen))
	for item, seq := range seen {
		args = append(args, item, seq)
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO flashsale_claim_marks (item_id, seq) VALUES (?, ?)`+strings.Repeat(", (?, ?)", len(seen)-1)+
		` ON DUPLICATE KEY UPDATE seq = GREATEST(seq, VALUES(seq))`, args...)
	if err != nil {
		return fmt.Errorf("mysqlstore: cannot record the claim marks: %w", err)
	}
	return nil
}

// Abort records that order id's purchase was answered 503: its record, if
// it lands, must not be stored.
func (s *Store) Abort(ctx context.Context, id uint64) error {
	if _, err := s.db.ExecContext(ctx, `INSERT IGNORE INTO flashsale_aborted (order_id) VALUES (?)`, id); err != nil {
		return fmt.Errorf("mysqlstore: cannot record order %d aborted: %w", id, err)
	}
	return nil
}

// Unabort drops the tombstone of order id: its purchase stands after all.
func (s *Store) Unabort(ctx context.Context, id uint64) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM flashsale_aborted WHERE order_id = ?`, id); err != nil {
		return fmt.Errorf("mysqlstore: cannot drop the tombstone of order %d: %w", id, err)
	}
	return nil
}

// Settled says which of orders are recorded aborted (their purchases were
// answered 503) and which are stored already, in one statement: what a
// writer asks of an order whose claim the ledger does not have.
func (s *Store) Settled(ctx context.Context, orders []*engine.Order) (aborted, stored map[uint64]bool, err error) {
	aborted, stored = map[uint64]bool{}, map[uint64]bool{}
	if len(orders) == 0 {
		return aborted, stored, nil
	}
	byTable := map[string][]any{}
	all := make([]any, len(orders))
	for i, o := range orders {
		all[i] = o.ID
		t := s.TableOf(o.UserID)
		byTable[t] = append(byTable[t], o.ID)
	}
	var b strings.Builder
	b.WriteString("SELECT 'a', order_id FROM flashsale_aborted WHERE order_id IN (?" + strings.Repeat(",?", len(all)-1) + ")")
	args := all
	for t, ids := range byTable {
		b.WriteString(" UNION ALL SELECT 's', order_id FROM " + t + " WHERE order_id IN (?" + strings.Repeat(",?", len(ids)-1) + ")")
		args = append(args, ids...)
	}
	rows, err := s.db.QueryContext(ctx, b.String(), args...)
	if err != nil {
		return nil, nil, fmt.Errorf("mysqlstore: cannot read what is settled: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var kind string
		var id uint64
		if err := rows.Scan(&kind, &id); err != nil {
			return nil, nil, fmt.Errorf("mysqlstore: cannot read what is settled: %w", err)
		}
		if kind == "a" {
			aborted[id] = true
		} else {
			stored[id] = true
		}
	}
	return aborted, stored, rows.Err()
}

// Tallies reads what the stored orders say of each of items: units sold,
// units by user, and the orders with a request id made since since (the
// idempotency window). It reads every order table once, whatever the number
// of items (a rebuild's cost is the orders', not orders x items).
func (s *Store) Tallies(ctx context.Context, items []engine.Item, since time.Time) ([]ledger.Tally, error) {
	out := make([]ledger.Tally, len(items))
	byID := make(map[string]*ledger.Tally, len(items))
	for i, it := range items {
		out[i] = ledger.Tally{Item: it, Holdings: map[string]int64{}}
		byID[it.ID] = &out[i]
	}
	first := engine.FirstOrderIDAt(since)
	firsts := make(map[string]map[string]engine.BoardEntry, len(items)) // item -> user -> first order
	for i := 0; i < s.tables; i++ {
		if err := s.tallyTable(ctx, tableName(i), byID, first, firsts); err != nil {
			return nil, err
		}
	}
	for i := range out {
		t := &out[i]
		for _, b := range firsts[t.Item.ID] {
			t.Firsts = append(t.Firsts, b)
		}
		slices.SortFunc(t.Firsts, func(a, b engine.BoardEntry) int { return cmp.Compare(a.OrderID, b.OrderID) })
		t.Firsts = t.Firsts[:min(len(t.Firsts), engine.BoardSize)]
	}
	return out, nil
}

func (s *Store) tallyTable(ctx context.Context, table string, byID map[string]*ledger.Tally, first uint64, firsts map[string]map[string]engine.BoardEntry) error {
	rows, err := s.db.QueryContext(ctx, "SELECT "+orderColumns+" FROM "+table)
	if err != nil {
		return fmt.Errorf("mysqlstore: cannot tally %s: %w", table, err)
	}
	defer rows.Close()
	for rows.Next() {
		o, err := scanOrder(rows)
		if err != nil {
			return fmt.Errorf("mysqlstore: cannot tally %s: %w", table, err)
		}
		t := byID[o.ItemID]
		if t == nil {
			continue // an item with no definition of record: nothing to rebuild
		}
		t.Sold += o.Quantity
		t.Holdings[o.UserID] += o.Quantity
		byUser := firsts[o.ItemID]
		if byUser == nil {
			byUser = map[string]engine.BoardEntry{}
			firsts[o.ItemID] = byUser
		}
		if b, ok := byUser[o.UserID]; !ok || o.ID < b.OrderID {
			byUser[o.UserID] = engine.BoardEntry{ItemID: o.ItemID, UserID: o.UserID, OrderID: o.ID, At: o.CreatedAt}
		}
		if o.RequestID != "" && o.ID >= first {
			o.Status = engine.Accepted // the first answer said accepted
			t.Recent = append(t.Recent, o)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("mysqlstore: cannot tally %s: %w", table, err)
	}
	return nil
}
