package server

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

var purchaseSeeds = []string{
	`{"user_id":"u-42","quantity":1,"request_id":"7f9c0b6e-1"}`, `{"user_id":"u"}`, `{"user_id":"u","quantity":2}`,
	`{"user_id":"u","extra":{"a":[1,2,{"b":null}]}}`, `{"user_id":"\u0075"}`, `{"user_id":"u"} `, `{"user_id":"u"}x`,
	`{"quantity":-1}`, `{"quantity":1e3}`, `{"quantity":9223372036854775808}`, `[]`, `null`, `""`, `{`, ``, "\xff",
	`{"user_id":"a","user_id":"b"}`, `{"user_id":"u","request_id":""}`,
}

// FuzzDecodePurchase: the decoder never panics, never accepts what the JSON
// grammar rejects, and agrees with encoding/json on what it accepts.
func FuzzDecodePurchase(f *testing.F) {
	for _, s := range purchaseSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var got purchaseBody
		err := decodeJSON(body, &got)
		if err != nil {
			return
		}
		if !json.Valid(body) {
			t.Fatalf("accepted invalid JSON %q", body)
		}
		var want purchaseBody
		if json.Unmarshal(body, &want) == nil && strings.ToValidUTF8(want.UserID, "\uFFFD") == want.UserID && want != got {
			t.Fatalf("%q: sonic %+v, encoding/json %+v", body, got, want)
		}
	})
}

// FuzzPurchaseHandler drives the real handler with hostile bodies and
// headers: every answer is a status of the contract with a JSON body, and
// the item never sells more than its stock.
func FuzzPurchaseHandler(f *testing.F) {
	for _, s := range purchaseSeeds {
		f.Add([]byte(s), "", "application/json")
	}
	f.Add([]byte(`{"user_id":"u"}`), "k-1", "")
	f.Add([]byte(`{"user_id":"u","request_id":"a"}`), "b", "text/plain")
	ts := newTestServer(f, Options{})
	ts.putItem("it", `{"name":"x","price_cents":1,"stock":5,"per_user_limit":3}`)
	h := ts.srv.public.Handler
	allowed := map[int]bool{201: true, 400: true, 404: true, 409: true, 415: true, 422: true}
	f.Fuzz(func(t *testing.T, body []byte, idemKey, contentType string) {
		var ctx fasthttp.RequestCtx
		ctx.Request.Header.SetMethod("POST")
		ctx.Request.SetRequestURI("/api/v1/items/it/purchase")
		if contentType != "" {
			ctx.Request.Header.SetContentType(contentType)
		}
		if idemKey != "" {
			ctx.Request.Header.Set("Idempotency-Key", idemKey)
		}
		ctx.Request.SetBody(body)
		h(&ctx)
		status := ctx.Response.StatusCode()
		if !allowed[status] || !json.Valid(ctx.Response.Body()) || len(ctx.Response.Header.Peek("X-Request-Id")) == 0 {
			t.Fatalf("body %q: %d %s", body, status, ctx.Response.Body())
		}
		v, _ := ts.eng.Item("it")
		if v.Sold+v.StockLeft+v.Pending != v.Stock || v.StockLeft < 0 {
			t.Fatalf("out of balance: %+v", v)
		}
		if status == 201 && v.Sold == 0 {
			t.Fatal("201 with nothing sold")
		}
	})
}

func TestIdempotencyKey(t *testing.T) {
	f := func(header, want string, wantOK bool) {
		t.Helper()
		got, ok := idempotencyKey([]byte(header))
		if ok != wantOK || ok && got != want {
			t.Fatalf("%q: %q %v, want %q %v", header, got, ok, want, wantOK)
		}
	}
	f(`r-1`, "r-1", true)
	f(`"r-1"`, "r-1", true)
	f(`"a\"b"`, `a"b`, true)
	f(`"a\\b"`, `a\b`, true)
	f(`"`, `"`, true) // one quote is a bare key (the engine judges it)
	f(`""`, "", false)
	f(`"a"b"`, "", false)
	f(`"a\x"`, "", false)
	f(`"a\"`, "", false)
}

// FuzzIdempotencyKey: a quoted key reads back as the key it quotes.
func FuzzIdempotencyKey(f *testing.F) {
	for _, s := range []string{"r-1", `a"b`, `a\b`, `\"`, "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		if key == "" {
			return
		}
		quoted := `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(key) + `"`
		got, ok := idempotencyKey([]byte(quoted))
		if !ok || got != key {
			t.Fatalf("%q quoted as %q reads back as %q %v", key, quoted, got, ok)
		}
	})
}
