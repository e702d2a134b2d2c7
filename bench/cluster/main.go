// Command cluster measures what a cluster's nodes tell each other, with the
// real binaries over HTTP: it spawns -nodes edge nodes and a writer of the
// flashsale binary on a Redis of a fresh key prefix, the dev broker and a
// throwaway MariaDB database, then measures
//
//   - the winning path: -winners purchases one after another on node 1, each
//     by a new user (the latency of each 201);
//
//   - reads on another node right after each 201: GET /api/v1/orders/{id} on
//     node 2 at once (its latency, whether it found the order, and how long
//     until it does when it does not);
//
//   - the leaderboard: from each of 100 buyers' 201 on node 1 until node 2's
//     board lists them (the writer stores the order, then updates the board),
//     and Redis commands per leaderboard read (-board-reads on node 2);
//
//   - redemptions a second: -redemptions codes of one batch, each redeemed
//     once, spread over the nodes;
//
//   - the catalogue's propagation: -items creates and restocks on node 1,
//     each polled on node 2 until it shows (from the PUT's answer);
//
//   - Redis commands per purchase in a flash sale: -users shoppers (each
//     once, spread round-robin over the nodes, -conns at a time) for -stock
//     units, counted from Redis's INFO commandstats, less what the idle
//     nodes send Redis over as long (heartbeats, reconcilers, refreshes).
//
//     go build -o bin/flashsale . && go run ./bench/cluster -binary bin/flashsale
//     go run ./bench/cluster -binary bin/flashsale -standalone  # redemptions a second, one standalone node
//
// Run it against an older binary to compare (the HTTP contract is the same).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/redis/rueidis"

	"github.com/flashsale/flashsale/bench/spawn"
	"github.com/flashsale/flashsale/internal/mysqltest"
)

func main() {
	log.SetFlags(0)
	binary := flag.String("binary", "bin/flashsale", "the flashsale binary to spawn")
	redisAddr := flag.String("redis", "127.0.0.1:6379", "Redis (a fresh key prefix per run)")
	dsn := flag.String("mysql", mysqltest.DefaultDSN, "MySQL DSN of a user that may create flashsale_test_* databases")
	nodes := flag.Int("nodes", 3, "edge nodes")
	winners := flag.Int("winners", 2000, "purchases one after another on node 1 (winning path and reads on node 2)")
	items := flag.Int("items", 200, "item creates (and as many restocks) propagated from node 1 to node 2")
	users := flag.Int("users", 20000, "shoppers in the flash sale")
	stock := flag.Int("stock", 1000, "units in the flash sale")
	conns := flag.Int("conns", 64, "concurrent shoppers in the flash sale")
	boardReads := flag.Int("board-reads", 10000, "leaderboard reads on node 2 whose Redis commands are counted")
	redemptions := flag.Int("redemptions", 5000, "codes of one batch redeemed, spread over the nodes")
	standalone := flag.Bool("standalone", false, "measure redemptions a second on one standalone node instead (the same -redemptions and -conns)")
	flag.Parse()

	c := &probe{http: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: *conns}}}
	if *standalone {
		c.startStandalone(*binary)
		defer c.stop()
		n, took := c.redeem(*redemptions, *conns)
		fmt.Printf("binary %s, standalone, %s: %d redemptions, %d at once: %.0f a second\n", *binary,
			time.Now().UTC().Format(time.RFC3339), n, *conns, float64(n)/took.Seconds())
		return
	}
	c.start(*binary, *redisAddr, *dsn, *nodes)
	defer c.stop()

	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "binary %s, %d edge nodes, one writer, %s\n", *binary, *nodes, time.Now().UTC().Format(time.RFC3339))
	fmt.Fprintln(tw, "measure\tcount\tP50 ms\tP99 ms\tmax ms\tnote\t")
	win, read, late, found := c.winningPath(*winners)
	row(tw, "201 on node 1 (winning path)", win, "")
	row(tw, "GET the order on node 2 at once", read, fmt.Sprintf("%d of %d found at once", found, *winners))
	if late.TotalCount() > 0 {
		row(tw, "  until found, when not at once", late, "")
	}
	lag, reads, readCmds := c.board(*boardReads)
	row(tw, "201 on node 1 until on node 2's leaderboard", lag, "")
	fmt.Fprintf(tw, "Redis commands per leaderboard read\t%d\t%.4f\t\t\tthe board unchanged; client-side cache\t\n", reads, float64(readCmds)/float64(reads))
	created, restocked := c.propagation(*items)
	row(tw, "item created on 1, sold on 2", created, "")
	row(tw, "item restocked on 1, seen on 2", restocked, "")
	redeemed, took := c.redeem(*redemptions, *conns)
	fmt.Fprintf(tw, "redemptions (every node, %d at once)\t%d\t\t\t\t%.0f a second\t\n", *conns, redeemed, float64(redeemed)/took.Seconds())
	cmds, scripts, requests, sold, byCmd := c.flash(*users, *stock, *conns)
	fmt.Fprintf(tw, "Redis commands per purchase request\t%d\t%.3f\t\t\t%.3f of them scripts; %d sold\t\n",
		requests, float64(cmds)/float64(requests), float64(scripts)/float64(requests), sold)
	tw.Flush()
	names := make([]string, 0, len(byCmd))
	for name := range byCmd {
		names = append(names, name)
	}
	sort.Slice(names, func(i, j int) bool { return byCmd[names[i]] > byCmd[names[j]] })
	fmt.Print("  by command (net of the idle nodes' own):")
	for _, name := range names {
		fmt.Printf(" %s %d", name, byCmd[name])
	}
	fmt.Println()
}

func row(w io.Writer, name string, h *hdrhistogram.Histogram, note string) {
	q := func(p float64) float64 { return float64(h.ValueAtQuantile(p)) / 1000 }
	fmt.Fprintf(w, "%s\t%d\t%.2f\t%.2f\t%.2f\t%s\t\n", name, h.TotalCount(), q(50), q(99), float64(h.Max())/1000, note)
}

func newHist() *hdrhistogram.Histogram { return hdrhistogram.New(1, 60_000_000, 3) } // µs

type probe struct {
	http   *http.Client
	nodes  []*spawn.Proc
	writer *spawn.Proc
	rc     rueidis.Client
	prefix string
	cancel []func()
}

func (c *probe) start(binary, redisAddr, dsn string, n int) {
	rc, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{redisAddr}, DisableCache: true})
	check(err)
	c.rc = rc
	c.prefix = fmt.Sprintf("probe%d", time.Now().UnixNano()/1000)
	db, drop, err := mysqltest.Create(dsn)
	check(err)
	c.cancel = append(c.cancel, drop)
	dir, err := os.MkdirTemp("", "flashsale-probe")
	check(err)
	c.cancel = append(c.cancel, func() { os.RemoveAll(dir) })
	broker := freeAddr()
	devbroker := filepath.Join(dir, "devbroker")
	out, err := exec.Command("go", "build", "-o", devbroker, "github.com/flashsale/flashsale/tools/devbroker").CombinedOutput()
	if err != nil {
		log.Fatalf("cannot build the dev broker: %v\n%s", err, out)
	}
	kb := exec.Command(devbroker, "-listen", broker, "-data-dir", filepath.Join(dir, "kafka"))
	check(kb.Start())
	c.cancel = append(c.cancel, func() { kb.Process.Kill(); kb.Wait() })
	for range 200 {
		if conn, err := net.Dial("tcp", broker); err == nil {
			conn.Close()
			break
		}
		time.Sleep(25 * time.Millisecond)
	}
	secret := filepath.Join(dir, "codes.key")
	check(os.WriteFile(secret, []byte("a secret of bench/cluster, 32 bytes"), 0o600))
	common := []string{"-redis", redisAddr, "-redis-prefix", c.prefix, "-kafka", broker, "-mysql", db, "-codes-secret-file", "1:" + secret}
	w, err := spawn.StartWriter(binary, nil, common...)
	check(err)
	c.writer = w
	for i := range n {
		p, err := spawn.Start(binary, filepath.Join(dir, fmt.Sprint("node", i)), nil, append(common, "-max-lease", "16")...)
		check(err)
		c.nodes = append(c.nodes, p)
	}
}

// startStandalone spawns one standalone node with a secret for codes.
func (c *probe) startStandalone(binary string) {
	dir, err := os.MkdirTemp("", "flashsale-probe")
	check(err)
	c.cancel = append(c.cancel, func() { os.RemoveAll(dir) })
	secret := filepath.Join(dir, "codes.key")
	check(os.WriteFile(secret, []byte("a secret of bench/cluster, 32 bytes"), 0o600))
	p, err := spawn.Start(binary, filepath.Join(dir, "node"), nil, "-codes-secret-file", "1:"+secret)
	check(err)
	c.nodes = append(c.nodes, p)
}

func (c *probe) stop() {
	for _, p := range c.nodes {
		p.Stop()
	}
	if c.writer == nil { // standalone
		for i := len(c.cancel) - 1; i >= 0; i-- {
			c.cancel[i]()
		}
		return
	}
	c.writer.Stop()
	ctx := context.Background()
	for _, pattern := range []string{"{" + c.prefix + ":*", c.prefix + ":*"} {
		keys, _ := c.rc.Do(ctx, c.rc.B().Keys().Pattern(pattern).Build()).AsStrSlice()
		for len(keys) > 0 {
			n := min(len(keys), 1000)
			c.rc.Do(ctx, c.rc.B().Del().Key(keys[:n]...).Build())
			keys = keys[n:]
		}
	}
	c.rc.Close()
	for i := len(c.cancel) - 1; i >= 0; i-- {
		c.cancel[i]()
	}
}

// call sends a request and returns its status, body and latency.
func (c *probe) call(method, url, body string) (int, []byte, time.Duration) {
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	t := time.Now()
	resp, err := c.http.Do(req)
	if err != nil {
		log.Fatalf("%s %s: %v", method, url, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, b, time.Since(t)
}

func (c *probe) put(id string, stock int) {
	if code, b, _ := c.call("PUT", c.nodes[0].Admin+"/api/v1/items/"+id,
		fmt.Sprintf(`{"name":"x","price_cents":100,"stock":%d,"per_user_limit":1}`, stock)); code/100 != 2 {
		log.Fatalf("PUT %s: %d %s", id, code, b)
	}
}

// until polls url until ok says so, and returns how long that took.
func (c *probe) until(url string, ok func(int, []byte) bool) time.Duration {
	t := time.Now()
	for time.Since(t) < 10*time.Second {
		if code, b, _ := c.call("GET", url, ""); ok(code, b) {
			return time.Since(t)
		}
	}
	log.Fatalf("%s: not seen within 10 s", url)
	return 0
}

func (c *probe) winningPath(n int) (win, read, late *hdrhistogram.Histogram, found int) {
	win, read, late = newHist(), newHist(), newHist()
	c.put("win", n)
	c.until(c.nodes[1].Public+"/api/v1/items/win", func(code int, _ []byte) bool { return code == 200 })
	other := c.nodes[1%len(c.nodes)].Public
	for i := range n {
		code, b, d := c.call("POST", c.nodes[0].Public+"/api/v1/items/win/purchase", fmt.Sprintf(`{"user_id":"w%d","request_id":"r%d"}`, i, i))
		if code != 201 {
			log.Fatalf("purchase %d: %d %s", i, code, b)
		}
		win.RecordValue(d.Microseconds())
		var o struct {
			OrderID string `json:"order_id"`
		}
		check(json.Unmarshal(b, &o))
		t := time.Now()
		code, _, d = c.call("GET", other+"/api/v1/orders/"+o.OrderID, "")
		read.RecordValue(d.Microseconds())
		if code == 200 {
			found++
			continue
		}
		c.until(other+"/api/v1/orders/"+o.OrderID, func(code int, _ []byte) bool { return code == 200 })
		late.RecordValue(time.Since(t).Microseconds())
	}
	return win, read, late, found
}

// board measures, for 100 buyers one after another on node 1, the time from
// each 201 until node 2's leaderboard lists the buyer; then reads node 2's
// board reads times and counts Redis's commands meanwhile (net of the idle
// nodes').
func (c *probe) board(reads int) (lag *hdrhistogram.Histogram, n int, cmds int64) {
	lag = newHist()
	c.put("board", engineBoardSize)
	other := c.nodes[1%len(c.nodes)].Public + "/api/v1/items/board/leaderboard?limit=100"
	c.until(c.nodes[1%len(c.nodes)].Public+"/api/v1/items/board", func(code int, _ []byte) bool { return code == 200 })
	for i := range engineBoardSize {
		user := fmt.Sprintf("b%d", i)
		if code, b, _ := c.call("POST", c.nodes[0].Public+"/api/v1/items/board/purchase", fmt.Sprintf(`{"user_id":%q}`, user)); code != 201 {
			log.Fatalf("board purchase: %d %s", code, b)
		}
		lag.RecordValue(c.until(other, func(code int, b []byte) bool {
			return code == 200 && strings.Contains(string(b), `"user_id":"`+user+`"`)
		}).Microseconds())
	}
	before := c.commandStats()
	t := time.Now()
	for range reads {
		c.call("GET", other, "")
	}
	took := time.Since(t)
	during := c.commandStats()
	time.Sleep(took)
	idle := c.commandStats()
	for name, v := range during {
		background := idle[name] - v
		if name == "cmdstat_info" {
			background = 1
		}
		cmds += max(v-before[name]-background, 0)
	}
	return lag, reads, cmds
}

// redeem makes a batch of n codes and redeems each once, spread round-robin
// over the nodes, conns at a time: how many answered 200, and how long it
// took.
func (c *probe) redeem(n, conns int) (int, time.Duration) {
	code, b, _ := c.call("POST", c.nodes[0].Admin+"/api/v1/codes/batches", fmt.Sprintf(`{"batch":"probe","count":%d,"value_cents":100}`, n))
	var batch struct{ Codes []string }
	if err := json.Unmarshal(b, &batch); code != 201 || err != nil {
		log.Fatalf("batch: %d %s", code, b)
	}
	var next, ok atomic.Int64
	var wg sync.WaitGroup
	t := time.Now()
	for range conns {
		wg.Go(func() {
			for i := next.Add(1) - 1; i < int64(n); i = next.Add(1) - 1 {
				node := c.nodes[int(i)%len(c.nodes)]
				if code, _, _ := c.call("POST", node.Public+"/api/v1/codes/redeem", fmt.Sprintf(`{"code":%q,"user_id":"r%d"}`, batch.Codes[i], i)); code == 200 {
					ok.Add(1)
				}
			}
		})
	}
	wg.Wait()
	return int(ok.Load()), time.Since(t)
}

// engineBoardSize is engine.BoardSize (the board keeps the first 100).
const engineBoardSize = 100

func (c *probe) propagation(n int) (created, restocked *hdrhistogram.Histogram) {
	created, restocked = newHist(), newHist()
	other := c.nodes[1%len(c.nodes)].Public
	for i := range n {
		id := fmt.Sprint("prop", i)
		c.put(id, 1)
		created.RecordValue(c.until(other+"/api/v1/items/"+id, func(code int, _ []byte) bool { return code == 200 }).Microseconds())
		c.put(id, 2)
		restocked.RecordValue(c.until(other+"/api/v1/items/"+id, func(code int, b []byte) bool {
			return code == 200 && strings.Contains(string(b), `"stock_total":2`)
		}).Microseconds())
	}
	return created, restocked
}

// flash runs a flash sale and counts Redis's commands meanwhile, less what
// the nodes send Redis when idle for as long (measured just before).
func (c *probe) flash(users, stock, conns int) (cmds, scripts, requests, sold int64, byCmd map[string]int64) {
	c.put("flash", stock)
	for _, p := range c.nodes {
		c.until(p.Public+"/api/v1/items/flash", func(code int, _ []byte) bool { return code == 200 })
	}
	before := c.commandStats()
	var next, won atomic.Int64
	var wg sync.WaitGroup
	t := time.Now()
	for range conns {
		wg.Go(func() {
			for u := next.Add(1); u <= int64(users); u = next.Add(1) {
				n := c.nodes[int(u)%len(c.nodes)]
				if code, _, _ := c.call("POST", n.Public+"/api/v1/items/flash/purchase", fmt.Sprintf(`{"user_id":"f%d","request_id":"r%d"}`, u, u)); code == 201 {
					won.Add(1)
				}
			}
		})
	}
	wg.Wait()
	took := time.Since(t)
	during := c.commandStats()
	time.Sleep(took)
	idle := c.commandStats()
	byCmd = map[string]int64{}
	for name, n := range during {
		background := idle[name] - n
		if name == "cmdstat_info" {
			background = 1
		}
		if d := n - before[name] - background; d > 0 {
			byCmd[strings.TrimPrefix(name, "cmdstat_")] = d
			cmds += d
			if strings.HasPrefix(name, "cmdstat_eval") {
				scripts += d
			}
		}
	}
	return cmds, scripts, int64(users), won.Load(), byCmd
}

// commandStats reads Redis's calls of every command.
func (c *probe) commandStats() map[string]int64 {
	info, err := c.rc.Do(context.Background(), c.rc.B().Info().Section("commandstats").Build()).ToString()
	check(err)
	out := map[string]int64{}
	for _, line := range strings.Split(info, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":calls=")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(rest[:strings.IndexByte(rest, ',')], 10, 64)
		out[name] = n
	}
	return out
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	check(err)
	defer l.Close()
	return l.Addr().String()
}

func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
