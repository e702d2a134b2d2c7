package redisledger

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/redis/rueidis"

	"github.com/flashsale/flashsale/engine"
)

// Catalog keeps item definitions in Redis, for every node of a cluster.
// Writes go to Redis and publish the change on the events channel, which
// every node follows (Feed); reads go through rueidis client-side caching
// (RESP3 client tracking): a read of an unchanged item is answered from this
// process's memory, and Redis tells the cache when an item changes.
//
//	<prefix>:items      set of item ids
//	{<prefix>:<id>}:def hash: name, price_cents, stock, per_user_limit,
//	                    starts_at, ends_at (unix ns, 0 for none), ended
type Catalog struct {
	c      rueidis.Client
	prefix string
	ttl    time.Duration
}

// DefaultCacheTTL bounds how long a cached read of the catalogue may be
// served without an invalidation.
const DefaultCacheTTL = time.Second

// NewCatalog returns the catalogue under prefix (default DefaultPrefix). c
// must have client-side caching on (rueidis' default). ttl bounds how long a
// cached read may be served even without an invalidation; default
// DefaultCacheTTL.
func NewCatalog(c rueidis.Client, prefix string, ttl time.Duration) *Catalog {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if ttl <= 0 {
		ttl = DefaultCacheTTL
	}
	return &Catalog{c: c, prefix: prefix, ttl: ttl}
}

func (c *Catalog) setKey() string          { return c.prefix + ":items" }
func (c *Catalog) defKey(id string) string { return "{" + c.prefix + ":" + id + "}:def" }

func nanos(t time.Time) string {
	if t.IsZero() {
		return "0"
	}
	return strconv.FormatInt(t.UnixNano(), 10)
}

// SaveItem writes an item's definition (engine.Catalog).
func (c *Catalog) SaveItem(ctx context.Context, it engine.Item) error {
	ended := "0"
	if it.Ended {
		ended = "1"
	}
	cmds := rueidis.Commands{
		c.c.B().Hset().Key(c.defKey(it.ID)).FieldValue().
			FieldValue("name", it.Name).FieldValue("price_cents", strconv.FormatInt(it.PriceCents, 10)).
			FieldValue("stock", strconv.FormatInt(it.Stock, 10)).FieldValue("per_user_limit", strconv.FormatInt(it.PerUserLimit, 10)).
			FieldValue("starts_at", nanos(it.StartsAt)).FieldValue("ends_at", nanos(it.EndsAt)).FieldValue("ended", ended).
			FieldValue("created", nanos(it.Created)).Build(),
		c.c.B().Sadd().Key(c.setKey()).Member(it.ID).Build(),
		c.c.B().Publish().Channel(eventsChannel(c.prefix)).Message("i|" + it.ID).Build(), // every node follows at once
	}
	for _, r := range c.c.DoMulti(ctx, cmds...) {
		if err := r.Error(); err != nil {
			return fmt.Errorf("redisledger: cannot save item %q: %w", it.ID, err)
		}
	}
	return nil
}

// Item reads one item's definition from Redis itself, not the cache: what
// a node reads when the feed says the item changed (the cache's
// invalidation travels on another connection and may come later).
func (c *Catalog) Item(ctx context.Context, id string) (engine.Item, bool, error) {
	m, err := c.c.Do(ctx, c.c.B().Hgetall().Key(c.defKey(id)).Build()).AsStrMap()
	if err != nil {
		return engine.Item{}, false, fmt.Errorf("redisledger: cannot read item %q: %w", id, err)
	}
	if len(m) == 0 {
		return engine.Item{}, false, nil
	}
	it, err := parseItem(id, m)
	return it, err == nil, err
}

// Items reads every item's definition, through the client-side cache.
func (c *Catalog) Items(ctx context.Context) ([]engine.Item, error) {
	ids, err := c.c.DoCache(ctx, c.c.B().Smembers().Key(c.setKey()).Cache(), c.ttl).AsStrSlice()
	if err != nil {
		return nil, fmt.Errorf("redisledger: cannot list items: %w", err)
	}
	sort.Strings(ids)
	cmds := make([]rueidis.CacheableTTL, len(ids))
	for i, id := range ids {
		cmds[i] = rueidis.CT(c.c.B().Hgetall().Key(c.defKey(id)).Cache(), c.ttl)
	}
	items := make([]engine.Item, 0, len(ids))
	for i, r := range c.c.DoMultiCache(ctx, cmds...) {
		m, err := r.AsStrMap()
		if err != nil {
			return nil, fmt.Errorf("redisledger: cannot read item %q: %w", ids[i], err)
		}
		if len(m) == 0 {
			continue // listed but not yet written
		}
		it, err := parseItem(ids[i], m)
		if err != nil {
			return nil, err
		}
		items = append(items, it)
	}
	return items, nil
}

func parseItem(id string, m map[string]string) (engine.Item, error) {
	num := func(k string) int64 { n, _ := strconv.ParseInt(m[k], 10, 64); return n }
	t := func(k string) time.Time {
		if n := num(k); n != 0 {
			return time.Unix(0, n).UTC()
		}
		return time.Time{}
	}
	it := engine.Item{ID: id, Name: m["name"], PriceCents: num("price_cents"), Stock: num("stock"),
		PerUserLimit: num("per_user_limit"), StartsAt: t("starts_at"), EndsAt: t("ends_at"), Ended: m["ended"] == "1", Created: t("created")}
	if err := it.Validate(); err != nil {
		return engine.Item{}, fmt.Errorf("redisledger: stored item %q is not valid: %w", id, err)
	}
	return it, nil
}
