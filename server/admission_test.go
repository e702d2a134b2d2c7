package server

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/flashsale/flashsale/circuit"
	"github.com/flashsale/flashsale/engine"
	"github.com/flashsale/flashsale/server/admission"
)

func TestRateLimitedAnswers(t *testing.T) {
	ts := newTestServer(t, Options{Limits: admission.Options{IP: 0.5, Warmup: time.Nanosecond}})
	ts.putItem("it", phone)
	c := ts.clientFrom("192.0.2.10:5000")
	// Burst 1 at 0.5/s: one purchase passes, the next waits 2 s.
	if r := ts.do(c, "POST", "/api/v1/items/it/purchase", `{"user_id":"u1"}`); r.status != 201 {
		t.Fatalf("first: %d %s", r.status, r.body)
	}
	r := ts.do(c, "POST", "/api/v1/items/it/purchase", `{"user_id":"u2"}`)
	errCode(t, r, 429, "rate_limited")
	if r.header["Retry-After"] != "2" || !strings.Contains(r.body, "this client") {
		t.Fatalf("Retry-After %q, body %s", r.header["Retry-After"], r.body)
	}
	// Another client is not affected; health checks are never limited.
	if r := ts.do(ts.clientFrom("192.0.2.11:5000"), "GET", "/api/v1/items/it", ""); r.status != 200 {
		t.Fatalf("other client: %d", r.status)
	}
	for i := 0; i < 3; i++ {
		if r := ts.do(c, "GET", "/healthz", ""); r.status != 200 {
			t.Fatalf("healthz limited: %d", r.status)
		}
	}
	// The refused purchase took nothing.
	if v, _ := ts.eng.Item("it"); v.Sold != 1 {
		t.Fatalf("sold %d", v.Sold)
	}
}

func TestItemLimitAndWarmupAfterRestock(t *testing.T) {
	ts := newTestServer(t, Options{Limits: admission.Options{Item: 10, Warmup: time.Hour}})
	ts.putItem("it", `{"name":"x","price_cents":1,"stock":1000,"per_user_limit":1}`)
	ok, limited := 0, 0
	for i := 0; i < 20; i++ {
		switch r := ts.buy("it", fmt.Sprintf(`{"user_id":"u%d"}`, i)); r.status {
		case 201:
			ok++
		case 429:
			limited++
			if !strings.Contains(r.body, "item") {
				t.Fatalf("429 body %s", r.body)
			}
		default:
			t.Fatalf("%d %s", r.status, r.body)
		}
	}
	// Cold: a third of 10/s, bucket of 1: one purchase in this instant.
	if ok < 1 || ok > 2 || limited < 18 {
		t.Fatalf("cold item limit admitted %d, refused %d", ok, limited)
	}
	// Unknown items are not given a bucket (their ids come from clients).
	for i := 0; i < 50; i++ {
		ts.buy(fmt.Sprintf("ghost-%d", i), `{"user_id":"u"}`)
	}
	if n := ts.srv.limits.TrackedItems(); n != 1 {
		t.Fatalf("%d item buckets after requests for unknown items", n)
	}
}

func TestClientIPBehindProxies(t *testing.T) {
	ts := newTestServer(t, Options{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
	f := func(peer string, headers []string, want string) {
		t.Helper()
		req := newCtx(peer, headers)
		if got := ts.srv.clientIP(req).String(); got != want {
			t.Fatalf("peer %s %v: client %s, want %s", peer, headers, got, want)
		}
	}
	// An untrusted peer's headers are ignored: spoofing gets nothing.
	f("203.0.113.5:1000", []string{"X-Forwarded-For: 1.2.3.4", "X-Real-IP: 5.6.7.8"}, "203.0.113.5")
	// A trusted proxy: X-Real-IP first, else the rightmost untrusted hop.
	f("10.0.0.2:1000", []string{"X-Real-IP: 198.51.100.7"}, "198.51.100.7")
	f("10.0.0.2:1000", []string{"X-Forwarded-For: 1.2.3.4, 198.51.100.7, 10.0.0.9"}, "198.51.100.7")
	f("10.0.0.2:1000", []string{"X-Forwarded-For: garbage, 10.0.0.9"}, "10.0.0.2")
	f("10.0.0.2:1000", nil, "10.0.0.2")
	f("10.0.0.2:1000", []string{"X-Forwarded-For: ::ffff:192.0.2.1"}, "192.0.2.1")
}

func TestSpoofedForwardedForDoesNotDodgeTheIPLimit(t *testing.T) {
	ts := newTestServer(t, Options{Limits: admission.Options{IP: 0.5}})
	ts.putItem("it", phone)
	c := ts.clientFrom("192.0.2.20:5000")
	codes := map[int]int{}
	for i := 0; i < 5; i++ {
		r := ts.do(c, "GET", "/api/v1/items/it", "", fmt.Sprintf("X-Forwarded-For: 198.51.100.%d", i))
		codes[r.status]++
	}
	if codes[429] != 4 {
		t.Fatalf("spoofing X-Forwarded-For from an untrusted peer: %v", codes)
	}
}

func TestShedding(t *testing.T) {
	ts := newTestServer(t, Options{MaxInflight: 1})
	ts.putItem("it", phone)
	ts.sink.mode.Store(sinkHold)
	held := make(chan response)
	go func() { held <- ts.buy("it", `{"user_id":"a"}`) }()
	<-ts.sink.entered // one purchase holds the only slot
	start := time.Now()
	r := ts.do(ts.pub, "GET", "/api/v1/items/it", "")
	errCode(t, r, 503, "unavailable")
	if time.Since(start) > time.Second || !strings.Contains(r.body, "-max-inflight") {
		t.Fatalf("shed answer: after %v: %s", time.Since(start), r.body)
	}
	if r := ts.do(ts.pub, "GET", "/readyz", ""); r.status != 200 {
		t.Fatalf("readyz shed: %d", r.status)
	}
	ts.sink.mode.Store(sinkPass)
	close(ts.sink.release)
	if r := <-held; r.status != 201 {
		t.Fatalf("held purchase: %d", r.status)
	}
	if r := ts.do(ts.pub, "GET", "/api/v1/items/it", ""); r.status != 200 {
		t.Fatalf("after the slot is free: %d", r.status)
	}
	m := ts.do(ts.adm, "GET", "/metrics", "").body
	for _, want := range []string{`flashsale_admission_decisions_total{decision="shed",limit="inflight"} 1`,
		`flashsale_admission_decisions_total{decision="admitted",limit=""}`, "flashsale_admission_inflight 0"} {
		if !strings.Contains(m, want) {
			t.Fatalf("metrics lack %q", want)
		}
	}
}

// A winner waiting for durability gives its in-flight slot back (the node
// wraps its sink in admission.Parking): with a bound of one, a purchase
// held in the store does not turn away the losers and readers behind it.
func TestWinnersWaitingForDurabilityDoNotHoldTheBound(t *testing.T) {
	ts := newTestServerSink(t, Options{MaxInflight: 1}, admission.Parking)
	ts.putItem("it", `{"name":"Phone","price_cents":100,"stock":1,"per_user_limit":1}`)
	ts.sink.mode.Store(sinkHold)
	held := make(chan response)
	go func() { held <- ts.buy("it", `{"user_id":"winner"}`) }()
	<-ts.sink.entered // the winner waits in the store, its slot given back
	if r := ts.do(ts.pub, "GET", "/api/v1/items/it", ""); r.status != 200 {
		t.Fatalf("a read behind a waiting winner: %d %s", r.status, r.body)
	}
	if r := ts.buy("it", `{"user_id":"loser"}`); r.status != 409 {
		t.Fatalf("a loser behind a waiting winner: %d %s", r.status, r.body)
	}
	ts.sink.mode.Store(sinkPass)
	close(ts.sink.release)
	if r := <-held; r.status != 201 {
		t.Fatalf("the waiting winner: %d %s", r.status, r.body)
	}
	m := ts.do(ts.adm, "GET", "/metrics", "").body
	if !strings.Contains(m, "flashsale_admission_inflight 0") || strings.Contains(m, `decision="shed",limit="inflight"} 1`) {
		t.Fatal("the slot must be free again, and nobody shed")
	}
}

// A request its proxy stamped longer ago than -max-queue-time is refused at
// once (503, Retry-After), before the rate limits and the engine; a fresh
// one is served; a stamp from an untrusted peer, or one no clock could
// mean, is ignored.
func TestStaleRequestsAreShed(t *testing.T) {
	ts := newTestServer(t, Options{MaxQueueTime: 20 * time.Millisecond, TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
	ts.putItem("it", phone)
	proxy, stranger := ts.clientFrom("10.0.0.2:1000"), ts.clientFrom("203.0.113.5:1000")
	ago := func(d time.Duration) string {
		return "X-Request-Start: t=" + strconv.FormatFloat(float64(time.Now().Add(-d).UnixMicro())/1e6, 'f', 3, 64)
	}
	r := ts.do(proxy, "POST", "/api/v1/items/it/purchase", `{"user_id":"late"}`, ago(200*time.Millisecond))
	errCode(t, r, 503, "unavailable")
	if r.header["Retry-After"] != "1" || !strings.Contains(r.body, "-max-queue-time") {
		t.Fatalf("stale answer: %v %s", r.header, r.body)
	}
	if r := ts.do(proxy, "POST", "/api/v1/items/it/purchase", `{"user_id":"fresh"}`, ago(0)); r.status != 201 {
		t.Fatalf("fresh purchase: %d %s", r.status, r.body)
	}
	for _, c := range []struct {
		client *fasthttp.HostClient
		header string
	}{{stranger, ago(200 * time.Millisecond)}, {proxy, ago(time.Hour)}, {proxy, "X-Request-Start: soon"}} {
		if r := ts.do(c.client, "GET", "/api/v1/items/it", "", c.header); r.status != 200 {
			t.Fatalf("%s: %d %s", c.header, r.status, r.body)
		}
	}
	if r := ts.do(proxy, "GET", "/readyz", "", ago(time.Second)); r.status != 200 {
		t.Fatalf("health endpoints are never refused: %d", r.status)
	}
	if v, _ := ts.eng.Item("it"); v.Sold != 1 {
		t.Fatalf("%d units sold; the stale request must take nothing", v.Sold)
	}
	m := ts.do(ts.adm, "GET", "/metrics", "").body
	if !strings.Contains(m, `flashsale_admission_decisions_total{decision="shed",limit="queue_time"} 1`) {
		t.Fatal("metrics lack the stale refusal")
	}
	// The believable stamps of the proxy's API requests: the stale one and
	// the fresh one (not the hour-old one, "soon", or the health check's).
	if !strings.Contains(m, "flashsale_request_queue_seconds_count 2") {
		t.Fatal("metrics lack the queue times observed")
	}
}

func TestConcurrentAdmissionKeepsTheBound(t *testing.T) {
	ts := newTestServer(t, Options{MaxInflight: 4})
	ts.putItem("it", phone)
	var wg sync.WaitGroup
	for i := 0; i < 64; i++ {
		wg.Go(func() { ts.do(ts.pub, "GET", "/api/v1/items/it", "") })
	}
	wg.Wait()
	if n := ts.srv.inflight.InUse(); n != 0 {
		t.Fatalf("%d slots leaked", n)
	}
}

func TestCircuitOpensAndLosersAreStillAnswered(t *testing.T) {
	var breaker *circuit.Sink
	ts := newTestServerSink(t, Options{}, func(s engine.OrderSink) engine.OrderSink {
		breaker = circuit.NewSink("order_store", s, circuit.Options{Failures: 2, CoolDown: 100 * time.Millisecond})
		return breaker
	})
	ts.putItem("it", `{"name":"x","price_cents":1,"stock":5,"per_user_limit":1}`)
	ts.putItem("gone", `{"name":"y","price_cents":1,"stock":0}`)
	ts.sink.mode.Store(sinkFail)
	for i := 0; i < 2; i++ {
		errCode(t, ts.buy("it", fmt.Sprintf(`{"user_id":"f%d"}`, i)), 503, "unavailable")
	}
	// Open: would-be winners get 503 at once; losers are answered from memory.
	start := time.Now()
	r := ts.buy("it", `{"user_id":"w"}`)
	errCode(t, r, 503, "unavailable")
	if !strings.Contains(r.body, "order store is unavailable") {
		t.Fatalf("the 503 does not name the dependency: %s", r.body)
	}
	errCode(t, ts.buy("gone", `{"user_id":"w"}`), 409, "sold_out")
	if took := time.Since(start); took > 50*time.Millisecond {
		t.Fatalf("answers while open took %v", took)
	}
	errCode(t, ts.do(ts.pub, "GET", "/readyz", ""), 503, "unavailable")
	// The store recovers; after the cool-down a probe closes the circuit.
	ts.sink.mode.Store(sinkPass)
	time.Sleep(120 * time.Millisecond)
	if r := ts.buy("it", `{"user_id":"w"}`); r.status != 201 {
		t.Fatalf("after recovery: %d %s", r.status, r.body)
	}
	if r := ts.do(ts.pub, "GET", "/readyz", ""); r.status != 200 {
		t.Fatalf("readyz after recovery: %d", r.status)
	}
	if v, _ := ts.eng.Item("it"); v.Sold != 1 || v.StockLeft != 4 {
		t.Fatalf("stock: %+v", v)
	}
}
