// Command rebuild measures reconcile.Rebuild: how long making the ledger in
// Redis again from the orders of record takes, for -orders orders stored in
// MariaDB over -items items and -users users.
//
//	go run ./bench/rebuild -orders 1000000
//
// Setup, timed apart: a throwaway database (mysqltest.Create) holding the
// orders (mysqlstore.Store.Write, batches of 5,000), their items sold out
// (stock = their orders) and a generation of record. The orders' created_at
// (and so their ids) are spread evenly over the last -spread, so that about
// -window/-spread of them (a third by default) fall in the idempotency
// window and have their request ids restored. Kafka is kfake in process
// with empty topics, so the wait for the writers passes at once; the
// produce timeout is 50ms and the skew 10ms, so the fence's margin
// (2*(timeout+orderlog.AckGrace)+skew) is small, and reported apart. Redis
// keys live under a prefix of their own and are deleted afterwards; the
// database is dropped unless -keep.
//
// Each run prints the rebuild's time split into its steps, timed through
// the interfaces Rebuild calls (tally: reading MySQL; restore: writing
// Redis), and the Redis memory it added (INFO used_memory: approximate,
// anything else using the server counts). Then each item is audited:
// balanced, claimed = its orders, nothing remaining, one user hash entry
// per buyer.
package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/redis/rueidis"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/flashsale/flashsale/engine"
	"github.com/flashsale/flashsale/internal/mysqltest"
	"github.com/flashsale/flashsale/ledger"
	"github.com/flashsale/flashsale/persist/mysqlstore"
	"github.com/flashsale/flashsale/persist/orderlog"
	"github.com/flashsale/flashsale/persist/reconcile"
	"github.com/flashsale/flashsale/persist/redisledger"
)

func main() {
	redisAddr := flag.String("redis", "127.0.0.1:6379", "Redis")
	dsn := flag.String("mysql", mysqltest.DefaultDSN, "MySQL DSN of a user that may create flashsale_test_* databases")
	orders := flag.Int("orders", 1000000, "stored orders to rebuild from")
	items := flag.Int("items", 1, "items the orders spread over")
	users := flag.Int("users", 0, "users the orders spread over; default -orders (one unit each)")
	tables := flag.Int("tables", mysqlstore.DefaultTables, "order tables")
	window := flag.Duration("window", engine.DefaultIdempotencyWindow, "idempotency window")
	spread := flag.Duration("spread", 30*time.Minute, "the orders' created_at spread over this much time before now")
	runs := flag.Int("runs", 1, "rebuilds")
	keep := flag.Bool("keep", false, "keep the database (its DSN is printed)")
	flag.Parse()
	if *users <= 0 {
		*users = *orders
	}
	ctx := context.Background()
	go func() { // ^C still drops the database and deletes the keys
		c := make(chan os.Signal, 1)
		signal.Notify(c, os.Interrupt)
		<-c
		exit(130)
	}()
	rc, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{*redisAddr}, DisableCache: true})
	check(err)
	prefix := fmt.Sprintf("fsbench-rebuild-%d", rand.Uint32())
	atExit(rc.Close, func() { flush(rc, prefix) })

	kf, err := kfake.NewCluster(kfake.NumBrokers(1))
	check(err)
	atExit(kf.Close)
	topic := fmt.Sprintf("bench.%d", rand.Uint32())
	kcfg := orderlog.Config{Brokers: kf.ListenAddrs(), Topic: topic, Group: "bench-" + topic, Timeout: 50 * time.Millisecond}
	check(orderlog.EnsureTopics(ctx, kcfg))

	db, drop, err := mysqltest.Create(*dsn)
	check(err)
	if *keep {
		fmt.Println("database kept:", db)
	} else {
		atExit(drop)
	}
	store, err := mysqlstore.Open(ctx, mysqlstore.Options{DSN: db, Tables: *tables})
	check(err)
	atExit(func() { store.Close() })

	// Setup: the orders, oldest first, ids valid for their created_at.
	start := time.Now()
	first := start.Add(-*spread).UTC()
	stock := make([]int64, *items)
	var batch []*engine.Order
	var base, seq uint64
	for i := range *orders {
		at := first.Add(time.Duration(int64(*spread) * int64(i) / int64(*orders))).Truncate(time.Millisecond)
		id := engine.FirstOrderIDAt(at)
		if id == base { // another order in this millisecond: the node and sequence bits
			seq++
		} else {
			base, seq = id, 0
		}
		item := i % *items
		stock[item]++
		batch = append(batch, &engine.Order{ID: id + seq, ItemID: itemID(item), UserID: "u" + strconv.Itoa(i%*users),
			Quantity: 1, PriceCents: 100, RequestID: "r" + strconv.Itoa(i), CreatedAt: at})
		if len(batch) == 5000 || i == *orders-1 {
			check(store.Write(ctx, batch))
			batch = batch[:0]
		}
	}
	limit := int64((*orders + *users - 1) / *users)
	for i, n := range stock {
		check(store.SaveItem(ctx, engine.Item{ID: itemID(i), Name: "bench", PriceCents: 100, Stock: n, PerUserLimit: limit}))
	}
	_, err = store.StartGeneration(ctx, "lost-"+reconcile.NewGeneration())
	check(err)
	took := time.Since(start)
	fmt.Printf("setup: %d orders (%d items, %d users, %d tables) written in %v (%.0f orders/s), created_at over the last %v\n",
		*orders, *items, *users, *tables, took.Round(time.Millisecond), float64(*orders)/took.Seconds(), *spread)

	p := &phases{}
	l := redisledger.New(rc, 0, redisledger.Options{Prefix: prefix, IdempotencyWindow: *window, TrackClaims: true})
	skew := 10 * time.Millisecond
	margin := 2*(kcfg.Timeout+orderlog.AckGrace) + skew
	opts := reconcile.RebuildOptions{Ledger: timedLedger{l, p}, Record: timedRecord{store, p},
		Catalog: redisledger.NewCatalog(rc, prefix, 0), Kafka: kcfg, Window: *window, Skew: skew}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "run\ttook\tmargin\ttook-margin\tlock+fence\twait writers\ttally (MySQL)\trestore (Redis)\tother\tused_memory +\t")
	var res reconcile.RebuildResult
	for run := 1; run <= *runs; run++ {
		*p = phases{}
		before := usedMemory(rc)
		p.begin = time.Now()
		res, err = reconcile.Rebuild(ctx, opts)
		check(err)
		added := usedMemory(rc) - before
		wait := p.firstTally.Sub(p.fenced)
		other := res.Took - p.fenced.Sub(p.begin) - wait - p.tally - p.restore
		fmt.Fprintf(tw, "%d\t%v\t%v\t%v\t%v\t%v\t%v\t%v\t%v\t%.1f MB\t\n", run, ms(res.Took), margin, ms(res.Took-margin),
			ms(p.fenced.Sub(p.begin)), ms(wait-margin), ms(p.tally), ms(p.restore), ms(other), float64(added)/1e6)
	}
	tw.Flush()

	// What was restored, and whether it holds.
	var holders, recent int
	bad := 0
	for _, t := range res.Items {
		holders += len(t.Holdings)
		recent += len(t.Recent)
		a, err := l.Audit(ctx, t.Item.ID)
		check(err)
		users, err := rc.Do(ctx, rc.B().Hlen().Key("{"+prefix+":"+t.Item.ID+"}:users").Build()).AsInt64()
		check(err)
		if !a.Balanced() || a.Claimed != t.Item.Stock || a.Remaining != 0 || a.Total != t.Item.Stock || users != int64(len(t.Holdings)) {
			fmt.Printf("WRONG: item %s: %+v, %d users in Redis, %d holders of record\n", t.Item.ID, a, users, len(t.Holdings))
			bad++
		}
	}
	fmt.Printf("restored: %d items, %d orders, %d (item, user) holdings, %d request ids of the last %v (%.0f%% of the orders)\n",
		len(res.Items), *orders, holders, recent, *window, 100*float64(recent)/float64(*orders))
	if bad > 0 {
		fmt.Printf("verify: %d of %d items WRONG\n", bad, len(res.Items))
		exit(1)
	}
	fmt.Printf("verify: every item balanced, claimed = its orders, remaining 0\n")
	exit(0)
}

// phases times a rebuild's steps, through the interfaces Rebuild calls.
type phases struct {
	begin, fenced, firstTally time.Time
	tally, restore            time.Duration
}

type timedRecord struct {
	*mysqlstore.Store
	p *phases
}

func (r timedRecord) Tallies(ctx context.Context, items []engine.Item, since time.Time) ([]ledger.Tally, error) {
	start := time.Now()
	if r.p.firstTally.IsZero() {
		r.p.firstTally = start
	}
	defer func() { r.p.tally += time.Since(start) }()
	return r.Store.Tallies(ctx, items, since)
}

type timedLedger struct {
	*redisledger.Ledger
	p *phases
}

func (l timedLedger) Fence(ctx context.Context, next string, items []string) error {
	defer func() { l.p.fenced = time.Now() }()
	return l.Ledger.Fence(ctx, next, items)
}

func (l timedLedger) Restore(ctx context.Context, t ledger.Tally, gen string, now time.Time) error {
	start := time.Now()
	defer func() { l.p.restore += time.Since(start) }()
	return l.Ledger.Restore(ctx, t, gen, now)
}

func itemID(i int) string { return "item-" + strconv.Itoa(i) }

func ms(d time.Duration) time.Duration { return d.Round(time.Millisecond) }

// usedMemory is Redis's INFO memory used_memory, in bytes.
func usedMemory(rc rueidis.Client) int64 {
	info, err := rc.Do(context.Background(), rc.B().Info().Section("memory").Build()).ToString()
	check(err)
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "used_memory:"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			check(err)
			return n
		}
	}
	return 0
}

// flush deletes every key under prefix, in DELs of 1,000 keys.
func flush(rc rueidis.Client, prefix string) {
	ctx := context.Background()
	for _, pattern := range []string{"{" + prefix + ":*", prefix + ":*"} {
		keys, _ := rc.Do(ctx, rc.B().Keys().Pattern(pattern).Build()).AsStrSlice()
		for len(keys) > 0 {
			n := min(len(keys), 1000)
			rc.Do(ctx, rc.B().Del().Key(keys[:n]...).Build())
			keys = keys[n:]
		}
	}
}

var (
	mu       sync.Mutex
	cleanups []func()
)

// atExit runs fs, last first, when the program exits (exit).
func atExit(fs ...func()) {
	mu.Lock()
	defer mu.Unlock()
	cleanups = append(cleanups, fs...)
}

func exit(code int) {
	mu.Lock() // held: a second exit waits for the first
	for i := len(cleanups) - 1; i >= 0; i-- {
		cleanups[i]()
	}
	os.Exit(code)
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "rebuild:", err)
		exit(1)
	}
}
