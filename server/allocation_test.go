//go:build !race

package server

import (
	"net/netip"
	"strconv"
	"testing"
	"time"

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
