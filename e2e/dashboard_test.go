package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestDashboard: every query of deploy/grafana/flashsale.json parses (as a
// recording rule, by promtool), and every metric it names is exported by
// the binary in the mode its panel is for (a live scrape of a standalone
// node, of a cluster edge node, of a writer), or is one of the recording
// rules of deploy/prometheus.
func TestDashboard(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("promtool is not installed; .ci/run installs it")
		}
		t.Skip("promtool is not installed")
	}
	raw, err := os.ReadFile(repoFile("deploy/grafana/flashsale.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title       string `json:"title"`
			Description string `json:"description"`
			Targets     []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil || len(dash.Panels) == 0 {
		t.Fatalf("the dashboard: %v", err)
	}
	// Every query through Prometheus's own parser.
	var rules strings.Builder
	rules.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	for i, p := range dash.Panels {
		for j, q := range p.Targets {
			fmt.Fprintf(&rules, "      - record: dashboard:p%d_%d\n        expr: %q\n", i, j, q.Expr)
		}
	}
	file := filepath.Join(t.TempDir(), "dashboard-rules.yml")
	if err := os.WriteFile(file, []byte(rules.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool, "check", "rules", file).CombinedOutput(); err != nil {
		t.Fatalf("a dashboard query does not parse: %v\n%s", err, out)
	}

	// What the binary exports, by mode.
	standalone := start(t, t.TempDir())
	port := freePort(t)
	ownRedis(t, port)
	common, _ := clusterArgs(t, fmt.Sprintf("127.0.0.1:%d", port))
	writer := startWriter(t, common)
	edge := start(t, t.TempDir(), append(common, "-node-id", "1")...)
	for _, n := range []*proc{standalone, edge} {
		if code, _, b := call(t, "PUT", n.Admin+"/api/v1/items/it", `{"name":"x","price_cents":1,"stock":5}`); code != 201 {
			t.Fatalf("put: %d %s", code, b)
		}
	}
	exported := map[string]map[string]bool{}
	for mode, admin := range map[string]string{"standalone": standalone.Admin, "cluster": edge.Admin, "writer": writer.Admin} {
		_, _, b := call(t, "GET", admin+"/metrics", "")
		exported[mode] = map[string]bool{}
		for _, line := range strings.Split(string(b), "\n") {
			if name, ok := strings.CutPrefix(line, "# TYPE "); ok {
				exported[mode][strings.Fields(name)[0]] = true
			}
		}
	}
	recorded, err := os.ReadFile(repoFile("deploy/prometheus/flashsale-rules.yml"))
	if err != nil {
		t.Fatal(err)
	}
	metric := regexp.MustCompile(`\b(flashsale[_:][a-z0-9_:]+|go_[a-z0-9_]+|process_[a-z0-9_]+)`)
	suffix := regexp.MustCompile(`_(bucket|sum|count)$`)
	// A query is answered in a mode when every metric it names is exported
	// there; a panel must be answered by some query in each of its modes,
	// and each of its queries in one of them.
	answered := func(q, mode string) (bool, string) {
		for _, name := range metric.FindAllString(q, -1) {
			if strings.Contains(name, ":") {
				if !strings.Contains(string(recorded), "record: "+name+"\n") {
					return false, name + " is no recording rule of deploy/prometheus"
				}
				continue
			}
			if !exported[mode][suffix.ReplaceAllString(name, "")] && !exported[mode][name] {
				return false, name + " is not exported in " + mode + " mode"
			}
		}
		return true, ""
	}
	for _, p := range dash.Panels {
		mode, ok := strings.CutPrefix(p.Description, "mode: ")
		modes := map[string][]string{"both": {"standalone", "cluster"}, "standalone": {"standalone"}, "cluster": {"cluster"}, "writer": {"writer"}}[mode]
		if !ok || modes == nil {
			t.Fatalf("panel %q does not say its mode (description %q)", p.Title, p.Description)
		}
		for _, m := range modes {
			some := false
			for _, q := range p.Targets {
				ok, _ := answered(q.Expr, m)
				some = some || ok
			}
			if !some {
				t.Errorf("panel %q (%s) shows nothing in %s mode", p.Title, mode, m)
			}
		}
		for _, q := range p.Targets {
			var why []string
			ok := false
			for _, m := range modes {
				yes, w := answered(q.Expr, m)
				ok = ok || yes
				why = append(why, w)
			}
			if !ok {
				t.Errorf("panel %q: %s: %s", p.Title, q.Expr, strings.Join(why, "; "))
			}
		}
	}
}
