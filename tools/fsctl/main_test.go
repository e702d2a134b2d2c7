package main

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/flashsale/flashsale/engine"
	"github.com/flashsale/flashsale/persist/redisledger"
)

func TestAuditAndReconcile(t *testing.T) {
	addr := os.Getenv("FLASHSALE_TEST_REDIS")
	if addr == "" {
		addr = "127.0.0.1:6379"
	}
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}, DisableCache: true})
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	defer c.Close()
	p := fmt.Sprintf("fsctl-%d", rand.Uint64())
	ctx := context.Background()
	defer func() {
		keys, _ := c.Do(ctx, c.B().Keys().Pattern("*"+p+"*").Build()).AsStrSlice()
		for _, k := range keys {
			c.Do(ctx, c.B().Del().Key(k).Build())
		}
	}()
	l := redisledger.New(c, 0, redisledger.Options{Prefix: p})
	redisledger.NewCatalog(c, p, time.Second).SaveItem(ctx, engine.Item{ID: "it", Name: "x", Stock: 10, PerUserLimit: 1})
	l.PutItem(ctx, "it", 10)
	reg, _ := l.Register(ctx, 0, time.Minute)
	l.ForInstance(reg).Lease(ctx, "it", 4)
	c.Do(ctx, c.B().Del().Key(p+":node:1").Build()) // the node dies

	f := func(want int, wantOut string, args ...string) {
		t.Helper()
		var out, errOut bytes.Buffer
		if code := run(append([]string{"-redis", addr, "-redis-prefix", p}, args...), &out, &errOut); code != want || !strings.Contains(out.String(), wantOut) {
			t.Fatalf("fsctl %v: %d\n%s%s", args, code, out.String(), errOut.String())
		}
	}
	f(0, "true", "audit")
	f(0, "it: 4 units of dead nodes given back", "reconcile")
	f(0, "it: 0 units", "reconcile", "it")
	f(2, "", "nonsense")
	// A ledger out of balance is reported, with exit status 1.
	c.Do(ctx, c.B().Hincrby().Key("{"+p+":it}:stock").Field("claimed").Increment(1).Build())
	f(1, "false", "audit", "it")
}
