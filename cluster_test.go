package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/flashsale/flashsale/persist/redisledger"
)

// ownRedis starts a redis-server of the test's own on a free port, so it can
// be stopped and started again without touching anybody else's.
func ownRedis(t *testing.T, port int) *exec.Cmd {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("redis-server is not installed; .ci/run installs it")
		}
		t.Skip("redis-server is not installed")
	}
	cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for i := 0; i < 100; i++ {
		c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{fmt.Sprintf("127.0.0.1:%d", port)}, DisableCache: true})
		if err == nil {
			c.Close()
			return cmd
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("redis-server did not start")
	return nil
}

// TestClusterTwoNodes runs two processes of the binary on one Redis: they
// sell one stock without overselling or letting a user buy on both; Redis
// dies mid-sale (would-be winners get 503 at once, losers of an empty pool
// are still answered) and comes back (the nodes recover by themselves); on
// SIGTERM the nodes give their leases back and the ledger balances.
func TestClusterTwoNodes(t *testing.T) {
	port := freePort(t)
	redisAddr := fmt.Sprintf("127.0.0.1:%d", port)
	redis := ownRedis(t, port)
	const stock, users = 200, 1600
	var nodes []*proc
	for id := 1; id <= 2; id++ {
		nodes = append(nodes, start(t, t.TempDir(), "-redis", redisAddr, "-node-id", strconv.Itoa(id),
			"-breaker-cooldown", "200ms", "-breaker-failures", "2", "-redis-timeout", "200ms", "-max-lease", "16"))
	}
	// An item is created on node 1 only; node 2 learns it from the
	// catalogue in Redis within a second.
	item := func(id string, total int) {
		t.Helper()
		if code, _, b := call(t, "PUT", nodes[0].Admin+"/api/v1/items/"+id, fmt.Sprintf(`{"name":"x","price_cents":1,"stock":%d,"per_user_limit":1}`, total)); code/100 != 2 {
			t.Fatalf("put %s: %d %s", id, code, b)
		}
		deadline := time.Now().Add(1500 * time.Millisecond)
		for {
			code, _, b := call(t, "GET", nodes[1].Public+"/api/v1/items/"+id, "")
			if code == 200 && strings.Contains(string(b), fmt.Sprintf(`"stock_total":%d`, total)) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("node 2 does not see item %s a second after node 1 put it: %d %s", id, code, b)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	item("it", stock)
	var mu sync.Mutex
	won := map[string]int{}
	var wg sync.WaitGroup
	work := make(chan int)
	for w := 0; w < 16; w++ {
		wg.Go(func() {
			for u := range work {
				for k := 0; k < 1+boolInt(u%4 == 0); k++ { // a quarter try both nodes
					n := nodes[(u+k)%2]
					code, _, b := call(t, "POST", n.Public+"/api/v1/items/it/purchase", fmt.Sprintf(`{"user_id":"u%d","request_id":"r%d"}`, u, k))
					switch code {
					case 201:
						mu.Lock()
						won[fmt.Sprint("u", u)]++
						mu.Unlock()
					case 409:
					default:
						t.Errorf("purchase: %d %s", code, b)
					}
				}
			}
		})
	}
	for u := 0; u < users; u++ {
		work <- u
	}
	close(work)
	wg.Wait()
	total := 0
	for u, n := range won {
		if n > 1 {
			t.Fatalf("user %s bought %d times across nodes", u, n)
		}
		total += n
	}
	if total > stock {
		t.Fatalf("oversold: %d of %d", total, stock)
	}

	// The ledger agrees: claims are exactly the units answered 201.
	rc0, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{redisAddr}, DisableCache: true})
	if err != nil {
		t.Fatal(err)
	}
	a0, err := redisledger.New(rc0, 9, redisledger.Options{}).Audit(context.Background(), "it")
	rc0.Close()
	if err != nil || !a0.Balanced() || a0.Claimed != int64(total) || a0.Total != stock {
		t.Fatalf("ledger after the sale: %+v (%d answered 201) %v", a0, total, err)
	}
	t.Logf("sold %d of %d; %d still leased to the nodes", total, stock, a0.Leased())

	// Redis goes away mid-sale.
	item("more", 50)
	item("gone", 0)
	call(t, "POST", nodes[0].Public+"/api/v1/items/gone/purchase", `{"user_id":"w"}`) // learns the pool is empty
	redis.Process.Kill()
	redis.Wait()
	start := time.Now()
	for i := 0; i < 4; i++ {
		code, h, b := call(t, "POST", nodes[0].Public+"/api/v1/items/more/purchase", fmt.Sprintf(`{"user_id":"d%d"}`, i))
		if code != 503 || h.Get("Retry-After") == "" {
			t.Fatalf("purchase with Redis down: %d %s", code, b)
		}
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("four 503s took %v", took)
	}
	if code, _, b := call(t, "POST", nodes[0].Public+"/api/v1/items/gone/purchase", `{"user_id":"w2"}`); code != 409 {
		t.Fatalf("a loser of an empty pool with Redis down: %d %s", code, b)
	}
	if code, _, _ := call(t, "GET", nodes[0].Public+"/readyz", ""); code != 503 {
		t.Fatalf("readyz with Redis down: %d", code)
	}
	// Redis comes back (empty: no persistence here) and the nodes recover by
	// themselves once the circuit's cool-down has passed; the operator puts
	// the lost item back (until then the PUT answers 503, the circuit open).
	ownRedis(t, port)
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, _, b := call(t, "PUT", nodes[0].Admin+"/api/v1/items/more", `{"name":"x","price_cents":1,"stock":50,"per_user_limit":1}`)
		if code/100 == 2 {
			break
		}
		if code != 503 || time.Now().After(deadline) {
			t.Fatalf("put after Redis came back: %d %s", code, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for {
		code, _, _ := call(t, "POST", nodes[0].Public+"/api/v1/items/more/purchase", `{"user_id":"back"}`)
		if code == 201 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no recovery after Redis came back: %d", code)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// A graceful stop gives the leases back; the ledger balances and the
	// claims are exactly the orders the nodes stored.
	for _, n := range nodes {
		n.Cmd.Process.Signal(syscall.SIGTERM)
		if err := <-n.Exited; err != nil {
			t.Fatalf("exit: %v", err)
		}
	}
	rc, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{redisAddr}, DisableCache: true})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	a, err := redisledger.New(rc, 9, redisledger.Options{}).Audit(context.Background(), "more")
	if err != nil || !a.Balanced() || a.Leased() != 0 || a.Claimed != 1 || a.Remaining != 49 {
		t.Fatalf("ledger after the stop: %+v %v", a, err)
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
