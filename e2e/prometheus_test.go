package e2e

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestAlertFiresInPrometheus runs Debian's prometheus with the project's
// rules (their "for" cut to 0 s, scrapes every second) scraping a cluster
// edge node; Redis dies, /readyz fails, and FlashsaleNotReady fires, as
// Prometheus's own HTTP API says.
func TestAlertFiresInPrometheus(t *testing.T) {
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("prometheus is not installed; .ci/run installs it")
		}
		t.Skip("prometheus is not installed")
	}
	port := freePort(t)
	redis := ownRedis(t, port)
	common, _ := clusterArgs(t, fmt.Sprintf("127.0.0.1:%d", port))
	edge := start(t, t.TempDir(), append(common, "-node-id", "1")...)

	dir := t.TempDir()
	rules, err := os.ReadFile(repoFile("deploy/prometheus/flashsale-rules.yml"))
	if err != nil {
		t.Fatal(err)
	}
	rules = regexp.MustCompile(`(?m)^(\s+for:) .*$`).ReplaceAll(rules, []byte("$1 0s"))
	if err := os.WriteFile(filepath.Join(dir, "flashsale-rules.yml"), rules, 0o644); err != nil {
		t.Fatal(err)
	}
	target := strings.TrimPrefix(edge.Admin, "http://")
	config := fmt.Sprintf(`global: {scrape_interval: 1s, evaluation_interval: 1s}
rule_files: [flashsale-rules.yml]
scrape_configs:
  - job_name: flashsale-edge
    static_configs: [{targets: [%q]}]
`, target)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	web := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	run(t, bin, "--config.file="+filepath.Join(dir, "prometheus.yml"), "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+web, "--log.level=warn")
	waitTCP(t, web)
	query := func(q string) []byte {
		t.Helper()
		_, _, b := call(t, "GET", "http://"+web+"/api/v1/query?query="+url.QueryEscape(q), "")
		return b
	}
	until := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); !ok(); time.Sleep(250 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("Prometheus: waited 30 s for %s", what)
			}
		}
	}
	until("the edge to be scraped and ready", func() bool {
		return strings.Contains(string(query(`flashsale_ready{job="flashsale-edge"} == 1`)), `"value"`)
	})
	redis.Process.Kill()
	redis.Wait()
	until("FlashsaleNotReady to fire", func() bool {
		_, _, b := call(t, "GET", "http://"+web+"/api/v1/alerts", "")
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
			if a.Labels["alertname"] == "FlashsaleNotReady" && a.State == "firing" && a.Labels["instance"] == target {
				return true
			}
		}
		return false
	})
}
