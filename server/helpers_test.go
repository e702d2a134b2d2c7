package server

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"

	"github.com/flashsale/flashsale/codes"
	"github.com/flashsale/flashsale/engine"
	"github.com/flashsale/flashsale/internal/tracing"
	"github.com/flashsale/flashsale/persist/localstore"
)

// controlSink wraps the real store and can be told to fail or to hold orders.
type controlSink struct {
	*localstore.Store
	mode    atomic.Int32 // 0 pass, 1 fail, 2 hold until release
	entered chan struct{}
	release chan struct{}
}

const (
	sinkPass = iota
	sinkFail
	sinkHold
)

var errSinkDown = errors.New("sink down (test)")

func (c *controlSink) Append(ctx context.Context, o *engine.Order) error {
	switch c.mode.Load() {
	case sinkFail:
		return errSinkDown
	case sinkHold:
		c.entered <- struct{}{}
		<-c.release
	}
	return c.Store.Append(ctx, o)
}

// testSecret signs the test server's redemption codes.
var testSecret = []byte("a secret of the tests, 32 bytes!")

type testServer struct {
	t        testing.TB
	srv      *Server
	eng      *engine.Engine
	sink     *controlSink
	pub, adm *fasthttp.HostClient
	pubL     *fasthttputil.InmemoryListener
}

func newTestServer(t testing.TB, opts Options) *testServer {
	t.Helper()
	return newTestServerSink(t, opts, nil)
}

// newTestServerSink is newTestServer with the sink wrapped, e.g. in a
// circuit breaker.
func newTestServerSink(t testing.TB, opts Options, wrap func(engine.OrderSink) engine.OrderSink) *testServer {
	t.Helper()
	return newTracedTestServer(t, opts, wrap, nil)
}

// newTracedTestServer is newTestServerSink with a tracer (nil: off).
func newTracedTestServer(t testing.TB, opts Options, wrap func(engine.OrderSink) engine.OrderSink, tr *tracing.Tracing) *testServer {
	t.Helper()
	store, err := localstore.Open(localstore.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	sink := &controlSink{Store: store, entered: make(chan struct{}), release: make(chan struct{})}
	var engSink engine.OrderSink = sink
	if wrap != nil {
		engSink = wrap(sink)
	}
	eng, err := engine.New(engine.Options{Sink: engSink, Catalog: store})
	if err != nil {
		t.Fatal(err)
	}
	checks := []Check{{Name: "order store", Check: store.Check}}
	if c, ok := engSink.(interface{ Check(context.Context) error }); ok && wrap != nil {
		checks = append(checks, Check{Name: "order store circuit", Check: c.Check})
	}
	// Redemption codes, signed with key 1 (testSecret); the clock is the
	// real one.
	keys, err := codes.NewKeyring(map[uint8][]byte{1: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	desk := codes.NewDesk(keys, store, nil, nil, nil)
	srv, err := New(opts, eng, store, Extras{Codes: desk, Tracing: tr}, checks, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	pubL, admL := fasthttputil.NewInmemoryListener(), fasthttputil.NewInmemoryListener()
	go srv.Serve(pubL, admL)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		eng.Close()
		store.Close()
	})
	client := func(l *fasthttputil.InmemoryListener) *fasthttp.HostClient {
		return &fasthttp.HostClient{Addr: "test", Dial: func(string) (net.Conn, error) { return l.Dial() }, MaxConns: 64}
	}
	return &testServer{t: t, srv: srv, eng: eng, sink: sink, pub: client(pubL), adm: client(admL), pubL: pubL}
}

type response struct {
	status int
	body   string
	header map[string]string
}

// do sends a request; headers are "Name: value" strings. A body is sent as
// JSON unless a Content-Type header says otherwise.
func (ts *testServer) do(c *fasthttp.HostClient, method, path, body string, headers ...string) response {
	ts.t.Helper()
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.Header.SetMethod(method)
	req.SetRequestURI("http://test" + path)
	if body != "" {
		req.Header.SetContentType("application/json")
		req.SetBodyString(body)
	}
	for _, h := range headers {
		k, v, _ := strings.Cut(h, ": ")
		req.Header.Set(k, v)
	}
	if err := c.Do(req, resp); err != nil {
		ts.t.Fatalf("%s %s: %v", method, path, err)
	}
	r := response{status: resp.StatusCode(), body: string(resp.Body()), header: map[string]string{}}
	for k, v := range resp.Header.All() {
		r.header[string(k)] = string(v)
	}
	return r
}

func (ts *testServer) putItem(id, body string) response {
	ts.t.Helper()
	return ts.do(ts.adm, "PUT", "/api/v1/items/"+id, body)
}

func (ts *testServer) buy(item, body string, headers ...string) response {
	ts.t.Helper()
	return ts.do(ts.pub, "POST", "/api/v1/items/"+item+"/purchase", body, headers...)
}

// raw sends a raw request on a new public connection and reads the answer.
// The request is written in the background, so that a server that answers
// early and closes (413) is read, not reported as a failed write.
func (ts *testServer) raw(request string) response {
	ts.t.Helper()
	conn, err := ts.pubL.Dial()
	if err != nil {
		ts.t.Fatal(err)
	}
	defer conn.Close()
	go conn.Write([]byte(request))
	var resp fasthttp.Response
	if err := resp.Read(bufio.NewReader(conn)); err != nil {
		ts.t.Fatalf("reading the answer: %v", err)
	}
	r := response{status: resp.StatusCode(), body: string(resp.Body()), header: map[string]string{}}
	for k, v := range resp.Header.All() {
		r.header[string(k)] = string(v)
	}
	return r
}

// clientFrom returns a public client whose connections come from addr, as
// a distinct peer would.
func (ts *testServer) clientFrom(addr string) *fasthttp.HostClient {
	local := net.TCPAddrFromAddrPort(netip.MustParseAddrPort(addr))
	return &fasthttp.HostClient{Addr: "test", MaxConns: 16, Dial: func(string) (net.Conn, error) {
		return ts.pubL.DialWithLocalAddr(local)
	}}
}

// newCtx is a request as it arrives from peer with headers.
func newCtx(peer string, headers []string) *fasthttp.RequestCtx {
	var ctx fasthttp.RequestCtx
	var req fasthttp.Request
	for _, h := range headers {
		k, v, _ := strings.Cut(h, ": ")
		req.Header.Set(k, v)
	}
	ctx.Init(&req, net.TCPAddrFromAddrPort(netip.MustParseAddrPort(peer)), nil)
	return &ctx
}
