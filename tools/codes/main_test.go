package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flashsale/flashsale/codes"
)

// The tool makes the batch's codes the server makes: the same secret, the
// same number, key, count and expiry, the same lines.
func TestSameCodesAsTheServer(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	path := filepath.Join(t.TempDir(), "k")
	if err := os.WriteFile(path, append(secret, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	keys, _ := codes.NewKeyring(map[uint8][]byte{2: secret})
	exp := time.Date(2027, 1, 31, 23, 59, 0, 0, time.UTC)
	want, err := keys.Codes(codes.Batch{Number: 7, Key: 2, Count: 3, Expires: exp})
	if err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if code := run([]string{"-secret-file", "2:" + path, "-number", "7", "-count", "3", "-expires-at", "2027-01-31T23:59:30Z"}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	if got := strings.Fields(out.String()); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("codes %v, the server's %v", got, want)
	}
	for _, bad := range [][]string{{"-number", "7"}, {"-secret-file", "2:" + path, "-number", "7", "-count", "3"},
		{"-secret-file", "2:" + path, "-number", "99999999", "-count", "3", "-no-expiry"}} {
		if code := run(bad, &out, &errOut); code != 2 {
			t.Fatalf("%v: exit %d", bad, code)
		}
	}
}
