package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/flashsale/flashsale/codes"
)

// The store keeps redemption codes' batches and redemptions beside the
// orders (codes.Store): a redemption is committed by the same group commit
// as the orders, so a 200 survives kill -9 as a 201 does.

var _ codes.Store = (*Store)(nil)

// CreateBatch records b with the next batch number, or returns the batch of
// that name (and false).
func (s *Store) CreateBatch(ctx context.Context, b codes.Batch) (codes.Batch, bool, error) {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return b, false, err
	}
	defer tx.Rollback()
	if got, err := codes.ScanBatch(tx.QueryRowContext(ctx, selectBatch+` WHERE name = ?`, b.Name)); err == nil {
		return got, false, nil
	} else if !errors.Is(err, sql.ErrNoRows) {
		return b, false, err
	}
	var last sql.NullInt64
	if err := tx.QueryRowContext(ctx, `SELECT MAX(number) FROM code_batches`).Scan(&last); err != nil {
		return b, false, err
	}
	if b.Number = uint32(last.Int64) + 1; b.Number > codes.MaxBatch {
		return b, false, fmt.Errorf("sqlitestore: every batch number is taken")
	}
	var expires any
	if !b.Expires.IsZero() {
		expires = b.Expires.Unix()
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO code_batches (number, name, key_id, count, value_cents, expires_at) VALUES (?, ?, ?, ?, ?, ?)`,
		b.Number, b.Name, b.Key, b.Count, b.ValueCents, expires); err != nil {
		return b, false, err
	}
	return b, true, tx.Commit()
}

const selectBatch = `SELECT ` + codes.BatchColumns + ` FROM code_batches`

// Batches reads every batch, by number.
func (s *Store) Batches(ctx context.Context) ([]codes.Batch, error) {
	var out []codes.Batch
	err := s.query(ctx, selectBatch+` ORDER BY number`, nil, func(rows *sql.Rows) error {
		b, err := codes.ScanBatch(rows)
		out = append(out, b)
		return err
	})
	return out, err
}

// Redeem commits r (with the orders of the moment) and returns the code's
// first redemption: r, unless the code was redeemed before.
func (s *Store) Redeem(_ context.Context, r *codes.Redemption) (*codes.Redemption, error) {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	b := s.open
	i := len(b.redemptions)
	b.redemptions = append(b.redemptions, r)
	if err := s.wait(b); err != nil {
		return nil, err
	}
	if b.inserted[i] {
		return r, nil
	}
	var user string // redeemed before: the first
	var at int64
	if err := s.r.QueryRow(`SELECT user_id, redeemed_at FROM redemptions WHERE batch = ? AND serial = ?`, r.Number, r.Serial).Scan(&user, &at); err != nil {
		return nil, fmt.Errorf("sqlitestore: cannot read a redemption back: %w", err)
	}
	first := *r
	first.UserID, first.At = user, time.UnixMilli(at).UTC()
	return &first, nil
}

// Redemptions reads every redemption, with its batch's name and value.
func (s *Store) Redemptions(ctx context.Context, keys *codes.Keyring) ([]*codes.Redemption, error) {
	var out []*codes.Redemption
	err := s.query(ctx, `SELECT r.batch, r.serial, r.user_id, r.redeemed_at, b.name, b.value_cents, b.key_id, b.expires_at
		FROM redemptions r JOIN code_batches b ON b.number = r.batch ORDER BY r.batch, r.serial`, nil, func(rows *sql.Rows) error {
		var r codes.Redemption
		var at int64
		var key uint8
		var expires sql.NullInt64
		if err := rows.Scan(&r.Number, &r.Serial, &r.UserID, &at, &r.Batch, &r.ValueCents, &key, &expires); err != nil {
			return err
		}
		r.At = time.UnixMilli(at).UTC()
		if keys != nil { // the code's text, for replays; without its key it cannot be redeemed anyway
			c := codes.Code{Key: key, Batch: r.Number, Serial: r.Serial}
			if expires.Valid {
				c.Expires = time.Unix(expires.Int64, 0).UTC()
			}
			if text, err := keys.Make(nil, c); err == nil {
				r.Code = string(text)
			}
		}
		out = append(out, &r)
		return nil
	})
	return out, err
}
