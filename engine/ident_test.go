package engine

import (
	"strings"
	"testing"
)

func TestIdentifiers(t *testing.T) {
	f := func(valid func(string) bool, s string, want bool) {
		t.Helper()
		if valid(s) != want {
			t.Fatalf("%q: got %v, want %v", s, !want, want)
		}
	}
	f(ValidItemID, "phone-1_X", true)
	f(ValidItemID, strings.Repeat("a", 64), true)
	f(ValidItemID, strings.Repeat("a", 65), false)
	f(ValidItemID, "", false)
	f(ValidItemID, "a.b", false)
	f(ValidItemID, "a/b", false)
	f(ValidUserID, "u-42@x.y:z_", true)
	f(ValidUserID, strings.Repeat("u", 128), true)
	f(ValidUserID, strings.Repeat("u", 129), false)
	f(ValidUserID, "ü", false)
	f(ValidUserID, "a b", false)
	f(ValidRequestID, "7f9c0b6e-1/{}~!", true)
	f(ValidRequestID, "a b", false)
	f(ValidRequestID, "a\x7f", false)
	f(ValidRequestID, "tab\t", false)
	f(ValidRequestID, strings.Repeat("r", 129), false)
}

// FuzzIdentifiers checks the validators against their definition in docs/api.md.
func FuzzIdentifiers(f *testing.F) {
	for _, s := range []string{"", "a", "phone-1", "u@x:y.z", "a b", "\xff", strings.Repeat("x", 130)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		item, user, req := len(s) >= 1 && len(s) <= 64, len(s) >= 1 && len(s) <= 128, len(s) >= 1 && len(s) <= 128
		for _, c := range []byte(s) {
			alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
			item = item && (alnum || c == '_' || c == '-')
			user = user && (alnum || strings.IndexByte("_.:@-", c) >= 0)
			req = req && c > 0x20 && c < 0x7f
		}
		if ValidItemID(s) != item || ValidUserID(s) != user || ValidRequestID(s) != req {
			t.Fatalf("%q: item %v/%v user %v/%v req %v/%v", s, ValidItemID(s), item, ValidUserID(s), user, ValidRequestID(s), req)
		}
	})
}
