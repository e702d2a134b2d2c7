//go:build !race

package server

import (
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bytedance/sonic/encoder"
	"github.com/valyala/fasthttp"

	"github.com/flashsale/flashsale/engine"
	"github.com/flashsale/flashsale/server/admission"
)

// A sold-out answer, end to end through fasthttp's in-memory listener (client
// included), must not allocate: losers are the flood.
func TestSoldOutPurchaseDoesNotAllocate(t *testing.T) {
	ts := newTestServer(t, Options{})
	ts.putItem("phone-1", `{"name":"Phone","price_cents":100,"stock":0}`)
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	req.Header.SetMethod("POST")
	req.Header.SetContentType("application/json")
	req.Header.Set("X-Request-Id", "trace-1")
	req.SetRequestURI("http://test/api/v1/items/phone-1/purchase")
	req.SetBodyString(`{"user_id":"u-42","quantity":1,"request_id":"r-1"}`)
	do := func() {
		if err := ts.pub.Do(req, resp); err != nil || resp.StatusCode() != 409 {
			t.Fatalf("%v %d %s", err, resp.StatusCode(), resp.Body())
		}
	}
	do()
	if n := testing.AllocsPerRun(2000, do); n != 0 {
		t.Fatalf("sold-out purchase allocates %v times per request", n)
	}
	// And without a client X-Request-Id: the generated one is free too.
	req.Header.Del("X-Request-Id")
	do()
	if n := testing.AllocsPerRun(2000, do); n != 0 {
		t.Fatalf("sold-out purchase with a generated request id allocates %v times", n)
	}
}

// With every admission control on, the loser's answer is still free.
func TestSoldOutPurchaseWithAdmissionDoesNotAllocate(t *testing.T) {
	ts := newTestServer(t, Options{Limits: admission.Options{Global: 1e9, Item: 1e9, IP: 1e9, Warmup: time.Nanosecond},
		MaxInflight: 64, MaxQueueWait: time.Millisecond, MaxQueueTime: time.Minute,
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("192.0.2.1/32")}})
	ts.putItem("phone-1", `{"name":"Phone","price_cents":100,"stock":0}`)
	c := ts.clientFrom("192.0.2.1:1000") // a proxy, whose X-Request-Start is read
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	req.Header.SetMethod("POST")
	req.Header.SetContentType("application/json")
	req.SetRequestURI("http://test/api/v1/items/phone-1/purchase")
	req.SetBodyString(`{"user_id":"u-42","quantity":1,"request_id":"r-1"}`)
	req.Header.Set("X-Request-Start", "t="+strconv.FormatInt(time.Now().UnixMicro(), 10))
	do := func() {
		if err := c.Do(req, resp); err != nil || resp.StatusCode() != 409 {
			t.Fatalf("%v %d %s", err, resp.StatusCode(), resp.Body())
		}
	}
	do()
	if n := testing.AllocsPerRun(2000, do); n != 0 {
		t.Fatalf("sold-out purchase through admission control allocates %v times", n)
	}
}

// The winner's answer (its order, built by hand into a pooled buffer) does
// not allocate either.
func TestOrderAnswerDoesNotAllocate(t *testing.T) {
	var ctx fasthttp.RequestCtx
	o := &engine.Order{ID: 385862934175154176, ItemID: "phone-1", UserID: "u-42", Quantity: 1, PriceCents: 19900,
		CreatedAt: time.Date(2026, 11, 30, 18, 41, 32, 494e6, time.UTC)}
	do := func() {
		ctx.Response.Reset()
		writeOrder(&ctx, fasthttp.StatusCreated, o, engine.Accepted.String())
	}
	do()
	if n := testing.AllocsPerRun(2000, do); n != 0 {
		t.Fatalf("writing an order allocates %v times", n)
	}
	if got := string(ctx.Response.Body()); got != `{"order_id":"385862934175154176","item_id":"phone-1","user_id":"u-42","quantity":1,"price_cents":19900,"status":"accepted","created_at":"2026-11-30T18:41:32.494Z"}` {
		t.Fatalf("body %s", got)
	}
}

// sonic compiles a type's codec the first time it meets one, allocating
// thousands of times as it does (2,220 for the purchase body, 1,265 for an
// item, measured); New compiles the request path's types first, so that the
// first purchase body decoded and the first item encoded after it allocate a
// handful (the pooled decoder). The check runs in a process of its own (this
// test binary again), where nothing met those types before New.
func TestFirstCodecAllocations(t *testing.T) {
	if os.Getenv("FLASHSALE_FIRST_CODECS") == "" {
		cmd := exec.Command(os.Args[0], "-test.run=^TestFirstCodecAllocations$", "-test.count=1", "-test.v")
		cmd.Env = append(os.Environ(), "FLASHSALE_FIRST_CODECS=1")
		if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "--- PASS: TestFirstCodecAllocations") {
			t.Fatalf("%v\n%s", err, out)
		}
		return
	}
	newTestServer(t, Options{})
	body := []byte(`{"user_id":"u-1","request_id":"r-1","quantity":1}`)
	var b purchaseBody
	ij := itemJSON{ID: "phone-1", Name: "Phone", State: "on_sale"}
	buf := make([]byte, 0, 4096)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	errDecode := decodeJSON(body, &b)
	errEncode := encoder.EncodeInto(&buf, &ij, 0)
	runtime.ReadMemStats(&after)
	if errDecode != nil || errEncode != nil || b.UserID != "u-1" || !strings.Contains(string(buf), `"id":"phone-1"`) {
		t.Fatalf("decode %v %+v, encode %v %s", errDecode, b, errEncode, buf)
	}
	if n := after.Mallocs - before.Mallocs; n > 20 {
		t.Fatalf("the first purchase body and item after New allocate %d times: their codecs were compiled then, not in New", n)
	}
}
