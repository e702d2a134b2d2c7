package e2e

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/rueidis"
)

// TestAlertFiresInPrometheus runs Debian's prometheus with the project's
// rules (their "for" cut to 0 s, scrapes every second) scraping a cluster
// edge node; Redis dies, /readyz fails, and FlashsaleNotReady fires, as
// Prometheus's own HTTP API says.
func TestAlertFiresInPrometheus(t *testing.T) {
	port := freePort(t)
	redis := ownRedis(t, port)
	common, _ := clusterArgs(t, fmt.Sprintf("127.0.0.1:%d", port))
	edge := start(t, t.TempDir(), append(common, "-node-id", "1")...)
	target := strings.TrimPrefix(edge.Admin, "http://")
	prom := startPrometheus(t, map[string]string{"flashsale-edge": target})
	prom.until("the edge to be scraped and ready", func() bool {
		return strings.Contains(string(prom.query(`flashsale_ready{job="flashsale-edge"} == 1`)), `"value"`)
	})
	redis.Process.Kill()
	redis.Wait()
	prom.until("FlashsaleNotReady to fire", func() bool { return prom.firing("FlashsaleNotReady", target) })
}

// TestRedisAlertFiresInPrometheus: Debian's redis_exporter in front of a
// Redis with a small maxmemory, scraped by prometheus with the project's
// rules; Redis is filled past 85% of it and FlashsaleRedisMemoryNearLimit
// fires: the rules' Redis metric names are the exporter's.
func TestRedisAlertFiresInPrometheus(t *testing.T) {
	exporter, err := exec.LookPath("prometheus-redis-exporter")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("prometheus-redis-exporter is not installed; .ci/run installs it")
		}
		t.Skip("prometheus-redis-exporter is not installed")
	}
	port := freePort(t)
	ownRedis(t, port, "--maxmemory", "8mb", "--maxmemory-policy", "noeviction")
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	run(t, exporter, "-redis.addr", fmt.Sprintf("redis://127.0.0.1:%d", port), "-web.listen-address", addr)
	waitTCP(t, addr)
	prom := startPrometheus(t, map[string]string{"redis": addr})
	prom.until("the main thread's CPU to be recorded", func() bool {
		return strings.Contains(string(prom.query(`flashsale:redis_main_thread_cpu:ratio_rate1m`)), `"value"`)
	})
	if prom.firing("FlashsaleRedisMemoryNearLimit", addr) {
		t.Fatal("FlashsaleRedisMemoryNearLimit fires on an empty Redis")
	}
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{fmt.Sprintf("127.0.0.1:%d", port)}, DisableCache: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := t.Context()
	value := strings.Repeat("x", 16<<10)
	for i := 0; ; i++ {
		info, err := c.Do(ctx, c.B().Info().Section("memory").Build()).ToString()
		if err != nil {
			t.Fatal(err)
		}
		used, _ := strconv.ParseFloat(regexp.MustCompile(`used_memory:(\d+)`).FindStringSubmatch(info)[1], 64)
		if used > 0.9*(8<<20) {
			break
		}
		if err := c.Do(ctx, c.B().Set().Key("fill:"+strconv.Itoa(i)).Value(value).Build()).Error(); err != nil {
			t.Fatalf("filling Redis to 90%%: %v", err)
		}
	}
	prom.until("FlashsaleRedisMemoryNearLimit to fire", func() bool { return prom.firing("FlashsaleRedisMemoryNearLimit", addr) })
}

// prometheus is Debian's prometheus on loopback with the project's rules,
// their "for" cut to 0 s, scraping and evaluating every second.
type prometheus struct {
	t   *testing.T
	web string
}

// startPrometheus starts prometheus scraping targets (job -> host:port).
// Without it the test is skipped, and fails under CI (.ci/run installs it).
func startPrometheus(t *testing.T, targets map[string]string) *prometheus {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("prometheus is not installed; .ci/run installs it")
		}
		t.Skip("prometheus is not installed")
	}
	dir := t.TempDir()
	rules, err := os.ReadFile(repoFile("deploy/prometheus/flashsale-rules.yml"))
	if err != nil {
		t.Fatal(err)
	}
	rules = regexp.MustCompile(`(?m)^(\s+for:) .*$`).ReplaceAll(rules, []byte("$1 0s"))
	if err := os.WriteFile(filepath.Join(dir, "flashsale-rules.yml"), rules, 0o644); err != nil {
		t.Fatal(err)
	}
	config := "global: {scrape_interval: 1s, evaluation_interval: 1s}\nrule_files: [flashsale-rules.yml]\nscrape_configs:\n"
	for job, target := range targets {
		config += fmt.Sprintf("  - job_name: %s\n    static_configs: [{targets: [%q]}]\n", job, target)
	}
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	web := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	run(t, bin, "--config.file="+filepath.Join(dir, "prometheus.yml"), "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+web, "--log.level=warn")
	waitTCP(t, web)
	return &prometheus{t: t, web: web}
}

// query answers an instant query, as Prometheus's API's JSON.
func (p *prometheus) query(q string) []byte {
	p.t.Helper()
	_, _, b := call(p.t, "GET", "http://"+p.web+"/api/v1/query?query="+url.QueryEscape(q), "")
	return b
}

// until waits up to 30 s for ok.
func (p *prometheus) until(what string, ok func() bool) {
	p.t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !ok(); time.Sleep(250 * time.Millisecond) {
		if time.Now().After(deadline) {
			p.t.Fatalf("Prometheus: waited 30 s for %s", what)
		}
	}
}

// firing reports whether alert fires for instance, by /api/v1/alerts.
func (p *prometheus) firing(alert, instance string) bool {
	_, _, b := call(p.t, "GET", "http://"+p.web+"/api/v1/alerts", "")
	var r struct {
		Data struct {
			Alerts []struct {
				Labels map[string]string `json:"labels"`
				State  string            `json:"state"`
			} `json:"alerts"`
		} `json:"data"`
	}
	json.Unmarshal(b, &r)
	for _, a := range r.Data.Alerts {
		if a.Labels["alertname"] == alert && a.State == "firing" && a.Labels["instance"] == instance {
			return true
		}
	}
	return false
}
