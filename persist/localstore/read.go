package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/flashsale/flashsale/engine"
)

// Load reads what the engine is rebuilt from: the items with their units
// sold, every user's holdings, and the orders with a request id created
// within window before now (their first answers, for replays).
func (s *Store) Load(ctx context.Context, window time.Duration, now time.Time) (engine.Snapshot, error) {
	var snap engine.Snapshot
	sold := map[string]int64{}
	err := s.query(ctx, `SELECT item_id, SUM(quantity) FROM orders GROUP BY item_id`, nil, func(rows *sql.Rows) error {
		var id string
		var n int64
		if err := rows.Scan(&id, &n); err != nil {
			return err
		}
		sold[id] = n
		return nil
	})
	if err != nil {
		return snap, err
	}
	items, err := s.Items(ctx)
	if err != nil {
		return snap, err
	}
	for _, it := range items {
		snap.Items = append(snap.Items, engine.ItemRecord{Item: it, Sold: sold[it.ID]})
	}
	// Holdings, and each user's first order of each item: the engine keeps
	// the first BoardSize of those per item (the leaderboards).
	err = s.query(ctx, `SELECT item_id, user_id, SUM(quantity), MIN(id), MIN(created_at) FROM orders GROUP BY item_id, user_id`, nil, func(rows *sql.Rows) error {
		var h engine.Holding
		var first, at int64
		if err := rows.Scan(&h.ItemID, &h.UserID, &h.Units, &first, &at); err != nil {
			return err
		}
		snap.Holdings = append(snap.Holdings, h)
		snap.Board = append(snap.Board, engine.BoardEntry{ItemID: h.ItemID, UserID: h.UserID, OrderID: uint64(first), At: time.UnixMilli(at).UTC()})
		return nil
	})
	if err != nil {
		return snap, err
	}
	// Order ids are time-ordered, so the window is a range of the primary key.
	first := int64(engine.FirstOrderIDAt(now.Add(-window)))
	err = s.query(ctx, selectOrder+` WHERE id >= ? AND request_id IS NOT NULL ORDER BY id`, []any{first}, func(rows *sql.Rows) error {
		o, err := scanOrder(rows)
		if err != nil {
			return err
		}
		o.Status = engine.Accepted // the first answer said accepted
		snap.Replays = append(snap.Replays, o)
		return nil
	})
	if err != nil {
		return snap, err
	}
	var last sql.NullInt64
	if err := s.r.QueryRowContext(ctx, `SELECT MAX(id) FROM orders`).Scan(&last); err != nil {
		return snap, fmt.Errorf("cannot read the last order id: %w", err)
	}
	snap.LastOrderID = uint64(last.Int64)
	return snap, nil
}

// Items lists the item definitions, ordered by id (the engine's Catalog).
func (s *Store) Items(ctx context.Context) ([]engine.Item, error) {
	var items []engine.Item
	err := s.query(ctx, `SELECT id, name, price_cents, stock, per_user_limit, starts_at, ends_at, ended, created_at FROM items ORDER BY id`, nil, func(rows *sql.Rows) error {
		var it engine.Item
		var starts, ends, created sql.NullInt64
		if err := rows.Scan(&it.ID, &it.Name, &it.PriceCents, &it.Stock, &it.PerUserLimit, &starts, &ends, &it.Ended, &created); err != nil {
			return err
		}
		it.StartsAt, it.EndsAt = fromNanos(starts), fromNanos(ends)
		if created.Valid {
			it.Created = time.UnixMilli(created.Int64).UTC()
		}
		items = append(items, it)
		return nil
	})
	return items, err
}

func (s *Store) query(ctx context.Context, q string, args []any, each func(*sql.Rows) error) error {
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("cannot read the order store: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		if err := each(rows); err != nil {
			return fmt.Errorf("cannot read the order store: %w", err)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("cannot read the order store: %w", err)
	}
	return nil
}

const selectOrder = `SELECT id, item_id, user_id, quantity, price_cents, request_id, created_at FROM orders`

type scanner interface{ Scan(...any) error }

func scanOrder(sc scanner) (*engine.Order, error) {
	var o engine.Order
	var id, created int64
	var req sql.NullString
	if err := sc.Scan(&id, &o.ItemID, &o.UserID, &o.Quantity, &o.PriceCents, &req, &created); err != nil {
		return nil, err
	}
	o.ID = uint64(id)
	o.RequestID = req.String
	o.CreatedAt = time.UnixMilli(created).UTC()
	// In standalone mode this file is the order database.
	o.Status = engine.Persisted
	return &o, nil
}

// Order returns the order with id; ok is false when there is none.
func (s *Store) Order(ctx context.Context, id uint64) (o *engine.Order, ok bool, err error) {
	o, err = scanOrder(s.r.QueryRowContext(ctx, selectOrder+` WHERE id = ?`, int64(id)))
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil, false, nil
	case err != nil:
		return nil, false, fmt.Errorf("cannot read order %d: %w", id, err)
	}
	return o, true, nil
}

// MaxUserOrders bounds the orders UserOrders returns.
const MaxUserOrders = 1000

// UserOrders returns a user's orders, newest first, at most MaxUserOrders.
func (s *Store) UserOrders(ctx context.Context, user string) ([]*engine.Order, error) {
	var orders []*engine.Order
	err := s.query(ctx, selectOrder+` WHERE user_id = ? ORDER BY id DESC LIMIT ?`, []any{user, MaxUserOrders}, func(rows *sql.Rows) error {
		o, err := scanOrder(rows)
		if err == nil {
			orders = append(orders, o)
		}
		return err
	})
	return orders, err
}
