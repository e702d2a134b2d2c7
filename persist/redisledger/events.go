package redisledger

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/rueidis"

	"github.com/flashsale/flashsale/engine"
)

// Events: every script that changes what other nodes must know publishes
// it, in the same atomic step, on the channel <prefix>:events, so that every
// node follows the cluster as it happens instead of polling it. One event is
// one message, fields separated by '|', the request id last (it may hold a
// '|'):
//
//	c|item|claimed|seq|id|created ms|q|price|user|request id   a winner (claim)
//	a|item|claimed|id|user|request id                      a claim given back
//	k|item|id|created ms|q|price|user|request id           an order acknowledged
//	p|item|remaining                                       the pool changed
//	i|item                                                 the item's definition changed
//	g|generation                                           the ledger's generation changed
//	m|token                                                a barrier (Feed.Barrier)
//
// claimed is the item's claimed units after the event: a node that has seen
// an event with claimed = the item's stock knows every winner of it. seq is
// the pool's claim sequence (seqs.go).
// Pub/sub delivers in publish order and drops nothing while a subscriber is
// connected; a subscriber that reconnects resynchronises first (Feed).

func eventsChannel(prefix string) string { return prefix + ":events" }

func (l *Ledger) channel() string { return eventsChannel(l.prefix) }

// confirm marks a claim acknowledged (its record is in Kafka; the shopper
// gets 201) and publishes the order, so that every node can read it back.
// KEYS: claims. ARGV: order id, events channel, event. Returns 1 marked (or
// already acked or stored), 0 aborted, -1 no such claim.
var confirm = rueidis.NewLuaScript(`
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then return -1 end
local st = string.sub(cur, 1, 1)
if st == 'p' then redis.call('HSET', KEYS[1], ARGV[1], 'k' .. string.sub(cur, 2)) end
if st == 'p' or st == 'k' or st == 's' then
  redis.call('PUBLISH', ARGV[2], ARGV[3])
  return 1
end
return 0
`)

// Confirm tells the ledger that o is durable (engine.Ledger): its claim is
// marked acknowledged, which no reconciler abandons, and every node learns
// the order, so it is readable everywhere before its 201 is written.
func (l *Ledger) Confirm(ctx context.Context, o *engine.Order) error {
	ctx, cancel := l.bound(ctx)
	defer cancel()
	k := l.keys(o.ItemID)
	event := "k|" + o.ItemID + "|" + encodeOrder(o) + "|" + o.UserID + "|" + o.RequestID
	n, err := confirm.Exec(ctx, l.c, []string{k.claims}, []string{strconv.FormatUint(o.ID, 10), l.channel(), event}).AsInt64()
	switch {
	case err != nil:
		return fmt.Errorf("redisledger: cannot confirm order %d: %w", o.ID, err)
	case n == 0:
		return fmt.Errorf("redisledger: order %d was confirmed after its claim was aborted (BUG)", o.ID)
	}
	return nil // -1: an untracked claim: nothing to mark
}

// refused is the value of a request key that a node answered "sold out"
// (Refuse) and that no claim may win while it lasts.
const refused = "refused"

// refuse reads a request key and, when it holds no order, marks it refused
// for a moment. KEYS: req. ARGV: milliseconds. Returns the first order, or
// nil (refused, now or by another node a moment ago).
var refuse = rueidis.NewLuaScript(`
local first = redis.call('GET', KEYS[1])
if first then
  if first == '` + refused + `' then return false end
  return first
end
redis.call('SET', KEYS[1], '` + refused + `', 'PX', ARGV[1])
return false
`)

// Refuse answers a node that has no units for a request id it does not
// know (engine.Ledger): the order the request id first won, or nil after
// marking the request id refused for twice the call bound, so that a claim
// of it on another node in that moment is refused too (engine.ErrSoldOut).
func (l *Ledger) Refuse(ctx context.Context, item, user, requestID string) (*engine.Order, error) {
	ctx, cancel := l.bound(ctx)
	defer cancel()
	s, err := refuse.Exec(ctx, l.c, []string{l.keys(item).reqKey(user, requestID)},
		[]string{strconv.FormatInt(2*l.timeout.Milliseconds(), 10)}).ToString()
	if rueidis.IsRedisNil(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("redisledger: cannot read request %q: %w", requestID, err)
	}
	// The order is kept by the caller (its replays): none of its strings
	// may alias the request's (user and requestID usually do).
	return decodeOrder(s, &engine.Order{ItemID: strings.Clone(item), UserID: strings.Clone(user), RequestID: strings.Clone(requestID)})
}

// Listener is told of the cluster's events, in order, by a Feed.
type Listener interface {
	// Resync is called after every (re)subscription, before any event:
	// events may have been missed, so the listener reads the state again.
	Resync(ctx context.Context) error
	// Claimed: o won; claimed is the item's claimed units now.
	Claimed(o *engine.Order, claimed, seq int64)
	// Released: o's claim was given back (ID, ItemID, UserID, RequestID
	// set); claimed is the item's claimed units now.
	Released(o *engine.Order, claimed int64)
	// Acked: o is durable; its 201 is being written.
	Acked(o *engine.Order)
	// Pool: the item's pool has remaining units.
	Pool(item string, remaining int64)
	// Item: the item's definition changed.
	Item(item string)
	// Generation: the ledger's generation changed ("rebuilding:..." while
	// it is rebuilt).
	Generation(gen string)
}

// Feed follows the events channel of a cluster for one node.
type Feed struct {
	c       rueidis.Client
	channel string
	up      atomic.Bool

	mu       sync.Mutex
	barriers map[string]chan struct{}
	again    chan struct{} // Resync asked

	events, resyncs, drops atomic.Int64
}

// maxQueued bounds the events received and not yet handled; past it the
// feed drops events and resynchronises.
const maxQueued = 1 << 16

// NewFeed follows the events of the cluster under prefix.
func NewFeed(c rueidis.Client, prefix string) *Feed {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return &Feed{c: c, channel: eventsChannel(prefix), barriers: map[string]chan struct{}{}, again: make(chan struct{}, 1)}
}

// Resync asks the feed to resynchronise (as after a break) as soon as it
// can: after the ledger was rebuilt, what the listener learnt of the lost
// one is void.
func (f *Feed) Resync() {
	select {
	case f.again <- struct{}{}:
	default:
	}
}

// Up reports whether the feed is subscribed and resynchronised: what the
// listener knows is the cluster's state, behind it only by events in flight.
func (f *Feed) Up() bool { return f.up.Load() }

// Run follows the channel until ctx ends, telling lst of every event, and
// reconnects (then resynchronises) after every failure. up, when set, is
// told when the feed goes up or down.
func (f *Feed) Run(ctx context.Context, lst Listener, up func(bool)) {
	set := func(v bool) {
		if f.up.Swap(v) != v && up != nil {
			up(v)
		}
	}
	defer set(false)
	backoff := 50 * time.Millisecond
	for ctx.Err() == nil {
		err := f.follow(ctx, lst, set)
		set(false)
		if ctx.Err() != nil {
			return
		}
		slog.Warn("the cluster's event feed broke; following it again", "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// follow subscribes and handles events until the subscription ends.
func (f *Feed) follow(ctx context.Context, lst Listener, set func(bool)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	msgs := make(chan string, maxQueued)
	subscribed := make(chan struct{}, 1)
	var dropped atomic.Bool
	rctx := rueidis.WithOnSubscriptionHook(ctx, func(s rueidis.PubSubSubscription) {
		if s.Kind == "subscribe" {
			select {
			case subscribed <- struct{}{}:
			default:
			}
		}
	})
	done := make(chan error, 1)
	go func() {
		done <- f.c.Receive(rctx, f.c.B().Subscribe().Channel(f.channel).Build(), func(m rueidis.PubSubMessage) {
			select {
			case msgs <- m.Message:
			default:
				dropped.Store(true) // the listener is behind: resynchronise
			}
		})
	}()
	resync := func() error {
		set(false)
		f.resyncs.Add(1)
		rctx, rcancel := context.WithTimeout(ctx, 30*time.Second)
		defer rcancel()
		if err := lst.Resync(rctx); err != nil {
			return fmt.Errorf("cannot resynchronise: %w", err)
		}
		set(true)
		return nil
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-done:
			if err == nil {
				err = errors.New("the subscription ended")
			}
			return err
		case <-subscribed:
			if err := resync(); err != nil {
				return err
			}
		case <-f.again:
			if err := resync(); err != nil {
				return err
			}
		case m := <-msgs:
			if dropped.Swap(false) {
				f.drops.Add(1)
				for len(msgs) > 0 { // what is queued is older than the resync
					<-msgs
				}
				if err := resync(); err != nil {
					return err
				}
				continue
			}
			f.events.Add(1)
			if err := f.handle(m, lst); err != nil {
				slog.Warn("an event of the cluster's feed cannot be read", "event", m, "err", err)
			}
		}
	}
}

// handle decodes one event and tells lst.
func (f *Feed) handle(m string, lst Listener) error {
	kind, rest, _ := strings.Cut(m, "|")
	switch kind {
	case "c":
		item, rest, _ := strings.Cut(rest, "|")
		claimed, rest, _ := strings.Cut(rest, "|")
		seq, rest, _ := strings.Cut(rest, "|")
		o, err := decodeEvent(item, rest)
		n, err2 := strconv.ParseInt(claimed, 10, 64)
		q, err3 := strconv.ParseInt(seq, 10, 64)
		if err := errors.Join(err, err2, err3); err != nil {
			return err
		}
		lst.Claimed(o, n, q)
	case "a":
		parts := strings.SplitN(rest, "|", 5)
		if len(parts) != 5 {
			return errors.New("short release event")
		}
		n, err1 := strconv.ParseInt(parts[1], 10, 64)
		id, err2 := strconv.ParseUint(parts[2], 10, 64)
		if err := errors.Join(err1, err2); err != nil {
			return err
		}
		lst.Released(&engine.Order{ID: id, ItemID: parts[0], UserID: parts[3], RequestID: parts[4]}, n)
	case "k":
		item, rest, _ := strings.Cut(rest, "|")
		o, err := decodeEvent(item, rest)
		if err != nil {
			return err
		}
		lst.Acked(o)
	case "p":
		item, remaining, _ := strings.Cut(rest, "|")
		n, err := strconv.ParseInt(remaining, 10, 64)
		if err != nil {
			return err
		}
		lst.Pool(item, n)
	case "i":
		lst.Item(rest)
	case "g":
		lst.Generation(rest)
	case "m":
		f.mu.Lock()
		if ch := f.barriers[rest]; ch != nil {
			close(ch)
			delete(f.barriers, rest)
		}
		f.mu.Unlock()
	default:
		return fmt.Errorf("unknown event kind %q", kind)
	}
	return nil
}

// decodeEvent reads "id|ms|q|price|user|request id" of item.
func decodeEvent(item, s string) (*engine.Order, error) {
	parts := strings.SplitN(s, "|", 6)
	if len(parts) != 6 {
		return nil, fmt.Errorf("redisledger: bad order in event %q", s)
	}
	o, err := decodeOrder(strings.Join(parts[:4], "|"), &engine.Order{ItemID: item, UserID: parts[4], RequestID: parts[5]})
	if err != nil {
		return nil, err
	}
	return o, nil
}

// Barrier returns once every event published before it was called has been
// handled by the listener: it publishes a marker of its own and waits for
// the feed to reach it (pub/sub delivers in order). It fails at once while
// the feed is down, and when ctx ends first.
func (f *Feed) Barrier(ctx context.Context) error {
	if !f.up.Load() {
		return errors.New("redisledger: the event feed is down")
	}
	var b [8]byte
	rand.Read(b[:])
	token := hex.EncodeToString(b[:])
	ch := make(chan struct{})
	f.mu.Lock()
	f.barriers[token] = ch
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.barriers, token)
		f.mu.Unlock()
	}()
	if err := f.c.Do(ctx, f.c.B().Publish().Channel(f.channel).Message("m|"+token).Build()).Error(); err != nil {
		return fmt.Errorf("redisledger: cannot publish a barrier: %w", err)
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Winners lists the request ids that won on item and are still remembered
// (their first orders), for a listener's resynchronisation, and the item's
// claimed units.
func (l *Ledger) Winners(ctx context.Context, item string) (orders []*engine.Order, claimed int64, err error) {
	k := l.keys(item)
	prefix := k.tag + ":req:"
	var cursor uint64
	for {
		sctx, cancel := l.bound(ctx)
		e, err := l.c.Do(sctx, l.c.B().Scan().Cursor(cursor).Match(prefix+"*").Count(1000).Build()).AsScanEntry()
		cancel()
		if err != nil {
			return nil, 0, fmt.Errorf("redisledger: cannot list the request ids of %q: %w", item, err)
		}
		if len(e.Elements) > 0 {
			gctx, cancel := l.bound(ctx)
			vals, err := l.c.Do(gctx, l.c.B().Mget().Key(e.Elements...).Build()).ToArray()
			cancel()
			if err != nil {
				return nil, 0, fmt.Errorf("redisledger: cannot read the request ids of %q: %w", item, err)
			}
			for i, v := range vals {
				s, err := v.ToString()
				if err != nil {
					continue // expired meanwhile
				}
				user, req, ok := parseReqKey(strings.TrimPrefix(e.Elements[i], prefix))
				if !ok {
					continue
				}
				if o, err := decodeOrder(s, &engine.Order{ItemID: item, UserID: user, RequestID: req}); err == nil {
					orders = append(orders, o)
				}
			}
		}
		if cursor = e.Cursor; cursor == 0 {
			break
		}
	}
	a, err := l.Audit(ctx, item)
	if err != nil {
		return nil, 0, err
	}
	return orders, a.Claimed, nil
}

// parseReqKey reads "<len(user)>:<user>:<request id>", the tail of a
// request key.
func parseReqKey(s string) (user, requestID string, ok bool) {
	n, rest, found := strings.Cut(s, ":")
	size, err := strconv.Atoi(n)
	if !found || err != nil || size < 1 || size+1 > len(rest) || rest[size] != ':' {
		return "", "", false
	}
	return rest[:size], rest[size+1:], true
}

// Collectors are the feed's metrics, to register.
func (f *Feed) Collectors() []prometheus.Collector {
	counter := func(name, help string, v func() int64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return float64(v()) })
	}
	return []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "flashsale_feed_up",
			Help: "1 while this node follows the cluster's events (subscribed and resynchronised), else 0: it then asks Redis more."},
			func() float64 {
				if f.Up() {
					return 1
				}
				return 0
			}),
		counter("flashsale_feed_events_total", "Cluster events this node handled.", f.events.Load),
		counter("flashsale_feed_resyncs_total", "Times this node read the cluster's state again (every (re)subscription, and after dropping events).", f.resyncs.Load),
		counter("flashsale_feed_drops_total", "Times this node fell behind the events and dropped some (then resynchronised).", f.drops.Load),
	}
}
