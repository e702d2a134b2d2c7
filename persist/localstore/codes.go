package localstore

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"

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
		return b, false, fmt.Errorf("localstore: every batch number is taken")
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
	err := s.query(ctx, selectBatch+` ORDER BY number`, func(rows *sql.Rows) error {
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
	s.idx.RLock()
	got := s.idx.redeemed[codeKey{r.Number, r.Serial}]
	s.idx.RUnlock()
	first := *r // redeemed before: the first one's user and time
	first.UserID, first.At = got.UserID, got.At
	return &first, nil
}

// Redemptions lists every redemption, with its batch's name and value, by
// batch and serial.
func (s *Store) Redemptions(ctx context.Context, keys *codes.Keyring) ([]*codes.Redemption, error) {
	batches, err := s.Batches(ctx)
	if err != nil {
		return nil, err
	}
	byNumber := make(map[uint32]codes.Batch, len(batches))
	for _, b := range batches {
		byNumber[b.Number] = b
	}
	s.idx.RLock()
	out := make([]*codes.Redemption, 0, len(s.idx.redeemed))
	for _, r := range s.idx.redeemed {
		b, ok := byNumber[r.Number]
		if !ok {
			continue // a batch that is not recorded: its codes cannot be redeemed
		}
		c := *r
		c.Batch, c.ValueCents = b.Name, b.ValueCents
		if keys != nil { // the code's text, for replays; without its key it cannot be redeemed anyway
			if text, err := keys.Make(nil, codes.Code{Key: b.Key, Batch: r.Number, Serial: r.Serial, Expires: b.Expires}); err == nil {
				c.Code = string(text)
			}
		}
		out = append(out, &c)
	}
	s.idx.RUnlock()
	slices.SortFunc(out, func(a, b *codes.Redemption) int {
		return cmp.Or(cmp.Compare(a.Number, b.Number), cmp.Compare(a.Serial, b.Serial))
	})
	return out, nil
}
