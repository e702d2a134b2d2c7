package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestCodesSurviveKill9: a standalone server with a secret makes a batch;
// users redeem its codes concurrently and the process is killed with
// SIGKILL right after; restarted on the same data directory, every code
// answered 200 is still redeemed (the same user gets the same answer, any
// other 409 code_used), and a server without a secret says how to set one.
func TestCodesSurviveKill9(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(t.TempDir(), "codes-1.key")
	if err := os.WriteFile(secret, []byte("e2e-secret-of-at-least-32-bytes!\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := start(t, dir, "-codes-secret-file", "1:"+secret)
	code, _, b := call(t, "POST", p.Admin+"/api/v1/codes/batches", `{"batch":"spring","count":200,"value_cents":500}`)
	var batch struct{ Codes []string }
	if err := json.Unmarshal(b, &batch); code != 201 || err != nil || len(batch.Codes) != 200 {
		t.Fatalf("batch: %d %s", code, b)
	}
	var mu sync.Mutex
	answered := map[string][]byte{} // code -> 200 body
	var wg sync.WaitGroup
	for i, c := range batch.Codes {
		wg.Go(func() {
			code, b := callOrDown(p.Public+"/api/v1/codes/redeem", fmt.Sprintf(`{"code":%q,"user_id":"u%d"}`, c, i))
			if code == 200 {
				mu.Lock()
				answered[c] = b
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	p.Stop() // SIGKILL
	p = start(t, dir, "-codes-secret-file", "1:"+secret)
	if len(answered) != len(batch.Codes) {
		t.Fatalf("%d of %d redemptions answered 200 before the kill", len(answered), len(batch.Codes))
	}
	i := 0
	for c, first := range answered {
		code, b := callOrDown(p.Public+"/api/v1/codes/redeem", fmt.Sprintf(`{"code":%q,"user_id":%q}`, c, userOf(t, first)))
		if code != 200 || string(b) != string(first) {
			t.Fatalf("a code redeemed before the kill, again by its user: %d %s, first %s", code, b, first)
		}
		if code, b := callOrDown(p.Public+"/api/v1/codes/redeem", fmt.Sprintf(`{"code":%q,"user_id":"thief"}`, c)); code != 409 {
			t.Fatalf("a code redeemed before the kill, by another: %d %s", code, b)
		}
		if i++; i == 20 {
			break
		}
	}
	bare := start(t, t.TempDir())
	if code, b := callOrDown(bare.Public+"/api/v1/codes/redeem", fmt.Sprintf(`{"code":%q,"user_id":"u"}`, batch.Codes[0])); code != 503 {
		t.Fatalf("a server without a secret: %d %s", code, b)
	}
}

func userOf(t *testing.T, body []byte) string {
	t.Helper()
	var r struct {
		UserID string `json:"user_id"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		t.Fatal(err)
	}
	return r.UserID
}

// TestCodesAcrossNodes: two cluster nodes and a writer. A batch made on
// node 1 is redeemable on node 2 (which learns it from the order database
// once a genuine code of it comes); every code is redeemed at the same
// moment by two users on the two nodes: exactly one 200 and one 409
// code_used each, and the winner's retry on the other node is its 200 again.
func TestCodesAcrossNodes(t *testing.T) {
	port := freePort(t)
	ownRedis(t, port)
	common, _ := clusterArgs(t, fmt.Sprintf("127.0.0.1:%d", port))
	secret := filepath.Join(t.TempDir(), "codes-1.key")
	if err := os.WriteFile(secret, []byte("e2e-secret-of-at-least-32-bytes!"), 0o600); err != nil {
		t.Fatal(err)
	}
	common = append(common, "-codes-secret-file", "1:"+secret)
	startWriter(t, common)
	n1 := start(t, t.TempDir(), append(common, "-node-id", "1")...)
	n2 := start(t, t.TempDir(), append(common, "-node-id", "2")...)
	code, _, b := call(t, "POST", n1.Admin+"/api/v1/codes/batches", `{"batch":"xnode","count":50,"value_cents":100}`)
	var batch struct{ Codes []string }
	if err := json.Unmarshal(b, &batch); code != 201 || err != nil || len(batch.Codes) != 50 {
		t.Fatalf("batch: %d %s", code, b)
	}
	for i, c := range batch.Codes {
		type answer struct {
			code int
			body []byte
		}
		var wg sync.WaitGroup
		answers := make([]answer, 2)
		for k, n := range []*proc{n1, n2} {
			wg.Go(func() {
				code, b := callOrDown(n.Public+"/api/v1/codes/redeem", fmt.Sprintf(`{"code":%q,"user_id":"u%d-%d"}`, c, i, k))
				answers[k] = answer{code, b}
			})
		}
		wg.Wait()
		won := -1
		for k, a := range answers {
			switch a.code {
			case 200:
				if won >= 0 {
					t.Fatalf("code %d redeemed twice: %s and %s", i, answers[0].body, answers[1].body)
				}
				won = k
			case 409:
			default:
				t.Fatalf("code %d on node %d: %d %s", i, k+1, a.code, a.body)
			}
		}
		if won < 0 {
			t.Fatalf("code %d: nobody won: %s / %s", i, answers[0].body, answers[1].body)
		}
		other := []*proc{n2, n1}[won]
		if code, b := callOrDown(other.Public+"/api/v1/codes/redeem", fmt.Sprintf(`{"code":%q,"user_id":"u%d-%d"}`, c, i, won)); code != 200 || string(b) != string(answers[won].body) {
			t.Fatalf("the winner's retry on the other node: %d %s, first %s", code, b, answers[won].body)
		}
	}
}

// TestLeaderboardAcrossNodes: buyers on two nodes; every node's board lists
// the same first buyers, in purchase order, once the writer stored them.
func TestLeaderboardAcrossNodes(t *testing.T) {
	port := freePort(t)
	ownRedis(t, port)
	common, _ := clusterArgs(t, fmt.Sprintf("127.0.0.1:%d", port))
	startWriter(t, common)
	n1 := start(t, t.TempDir(), append(common, "-node-id", "1")...)
	n2 := start(t, t.TempDir(), append(common, "-node-id", "2")...)
	if code, _, b := call(t, "PUT", n1.Admin+"/api/v1/items/lb", `{"name":"x","price_cents":1,"stock":200,"per_user_limit":2}`); code != 201 {
		t.Fatalf("put: %d %s", code, b)
	}
	waitFor(t, n2.Public+"/api/v1/items/lb")
	var want []string // users in order id order
	for u := range 120 {
		n := []*proc{n1, n2}[u%2]
		code, _, b := call(t, "POST", n.Public+"/api/v1/items/lb/purchase", fmt.Sprintf(`{"user_id":"u%03d"}`, u))
		if code != 201 {
			t.Fatalf("buy: %d %s", code, b)
		}
		want = append(want, fmt.Sprintf("u%03d", u))
		time.Sleep(2 * time.Millisecond) // order ids order purchases to the millisecond across nodes
		if u == 0 {                      // a second unit of the first buyer: one entry, its first
			call(t, "POST", n.Public+"/api/v1/items/lb/purchase", `{"user_id":"u000"}`)
		}
	}
	for _, n := range []*proc{n1, n2} {
		var got []string
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			_, _, b := call(t, "GET", n.Public+"/api/v1/items/lb/leaderboard?limit=100", "")
			var lb struct {
				Entries []struct {
					Rank   int    `json:"rank"`
					UserID string `json:"user_id"`
				} `json:"entries"`
			}
			json.Unmarshal(b, &lb)
			got = got[:0]
			for _, e := range lb.Entries {
				got = append(got, e.UserID)
			}
			if len(got) == 100 || time.Now().After(deadline) {
				break
			}
		}
		if strings.Join(got, ",") != strings.Join(want[:100], ",") {
			t.Fatalf("the board on %s:\n got  %v\n want %v", n.Public, got, want[:100])
		}
	}
}
