package server

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/flashsale/flashsale/codes"
)

// The contract of redemption codes: batches (201, the same request 200
// with the same codes, another with the name 409 batch_exists, bad input
// 400), redemption (200, the same user again the same answer, another
// user 409 code_used, a code altered 400 invalid_code, expired 410
// code_expired), and a client that keeps guessing is 429 with Retry-After.
func TestCodesContract(t *testing.T) {
	ts := newTestServer(t, Options{InvalidCodesPerMinute: 1})
	batch := func(body string) response { return ts.do(ts.adm, "POST", "/api/v1/codes/batches", body) }
	redeem := func(body string, headers ...string) response {
		return ts.do(ts.pub, "POST", "/api/v1/codes/redeem", body, headers...)
	}
	exp := time.Now().Add(48 * time.Hour).UTC().Truncate(time.Minute).Format(time.RFC3339)
	first := batch(`{"batch":"b1","count":3,"value_cents":500,"expires_at":"` + exp + `"}`)
	var b struct {
		Batch     string   `json:"batch"`
		Number    int      `json:"number"`
		Key       int      `json:"key"`
		ExpiresAt string   `json:"expires_at"`
		Codes     []string `json:"codes"`
	}
	if err := json.Unmarshal([]byte(first.body), &b); first.status != 201 || err != nil || b.Batch != "b1" || b.Number != 1 || b.Key != 1 ||
		b.ExpiresAt != exp || len(b.Codes) != 3 {
		t.Fatalf("create a batch: %d %s", first.status, first.body)
	}
	if r := batch(`{"batch":"b1","count":3,"value_cents":500,"expires_at":"` + exp + `"}`); r.status != 200 || r.body != first.body {
		t.Fatalf("the same batch again: %d %s", r.status, r.body)
	}
	errCode(t, batch(`{"batch":"b1","count":4,"value_cents":500}`), 409, "batch_exists")
	for _, bad := range []string{`{"batch":"b 2","count":1,"value_cents":1}`, `{"batch":"b2","count":0,"value_cents":1}`,
		`{"batch":"b2","count":100001,"value_cents":1}`, `{"batch":"b2","value_cents":1}`, `{"batch":"b2","count":1,"value_cents":1,"expires_at":"yesterday"}`,
		`{"batch":"b2","count":1,"value_cents":1,"expires_at":"2020-01-01T00:00:00Z"}`, `[]`} {
		errCode(t, batch(bad), 400, "invalid_request")
	}

	won := redeem(fmt.Sprintf(`{"code":%q,"user_id":"u-1"}`, b.Codes[1]))
	want := fmt.Sprintf(`{"code":%q,"batch":"b1","serial":1,"value_cents":500,"user_id":"u-1"}`, b.Codes[1])
	if won.status != 200 || won.body != want {
		t.Fatalf("redeem: %d %s, want %s", won.status, won.body, want)
	}
	// Read loosely (lower case, no hyphens), the same code: the same answer.
	loose := strings.ToLower(strings.ReplaceAll(b.Codes[1], "-", ""))
	if r := redeem(fmt.Sprintf(`{"code":%q,"user_id":"u-1"}`, loose)); r.status != 200 || r.body != want || r.header["Idempotent-Replayed"] != "true" {
		t.Fatalf("the same user again: %d %s %v", r.status, r.body, r.header)
	}
	errCode(t, redeem(fmt.Sprintf(`{"code":%q,"user_id":"u-2"}`, b.Codes[1])), 409, "code_used")
	keys, _ := codes.NewKeyring(map[uint8][]byte{1: testSecret})
	expired, _ := keys.Make(nil, codes.Code{Key: 1, Batch: 1, Serial: 0, Expires: time.Now().Add(-time.Minute)})
	errCode(t, redeem(fmt.Sprintf(`{"code":%q,"user_id":"u-1"}`, expired)), 410, "code_expired")
	errCode(t, redeem(`{"code":"K3M7","user_id":"u-1"}`), 400, "invalid_code")
	errCode(t, redeem(`{"code":"`+b.Codes[0]+`"}`), 400, "invalid_request")
	errCode(t, redeem(`{"code":1,"user_id":"u-1"}`), 400, "invalid_request")

	// Guessing: the burst of ten invalid codes (one spent above), then 429
	// for this client, even for a good code, with Retry-After.
	for i := range 9 {
		errCode(t, redeem(fmt.Sprintf(`{"code":"%05d-00000-00000-00000-00000","user_id":"g"}`, i)), 400, "invalid_code")
	}
	r := redeem(fmt.Sprintf(`{"code":%q,"user_id":"u-3"}`, b.Codes[2]))
	errCode(t, r, 429, "rate_limited")
	if r.header["Retry-After"] == "" {
		t.Fatal("429 without Retry-After")
	}
}

// GET /api/v1/items/{id}/leaderboard: the fastest buyers, limit 1-100
// (default 10), 400 for another limit, 404 for an unknown item.
func TestLeaderboardContract(t *testing.T) {
	ts := newTestServer(t, Options{})
	if r := ts.putItem("phone-1", `{"name":"Phone","price_cents":19900,"stock":20,"per_user_limit":1}`); r.status != 201 {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	for u := range 12 {
		if r := ts.buy("phone-1", fmt.Sprintf(`{"user_id":"u-%d"}`, u)); r.status != 201 {
			t.Fatalf("buy: %d %s", r.status, r.body)
		}
	}
	get := func(q string) response { return ts.do(ts.pub, "GET", "/api/v1/items/phone-1/leaderboard"+q, "") }
	var lb struct {
		ItemID  string `json:"item_id"`
		Entries []struct {
			Rank         int    `json:"rank"`
			UserID       string `json:"user_id"`
			MsAfterStart int64  `json:"ms_after_start"`
		} `json:"entries"`
	}
	r := get("")
	if err := json.Unmarshal([]byte(r.body), &lb); r.status != 200 || err != nil || lb.ItemID != "phone-1" || len(lb.Entries) != 10 {
		t.Fatalf("leaderboard: %d %s", r.status, r.body)
	}
	for i, e := range lb.Entries {
		if e.Rank != i+1 || e.UserID != fmt.Sprint("u-", i) || e.MsAfterStart < 0 || i > 0 && e.MsAfterStart < lb.Entries[i-1].MsAfterStart {
			t.Fatalf("entry %d: %+v", i, e)
		}
	}
	if r := get("?limit=100"); r.status != 200 || strings.Count(r.body, `"rank"`) != 12 {
		t.Fatalf("limit 100: %d %s", r.status, r.body)
	}
	for _, bad := range []string{"?limit=0", "?limit=101", "?limit=x", "?limit="} {
		errCode(t, get(bad), 400, "invalid_request")
	}
	errCode(t, ts.do(ts.pub, "GET", "/api/v1/items/nope/leaderboard", ""), 404, "item_not_found")
}

// Behind a gateway (-identity header) the redeemer is the authenticated
// shopper, whatever the body says; and its invalid codes count against it
// from any IP, while a body's user_id (anybody's to name) never does.
func TestRedeemAsTheAuthenticatedShopper(t *testing.T) {
	ts := newTestServer(t, Options{Identity: Identity{Mode: IdentityHeader}, InvalidCodesPerMinute: 1,
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
	r := ts.do(ts.adm, "POST", "/api/v1/codes/batches", `{"batch":"gw","count":2,"value_cents":100}`)
	var b struct{ Codes []string }
	if err := json.Unmarshal([]byte(r.body), &b); r.status != 201 || err != nil {
		t.Fatalf("batch: %d %s", r.status, r.body)
	}
	gw1, gw2 := ts.clientFrom("10.0.0.2:4000"), ts.clientFrom("10.0.0.3:4000")
	if r := ts.do(gw1, "POST", "/api/v1/codes/redeem", fmt.Sprintf(`{"code":%q,"user_id":"mallory"}`, b.Codes[0]), "X-User-Id: alice"); r.status != 200 ||
		!strings.Contains(r.body, `"user_id":"alice"`) {
		t.Fatalf("through the gateway: %d %s", r.status, r.body)
	}
	errCode(t, ts.do(gw1, "POST", "/api/v1/codes/redeem", fmt.Sprintf(`{"code":%q}`, b.Codes[1])), 401, "unauthorized")
	// Ten invalid codes of mallory's through one gateway address: mallory
	// is refused through the other, alice is not.
	for i := range 10 {
		errCode(t, ts.do(gw1, "POST", "/api/v1/codes/redeem", fmt.Sprintf(`{"code":"%05d-00000-00000-00000-00000"}`, i), "X-User-Id: mallory"), 400, "invalid_code")
	}
	errCode(t, ts.do(gw2, "POST", "/api/v1/codes/redeem", fmt.Sprintf(`{"code":%q}`, b.Codes[1]), "X-User-Id: mallory"), 429, "rate_limited")
	if r := ts.do(gw2, "POST", "/api/v1/codes/redeem", fmt.Sprintf(`{"code":%q}`, b.Codes[1]), "X-User-Id: alice"); r.status != 200 {
		t.Fatalf("another user through the other gateway: %d %s", r.status, r.body)
	}
}
