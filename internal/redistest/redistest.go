// Package redistest connects tests to the real Redis named by
// FLASHSALE_TEST_REDIS (default 127.0.0.1:6379), never a mock of it, and
// gives each test keys of its own. Tests only: no command imports it.
package redistest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/redis/rueidis"
)

// Addr is the test Redis's address.
func Addr() string {
	if addr := os.Getenv("FLASHSALE_TEST_REDIS"); addr != "" {
		return addr
	}
	return "127.0.0.1:6379"
}

// Client connects to the test Redis. Without one the test skips, except in
// CI, where it fails.
func Client(t testing.TB) rueidis.Client {
	t.Helper()
	addr := Addr()
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}, DisableCache: true})
	if err == nil {
		err = c.Do(context.Background(), c.B().Ping().Build()).Error()
	}
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("Redis at %s: %v (.ci/run starts it)", addr, err)
		}
		t.Skipf("no Redis at %s: %v", addr, err)
	}
	t.Cleanup(c.Close)
	return c
}

// Prefix is a key prefix of the test's own; its keys are deleted when the
// test ends.
func Prefix(t testing.TB, c rueidis.Client) string {
	p := fmt.Sprintf("fstest-%d", rand.Uint64())
	t.Cleanup(func() { Flush(c, p) })
	return p
}

// Flush deletes every key under prefix at once (one DEL): what a FLUSHALL
// does to a cluster, without touching the keys of the tests running beside
// it.
func Flush(c rueidis.Client, prefix string) {
	ctx := context.Background()
	var keys []string
	for _, pattern := range []string{"{" + prefix + ":*", prefix + ":*"} {
		k, _ := c.Do(ctx, c.B().Keys().Pattern(pattern).Build()).AsStrSlice()
		keys = append(keys, k...)
	}
	if len(keys) > 0 {
		c.Do(ctx, c.B().Del().Key(keys...).Build())
	}
}
