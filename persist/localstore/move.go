package localstore

import (
	"database/sql"
	"fmt"
	"log/slog"
	"time"

	"github.com/flashsale/flashsale/codes"
	"github.com/flashsale/flashsale/engine"
)

// A store made by an earlier version keeps its orders and redemptions in
// SQLite tables. moveOrders appends the ones the log does not hold yet to
// the log, durably, then drops the tables. A crash anywhere in between is
// safe: what the log holds is not appended again at the next start, and the
// tables are dropped only after the log holds all of them.

// moveChunk is how many rows one commit of the move appends.
const moveChunk = 10_000

func (s *Store) moveOrders() error {
	var tables int
	if err := s.w.QueryRow(`SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name IN ('orders', 'redemptions')`).Scan(&tables); err != nil {
		return err
	}
	if tables == 0 {
		return nil
	}
	moved := 0
	var chunk []any // *engine.Order or *codes.Redemption
	flush := func() error {
		if len(chunk) == 0 {
			return nil
		}
		if err := s.log.Begin(); err != nil {
			return err
		}
		for _, v := range chunk {
			switch v := v.(type) {
			case *engine.Order:
				s.rec = appendOrder(s.rec[:0], v)
				s.idx.addOrder(v, s.log.Add(s.rec))
			case *codes.Redemption:
				s.rec = appendRedemption(s.rec[:0], v)
				s.log.Add(s.rec)
				s.idx.redeemed[codeKey{v.Number, v.Serial}] = v
			}
		}
		moved += len(chunk)
		chunk = chunk[:0]
		return s.log.Commit()
	}
	keep := func(v any, known bool) error { // a row the log does not hold yet joins the chunk
		if !known {
			chunk = append(chunk, v)
		}
		if len(chunk) == moveChunk {
			return flush()
		}
		return nil
	}
	if err := s.moveRows(`orders`, `SELECT id, item_id, user_id, quantity, price_cents, request_id, created_at FROM orders ORDER BY id`, func(rows *sql.Rows) error {
		var o engine.Order
		var id, created int64
		var req sql.NullString
		if err := rows.Scan(&id, &o.ItemID, &o.UserID, &o.Quantity, &o.PriceCents, &req, &created); err != nil {
			return err
		}
		o.ID, o.RequestID, o.CreatedAt, o.Status = uint64(id), req.String, time.UnixMilli(created).UTC(), engine.Persisted
		_, known := s.idx.byID[o.ID]
		return keep(&o, known)
	}); err != nil {
		return err
	}
	if err := s.moveRows(`redemptions`, `SELECT batch, serial, user_id, redeemed_at FROM redemptions ORDER BY batch, serial`, func(rows *sql.Rows) error {
		var r codes.Redemption
		var at int64
		if err := rows.Scan(&r.Number, &r.Serial, &r.UserID, &at); err != nil {
			return err
		}
		r.At = time.UnixMilli(at).UTC()
		return keep(&r, s.idx.redeemed[codeKey{r.Number, r.Serial}] != nil)
	}); err != nil {
		return err
	}
	if err := flush(); err != nil {
		return err
	}
	if _, err := s.w.Exec(`DROP TABLE IF EXISTS orders; DROP TABLE IF EXISTS redemptions; DROP TABLE IF EXISTS probe`); err != nil {
		return fmt.Errorf("the orders are in the log, but the old tables could not be dropped: %w", err)
	}
	slog.Info("moved the orders and redemptions of an earlier version's store into the order log", "records", moved)
	return nil
}

// moveRows calls each with every row of q, when table exists.
func (s *Store) moveRows(table, q string, each func(*sql.Rows) error) error {
	var n int
	if err := s.w.QueryRow(`SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?`, table).Scan(&n); err != nil || n == 0 {
		return err
	}
	rows, err := s.w.Query(q)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := each(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}
