package mysqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/flashsale/flashsale/codes"
)

// Redemption codes in cluster mode (codes.Store): the order database is
// their record and their judge. A batch's number comes from an
// AUTO_INCREMENT and its name is unique; a redemption is one INSERT whose
// primary key (batch, serial) lets exactly one redemption of a code in,
// whichever node tries first, durable once committed. Redis keeps nothing
// of codes, so a Redis that loses its data loses no redemption.

var codeTables = []string{
	`CREATE TABLE IF NOT EXISTS flashsale_code_batches (
		number      INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
		name        VARCHAR(64)  NOT NULL UNIQUE,
		key_id      TINYINT UNSIGNED NOT NULL,
		count       INT          NOT NULL,
		value_cents BIGINT       NOT NULL,
		expires_at  BIGINT       NULL -- unix seconds, NULL for none
	) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
	`CREATE TABLE IF NOT EXISTS flashsale_redemptions (
		batch       INT UNSIGNED NOT NULL,
		serial      INT UNSIGNED NOT NULL,
		user_id     VARCHAR(128) NOT NULL,
		redeemed_at BIGINT       NOT NULL, -- unix milliseconds
		PRIMARY KEY (batch, serial)
	) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
}

var (
	_ codes.Store       = (*Store)(nil)
	_ codes.BatchFinder = (*Store)(nil)
)

// CreateBatch records b under its name with the next number, or returns
// the batch of that name (and false).
func (s *Store) CreateBatch(ctx context.Context, b codes.Batch) (codes.Batch, bool, error) {
	var expires any
	if !b.Expires.IsZero() {
		expires = b.Expires.Unix()
	}
	res, err := s.db.ExecContext(ctx, `INSERT IGNORE INTO flashsale_code_batches (name, key_id, count, value_cents, expires_at) VALUES (?, ?, ?, ?, ?)`,
		b.Name, b.Key, b.Count, b.ValueCents, expires)
	if err != nil {
		return b, false, fmt.Errorf("mysqlstore: cannot record batch %q: %w", b.Name, err)
	}
	created, _ := res.RowsAffected()
	got, err := codes.ScanBatch(s.db.QueryRowContext(ctx, selectBatch+` WHERE name = ?`, b.Name))
	if err != nil {
		return b, false, fmt.Errorf("mysqlstore: cannot read batch %q: %w", b.Name, err)
	}
	if got.Number > codes.MaxBatch {
		return b, false, errors.New("mysqlstore: every batch number is taken")
	}
	return got, created == 1, nil
}

const selectBatch = `SELECT ` + codes.BatchColumns + ` FROM flashsale_code_batches`

// Batches reads every batch, by number.
func (s *Store) Batches(ctx context.Context) ([]codes.Batch, error) {
	rows, err := s.db.QueryContext(ctx, selectBatch+` ORDER BY number`)
	if err != nil {
		return nil, fmt.Errorf("mysqlstore: cannot read the batches: %w", err)
	}
	defer rows.Close()
	var out []codes.Batch
	for rows.Next() {
		b, err := codes.ScanBatch(rows)
		if err != nil {
			return nil, fmt.Errorf("mysqlstore: cannot read the batches: %w", err)
		}
		out = append(out, b)
	}
	return out, rows.Err()
}

// FindBatch reads batch number n (codes.BatchFinder): a genuine code of a
// batch another node created since this one started.
func (s *Store) FindBatch(ctx context.Context, n uint32) (codes.Batch, bool, error) {
	b, err := codes.ScanBatch(s.db.QueryRowContext(ctx, selectBatch+` WHERE number = ?`, n))
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return b, false, nil
	case err != nil:
		return b, false, fmt.Errorf("mysqlstore: cannot read batch %d: %w", n, err)
	}
	return b, true, nil
}

// Redeem records r unless its code was redeemed before, and returns the
// code's first redemption; it is committed (durable) when it returns.
func (s *Store) Redeem(ctx context.Context, r *codes.Redemption) (*codes.Redemption, error) {
	res, err := s.db.ExecContext(ctx, `INSERT IGNORE INTO flashsale_redemptions (batch, serial, user_id, redeemed_at) VALUES (?, ?, ?, ?)`,
		r.Number, r.Serial, r.UserID, r.At.UnixMilli())
	if err != nil {
		return nil, fmt.Errorf("mysqlstore: cannot record a redemption: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 1 {
		return r, nil
	}
	var user string
	var at int64
	if err := s.db.QueryRowContext(ctx, `SELECT user_id, redeemed_at FROM flashsale_redemptions WHERE batch = ? AND serial = ?`,
		r.Number, r.Serial).Scan(&user, &at); err != nil {
		return nil, fmt.Errorf("mysqlstore: cannot read a redemption: %w", err)
	}
	first := *r
	first.UserID, first.At = user, time.UnixMilli(at).UTC()
	return &first, nil
}
