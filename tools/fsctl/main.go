// Command fsctl inspects and repairs a flashsale cluster's ledger in Redis
// by hand:
//
//	fsctl -redis 127.0.0.1:6379 audit [item ...]      the stock equation of each item
//	fsctl -redis 127.0.0.1:6379 reconcile [item ...]  give dead nodes' leases back
//	fsctl -redis 127.0.0.1:6379 nodes                  the registered nodes
//	fsctl -redis ... -kafka ... -mysql ... rebuild      the ledger, from the orders of record
//	fsctl -kafka ... lag                                the writers' lag, from the brokers
//
// With orders through Kafka, -kafka makes reconcile also settle the claims
// whose order never reached Kafka (once the writers have passed the
// produce deadline: see reconcile.Gap), and -mysql adds the rows stored in
// MySQL to the audit.
//
// rebuild makes the ledger in Redis again from the orders of record, as a
// node does by itself when it finds Redis lost it (-auto-rebuild): it
// fences the ledger (every node stops selling), waits for the writers to
// store what Kafka holds, writes each item's pool as total - sold, the
// users' counts and the request ids of the idempotency window from the
// rows in MySQL, and lets the nodes sell from it. It works whether or not
// the ledger was lost: selling stops for the rebuild's time.
//
// It never sells, stores or deletes an order: it settles the ledger exactly
// as the nodes' own reconcilers do (package reconcile). Without items it
// works on every item of the catalogue. The nodes do both
// by themselves (reconcile every -reconcile-interval, audit at each
// /metrics scrape); this is for operators and scripts.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/redis/rueidis"

	"github.com/flashsale/flashsale/engine"
	"github.com/flashsale/flashsale/ledger"
	"github.com/flashsale/flashsale/persist/mysqlstore"
	"github.com/flashsale/flashsale/persist/orderlog"
	"github.com/flashsale/flashsale/persist/reconcile"
	"github.com/flashsale/flashsale/persist/redisledger"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("fsctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("redis", "127.0.0.1:6379", "Redis address")
	prefix := fs.String("redis-prefix", redisledger.DefaultPrefix, "prefix of the cluster's keys")
	kafka := fs.String("kafka", "", "Kafka seed brokers (comma separated): reconcile also settles claims with no order in Kafka")
	topic := fs.String("kafka-topic", orderlog.DefaultTopic, "topic of the orders")
	group := fs.String("kafka-group", orderlog.DefaultGroup, "consumer group of the writers")
	produceTimeout := fs.Duration("kafka-produce-timeout", orderlog.DefaultTimeout, "the edge nodes' produce deadline (rebuild: give the nodes' value; the fence waits twice it, plus a grace and the clock skew)")
	maxVersion := fs.String("kafka-max-version", "", "cap the Kafka protocol to this Kafka release's versions (the nodes' -kafka-max-version)")
	wait := fs.Duration("wait", 30*time.Second, "reconcile: how long to wait for the writers to pass the checkpoint")
	dsn := fs.String("mysql", "", "MySQL DSN: audit also counts the units stored in MySQL")
	tables := fs.Int("order-tables", mysqlstore.DefaultTables, "order tables in MySQL")
	window := fs.Duration("idempotency-window", engine.DefaultIdempotencyWindow, "rebuild: the nodes' -idempotency-window (request ids younger than it replay their first orders)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(stderr, "usage: fsctl [-redis addr] [-redis-prefix fs] audit|reconcile|nodes|rebuild|lag [item ...]")
		return 2
	}
	kcfg := orderlog.Config{Brokers: strings.Split(*kafka, ","), Topic: *topic, Group: *group, Timeout: *produceTimeout, MaxVersion: *maxVersion}
	if fs.Arg(0) == "lag" {
		if *kafka == "" {
			fmt.Fprintln(stderr, "fsctl: lag needs -kafka")
			return 2
		}
		return lag(kcfg, stdout, stderr)
	}
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{*addr}, DisableCache: true})
	if err != nil {
		fmt.Fprintf(stderr, "fsctl: cannot connect to Redis at %s: %v\n", *addr, err)
		return 1
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second+*wait)
	defer cancel()
	l := redisledger.New(c, 0, redisledger.Options{Prefix: *prefix})
	fail := func(err error) int {
		fmt.Fprintf(stderr, "fsctl: %v\n", err)
		return 1
	}
	if fs.Arg(0) == "rebuild" {
		if *kafka == "" || *dsn == "" {
			fmt.Fprintln(stderr, "fsctl: rebuild needs -kafka and -mysql: the orders of record are there")
			return 2
		}
		return rebuild(c, reconcile.RebuildOptions{Ledger: l, Catalog: redisledger.NewCatalog(c, *prefix, 0), Kafka: kcfg,
			Window: *window, WaitWriters: *wait, Force: true}, mysqlstore.Options{DSN: *dsn, Tables: *tables}, stdout, stderr)
	}
	items := fs.Args()[1:]
	if len(items) == 0 && fs.Arg(0) != "nodes" {
		all, err := redisledger.NewCatalog(c, *prefix, 0).Items(ctx)
		if err != nil {
			return fail(err)
		}
		for _, it := range all {
			items = append(items, it.ID)
		}
	}
	switch fs.Arg(0) {
	case "audit":
		var db *mysqlstore.Store
		if *dsn != "" {
			if db, err = mysqlstore.Open(ctx, mysqlstore.Options{DSN: *dsn, Tables: *tables}); err != nil {
				return fail(err)
			}
			defer db.Close()
		}
		return audit(ctx, l, db, items, stdout, stderr)
	case "reconcile":
		given, err := reconcile.Leases(ctx, l, items)
		for _, it := range items {
			if n, ok := given[it]; ok {
				fmt.Fprintf(stdout, "%s: %d units of dead nodes given back to the pool\n", it, n)
			}
		}
		if err != nil {
			return fail(err)
		}
		if *kafka == "" {
			return 0
		}
		g, err := reconcile.NewGap(reconcile.GapOptions{Kafka: kcfg, Ledger: l})
		if err != nil {
			return fail(err)
		}
		defer g.Close()
		res, err := g.Settle(ctx, items, *wait)
		if err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "claims with no order in Kafka given back: %d; settled claims forgotten: %d; pending (too recent): %d\n",
			res.Abandoned, res.Forgotten, res.Pending)
		return 0
	case "nodes":
		keys, err := c.Do(ctx, c.B().Keys().Pattern(*prefix+":node:*").Build()).AsStrSlice()
		if err != nil {
			return fail(err)
		}
		sort.Strings(keys)
		for _, k := range keys {
			ttl, _ := c.Do(ctx, c.B().Pttl().Key(k).Build()).AsInt64()
			fmt.Fprintf(stdout, "node %s: expires in %v\n", strings.TrimPrefix(k, *prefix+":node:"), time.Duration(ttl)*time.Millisecond)
		}
		return 0
	}
	fmt.Fprintf(stderr, "fsctl: unknown command %q\n", fs.Arg(0))
	return 2
}

// rebuild rebuilds the ledger from the orders of record (o, less the
// record: the database mo), and prints what it wrote.
func rebuild(c rueidis.Client, o reconcile.RebuildOptions, mo mysqlstore.Options, stdout, stderr io.Writer) int {
	ctx, cancel := context.WithTimeout(context.Background(), o.WaitWriters+10*time.Minute)
	defer cancel()
	db, err := mysqlstore.Open(ctx, mo)
	if err != nil {
		fmt.Fprintf(stderr, "fsctl: %v\n", err)
		return 1
	}
	defer db.Close()
	o.Record = db
	res, err := reconcile.Rebuild(ctx, o)
	if err != nil {
		fmt.Fprintf(stderr, "fsctl: %v\n", err)
		return 1
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "item\tstock\tsold\tleft\tusers\treplayable\t")
	for _, t := range res.Items {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t\n", t.Item.ID, t.Item.Stock, t.Sold, max(t.Item.Stock-t.Sold, 0), len(t.Holdings), len(t.Recent))
	}
	tw.Flush()
	fmt.Fprintf(stdout, "ledger rebuilt: generation %s, %d items, took %v\n", res.Generation, len(res.Items), res.Took.Round(time.Millisecond))
	return 0
}

// lag prints the writers' lag per partition, as the brokers see it.
func lag(c orderlog.Config, stdout, stderr io.Writer) int {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l, err := orderlog.NewLagCollector(c)
	if err != nil {
		fmt.Fprintf(stderr, "fsctl: %v\n", err)
		return 1
	}
	defer l.Close()
	records, ages, err := l.Lag(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "fsctl: %v\n", err)
		return 1
	}
	parts := make([]int32, 0, len(records))
	for p := range records {
		parts = append(parts, p)
	}
	slices.Sort(parts)
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "partition\trecords\toldest\t")
	for _, p := range parts {
		fmt.Fprintf(tw, "%d\t%d\t%v\t\n", p, records[p], ages[p].Round(time.Millisecond))
	}
	tw.Flush()
	return 0
}

// audit prints each item's ledger (and, with db, the units stored in
// MySQL); the exit status is 1 when one does not balance.
func audit(ctx context.Context, l ledger.Pools, db *mysqlstore.Store, items []string, stdout, stderr io.Writer) int {
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "item\ttotal\tremaining\tleased\tclaimed\tpending\tin_mysql\tdifference\tbalanced\t")
	status := 0
	for _, it := range items {
		a, err := l.Audit(ctx, it)
		if err != nil {
			fmt.Fprintf(stderr, "fsctl: %v\n", err)
			return 1
		}
		stored := "-"
		if db != nil {
			n, err := db.Sold(ctx, it)
			if err != nil {
				fmt.Fprintf(stderr, "fsctl: %v\n", err)
				return 1
			}
			stored = fmt.Sprint(n)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%s\t%d\t%v\t\n", it, a.Total, a.Remaining, a.Leased(), a.Claimed, a.Pending, stored, a.Difference(), a.Balanced())
		if !a.Balanced() {
			status = 1
		}
	}
	tw.Flush()
	return status
}
