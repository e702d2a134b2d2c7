package scenario

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

// sale fabricates a clean flash sale: users 0..winners-1 win order 1000+u,
// the rest get sold_out; user 0 retries and is replayed.
func sale(users, stock int) ([]spec, []Result, ServerState) {
	var specs []spec
	var results []Result
	srv := ServerState{StockTotal: int64(stock), Orders: map[uint64]StoredOrder{}}
	for u := 0; u < users; u++ {
		specs = append(specs, spec{user: int32(u), kind: Buy})
		if u < stock {
			id := uint64(1000 + u)
			results = append(results, Result{Status: 201, OrderID: id, BodyHash: uint64(u)})
			srv.Orders[id] = StoredOrder{UserID: uid(int32(u)), ItemID: "it"}
		} else {
			results = append(results, Result{Status: 409})
		}
	}
	specs = append(specs, spec{user: 0, kind: Retry})
	results = append(results, Result{Status: 201, OrderID: 1000, BodyHash: 0, Replayed: true})
	srv.StockLeft = int64(stock - min(users, stock))
	return specs, results, srv
}

func uid(u int32) string { return "p-" + strconv.Itoa(int(u)) }

func failed(v Verdict) []string {
	var names []string
	for _, c := range v.Checks {
		if !c.Pass {
			names = append(names, c.Name)
		}
	}
	return names
}

func TestVerdict(t *testing.T) {
	f := func(name string, mutate func([]spec, []Result, *ServerState) ([]spec, []Result), wantFailed string) {
		t.Helper()
		specs, results, srv := sale(50, 10)
		if mutate != nil {
			specs, results = mutate(specs, results, &srv)
		}
		v := judge(specs, results, uid, "it", 10, srv)
		got := strings.Join(failed(v), ",")
		if got != wantFailed || v.Pass != (wantFailed == "") {
			t.Fatalf("%s: failed checks %q, want %q\n%s", name, got, wantFailed, v)
		}
	}
	f("clean sale", nil, "")
	f("oversold", func(s []spec, r []Result, srv *ServerState) ([]spec, []Result) {
		r[20] = Result{Status: 201, OrderID: 2020}
		srv.Orders[2020] = StoredOrder{UserID: uid(20), ItemID: "it"}
		srv.StockLeft = -1
		return s, r
	}, "no oversell,exactly the stock sold,stock_left 0")
	f("a user with two orders", func(s []spec, r []Result, srv *ServerState) ([]spec, []Result) {
		s = append(s, spec{user: 3, kind: Double})
		r = append(r, Result{Status: 201, OrderID: 3003})
		srv.Orders[3003] = StoredOrder{UserID: uid(3), ItemID: "it"}
		return s, r
	}, "no oversell,exactly the stock sold,nobody over the limit")
	f("an order lost", func(s []spec, r []Result, srv *ServerState) ([]spec, []Result) {
		delete(srv.Orders, 1004)
		return s, r
	}, "every 201 order stored")
	f("an order stored for someone else", func(s []spec, r []Result, srv *ServerState) ([]spec, []Result) {
		srv.Orders[1004] = StoredOrder{UserID: uid(5), ItemID: "it"}
		return s, r
	}, "every 201 order stored")
	f("a replay with another body", func(s []spec, r []Result, srv *ServerState) ([]spec, []Result) {
		r[len(r)-1].BodyHash = 99
		return s, r
	}, "replays answered identically")
	f("a replay that bought again", func(s []spec, r []Result, srv *ServerState) ([]spec, []Result) {
		r[len(r)-1] = Result{Status: 201, OrderID: 5000}
		srv.Orders[5000] = StoredOrder{UserID: uid(0), ItemID: "it"}
		return s, r
	}, "no oversell,exactly the stock sold,nobody over the limit,replays answered identically")
	f("stock left over", func(s []spec, r []Result, srv *ServerState) ([]spec, []Result) {
		srv.StockLeft = 1
		return s, r
	}, "exactly the stock sold,stock_left 0")
	f("a replay refused by a rate limit", func(s []spec, r []Result, srv *ServerState) ([]spec, []Result) {
		r[len(r)-1] = Result{Status: 429}
		return s, r
	}, "")
	f("answers lost in transit", func(s []spec, r []Result, srv *ServerState) ([]spec, []Result) {
		r[15] = Result{} // a loser's answer never came: still consistent
		return s, r
	}, "")
}

func TestFlashRequests(t *testing.T) {
	fl := NewFlash(FlashOptions{Item: "it", Prefix: "run1", Users: 1000, RetryPct: 10, DoublePct: 10, ReadPct: 50, Seed: 7})
	var kinds [4]int
	for _, s := range fl.specs {
		kinds[s.kind]++
	}
	if kinds[Buy] != 1000 || kinds[Double] < 50 || kinds[Retry] < 50 || kinds[Read] < 700 {
		t.Fatalf("kinds %v", kinds)
	}
	var req fasthttp.Request
	for n, s := range fl.specs {
		req.Reset()
		fl.Fill(n, &req)
		if s.kind == Read {
			if string(req.Header.Method()) != "GET" || string(req.RequestURI()) != "/api/v1/items/it" {
				t.Fatalf("read: %s %s", req.Header.Method(), req.RequestURI())
			}
			continue
		}
		var body struct {
			UserID    string `json:"user_id"`
			RequestID string `json:"request_id"`
		}
		if err := json.Unmarshal(req.Body(), &body); err != nil {
			t.Fatalf("body %s: %v", req.Body(), err)
		}
		want := "r1"
		if s.kind == Double {
			want = "r2"
		}
		if body.UserID != fl.UserID(s.user) || body.RequestID != want || string(req.RequestURI()) != "/api/v1/items/it/purchase" {
			t.Fatalf("purchase %+v: %s", s, req.Body())
		}
	}
	var resp fasthttp.Response
	resp.SetStatusCode(201)
	resp.Header.Set("Idempotent-Replayed", "true")
	resp.SetBodyString(`{"order_id":"382442883795386368","item_id":"it"}`)
	fl.Done(0, &resp, nil)
	if r := fl.Results()[0]; r.OrderID != 382442883795386368 || !r.Replayed || r.Status != 201 {
		t.Fatalf("result %+v", r)
	}
}
