package server

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/flashsale/flashsale/server/admission"
)

// trickle writes first, then a byte every 50 ms, and returns the answer
// and how long the server took to give it and close the connection.
func trickle(t *testing.T, c net.Conn, first string) (string, time.Duration) {
	t.Helper()
	start := time.Now()
	c.Write([]byte(first))
	go func() {
		for i := 0; i < 100; i++ {
			time.Sleep(50 * time.Millisecond)
			if _, err := c.Write([]byte("X")); err != nil {
				return
			}
		}
	}()
	out, _ := io.ReadAll(c) // until the server closes
	return string(out), time.Since(start)
}

func TestSlowLoris(t *testing.T) {
	ts := newTestServer(t, Options{ReadTimeout: 300 * time.Millisecond})
	ts.putItem("it", phone)
	for _, first := range []string{
		"GET /api/v1/items/it HTTP/1.1\r\nHost: t\r\n",                                       // headers trickled
		"POST /api/v1/items/it/purchase HTTP/1.1\r\nHost: t\r\nContent-Length: 200\r\n\r\n{", // body trickled
	} {
		c, _ := ts.pubL.Dial()
		out, took := trickle(t, c, first)
		if !strings.HasPrefix(out, "HTTP/1.1 408") || !strings.Contains(out, `"invalid_request"`) {
			t.Fatalf("trickled request answered %q", out)
		}
		if took > 2*time.Second {
			t.Fatalf("slow client held the connection %v (read timeout 300 ms)", took)
		}
		c.Close()
	}
	if v, _ := ts.eng.Item("it"); v.Sold != 0 {
		t.Fatal("a trickled purchase bought something")
	}
}

func TestTooManyConnectionsFromOneIP(t *testing.T) {
	ts := newTestServer(t, Options{MaxConnsPerIP: 3})
	get := func(from string) (string, net.Conn) {
		c, err := ts.pubL.DialWithLocalAddr(net.TCPAddrFromAddrPort(netip.MustParseAddrPort(from)))
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"))
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		line, _ := bufio.NewReader(c).ReadString('\n')
		return line, c
	}
	var open []net.Conn
	for i := 0; i < 3; i++ {
		line, c := get(fmt.Sprintf("192.0.2.7:%d", 1000+i))
		if !strings.Contains(line, " 200 ") {
			t.Fatalf("connection %d: %q", i, line)
		}
		open = append(open, c)
	}
	// The fourth from the same IP is refused and closed; others still get in.
	c, err := ts.pubL.DialWithLocalAddr(net.TCPAddrFromAddrPort(netip.MustParseAddrPort("192.0.2.7:2000")))
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	var resp fasthttp.Response
	if err := resp.Read(bufio.NewReader(c)); err != nil || resp.StatusCode() != 429 || len(resp.Header.Peek("X-Request-Id")) == 0 ||
		!strings.Contains(string(resp.Body()), `"rate_limited"`) || !resp.ConnectionClose() {
		t.Fatalf("fourth connection from one IP: %v %d %s", err, resp.StatusCode(), resp.Body())
	}
	c.Close()
	if line, c := get("192.0.2.8:1000"); !strings.Contains(line, " 200 ") {
		t.Fatalf("another IP: %q", line)
	} else {
		c.Close()
	}
	// A closed connection frees its place.
	open[0].Close()
	time.Sleep(50 * time.Millisecond)
	if line, c := get("192.0.2.7:3000"); !strings.Contains(line, " 200 ") {
		t.Fatalf("after one closed: %q", line)
	} else {
		c.Close()
	}
	for _, c := range open[1:] {
		c.Close()
	}
}

func TestPipelinedFlood(t *testing.T) {
	ts := newTestServer(t, Options{Limits: admission.Options{IP: 10}})
	ts.putItem("it", `{"name":"x","price_cents":1,"stock":1000,"per_user_limit":1}`)
	c, err := ts.pubL.DialWithLocalAddr(net.TCPAddrFromAddrPort(netip.MustParseAddrPort("192.0.2.9:1000")))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const n = 300
	var b strings.Builder
	for i := 0; i < n; i++ {
		body := fmt.Sprintf(`{"user_id":"p%d"}`, i)
		fmt.Fprintf(&b, "POST /api/v1/items/it/purchase HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	}
	go c.Write([]byte(b.String())) // all at once, without waiting for answers
	r := bufio.NewReader(c)
	codes := map[int]int{}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for i := 0; i < n; i++ {
		var resp fasthttp.Response
		if err := resp.Read(r); err != nil {
			t.Fatalf("answer %d: %v", i, err)
		}
		codes[resp.StatusCode()]++
		if resp.StatusCode() == 429 && len(resp.Header.Peek("Retry-After")) == 0 {
			t.Fatal("429 without Retry-After")
		}
	}
	// Every request is answered, in order; the per-IP limit (10/s, burst
	// 1) lets about one in, and the flood costs the stock nothing more.
	if codes[201]+codes[429] != n || codes[201] < 1 || codes[201] > 5 {
		t.Fatalf("pipelined flood: %v", codes)
	}
	if v, _ := ts.eng.Item("it"); v.Sold != int64(codes[201]) {
		t.Fatalf("sold %d, answered 201 %d", v.Sold, codes[201])
	}
}
