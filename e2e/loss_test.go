package e2e

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flashsale/flashsale/bench/spawn"
	"github.com/flashsale/flashsale/engine"
	"github.com/flashsale/flashsale/persist/mysqlstore"
)

// Redis loses the cluster's data in the middle of a sale, three ways: killed
// and restarted empty, flushed (FLUSHALL), and killed and restarted from its
// append-only file. Two edges and a writer run under a supervisor that
// restarts any of them that exits (as systemd or Kubernetes would); a
// hurried operator PUTs the item again with its original stock as soon as
// Redis answers. The orders never exceed the stock; every order answered 201
// is stored and readable on every node; selling resumes (no node answers 404
// for the item); the audit balances; no unit sold before the loss is sold
// again. From the append-only file, the sale goes on with nothing rebuilt.
func TestRedisLosesItsData(t *testing.T) {
	for _, how := range []string{"restart-empty", "flushall", "restart-from-aof"} {
		t.Run(how, func(t *testing.T) { redisLoses(t, how) })
	}
}

func redisLoses(t *testing.T, how string) {
	port := freePort(t)
	redisAddr := fmt.Sprintf("127.0.0.1:%d", port)
	var persist []string
	if how == "restart-from-aof" {
		// deploy/redis.conf, as the README says to run it, on a port and
		// directory of the test's own.
		persist = []string{repoFile("deploy/redis.conf"), "--dir", t.TempDir(), "--appendonly", "yes", "--save", "", "--maxmemory", "256mb"}
	}
	redis := ownRedis(t, port, persist...)
	common, dsn := clusterArgs(t, redisAddr)
	const stock = 1000
	sv := &supervisor{t: t}
	sv.writer(common)
	edges := []*supervised{sv.edge(append(common, "-node-id", "1", "-max-lease", "16")),
		sv.edge(append(common, "-node-id", "2", "-max-lease", "16"))}
	itemBody := fmt.Sprintf(`{"name":"x","price_cents":300,"stock":%d,"per_user_limit":1}`, stock)
	if code, _, b := call(t, "PUT", edges[0].admin+"/api/v1/items/it", itemBody); code != 201 {
		t.Fatalf("put: %d %s", code, b)
	}
	waitFor(t, edges[1].public+"/api/v1/items/it")

	var mu sync.Mutex
	won := map[string]orderJSON{} // order id -> its 201
	var sold, unavailable atomic.Int64
	var saidRebuilding atomic.Bool // a 503 said why
	var next atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				u := next.Add(1)
				body := fmt.Sprintf(`{"user_id":"u%d","request_id":"r%d"}`, u, u)
				code, b := callOrDown(edges[(int(u)+w)%2].public+"/api/v1/items/it/purchase", body)
				// No answer (the node was killed with the request in
				// flight): the shopper sends the same request again, to
				// either node, until one answers; a 201 it may have won
				// comes back as its replay.
				for try := 1; code == 0 && try < 500; try++ {
					time.Sleep(10 * time.Millisecond)
					code, b = callOrDown(edges[(int(u)+w+try)%2].public+"/api/v1/items/it/purchase", body)
				}
				switch code {
				case 201:
					var o orderJSON
					if err := json.Unmarshal(b, &o); err != nil {
						t.Errorf("a 201 that is no order: %s", b)
						continue
					}
					mu.Lock()
					won[o.OrderID] = o
					mu.Unlock()
					sold.Add(1)
				case 503, 0: // the ledger is being rebuilt, Redis is down, or the node restarts
					unavailable.Add(1)
					if strings.Contains(string(b), "the stock ledger is being rebuilt") {
						saidRebuilding.Store(true)
					}
					time.Sleep(5 * time.Millisecond)
				case 409:
				default:
					t.Errorf("purchase: %d %s", code, b)
				}
			}
		})
	}
	for sold.Load() < 600 {
		time.Sleep(time.Millisecond)
	}
	switch how {
	case "flushall":
		if err := exec.Command("redis-cli", "-p", strconv.Itoa(port), "FLUSHALL").Run(); err != nil {
			t.Fatalf("FLUSHALL: %v", err)
		}
	default:
		redis.Process.Kill()
		redis.Wait()
		ownRedis(t, port, persist...) // killed with the test
	}
	before := sold.Load()
	if how == "restart-empty" { // and an edge dies meanwhile: it starts again on the lost ledger
		edges[1].kill()
	}
	// The hurried operator: the item again, with its original stock, until
	// it is taken; it must reopen nothing.
	deadline := time.Now().Add(60 * time.Second)
	for {
		code, _, b := call(t, "PUT", edges[0].admin+"/api/v1/items/it", itemBody)
		if code/100 == 2 {
			break
		}
		if code != 503 || time.Now().After(deadline) {
			t.Fatalf("the operator's PUT after the loss: %d %s", code, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for sold.Load() < stock && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	// The last units may sit in a node's lease: buy them on that node.
	for u := 0; sold.Load() < stock && u < 200; u++ {
		for _, e := range edges {
			if code, b := callOrDown(e.public+"/api/v1/items/it/purchase", fmt.Sprintf(`{"user_id":"late%d"}`, u)); code == 201 {
				var o orderJSON
				json.Unmarshal(b, &o)
				won[o.OrderID] = o
				sold.Add(1)
			}
		}
	}
	if n := sold.Load(); n != stock {
		t.Fatalf("%d orders answered 201 for a stock of %d (%d before the loss); ledger %+v", n, stock, before, audit(t, redisAddr, "it"))
	}
	if len(won) != stock {
		t.Fatalf("%d distinct orders answered 201, %d answers", len(won), sold.Load())
	}
	// Every 201 is a row, and readable on every node.
	db, err := mysqlstore.Open(context.Background(), mysqlstore.Options{DSN: dsn, Tables: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		n, err := db.Count(context.Background())
		if err == nil && n == stock {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d rows (%v), want %d", n, err, stock)
		}
	}
	rows, err := db.All(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		if _, ok := won[strconv.FormatUint(r.ID, 10)]; !ok {
			t.Fatalf("row %+v was never answered 201", r)
		}
	}
	// The leaderboards, rebuilt with the ledger: the first 100 buyers of
	// record, in order, on every node.
	slices.SortFunc(rows, func(a, b *engine.Order) int { return cmp.Compare(a.ID, b.ID) })
	var first []string
	for _, r := range rows[:100] {
		first = append(first, r.UserID)
	}
	for _, e := range edges {
		_, _, b := call(t, "GET", e.public+"/api/v1/items/it/leaderboard?limit=100", "")
		var lb struct {
			Entries []struct {
				UserID string `json:"user_id"`
			}
		}
		json.Unmarshal(b, &lb)
		var got []string
		for _, x := range lb.Entries {
			got = append(got, x.UserID)
		}
		if strings.Join(got, ",") != strings.Join(first, ",") {
			t.Fatalf("the leaderboard on %s after %s:\n got  %v\n want %v", e.public, how, got, first)
		}
	}
	i := 0
	for id := range won {
		if i++; i > 100 {
			break
		}
		for _, e := range edges {
			if code, _, b := call(t, "GET", e.public+"/api/v1/orders/"+id, ""); code != 200 {
				t.Fatalf("order %s on %s: %d %s", id, e.public, code, b)
			}
		}
	}
	for _, e := range edges {
		if code, _, b := call(t, "GET", e.public+"/api/v1/items/it", ""); code != 200 || !strings.Contains(string(b), `"stock_left":0`) {
			t.Fatalf("the item on %s after the sale: %d %s", e.public, code, b)
		}
	}
	if a := audit(t, redisAddr, "it"); !a.Balanced() || a.Claimed != stock || a.Total != stock {
		t.Fatalf("audit after the sale: %+v", a)
	}
	rebuilds := 0.0
	for _, e := range edges {
		rebuilds += metric(t, e.admin, `flashsale_ledger_rebuilds_total{result="done"}`)
	}
	if (how == "restart-from-aof") != (rebuilds == 0) || (how == "restart-from-aof") == saidRebuilding.Load() {
		t.Fatalf("%v rebuilds after %s; a 503 said the ledger was rebuilt: %v", rebuilds, how, saidRebuilding.Load())
	}
	// No process exits but the edge the test killed: the others rejoin.
	want := int64(0)
	if how == "restart-empty" {
		want = 1
	}
	if sv.restarts.Load() != want {
		t.Fatalf("%d processes restarted by the supervisor, want %d", sv.restarts.Load(), want)
	}
	t.Logf("%s: %d sold before the loss, %d answers 503 or refused connections, %d process restarts, %v rebuilds",
		how, before, unavailable.Load(), sv.restarts.Load(), rebuilds)
}

// metric reads one sample of the admin listener's /metrics (0 when absent).
func metric(t *testing.T, admin, sample string) float64 {
	t.Helper()
	_, _, b := call(t, "GET", admin+"/metrics", "")
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, sample+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}

// supervisor restarts the processes it started when they exit, on the same
// addresses, until the test ends.
type supervisor struct {
	t        *testing.T
	restarts atomic.Int64
}

// supervised is a process under a supervisor, at fixed addresses.
type supervised struct {
	public, admin string
	mu            sync.Mutex
	p             *proc
}

// kill sends the running process SIGKILL; the supervisor starts it again.
func (s *supervised) kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.p.Cmd.Process.Kill()
}

func (s *supervisor) edge(args []string) *supervised {
	pub, adm := fmt.Sprintf("127.0.0.1:%d", freePort(s.t)), fmt.Sprintf("127.0.0.1:%d", freePort(s.t))
	args = append(args, "-listen", pub, "-admin-listen", adm)
	dir := s.t.TempDir()
	sv := &supervised{public: "http://" + pub, admin: "http://" + adm}
	s.keep(sv, func() (*proc, error) {
		return spawn.Start(binary, dir, s.log(), append([]string{"-shutdown-delay", "100ms"}, args...)...)
	})
	return sv
}

func (s *supervisor) writer(args []string) {
	s.keep(&supervised{}, func() (*proc, error) {
		return spawn.StartWriter(binary, s.log(), append([]string{"-writer-batch", "64"}, args...)...)
	})
}

// keep starts a process and restarts it whenever it exits.
func (s *supervisor) keep(sv *supervised, start func() (*proc, error)) {
	s.t.Helper()
	p, err := start()
	if err != nil {
		s.t.Fatal(err)
	}
	sv.p = p
	done := make(chan struct{})
	var stopped sync.WaitGroup
	stopped.Go(func() {
		for {
			select {
			case <-done:
				p.Cmd.Process.Kill()
				<-p.Exited
				return
			case <-p.Exited:
			}
			for {
				s.restarts.Add(1)
				np, err := start()
				if err == nil {
					sv.mu.Lock()
					p, sv.p = np, np
					sv.mu.Unlock()
					break
				}
				select {
				case <-done:
					return
				case <-time.After(200 * time.Millisecond):
				}
			}
		}
	})
	s.t.Cleanup(func() { close(done); stopped.Wait() })
}

func (s *supervisor) log() io.Writer {
	if testing.Verbose() {
		return os.Stderr
	}
	return nil
}
