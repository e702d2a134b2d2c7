package e2e

// The standalone binary: killed with SIGKILL, stopped with SIGTERM, and
// its configuration checked.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/flashsale/flashsale/persist/seglog"
)

// TestKill9KeepsEveryAcceptedOrder buys concurrently, kills the process
// with SIGKILL in the middle of the load, restarts it on the same data, and
// checks invariants 1, 2 and 4 of docs/design.md.
func TestKill9KeepsEveryAcceptedOrder(t *testing.T) {
	dir := t.TempDir()
	p := start(t, dir)
	const stock, users = 2000, 4000
	if code, _, b := call(t, "PUT", p.Admin+"/api/v1/items/phone-1", fmt.Sprintf(`{"name":"Phone","price_cents":19900,"stock":%d,"per_user_limit":1}`, stock)); code != 201 {
		t.Fatalf("create: %d %s", code, b)
	}

	var mu sync.Mutex
	accepted := map[string][]byte{} // request id -> first 201 body
	var wg sync.WaitGroup
	next := make(chan int)
	load := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	for w := 0; w < 32; w++ {
		wg.Go(func() {
			for i := range next {
				body := fmt.Sprintf(`{"user_id":"u-%d","request_id":"r-%d"}`, i, i)
				req, _ := http.NewRequest("POST", p.Public+"/api/v1/items/phone-1/purchase", strings.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				resp, err := load.Do(req)
				if err != nil {
					continue // the process is gone
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode == 201 {
					mu.Lock()
					accepted[fmt.Sprintf("r-%d", i)] = b
					mu.Unlock()
				} else if resp.StatusCode != 409 && resp.StatusCode != 503 {
					t.Errorf("purchase %d: %d %s", i, resp.StatusCode, b)
				}
			}
		})
	}
	killed := false
	for i := 0; i < users; i++ {
		if !killed {
			mu.Lock()
			n := len(accepted)
			mu.Unlock()
			if n >= stock/4 {
				// The orders so far went to the log with direct writes
				// (O_DIRECT|O_DSYNC), as on every filesystem that takes them.
				if direct := metric(t, p.Admin, "flashsale_store_log_direct_writes"); direct != 1 {
					if takes, err := seglog.TakesDirect(dir); err != nil || takes {
						t.Errorf("flashsale_store_log_direct_writes = %v on a filesystem that takes O_DIRECT (%v)", direct, err)
					}
				}
				if err := p.Cmd.Process.Signal(syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
				killed = true
			}
		}
		next <- i
	}
	close(next)
	wg.Wait()
	<-p.Exited
	if !killed {
		t.Fatal("the load finished before the kill: raise users")
	}
	t.Logf("%d orders answered 201 before and around the kill", len(accepted))
	// A crash in the middle of a commit also leaves part of a batch at the
	// end of the order log (the kill above rarely lands in the write): add
	// the head of a record and some of its bytes. The restart cuts them off.
	segs, _ := filepath.Glob(filepath.Join(dir, "orders", "*.log"))
	if len(segs) == 0 {
		t.Fatal("no segment of the order log in the data directory")
	}
	last := segs[len(segs)-1]
	data, err := os.ReadFile(last)
	if err != nil {
		t.Fatal(err)
	}
	records := int64(len(bytes.TrimRight(data, "\x00"))) // then zeros written ahead
	f, err := os.OpenFile(last, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte{90, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3}, records)
	f.Close()

	p = start(t, dir)
	if after, _ := os.ReadFile(last); len(bytes.TrimRight(after, "\x00")) > int(records) { // less when the kill tore a write too
		t.Fatalf("the torn tail was not cut: %d bytes of records, %d before it", len(bytes.TrimRight(after, "\x00")), records)
	}
	// Every 201 survived, with the same fields.
	for req, body := range accepted {
		var o orderJSON
		if err := json.Unmarshal(body, &o); err != nil {
			t.Fatal(err)
		}
		code, _, got := call(t, "GET", p.Public+"/api/v1/orders/"+o.OrderID, "")
		var stored orderJSON
		json.Unmarshal(got, &stored)
		stored.Status = o.Status
		if code != 200 || stored != o {
			t.Fatalf("order of %s lost or changed: %d %s, was %s", req, code, got, body)
		}
	}
	// Stock balances: left = total - units in stored orders.
	sold := 0
	for i := 0; i < users; i++ {
		_, _, b := call(t, "GET", fmt.Sprintf("%s/api/v1/users/u-%d/orders", p.Public, i), "")
		var list struct{ Orders []orderJSON }
		json.Unmarshal(b, &list)
		if len(list.Orders) > 1 {
			t.Fatalf("user u-%d holds %d orders over the limit of 1", i, len(list.Orders))
		}
		sold += len(list.Orders)
	}
	_, _, b := call(t, "GET", p.Public+"/api/v1/items/phone-1", "")
	var item struct {
		StockLeft int `json:"stock_left"`
	}
	json.Unmarshal(b, &item)
	if item.StockLeft != stock-sold || sold < len(accepted) {
		t.Fatalf("stock_left %d, want %d - %d sold (%d answered 201)", item.StockLeft, stock, sold, len(accepted))
	}
	// A pre-crash request id replays its first answer, byte for byte.
	for req, body := range accepted {
		i := strings.TrimPrefix(req, "r-")
		code, h, got := call(t, "POST", p.Public+"/api/v1/items/phone-1/purchase", fmt.Sprintf(`{"user_id":"u-%s","request_id":"%s"}`, i, req))
		if code != 201 || !bytes.Equal(got, body) || h.Get("Idempotent-Replayed") != "true" {
			t.Fatalf("replay of %s after restart: %d %s, first answer %s", req, code, got, body)
		}
		break
	}
	// Selling goes on, never past the stock.
	for i := users; i < users+stock; i++ {
		call(t, "POST", p.Public+"/api/v1/items/phone-1/purchase", fmt.Sprintf(`{"user_id":"u-%d"}`, i))
	}
	_, _, b = call(t, "GET", p.Public+"/api/v1/items/phone-1", "")
	if !strings.Contains(string(b), `"stock_left":0`) || !strings.Contains(string(b), `"state":"sold_out"`) {
		t.Fatalf("after selling the rest: %s", b)
	}
	if code, _, _ := call(t, "POST", p.Public+"/api/v1/items/phone-1/purchase", `{"user_id":"late"}`); code != 409 {
		t.Fatalf("purchase past the stock: %d", code)
	}
}

// TestGracefulShutdown: SIGTERM fails /readyz first, drains, exits 0, and
// the orders stay.
func TestGracefulShutdown(t *testing.T) {
	dir := t.TempDir()
	p := start(t, dir, "-shutdown-delay", "1500ms")
	call(t, "PUT", p.Admin+"/api/v1/items/it", `{"name":"x","price_cents":1,"stock":5}`)
	_, _, first := call(t, "POST", p.Public+"/api/v1/items/it/purchase", `{"user_id":"u","request_id":"r"}`)
	checkMetrics(t, p.Admin) // a live standalone scrape is promtool-clean
	p.Cmd.Process.Signal(syscall.SIGTERM)
	// During the shutdown delay /readyz fails, so load balancers move
	// traffic away, while requests are still served.
	deadline := time.Now().Add(2 * time.Second)
	for {
		code, h, _ := call(t, "GET", p.Public+"/readyz", "")
		if code == 503 && h.Get("Retry-After") != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz still %d after SIGTERM", code)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code, _, b := call(t, "POST", p.Public+"/api/v1/items/it/purchase", `{"user_id":"v"}`); code != 201 {
		t.Fatalf("purchase while draining: %d %s", code, b)
	}
	select {
	case err := <-p.Exited:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("no exit 15 s after SIGTERM")
	}
	p = start(t, dir)
	if _, _, again := call(t, "POST", p.Public+"/api/v1/items/it/purchase", `{"user_id":"u","request_id":"r"}`); !bytes.Equal(again, first) {
		t.Fatalf("replay after restart: %s, first %s", again, first)
	}
	// A second process on the same data directory is refused.
	cmd := exec.Command(binary, "-data-dir", dir, "-listen", "127.0.0.1:0", "-admin-listen", "127.0.0.1:0")
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "in use by another process") {
		t.Fatalf("second process on one data dir: %v %s", err, out)
	}
}

func TestCheckConfigAndEnvironment(t *testing.T) {
	f := func(wantOK bool, env []string, args ...string) {
		t.Helper()
		cmd := exec.Command(binary, append([]string{"-check-config"}, args...)...)
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		if (err == nil) != wantOK {
			t.Fatalf("%v %v: err=%v\n%s", env, args, err, out)
		}
	}
	f(true, nil)
	f(false, nil, "-admin-listen", "0.0.0.0:6060")
	f(true, nil, "-admin-listen", "0.0.0.0:6060", "-admin-token", "t")
	f(false, []string{"FLASHSALE_ADMIN_LISTEN=0.0.0.0:6060"})
	f(true, []string{"FLASHSALE_ADMIN_LISTEN=0.0.0.0:6060", "FLASHSALE_ADMIN_TOKEN=t"})
	f(true, []string{"FLASHSALE_NODE_ID=5000"}, "-node-id", "3") // the command line wins
	f(false, []string{"FLASHSALE_NODE_ID=5000"})
	f(false, []string{"FLASHSALE_READ_TIMEOUT=soon"})
	f(false, nil, "-redis", "127.0.0.1:6379")                             // cluster mode needs -kafka and -mysql
	f(false, nil, "-redis", "127.0.0.1:6379", "-kafka", "127.0.0.1:9092") // and -mysql
	f(false, nil, "-kafka", "127.0.0.1:9092")                             // needs -redis and -mysql
	kafka := []string{"-redis", "127.0.0.1:6379", "-kafka", "127.0.0.1:9092", "-mysql", "u:p@tcp(127.0.0.1:3306)/db"}
	f(true, nil, kafka...) // node id 0: the lowest free one
	f(true, nil, append(kafka, "-node-id", "2")...)
	f(false, nil, append(kafka, "-node-ttl", "10ms")...)
	f(true, nil, append(kafka, "-role", "writer")...)
	f(false, nil, "-role", "writer", "-kafka", "127.0.0.1:9092")
	f(false, nil, "-role", "reader")
	f(false, nil, "-mysql", "u:p@tcp(127.0.0.1:3306)/db")
	f(false, nil, append(kafka, "-kafka-acks", "leader")...) // idempotence needs acks=all
	f(true, nil, append(kafka, "-kafka-acks", "leader", "-kafka-idempotent=false")...)
	f(false, nil, append(kafka, "-kafka-produce-timeout", "100ms")...)
	f(false, nil, append(kafka, "-order-tables", "0")...)
	f(true, nil, "-rate-global", "100", "-rate-ip", "10", "-trusted-proxies", "127.0.0.1, 10.0.0.0/8")
	f(false, nil, "-trusted-proxies", "10.0.0.0/33")
	f(false, nil, "-rate-item", "-1")
	f(false, nil, "-identity", "header")
	f(true, nil, "-identity", "header", "-trusted-proxies", "10.0.0.0/8")
	f(false, nil, "-identity", "jwt")
	key := filepath.Join(t.TempDir(), "key")
	os.WriteFile(key, []byte("0123456789abcdef0123456789abcdef\n"), 0o600)
	f(true, nil, "-identity", "jwt", "-jwt-secret-file", key)
	f(false, nil, "-identity", "cookie")
}
