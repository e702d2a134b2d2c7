package e2e

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestBehindNginx runs the binary behind a real Nginx configured as
// deploy/nginx.conf, and checks that request ids, status codes and client
// IPs come through: per-IP limits tell apart two clients on different
// loopback addresses, and a spoofed X-Forwarded-For does not help.
func TestBehindNginx(t *testing.T) {
	nginx, err := exec.LookPath("nginx")
	if err != nil {
		nginx = "/usr/sbin/nginx"
		if _, err := os.Stat(nginx); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatal("nginx is not installed; .ci/run installs it")
			}
			t.Skip("nginx is not installed (apt-get install nginx)")
		}
	}
	p := start(t, t.TempDir(), "-trusted-proxies", "127.0.0.1", "-rate-ip", "1")
	upstream := strings.TrimPrefix(p.Public, "http://")
	call(t, "PUT", p.Admin+"/api/v1/items/it", `{"name":"x","price_cents":1,"stock":1,"per_user_limit":1}`)

	dir := t.TempDir()
	port := freePort(t)
	conf, err := os.ReadFile(repoFile("deploy/nginx.conf"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := string(conf)
	cfg = strings.Replace(cfg, "server 127.0.0.1:8080 max_fails=0;", "server "+upstream+" max_fails=0;", 1)
	cfg = strings.Replace(cfg, "listen 80;", fmt.Sprintf("listen 127.0.0.1:%d;", port), 1)
	cfg = strings.Replace(cfg, "worker_processes auto;", "worker_processes 1;\npid "+dir+"/nginx.pid;\nerror_log stderr warn;", 1)
	cfg = strings.Replace(cfg, "access_log off;", "access_log off;\n    client_body_temp_path "+dir+"/body;\n    proxy_temp_path "+dir+"/proxy;\n"+
		"    fastcgi_temp_path "+dir+"/fcgi;\n    uwsgi_temp_path "+dir+"/uwsgi;\n    scgi_temp_path "+dir+"/scgi;", 1)
	cfg = strings.Replace(cfg, "worker_connections 16384;", "worker_connections 512;", 1)
	if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	ng := exec.Command(nginx, "-p", dir, "-c", filepath.Join(dir, "nginx.conf"), "-g", "daemon off;")
	var nglog bytes.Buffer
	ng.Stderr = &nglog
	ng.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // master and workers die together
	if err := ng.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(-ng.Process.Pid, syscall.SIGKILL)
		ng.Wait()
		if t.Failed() {
			t.Logf("nginx log:\n%s", nglog.String())
		}
	})
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	waitFor(t, base+"/healthz")

	a, b := clientFrom("127.0.0.2"), clientFrom("127.0.0.3")
	type answer struct {
		StatusCode int
		Header     http.Header
	}
	do := func(c *http.Client, method, path, body string, headers ...string) (answer, string) {
		t.Helper()
		code, h, out := callWith(t, c, method, base+path, body, headers...)
		return answer{code, h}, string(out)
	}

	// Request ids: the client's comes back; without one, Nginx makes one.
	resp, body := do(a, "POST", "/api/v1/items/it/purchase", `{"user_id":"u1"}`, "X-Request-Id: trace-42")
	if resp.StatusCode != 201 || resp.Header.Get("X-Request-Id") != "trace-42" {
		t.Fatalf("purchase through nginx: %d %q %s", resp.StatusCode, resp.Header.Get("X-Request-Id"), body)
	}
	resp, body = do(b, "POST", "/api/v1/items/it/purchase", `{"user_id":"u2"}`)
	if resp.StatusCode != 409 || !strings.Contains(body, `"sold_out"`) || !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(resp.Header.Get("X-Request-Id")) {
		t.Fatalf("sold out through nginx: %d %q %s", resp.StatusCode, resp.Header.Get("X-Request-Id"), body)
	}
	// Client 127.0.0.2 is over its limit of 1/s; a spoofed X-Forwarded-For
	// does not make it someone else, and 127.0.0.3 is not affected.
	time.Sleep(1100 * time.Millisecond)
	do(a, "GET", "/api/v1/items/it", "")
	resp, body = do(a, "GET", "/api/v1/items/it", "", "X-Forwarded-For: 198.51.100.1", "X-Real-IP: 198.51.100.2")
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" || !strings.Contains(body, `"rate_limited"`) {
		t.Fatalf("second request from 127.0.0.2 in a second: %d %s", resp.StatusCode, body)
	}
	time.Sleep(1100 * time.Millisecond)
	if resp, body := do(b, "GET", "/api/v1/items/it", ""); resp.StatusCode != 200 {
		t.Fatalf("127.0.0.3 limited by 127.0.0.2's requests: %d %s", resp.StatusCode, body)
	}
	// Errors come through as flashsale wrote them.
	time.Sleep(1100 * time.Millisecond)
	if resp, body := do(b, "GET", "/api/v1/items/nope", ""); resp.StatusCode != 404 || !strings.Contains(body, `"item_not_found"`) {
		t.Fatalf("404 through nginx: %d %s", resp.StatusCode, body)
	}
	time.Sleep(1100 * time.Millisecond)
	big := `{"user_id":"u3","pad":"` + strings.Repeat("x", 5000) + `"}`
	if resp, body := do(a, "POST", "/api/v1/items/it/purchase", big); resp.StatusCode != 413 || !strings.Contains(body, `"body_too_large"`) {
		t.Fatalf("413 through nginx: %d %s", resp.StatusCode, body)
	}
}
