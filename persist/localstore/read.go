package localstore

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/flashsale/flashsale/engine"
	"github.com/flashsale/flashsale/persist/seglog"
)

// Load reads what the engine is rebuilt from: the items with their units
// sold, every user's holdings, and the orders with a request id created
// within window before now (their first answers, for replays). It reads the
// whole order log once.
func (s *Store) Load(ctx context.Context, window time.Duration, now time.Time) (engine.Snapshot, error) {
	var snap engine.Snapshot
	type holding struct {
		units int64
		first *engine.Order // the user's first order of the item: the leaderboards
	}
	type key struct{ item, user string }
	sold := map[string]int64{}
	held := map[key]*holding{}
	since := engine.FirstOrderIDAt(now.Add(-window))
	err := s.log.Scan(func(_ seglog.Pos, rec []byte) error {
		if rec[0] != kindOrder {
			return nil
		}
		o, err := decodeOrder(rec)
		if err != nil {
			return err
		}
		sold[o.ItemID] += o.Quantity
		h := held[key{o.ItemID, o.UserID}]
		if h == nil {
			h = &holding{first: o}
			held[key{o.ItemID, o.UserID}] = h
		} else if o.ID < h.first.ID {
			h.first = o
		}
		h.units += o.Quantity
		if o.ID >= since && o.RequestID != "" {
			o.Status = engine.Accepted // the first answer said accepted
			snap.Replays = append(snap.Replays, o)
		}
		snap.LastOrderID = max(snap.LastOrderID, o.ID)
		return nil
	})
	if err != nil {
		return snap, fmt.Errorf("cannot read the order log: %w", err)
	}
	items, err := s.Items(ctx)
	if err != nil {
		return snap, err
	}
	for _, it := range items {
		snap.Items = append(snap.Items, engine.ItemRecord{Item: it, Sold: sold[it.ID]})
	}
	keys := slices.SortedFunc(maps.Keys(held), func(a, b key) int {
		return cmp.Or(strings.Compare(a.item, b.item), strings.Compare(a.user, b.user))
	})
	for _, k := range keys {
		h := held[k]
		snap.Holdings = append(snap.Holdings, engine.Holding{ItemID: k.item, UserID: k.user, Units: h.units})
		snap.Board = append(snap.Board, engine.BoardEntry{ItemID: k.item, UserID: k.user, OrderID: h.first.ID, At: h.first.CreatedAt})
	}
	slices.SortFunc(snap.Replays, func(a, b *engine.Order) int { return cmp.Compare(a.ID, b.ID) })
	return snap, nil
}

// Items lists the item definitions, ordered by id (the engine's Catalog).
func (s *Store) Items(ctx context.Context) ([]engine.Item, error) {
	var items []engine.Item
	err := s.query(ctx, `SELECT id, name, price_cents, stock, per_user_limit, starts_at, ends_at, ended, created_at FROM items ORDER BY id`, func(rows *sql.Rows) error {
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

func (s *Store) query(ctx context.Context, q string, each func(*sql.Rows) error) error {
	rows, err := s.r.QueryContext(ctx, q)
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

// Order returns the order with id; ok is false when there is none.
func (s *Store) Order(_ context.Context, id uint64) (o *engine.Order, ok bool, err error) {
	s.idx.RLock()
	at, ok := s.idx.byID[id]
	s.idx.RUnlock()
	if !ok {
		return nil, false, nil
	}
	if o, err = s.readOrder(at.pos); err == nil && o.ID != id {
		err = fmt.Errorf("the index points at order %d", o.ID)
	}
	if err != nil {
		return nil, false, fmt.Errorf("cannot read order %d: %w", id, err)
	}
	return o, true, nil
}

func (s *Store) readOrder(pos seglog.Pos) (*engine.Order, error) {
	var buf [256]byte
	rec, err := s.log.Read(pos, buf[:0])
	if err != nil {
		return nil, err
	}
	return decodeOrder(rec)
}

// MaxUserOrders bounds the orders UserOrders returns.
const MaxUserOrders = 1000

// UserOrders returns a user's orders, newest first, at most MaxUserOrders.
func (s *Store) UserOrders(_ context.Context, user string) ([]*engine.Order, error) {
	var pos []seglog.Pos
	s.idx.RLock()
	for id := s.idx.byUser[user]; id != 0 && len(pos) < MaxUserOrders+commitSlack; {
		at := s.idx.byID[id]
		pos = append(pos, at.pos)
		id = at.prev
	}
	s.idx.RUnlock()
	orders := make([]*engine.Order, 0, len(pos))
	for _, p := range pos {
		o, err := s.readOrder(p)
		if err != nil {
			return nil, fmt.Errorf("cannot read the orders of user %q: %w", user, err)
		}
		orders = append(orders, o)
	}
	// By id, newest first: a user's orders are committed in id order
	// almost always, but orders of one moment may swap; the slack read
	// past the limit lets the newest MaxUserOrders by id be the ones kept.
	slices.SortFunc(orders, func(a, b *engine.Order) int { return cmp.Compare(b.ID, a.ID) })
	return orders[:min(len(orders), MaxUserOrders)], nil
}

// commitSlack is how many more of a user's orders UserOrders reads than it
// returns: more than one user's orders in flight at one moment (taken an id,
// not yet committed), which a sale's per-user limit keeps far below it.
const commitSlack = 64
