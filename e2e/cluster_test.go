package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/flashsale/flashsale/persist/mysqlstore"
)

// TestClusterTwoNodes runs two processes of the binary on one Redis: they
// sell one stock without overselling or letting a user buy on both; Redis
// dies mid-sale (would-be winners get 503 at once, losers of an empty pool
// are still answered) and comes back empty (the nodes stop selling, one
// rebuilds the ledger from the orders of record, and selling resumes
// without reopening what was sold); on SIGTERM the nodes give their leases
// back and the ledger balances.
func TestClusterTwoNodes(t *testing.T) {
	port := freePort(t)
	redisAddr := fmt.Sprintf("127.0.0.1:%d", port)
	redis := ownRedis(t, port)
	const stock, users = 200, 1600
	var nodes []*proc
	cluster, _ := clusterArgs(t, redisAddr)
	startWriter(t, cluster)
	for id := 1; id <= 2; id++ {
		nodes = append(nodes, start(t, t.TempDir(), append(cluster, "-node-id", strconv.Itoa(id),
			"-breaker-cooldown", "200ms", "-breaker-failures", "2", "-redis-timeout", "200ms", "-max-lease", "16")...))
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
	a0 := audit(t, redisAddr, "it")
	if !a0.Balanced() || a0.Claimed != int64(total) || a0.Total != stock {
		t.Fatalf("ledger after the sale: %+v (%d answered 201)", a0, total)
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
	// Redis comes back empty (no persistence here): the nodes stop selling
	// (503, /readyz failing), one rebuilds the ledger from the orders of
	// record once the writer has stored what Kafka holds, and selling
	// resumes. The operator's PUT of the item is refused until then, and
	// reopens nothing after.
	ownRedis(t, port)
	waitStatus := func(method, url, body string, want int) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			code, _, b := call(t, method, url, body)
			if code == want {
				return
			}
			if code != 503 || time.Now().After(deadline) {
				t.Fatalf("%s %s after Redis came back empty: %d %s, want %d", method, url, code, b, want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitStatus("PUT", nodes[0].Admin+"/api/v1/items/it", fmt.Sprintf(`{"name":"x","price_cents":1,"stock":%d,"per_user_limit":1}`, stock), 200)
	waitStatus("POST", nodes[1].Public+"/api/v1/items/more/purchase", `{"user_id":"back"}`, 201)
	for _, n := range nodes {
		if code, _, b := call(t, "POST", n.Public+"/api/v1/items/it/purchase", `{"user_id":"after-the-loss"}`); code != 409 {
			t.Fatalf("the sold-out item after the rebuild: %d %s", code, b)
		}
		waitStatus("GET", n.Public+"/readyz", "", 200)
	}
	if a := audit(t, redisAddr, "it"); !a.Balanced() || a.Claimed != int64(total) || a.Total != stock {
		t.Fatalf("the rebuilt ledger of the sold item: %+v (%d answered 201)", a, total)
	}

	// A graceful stop gives the leases back; the ledger balances and the
	// claims are exactly the orders the nodes stored.
	for _, n := range nodes {
		n.Cmd.Process.Signal(syscall.SIGTERM)
		if err := <-n.Exited; err != nil {
			t.Fatalf("exit: %v", err)
		}
	}
	if a := audit(t, redisAddr, "more"); !a.Balanced() || a.Leased() != 0 || a.Claimed != 1 || a.Remaining != 49 {
		t.Fatalf("ledger after the stop: %+v", a)
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestClusterNodeKilled kills a node with SIGKILL while it holds leased
// units: once its registration lapses, the other node gives those units back
// to the pool and sells them; nothing is oversold and the ledger balances.
func TestClusterNodeKilled(t *testing.T) {
	port := freePort(t)
	redisAddr := fmt.Sprintf("127.0.0.1:%d", port)
	ownRedis(t, port)
	const stock = 300
	args, _ := clusterArgs(t, redisAddr)
	args = append(args, "-node-ttl", "1s", "-reconcile-interval", "200ms", "-max-lease", "50")
	n1 := start(t, t.TempDir(), append(args, "-node-id", "1")...)
	n2 := start(t, t.TempDir(), append(args, "-node-id", "2")...)
	call(t, "PUT", n1.Admin+"/api/v1/items/it", fmt.Sprintf(`{"name":"x","price_cents":1,"stock":%d,"per_user_limit":1}`, stock))
	waitFor(t, n2.Public+"/api/v1/items/it")

	sold := 0
	buy := func(n *proc, user string) int {
		code, _, b := call(t, "POST", n.Public+"/api/v1/items/it/purchase", fmt.Sprintf(`{"user_id":%q}`, user))
		if code == 201 {
			sold++
		} else if code != 409 {
			t.Fatalf("purchase on %s: %d %s", n.Public, code, b)
		}
		return code
	}
	for i := 0; i < 60; i++ {
		buy(n2, fmt.Sprint("a", i))
	}
	before := audit(t, redisAddr, "it")
	if before.Leased() == 0 {
		t.Fatalf("node 2 holds no leased units to strand: %+v", before)
	}
	n2.Cmd.Process.Signal(syscall.SIGKILL)
	<-n2.Exited

	// Once node 2's registration lapses (1 s), node 1 gives its units back;
	// node 1 then sells everything that is left.
	deadline := time.Now().Add(10 * time.Second)
	for u := 0; ; u++ {
		if buy(n1, fmt.Sprint("b", u)) == 409 {
			a := audit(t, redisAddr, "it")
			if a.Remaining == 0 && a.Leased() == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the dead node's units were not given back: %+v", a)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	a := audit(t, redisAddr, "it")
	if !a.Balanced() || a.Claimed != stock || sold != stock {
		t.Fatalf("after the reconciliation: %d answered 201, ledger %+v", sold, a)
	}
	_, _, m := call(t, "GET", n1.Admin+"/metrics", "")
	for _, want := range []string{`flashsale_pool_audit_difference{item="it"} 0`, "flashsale_pool_reconciled_units_total"} {
		if !strings.Contains(string(m), want) {
			t.Fatalf("metrics lack %q", want)
		}
	}
	t.Logf("node 2 held %d units when killed; all %d sold by node 1 afterwards", before.Leased(), stock-60)
}

// TestSameAnswerOnEveryNode: three edge nodes and a writer; 20,000 users
// race for 1,000 units, spread round-robin as Nginx spreads them. A share of
// them send twins to two nodes at once; winners retry on other nodes during
// the sale and after it; some reuse their request id on another node for
// another quantity or item. Exactly 1,000 orders; every retry of a winner is
// its first answer, byte for byte, on every node; no winner or twin of one
// is told "sold out"; reuse is 422 everywhere; every order is readable on
// every node right after its 201.
func TestSameAnswerOnEveryNode(t *testing.T) {
	port := freePort(t)
	redisAddr := fmt.Sprintf("127.0.0.1:%d", port)
	ownRedis(t, port)
	common, dsn := clusterArgs(t, redisAddr)
	startWriter(t, common)
	var nodes []*proc
	for id := 1; id <= 3; id++ {
		nodes = append(nodes, start(t, t.TempDir(), append(common, "-node-id", strconv.Itoa(id), "-max-lease", "16")...))
	}
	const stock, users = 1000, 20000
	for _, it := range []struct {
		id    string
		stock int
	}{{"it", stock}, {"other", 50}} {
		if code, _, b := call(t, "PUT", nodes[0].Admin+"/api/v1/items/"+it.id, fmt.Sprintf(`{"name":"x","price_cents":700,"stock":%d,"per_user_limit":2}`, it.stock)); code != 201 {
			t.Fatalf("put %s: %d %s", it.id, code, b)
		}
		for _, n := range nodes {
			waitFor(t, n.Public+"/api/v1/items/"+it.id)
		}
	}
	buy := func(n *proc, item, user, req string, q int) (int, []byte, http.Header) {
		code, h, b := call(t, "POST", n.Public+"/api/v1/items/"+item+"/purchase", fmt.Sprintf(`{"user_id":%q,"request_id":%q,"quantity":%d}`, user, req, q))
		return code, b, h
	}
	var mu sync.Mutex
	first := map[int][]byte{} // user -> first 201 body
	var failures []string
	fail := func(format string, args ...any) {
		mu.Lock()
		if len(failures) < 20 {
			failures = append(failures, fmt.Sprintf(format, args...))
		}
		mu.Unlock()
	}
	// replays checks that a winner's request id is answered with its first
	// 201 on every node.
	replays := func(u int, body []byte, on ...*proc) {
		for _, n := range on {
			code, b, h := buy(n, "it", fmt.Sprint("u", u), fmt.Sprint("r", u), 1)
			if code != 201 || !bytes.Equal(b, body) || h.Get("Idempotent-Replayed") != "true" {
				fail("retry of u%d's winner on %s: %d %s (first: %s)", u, n.Public, code, b, body)
			}
		}
	}
	work := make(chan int)
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for u := range work {
				a, b := nodes[u%3], nodes[(u+1)%3]
				user, req := fmt.Sprint("u", u), fmt.Sprint("r", u)
				var code int
				var body []byte
				if u%10 == 0 { // twins: the same request to two nodes at once
					var code2 int
					var body2 []byte
					var tw sync.WaitGroup
					tw.Go(func() { code, body, _ = buy(a, "it", user, req, 1) })
					tw.Go(func() { code2, body2, _ = buy(b, "it", user, req, 1) })
					tw.Wait()
					if code != 201 && code2 == 201 {
						code, body, code2, body2 = code2, body2, code, body
					}
					if code == 201 && !(code2 == 201 && bytes.Equal(body, body2) || code2 == 409 && bytes.Contains(body2, []byte("request_in_progress"))) {
						fail("twins of u%d: 201 and %d %s", u, code2, body2)
					}
				} else {
					code, body, _ = buy(a, "it", user, req, 1)
				}
				switch {
				case code == 201:
					mu.Lock()
					first[u] = body
					mu.Unlock()
				case code == 409 && (bytes.Contains(body, []byte("sold_out")) || bytes.Contains(body, []byte("request_in_progress"))):
					continue
				default:
					fail("purchase of u%d: %d %s", u, code, body)
					continue
				}
				var o orderJSON
				json.Unmarshal(body, &o)
				if u%7 == 0 { // readable on every node right after its 201
					for _, n := range nodes {
						code, _, got := call(t, "GET", n.Public+"/api/v1/orders/"+o.OrderID, "")
						var g orderJSON
						json.Unmarshal(got, &g)
						g.Status = o.Status
						if code != 200 || g != o {
							fail("order %s of u%d on %s right after its 201: %d %s", o.OrderID, u, n.Public, code, got)
						}
					}
					code, _, got := call(t, "GET", nodes[(u+2)%3].Public+"/api/v1/users/"+user+"/orders", "")
					if code != 200 || !bytes.Contains(got, []byte(o.OrderID)) {
						fail("orders of u%d on another node right after the 201: %d %s", u, code, got)
					}
				}
				if u%4 == 0 { // a retry on another node during the sale
					replays(u, body, nodes[(u+2)%3])
				}
				if u%13 == 0 { // reuse elsewhere: another quantity, another item
					if code, b, _ := buy(nodes[(u+2)%3], "it", user, req, 2); code != 422 {
						fail("u%d's request id for another quantity on another node: %d %s", u, code, b)
					}
					if code, b, _ := buy(nodes[(u+1)%3], "other", user, req, 1); code != 422 {
						fail("u%d's request id for another item on another node: %d %s", u, code, b)
					}
				}
			}
		})
	}
	for u := range users {
		work <- u
	}
	close(work)
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("%d+ wrong answers, the first:\n%s", len(failures), strings.Join(failures, "\n"))
	}
	// After the sale: every winner's retry is its first answer on every node.
	ids := map[string]bool{}
	for u, body := range first {
		var o orderJSON
		json.Unmarshal(body, &o)
		ids[o.OrderID] = true
		if u%5 == 0 {
			replays(u, body, nodes...)
		}
	}
	if len(failures) > 0 {
		t.Fatalf("%d+ wrong answers after the sale, the first:\n%s", len(failures), strings.Join(failures, "\n"))
	}
	if len(ids) != stock {
		t.Fatalf("%d orders answered 201, want exactly %d", len(ids), stock)
	}
	db, err := mysqlstore.Open(context.Background(), mysqlstore.Options{DSN: dsn, Tables: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if n, _ := db.Sold(context.Background(), "it"); n == stock {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("%d units of it in MySQL, want %d", n, stock)
		}
	}
	if a := audit(t, redisAddr, "it"); !a.Balanced() || a.Claimed != stock {
		t.Fatalf("ledger: %+v", a)
	}
}
