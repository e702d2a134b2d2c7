//go:build !race

package server

import (
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

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
