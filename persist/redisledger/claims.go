package redisledger

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"

	"github.com/flashsale/flashsale/engine"
)

// Tracked claims close the gap between "stock taken" and "order recorded"
// when orders go through Kafka. Each claim is kept by order id, pending,
// until a writer stores its order (persist: p -> s) or its units are given
// back (unclaim by its node, or abandon by the reconciler: p -> a). The
// transitions are Lua scripts on the item's slot, so a record that reached
// Kafka after its producer gave up is refused by the writers, and a claim
// whose record was stored can no longer be undone.

// Claim states, the first byte of a claim record.
const (
	ClaimPending = 'p'
	ClaimStored  = 's'
	ClaimAborted = 'a'
)

// claimRecord is "p|q|created ms|user|request id"; the request id, which
// may hold any printable character, comes last.
func claimRecord(o *engine.Order) string {
	return "p|" + strconv.FormatInt(o.Quantity, 10) + "|" + strconv.FormatInt(o.CreatedAt.UnixMilli(), 10) +
		"|" + o.UserID + "|" + o.RequestID
}

// Claim is a tracked claim as read from Redis.
type Claim struct {
	OrderID   uint64
	ItemID    string
	State     byte
	Quantity  int64
	CreatedAt time.Time
	UserID    string
	RequestID string
	raw       string // the record as read, for abandon's compare-and-set
}

func parseClaim(item, id, rec string) (Claim, error) {
	parts := strings.SplitN(rec, "|", 5)
	if len(parts) != 5 || len(parts[0]) != 1 {
		return Claim{}, fmt.Errorf("redisledger: bad claim record %q", rec)
	}
	oid, err1 := strconv.ParseUint(id, 10, 64)
	q, err2 := strconv.ParseInt(parts[1], 10, 64)
	ms, err3 := strconv.ParseInt(parts[2], 10, 64)
	if err := errors.Join(err1, err2, err3); err != nil {
		return Claim{}, fmt.Errorf("redisledger: bad claim %s=%q: %w", id, rec, err)
	}
	return Claim{OrderID: oid, ItemID: item, State: parts[0][0], Quantity: q, CreatedAt: time.UnixMilli(ms).UTC(),
		UserID: parts[3], RequestID: parts[4], raw: rec}, nil
}

// Claims lists the tracked claims of item, in every state.
func (l *Ledger) Claims(ctx context.Context, item string) ([]Claim, error) {
	ctx, cancel := l.bound(ctx)
	defer cancel()
	m, err := l.c.Do(ctx, l.c.B().Hgetall().Key(l.keys(item).claims).Build()).AsStrMap()
	if err != nil {
		return nil, fmt.Errorf("redisledger: cannot read the claims of %q: %w", item, err)
	}
	out := make([]Claim, 0, len(m))
	for id, rec := range m {
		c, err := parseClaim(item, id, rec)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// Abandon gives back the units of a pending claim that no record can still
// store, to the pool. It returns false, doing nothing, when the claim
// changed since it was read (a writer stored it, or it was undone).
func (l *Ledger) Abandon(ctx context.Context, c Claim) (bool, error) {
	ctx, cancel := l.bound(ctx)
	defer cancel()
	k := l.keys(c.ItemID)
	req, has := k.requestOf(&engine.Order{UserID: c.UserID, RequestID: c.RequestID})
	n, err := abandon.Exec(ctx, l.c, []string{k.stock, k.users, k.claims, req}, []string{
		strconv.FormatUint(c.OrderID, 10), c.raw, c.UserID, strconv.FormatInt(c.Quantity, 10), has}).AsInt64()
	if err != nil {
		return false, fmt.Errorf("redisledger: cannot abandon claim %d: %w", c.OrderID, err)
	}
	return n == 1, nil
}

// Forget drops settled claims (stored or aborted): once no record of them
// can arrive any more, they are history, kept in the order database.
func (l *Ledger) Forget(ctx context.Context, item string, ids ...uint64) error {
	if len(ids) == 0 {
		return nil
	}
	ctx, cancel := l.bound(ctx)
	defer cancel()
	fields := make([]string, len(ids))
	for i, id := range ids {
		fields[i] = strconv.FormatUint(id, 10)
	}
	return l.c.Do(ctx, l.c.B().Hdel().Key(l.keys(item).claims).Field(fields...).Build()).Error()
}

// Verdict is a writer's answer for one record, from its claim.
type Verdict int8

const (
	// Store: the claim is (now) marked stored; insert the order.
	Store Verdict = 1
	// Aborted: the claim's units were given back; the order must not be stored.
	Aborted Verdict = 0
	// Unknown: no such claim (never made in this ledger, or long forgotten).
	Unknown Verdict = -1
)

func (v Verdict) String() string {
	switch v {
	case Store:
		return "store"
	case Aborted:
		return "claim_aborted"
	}
	return "claim_unknown"
}

// Persist marks the claims of orders stored, for a writer about to insert
// them, in one pipelined round trip. The verdicts are in the order of os.
func (l *Ledger) Persist(ctx context.Context, os []*engine.Order) ([]Verdict, error) {
	if len(os) == 0 {
		return nil, nil
	}
	ctx, cancel := l.bound(ctx)
	defer cancel()
	execs := make([]rueidis.LuaExec, len(os))
	for i, o := range os {
		k := l.keys(o.ItemID)
		execs[i] = rueidis.LuaExec{Keys: []string{k.stock, k.claims}, Args: []string{strconv.FormatUint(o.ID, 10)}}
	}
	out := make([]Verdict, len(os))
	for i, r := range persist.ExecMulti(ctx, l.c, execs...) {
		n, err := r.AsInt64()
		if err != nil {
			return nil, fmt.Errorf("redisledger: cannot mark order %d stored: %w", os[i].ID, err)
		}
		out[i] = Verdict(n)
	}
	return out, nil
}
