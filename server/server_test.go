package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"
)

// errCode checks an error answer: status, code, and the shape of docs/api.md.
func errCode(t *testing.T, r response, status int, code string) {
	t.Helper()
	var e struct {
		Error struct{ Code, Message string }
	}
	if err := json.Unmarshal([]byte(r.body), &e); err != nil {
		t.Fatalf("status %d, body %q is not JSON: %v", r.status, r.body, err)
	}
	if r.status != status || e.Error.Code != code || e.Error.Message == "" {
		t.Fatalf("got %d %s (%q), want %d %s", r.status, e.Error.Code, e.Error.Message, status, code)
	}
	if r.header["Content-Type"] != "application/json" || r.header["X-Request-Id"] == "" {
		t.Fatalf("headers %v", r.header)
	}
	if status == 429 || status == 503 {
		if r.header["Retry-After"] == "" {
			t.Fatalf("%d without Retry-After", status)
		}
	}
}

const phone = `{"name":"Phone","price_cents":19900,"stock":3,"per_user_limit":2}`

func TestPurchaseContract(t *testing.T) {
	ts := newTestServer(t, Options{})
	if r := ts.putItem("phone-1", phone); r.status != 201 || r.header["Location"] != "/api/v1/items/phone-1" {
		t.Fatalf("create: %d %s %v", r.status, r.body, r.header)
	}

	first := ts.buy("phone-1", `{"user_id":"u-42","quantity":1,"request_id":"r-1"}`)
	if first.status != 201 || !strings.HasPrefix(first.header["Location"], "/api/v1/orders/") {
		t.Fatalf("purchase: %d %s", first.status, first.body)
	}
	var o map[string]any
	json.Unmarshal([]byte(first.body), &o)
	for k, want := range map[string]any{"item_id": "phone-1", "user_id": "u-42", "quantity": 1.0, "price_cents": 19900.0, "status": "accepted"} {
		if o[k] != want {
			t.Fatalf("order field %s = %v, want %v (%s)", k, o[k], want, first.body)
		}
	}
	if _, err := time.Parse(time.RFC3339, o["created_at"].(string)); err != nil || first.header["Location"] != "/api/v1/orders/"+o["order_id"].(string) {
		t.Fatalf("created_at %v / location %s", o["created_at"], first.header["Location"])
	}

	// Replays: the same bytes, by body or by Idempotency-Key, no stock taken.
	for _, r := range []response{
		ts.buy("phone-1", `{"user_id":"u-42","request_id":"r-1"}`),
		ts.buy("phone-1", `{"user_id":"u-42"}`, "Idempotency-Key: r-1"),
	} {
		if r.status != 201 || r.body != first.body || r.header["Idempotent-Replayed"] != "true" {
			t.Fatalf("replay: %d %s %v", r.status, r.body, r.header)
		}
	}
	errCode(t, ts.buy("phone-1", `{"user_id":"u-42","quantity":2,"request_id":"r-1"}`), 422, "idempotency_key_reused")
	errCode(t, ts.buy("phone-1", `{"user_id":"u-42","request_id":"a"}`, "Idempotency-Key: b"), 400, "invalid_request")
	// Idempotency-Key as a Structured Field string means the key inside the
	// quotes; the body may say the same key bare.
	for _, h := range []string{`Idempotency-Key: "r-1"`, `Idempotency-Key: r-1`} {
		if r := ts.buy("phone-1", `{"user_id":"u-42","request_id":"r-1"}`, h); r.status != 201 || r.body != first.body {
			t.Fatalf("replay with %s: %d %s", h, r.status, r.body)
		}
	}
	for _, h := range []string{`Idempotency-Key: "a"b"`, `Idempotency-Key: "a\x"`, `Idempotency-Key: "a b"`, `Idempotency-Key: ""`} {
		errCode(t, ts.buy("phone-1", `{"user_id":"u-43"}`, h), 400, "invalid_request")
	}
	// An empty request_id is not a request id: 400, and nothing taken.
	errCode(t, ts.buy("phone-1", `{"user_id":"u-44","request_id":""}`), 400, "invalid_request")
	if r := ts.do(ts.pub, "GET", "/api/v1/items/phone-1", ""); !strings.Contains(r.body, `"stock_left":2`) {
		t.Fatalf("a refused request took stock: %s", r.body)
	}

	// Malformed requests change nothing.
	for _, body := range []string{
		`{"user_id":1}`, `{"user_id":"u"} x`, `{"user_id":"u","quantity":1.5}`, `{"user_id":"u","quantity":"1"}`,
		`[]`, `null`, ``, `{`, `{"quantity":1}`, `{"user_id":"bad user"}`, `{"user_id":"u","quantity":0}`,
		`{"user_id":"u","quantity":3}`, `{"user_id":"u","request_id":"has space"}`, `{"user_id":"` + strings.Repeat("u", 129) + `"}`,
	} {
		errCode(t, ts.buy("phone-1", body), 400, "invalid_request")
	}
	errCode(t, ts.buy("bad!id", `{"user_id":"u"}`), 400, "invalid_request")
	errCode(t, ts.buy("phone-1", `{"user_id":"u"}`, "Content-Type: text/plain"), 415, "unsupported_media_type")
	if r := ts.buy("phone-1", `{"user_id":"u-7"}`, "Content-Type: application/json; charset=utf-8"); r.status != 201 {
		t.Fatalf("JSON with charset: %d %s", r.status, r.body)
	}
	big := `{"user_id":"u-8","pad":"` + strings.Repeat("x", 5000) + `"}`
	tooLarge := ts.raw(fmt.Sprintf("POST /api/v1/items/phone-1/purchase HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(big), big))
	errCode(t, tooLarge, 413, "body_too_large")
	if tooLarge.header["Connection"] != "close" {
		t.Fatalf("413 keeps the connection: %v", tooLarge.header)
	}

	errCode(t, ts.buy("nope", `{"user_id":"u"}`), 404, "item_not_found")
	ts.buy("phone-1", `{"user_id":"u-42"}`) // u-42 now holds 2, the limit; 0 units left
	if r := ts.do(ts.pub, "GET", "/api/v1/items/phone-1", ""); !strings.Contains(r.body, `"stock_left":0`) || !strings.Contains(r.body, `"state":"sold_out"`) {
		t.Fatalf("item after selling out: %s", r.body)
	}
	errCode(t, ts.buy("phone-1", `{"user_id":"u-9"}`), 409, "sold_out")
	ts.putItem("phone-1", `{"name":"Phone","price_cents":19900,"stock":4,"per_user_limit":2}`)
	errCode(t, ts.buy("phone-1", `{"user_id":"u-42"}`), 409, "limit_exceeded")
	errCode(t, ts.putItem("phone-1", `{"name":"Phone","price_cents":19900,"stock":2}`), 409, "stock_below_sold")

	// Sale window.
	future := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	past := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	ts.putItem("later", fmt.Sprintf(`{"name":"L","price_cents":1,"stock":1,"starts_at":%q}`, future))
	ts.putItem("over", fmt.Sprintf(`{"name":"O","price_cents":1,"stock":1,"ends_at":%q}`, past))
	errCode(t, ts.buy("later", `{"user_id":"u"}`), 409, "sale_not_started")
	errCode(t, ts.buy("over", `{"user_id":"u"}`), 409, "sale_ended")
	if r := ts.do(ts.pub, "GET", "/api/v1/items/later", ""); !strings.Contains(r.body, `"state":"upcoming"`) || !strings.Contains(r.body, `"starts_at":"`+future+`"`) {
		t.Fatalf("upcoming item: %s", r.body)
	}
}

func TestInProgressAndUnavailable(t *testing.T) {
	ts := newTestServer(t, Options{})
	ts.putItem("it", phone)

	ts.sink.mode.Store(sinkHold)
	done := make(chan response)
	go func() { done <- ts.buy("it", `{"user_id":"u","request_id":"r"}`) }()
	<-ts.sink.entered
	errCode(t, ts.buy("it", `{"user_id":"u","request_id":"r"}`), 409, "request_in_progress")
	ts.sink.mode.Store(sinkPass)
	close(ts.sink.release)
	if r := <-done; r.status != 201 {
		t.Fatalf("held purchase: %d %s", r.status, r.body)
	}

	ts.sink.mode.Store(sinkFail)
	errCode(t, ts.buy("it", `{"user_id":"v"}`), 503, "unavailable")
	if r := ts.do(ts.pub, "GET", "/api/v1/items/it", ""); !strings.Contains(r.body, `"stock_left":2`) {
		t.Fatalf("failed purchase took stock: %s", r.body)
	}
}

func TestReadEndpoints(t *testing.T) {
	ts := newTestServer(t, Options{})
	ts.putItem("b-item", phone)
	ts.putItem("a-item", phone)
	r := ts.buy("a-item", `{"user_id":"u-1"}`)
	var o struct {
		OrderID string `json:"order_id"`
	}
	json.Unmarshal([]byte(r.body), &o)

	got := ts.do(ts.pub, "GET", "/api/v1/orders/"+o.OrderID, "")
	if got.status != 200 || !strings.Contains(got.body, `"status":"persisted"`) || !strings.Contains(got.body, o.OrderID) {
		t.Fatalf("order: %d %s", got.status, got.body)
	}
	errCode(t, ts.do(ts.pub, "GET", "/api/v1/orders/12345", ""), 404, "order_not_found")
	errCode(t, ts.do(ts.pub, "GET", "/api/v1/orders/abc", ""), 400, "invalid_request")
	// Well-formed numbers that no order id can be: not found, not malformed.
	errCode(t, ts.do(ts.pub, "GET", "/api/v1/orders/9796028930080464509", ""), 404, "order_not_found")
	errCode(t, ts.do(ts.pub, "GET", "/api/v1/orders/99999999999999999999999", ""), 404, "order_not_found")
	errCode(t, ts.do(ts.pub, "GET", "/api/v1/orders/-1", ""), 400, "invalid_request")
	ts.buy("b-item", `{"user_id":"u-1"}`)
	list := ts.do(ts.pub, "GET", "/api/v1/users/u-1/orders", "")
	if list.status != 200 || strings.Index(list.body, "b-item") > strings.Index(list.body, "a-item") {
		t.Fatalf("user orders not newest first: %s", list.body)
	}
	if r := ts.do(ts.pub, "GET", "/api/v1/users/nobody/orders", ""); r.body != `{"orders":[]}` {
		t.Fatalf("no orders: %s", r.body)
	}
	items := ts.do(ts.pub, "GET", "/api/v1/items", "")
	if items.status != 200 || strings.Index(items.body, "a-item") > strings.Index(items.body, "b-item") {
		t.Fatalf("items: %s", items.body)
	}
	errCode(t, ts.do(ts.pub, "GET", "/api/v1/items/nope", ""), 404, "item_not_found")
	errCode(t, ts.do(ts.pub, "GET", "/nope", ""), 404, "not_found")
	errCode(t, ts.do(ts.pub, "DELETE", "/api/v1/items/a-item", ""), 405, "method_not_allowed")
	errCode(t, ts.do(ts.pub, "GET", "/api/v1/items/a-item/purchase", ""), 405, "method_not_allowed")
	// Admin routes are not on the public listener.
	errCode(t, ts.do(ts.pub, "GET", "/metrics", ""), 404, "not_found")
	errCode(t, ts.do(ts.pub, "GET", "/debug/pprof/", ""), 404, "not_found")
}

func TestAdmin(t *testing.T) {
	ts := newTestServer(t, Options{})
	if r := ts.putItem("it", phone); r.status != 201 {
		t.Fatal(r.body)
	}
	if r := ts.putItem("it", `{"name":"Phone 2","price_cents":5,"stock":10}`); r.status != 200 || !strings.Contains(r.body, `"name":"Phone 2"`) || !strings.Contains(r.body, `"per_user_limit":1`) {
		t.Fatalf("update: %d %s", r.status, r.body)
	}
	for _, body := range []string{`{}`, `{"name":"x","price_cents":1}`, `{"name":"","price_cents":1,"stock":1}`,
		`{"name":"x","price_cents":-1,"stock":1}`, `{"name":"x","price_cents":1,"stock":-1}`, `{"name":"x","price_cents":1,"stock":1,"per_user_limit":0}`,
		`{"name":"x","price_cents":1,"stock":1,"starts_at":"tomorrow"}`, `{"name":"x","price_cents":"1","stock":1}`,
		`{"name":"x","price_cents":1,"stock":1,"starts_at":"2026-11-11T13:00:00Z","ends_at":"2026-11-11T12:00:00Z"}`, `{"name":"x"} {}`} {
		errCode(t, ts.putItem("it", body), 400, "invalid_request")
	}
	errCode(t, ts.putItem("bad.id", phone), 400, "invalid_request")
	if r := ts.do(ts.adm, "DELETE", "/api/v1/items/it", ""); r.status != 204 {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
	errCode(t, ts.do(ts.adm, "DELETE", "/api/v1/items/nope", ""), 404, "item_not_found")
	if r := ts.do(ts.pub, "GET", "/api/v1/items/it", ""); !strings.Contains(r.body, `"state":"ended"`) {
		t.Fatalf("ended item: %s", r.body)
	}
	errCode(t, ts.buy("it", `{"user_id":"u"}`), 409, "sale_ended")

	m := ts.do(ts.adm, "GET", "/metrics", "")
	for _, want := range []string{`flashsale_http_requests_total{route="purchase",status="409"} 1`, `flashsale_purchase_outcomes_total{outcome="sale_ended"} 1`,
		`flashsale_item_stock_left{item="it"} 10`, `flashsale_item_audit_difference{item="it"} 0`, "flashsale_http_request_duration_seconds_bucket"} {
		if !strings.Contains(m.body, want) {
			t.Fatalf("metrics lack %q", want)
		}
	}
	for _, p := range []string{"/debug/pprof/", "/debug/pprof/heap", "/debug/pprof/goroutine?debug=1"} {
		if r := ts.do(ts.adm, "GET", p, ""); r.status != 200 {
			t.Fatalf("pprof %s: %d", p, r.status)
		}
	}
}

func TestAdminToken(t *testing.T) {
	ts := newTestServer(t, Options{AdminToken: "s3cret"})
	r := ts.putItem("it", phone)
	errCode(t, r, 401, "unauthorized")
	if r.header["Www-Authenticate"] == "" {
		t.Fatalf("401 without WWW-Authenticate: %v", r.header)
	}
	errCode(t, ts.do(ts.adm, "GET", "/metrics", "", "Authorization: Bearer wrong"), 401, "unauthorized")
	if r := ts.do(ts.adm, "PUT", "/api/v1/items/it", phone, "Authorization: Bearer s3cret"); r.status != 201 {
		t.Fatalf("with token: %d %s", r.status, r.body)
	}
}

func TestRequestIDsAndHealth(t *testing.T) {
	ts := newTestServer(t, Options{})
	a, b := ts.do(ts.pub, "GET", "/healthz", ""), ts.do(ts.pub, "GET", "/healthz", "")
	if a.status != 200 || a.header["X-Request-Id"] == "" || a.header["X-Request-Id"] == b.header["X-Request-Id"] {
		t.Fatalf("generated request ids: %q %q", a.header["X-Request-Id"], b.header["X-Request-Id"])
	}
	if r := ts.do(ts.pub, "GET", "/nope", "", "X-Request-Id: trace-42"); r.header["X-Request-Id"] != "trace-42" {
		t.Fatalf("request id not echoed: %v", r.header)
	}
	if r := ts.do(ts.pub, "GET", "/healthz", "", "X-Request-Id: "+strings.Repeat("x", 200)); len(r.header["X-Request-Id"]) > 128 {
		t.Fatal("oversized request id echoed")
	}
	if r := ts.do(ts.pub, "GET", "/readyz", ""); r.status != 200 {
		t.Fatalf("readyz: %d %s", r.status, r.body)
	}
	if r := ts.do(ts.adm, "GET", "/readyz", ""); r.status != 200 {
		t.Fatalf("admin readyz: %d %s", r.status, r.body)
	}
	// Oversized headers: 431 with the error shape.
	r := ts.raw("GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: " + strings.Repeat("b", 9000) + "\r\n\r\n")
	if r.status != 431 || !strings.Contains(r.body, `"invalid_request"`) {
		t.Fatalf("big headers: %d %s", r.status, r.body)
	}
	ts.srv.draining.Store(true)
	errCode(t, ts.do(ts.pub, "GET", "/readyz", ""), 503, "unavailable")
	if r := ts.do(ts.pub, "GET", "/healthz", ""); r.status != 200 {
		t.Fatalf("healthz while draining: %d", r.status)
	}
}

// The admin listener alone (the writer role's): metrics, pprof, health,
// the token and the contract's errors, as on an edge node; no item routes.
func TestAdminAlone(t *testing.T) {
	reg := prometheus.NewRegistry()
	down := errors.New("mysql down")
	var fail atomic.Bool
	a, err := NewAdmin(Options{AdminToken: "s3cret"}, []Check{{Name: "mysql", Check: func(context.Context) error {
		if fail.Load() {
			return down
		}
		return nil
	}}}, reg)
	if err != nil {
		t.Fatal(err)
	}
	l := fasthttputil.NewInmemoryListener()
	go a.Serve(l)
	defer a.Shutdown(context.Background())
	ts := &testServer{t: t, adm: &fasthttp.HostClient{Addr: "test", Dial: func(string) (net.Conn, error) { return l.Dial() }}}
	auth := "Authorization: Bearer s3cret"
	errCode(t, ts.do(ts.adm, "GET", "/metrics", ""), 401, "unauthorized")
	if r := ts.do(ts.adm, "GET", "/metrics", "", auth); r.status != 200 || !strings.Contains(r.body, "flashsale_http_requests_total") {
		t.Fatalf("metrics: %d %s", r.status, r.body)
	}
	if r := ts.do(ts.adm, "GET", "/debug/pprof/", "", auth); r.status != 200 {
		t.Fatalf("pprof: %d", r.status)
	}
	if r := ts.do(ts.adm, "GET", "/readyz", "", auth); r.status != 200 {
		t.Fatalf("readyz: %d %s", r.status, r.body)
	}
	fail.Store(true)
	r := ts.do(ts.adm, "GET", "/readyz", "", auth)
	errCode(t, r, 503, "unavailable")
	if !strings.Contains(r.body, "mysql is unavailable") {
		t.Fatalf("readyz does not name the dependency: %s", r.body)
	}
	errCode(t, ts.do(ts.adm, "PUT", "/api/v1/items/it", phone, auth), 404, "not_found")
}
