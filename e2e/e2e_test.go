// Package e2e tests the built binaries from outside, as an operator runs
// them: the flashsale command (standalone, cluster nodes, writers), the dev
// broker, a Redis of a test's own, the real MariaDB and Nginx. This file is
// the one helper file (as nats-server's test/test.go): build once, free
// ports, start, wait until ready, call, stop. The tests never reach inside
// a process: only flags, HTTP, signals and the dependencies' own servers.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/flashsale/flashsale/bench/spawn"
	"github.com/flashsale/flashsale/internal/mysqltest"
	"github.com/flashsale/flashsale/ledger"
	"github.com/flashsale/flashsale/persist/redisledger"
)

// binary and devbroker are built once, for every test.
var binary, devbroker string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "flashsale-e2e")
	if err != nil {
		panic(err)
	}
	binary, devbroker = filepath.Join(dir, "flashsale"), filepath.Join(dir, "devbroker")
	for bin, pkg := range map[string]string{binary: "github.com/flashsale/flashsale", devbroker: "github.com/flashsale/flashsale/tools/devbroker"} {
		if out, err := exec.Command("go", "build", "-o", bin, pkg).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "cannot build %s: %v\n%s", pkg, err, out)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// repoFile is a file of the repository, by its path from the root.
func repoFile(path string) string { return filepath.Join("..", path) }

type proc = spawn.Proc

// start runs the binary on dataDir (loopback ports chosen by the kernel)
// and waits until it serves; it is killed when the test ends.
func start(t *testing.T, dataDir string, args ...string) *proc {
	t.Helper()
	var log io.Writer
	if testing.Verbose() {
		log = os.Stderr
	}
	p, err := spawn.Start(binary, dataDir, log, append([]string{"-shutdown-delay", "100ms"}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Cmd.Process.Kill() })
	return p
}

// startWriter runs the binary in the writer role and waits until ready; it
// is killed when the test ends.
func startWriter(t *testing.T, common []string) *proc {
	t.Helper()
	var log io.Writer
	if testing.Verbose() {
		log = os.Stderr
	}
	p, err := spawn.StartWriter(binary, log, append([]string{"-writer-batch", "64"}, common...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return p
}

// startDevBroker runs tools/devbroker on a free port with a data directory
// of the test's own, and returns its address.
func startDevBroker(t *testing.T) string {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	run(t, devbroker, "-listen", addr, "-data-dir", t.TempDir())
	waitTCP(t, addr)
	return addr
}

// clusterArgs are the flags of a cluster node on the Redis at redisAddr,
// with a dev broker and an order database (its DSN is returned too) of the
// test's own.
func clusterArgs(t *testing.T, redisAddr string) (args []string, dsn string) {
	return clusterArgsOn(t, redisAddr, startDevBroker(t))
}

// clusterArgsOn is clusterArgs on the Kafka at brokers.
func clusterArgsOn(t *testing.T, redisAddr, brokers string) (args []string, dsn string) {
	t.Helper()
	dsn = mysqltest.DSN(t)
	return []string{"-redis", redisAddr, "-kafka", brokers, "-mysql", dsn,
		"-kafka-partitions", "4", "-order-tables", "8", "-kafka-produce-timeout", "1s"}, dsn
}

// startRdkafkaMock runs librdkafka's mock cluster (testdata/mockcluster.c,
// compiled here against the system's librdkafka) with topics
// ("name:partitions"), and returns its bootstrap servers. Without
// librdkafka-dev and gcc the test is skipped, and fails under CI (.ci/run
// installs them).
func startRdkafkaMock(t *testing.T, topics ...string) string {
	t.Helper()
	mockOnce.Do(func() {
		flags, err := exec.Command("pkg-config", "--cflags", "--libs", "rdkafka").Output()
		if err != nil {
			mockErr = fmt.Errorf("librdkafka-dev is not installed (pkg-config rdkafka: %v)", err)
			return
		}
		mockBin = filepath.Join(filepath.Dir(binary), "mockcluster")
		args := append([]string{"-o", mockBin, "testdata/mockcluster.c"}, strings.Fields(string(flags))...)
		if out, err := exec.Command("gcc", args...).CombinedOutput(); err != nil {
			mockErr = fmt.Errorf("cannot build the librdkafka mock cluster: %v\n%s", err, out)
		}
	})
	if mockErr != nil {
		if os.Getenv("CI") != "" {
			t.Fatal(mockErr)
		}
		t.Skip(mockErr)
	}
	cmd := exec.Command(mockBin, topics...)
	stdin, err := cmd.StdinPipe() // the mock runs until its stdin closes
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if testing.Verbose() {
		cmd.Stderr = os.Stderr
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("the mock cluster did not print its brokers: %v", err)
	}
	return strings.TrimSpace(line)
}

var (
	mockOnce sync.Once
	mockBin  string
	mockErr  error
)

// checkMetrics lints a live scrape of admin's /metrics with promtool check
// metrics (Prometheus's naming and exposition rules); skipped without
// promtool, failed under CI.
func checkMetrics(t *testing.T, admin string) {
	t.Helper()
	bin, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("promtool is not installed; .ci/run installs it")
		}
		t.Skip("promtool is not installed")
	}
	_, _, scrape := call(t, "GET", admin+"/metrics", "")
	cmd := exec.Command(bin, "check", "metrics")
	cmd.Stdin = bytes.NewReader(scrape)
	if out, err := cmd.CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("promtool check metrics on %s: %v\n%s", admin, err, out)
	}
}

// kcat runs kcat (librdkafka's command-line client) with stdin and returns
// its output; skipped without it, failed under CI.
func kcat(t *testing.T, stdin []byte, args ...string) []byte {
	t.Helper()
	bin, err := exec.LookPath("kcat")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("kcat is not installed; .ci/run installs it")
		}
		t.Skip("kcat is not installed")
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kcat %v: %v\n%s", args, err, stderr.String())
	}
	return out
}

// ownRedis starts a redis-server of the test's own on port, so that it can
// be killed and started again without touching anybody else's; without
// persistence unless extra says otherwise (later options win; a first
// extra ending in .conf is the configuration file).
func ownRedis(t *testing.T, port int, extra ...string) *exec.Cmd {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("redis-server is not installed; .ci/run installs it")
		}
		t.Skip("redis-server is not installed")
	}
	args := []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"}
	if len(extra) > 0 && strings.HasSuffix(extra[0], ".conf") { // a configuration file comes first
		args = append([]string{extra[0]}, args...)
		extra = extra[1:]
	}
	cmd := run(t, bin, append(args, extra...)...)
	waitTCP(t, fmt.Sprintf("127.0.0.1:%d", port))
	return cmd
}

// run starts a command that is killed when the test ends.
func run(t *testing.T, bin string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bin, args...)
	if testing.Verbose() {
		cmd.Stderr = os.Stderr
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// waitFor waits until url answers 200.
func waitFor(t *testing.T, url string) {
	t.Helper()
	for i := 0; i < 100; i++ {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s did not answer 200", url)
}

// waitTCP waits until addr accepts connections.
func waitTCP(t *testing.T, addr string) {
	t.Helper()
	for range 200 {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatalf("nothing listens on %s", addr)
}

var client = &http.Client{Timeout: 10 * time.Second}

func call(t *testing.T, method, url, body string, headers ...string) (int, http.Header, []byte) {
	t.Helper()
	return callWith(t, client, method, url, body, headers...)
}

// callWith sends a JSON request with c; headers are "Name: value".
func callWith(t *testing.T, c *http.Client, method, url, body string, headers ...string) (int, http.Header, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for _, h := range headers {
		k, v, _ := strings.Cut(h, ": ")
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

// callOrDown posts body, answering code 0 when the node is unreachable
// (killed).
func callOrDown(url, body string) (int, []byte) {
	resp, err := client.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		return 0, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// clientFrom is an HTTP client whose connections come from a loopback address.
func clientFrom(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return d.DialContext(ctx, network, addr)
		},
	}}
}

// audit reads an item's ledger from the Redis at addr, under the default
// prefix.
func audit(t *testing.T, addr, item string) ledger.Audit {
	t.Helper()
	rc, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}, DisableCache: true})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	a, err := redisledger.New(rc, 0, redisledger.Options{}).Audit(context.Background(), item)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// orderJSON is an order as the API answers it.
type orderJSON struct {
	OrderID    string `json:"order_id"`
	ItemID     string `json:"item_id"`
	UserID     string `json:"user_id"`
	Quantity   int64  `json:"quantity"`
	PriceCents int64  `json:"price_cents"`
	Status     string `json:"status"`
	CreatedAt  string `json:"created_at"`
}
