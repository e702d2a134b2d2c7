// Command fsctl inspects and repairs a flashsale cluster's ledger in Redis
// by hand:
//
//	fsctl -redis 127.0.0.1:6379 audit [item ...]      the stock equation of each item
//	fsctl -redis 127.0.0.1:6379 reconcile [item ...]  give dead nodes' leases back
//	fsctl -redis 127.0.0.1:6379 nodes                  the registered nodes
//
// Without items it works on every item of the catalogue. The nodes do both
// by themselves (reconcile every -reconcile-interval, audit at each
// /metrics scrape); this is for operators and scripts.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/redis/rueidis"

	"github.com/flashsale/flashsale/persist/redisledger"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("fsctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("redis", "127.0.0.1:6379", "Redis address")
	prefix := fs.String("redis-prefix", "fs", "prefix of the cluster's keys")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(stderr, "usage: fsctl [-redis addr] [-redis-prefix fs] audit|reconcile|nodes [item ...]")
		return 2
	}
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{*addr}, DisableCache: true})
	if err != nil {
		fmt.Fprintf(stderr, "fsctl: cannot connect to Redis at %s: %v\n", *addr, err)
		return 1
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l := redisledger.New(c, 0, redisledger.Options{Prefix: *prefix})
	items := fs.Args()[1:]
	if len(items) == 0 && fs.Arg(0) != "nodes" {
		all, err := redisledger.NewCatalog(c, *prefix, time.Second).Items(ctx)
		if err != nil {
			fmt.Fprintf(stderr, "fsctl: %v\n", err)
			return 1
		}
		for _, it := range all {
			items = append(items, it.ID)
		}
	}
	switch fs.Arg(0) {
	case "audit":
		return audit(ctx, l, items, stdout, stderr)
	case "reconcile":
		for _, it := range items {
			n, err := l.Reconcile(ctx, it)
			if err != nil {
				fmt.Fprintf(stderr, "fsctl: %v\n", err)
				return 1
			}
			fmt.Fprintf(stdout, "%s: %d units of dead nodes given back to the pool\n", it, n)
		}
		return 0
	case "nodes":
		keys, err := c.Do(ctx, c.B().Keys().Pattern(*prefix+":node:*").Build()).AsStrSlice()
		if err != nil {
			fmt.Fprintf(stderr, "fsctl: %v\n", err)
			return 1
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

// audit prints each item's ledger; the exit status is 1 when one does not
// balance.
func audit(ctx context.Context, l *redisledger.Ledger, items []string, stdout, stderr io.Writer) int {
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "item\ttotal\tremaining\tleased\tclaimed\tdifference\tbalanced\t")
	status := 0
	for _, it := range items {
		a, err := l.Audit(ctx, it)
		if err != nil {
			fmt.Fprintf(stderr, "fsctl: %v\n", err)
			return 1
		}
		diff := a.Total - a.Remaining - a.Leased() - a.Claimed
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%v\t\n", it, a.Total, a.Remaining, a.Leased(), a.Claimed, diff, a.Balanced())
		if !a.Balanced() {
			status = 1
		}
	}
	tw.Flush()
	return status
}
