package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
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
