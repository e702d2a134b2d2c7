package server

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestIdentityFromGatewayHeader(t *testing.T) {
	ts := newTestServer(t, Options{Identity: Identity{Mode: IdentityHeader},
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
	ts.putItem("it", phone)
	gw := ts.clientFrom("10.0.0.2:4000")
	r := ts.do(gw, "POST", "/api/v1/items/it/purchase", `{"user_id":"mallory"}`, "X-User-Id: alice")
	if r.status != 201 || !strings.Contains(r.body, `"user_id":"alice"`) {
		t.Fatalf("through the gateway: %d %s", r.status, r.body)
	}
	// Not from a trusted proxy: the header is not believed.
	errCode(t, ts.do(ts.clientFrom("203.0.113.9:4000"), "POST", "/api/v1/items/it/purchase", `{}`, "X-User-Id: alice"), 401, "unauthorized")
	errCode(t, ts.do(gw, "POST", "/api/v1/items/it/purchase", `{"user_id":"alice"}`), 401, "unauthorized")
	// Shoppers read only their own orders.
	var o struct {
		OrderID string `json:"order_id"`
	}
	json.Unmarshal([]byte(r.body), &o)
	if r := ts.do(gw, "GET", "/api/v1/users/alice/orders", "", "X-User-Id: alice"); r.status != 200 || !strings.Contains(r.body, o.OrderID) {
		t.Fatalf("own orders: %d %s", r.status, r.body)
	}
	errCode(t, ts.do(gw, "GET", "/api/v1/users/alice/orders", "", "X-User-Id: bob"), 401, "unauthorized")
	errCode(t, ts.do(gw, "GET", "/api/v1/orders/"+o.OrderID, "", "X-User-Id: bob"), 404, "order_not_found")
	if r := ts.do(gw, "GET", "/api/v1/orders/"+o.OrderID, "", "X-User-Id: alice"); r.status != 200 {
		t.Fatalf("own order: %d", r.status)
	}
}

var secret = []byte("0123456789abcdef0123456789abcdef")

func token(t *testing.T, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestIdentityFromSignedToken(t *testing.T) {
	ts := newTestServer(t, Options{Identity: Identity{Mode: IdentityJWT, JWTSecret: secret}})
	ts.putItem("it", phone)
	exp := time.Now().Add(time.Hour).Unix()
	good := token(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "u-7", "exp": exp})
	r := ts.buy("it", `{"user_id":"mallory"}`, "Authorization: Bearer "+good)
	if r.status != 201 || !strings.Contains(r.body, `"user_id":"u-7"`) {
		t.Fatalf("valid token: %d %s", r.status, r.body)
	}
	f := func(name, auth string) {
		t.Helper()
		var r response
		if auth == "" {
			r = ts.buy("it", `{"user_id":"u-7"}`)
		} else {
			r = ts.buy("it", `{"user_id":"u-7"}`, "Authorization: "+auth)
		}
		errCode(t, r, 401, "unauthorized")
		if !strings.HasPrefix(r.header["Www-Authenticate"], "Bearer") {
			t.Fatalf("%s: WWW-Authenticate %q", name, r.header["Www-Authenticate"])
		}
	}
	f("missing", "")
	f("not bearer", "Basic dTpw")
	f("expired", "Bearer "+token(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "u-7", "exp": time.Now().Add(-time.Hour).Unix()}))
	f("no expiry", "Bearer "+token(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "u-7"}))
	f("other key", "Bearer "+token(t, jwt.SigningMethodHS256, []byte("another secret of thirty-two bytes!"), jwt.MapClaims{"sub": "u-7", "exp": exp}))
	f("alg none", "Bearer "+token(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, jwt.MapClaims{"sub": "u-7", "exp": exp}))
	f("bad subject", "Bearer "+token(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "u 7", "exp": exp}))
	f("garbage", "Bearer not.a.token")
}

func TestIdentityValidation(t *testing.T) {
	if err := (Identity{Mode: IdentityHeader}).Validate(0); err == nil {
		t.Fatal("header mode without trusted proxies accepted")
	}
	if err := (Identity{Mode: IdentityJWT, JWTSecret: []byte("short")}).Validate(0); err == nil {
		t.Fatal("short JWT secret accepted")
	}
	if _, err := ParseIdentityMode("cookie"); err == nil {
		t.Fatal("unknown mode accepted")
	}
}
