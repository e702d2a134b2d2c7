package codes_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/flashsale/flashsale/codes"
)

func keyring(t testing.TB, ids ...uint8) *codes.Keyring {
	t.Helper()
	secrets := map[uint8][]byte{}
	for _, id := range ids {
		secrets[id] = bytes.Repeat([]byte{'k', id}, 16)
	}
	k, err := codes.NewKeyring(secrets)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func make1(t testing.TB, k *codes.Keyring, c codes.Code) string {
	t.Helper()
	b, err := k.Make(nil, c)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

var now = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

func TestRoundTrip(t *testing.T) {
	k := keyring(t, 1)
	for _, c := range []codes.Code{
		{Key: 1, Batch: 1, Serial: 0},
		{Key: 1, Batch: codes.MaxBatch, Serial: codes.MaxSerial, Expires: codes.Latest},
		{Key: 1, Batch: 4242, Serial: 17, Expires: now.Add(time.Hour)},
	} {
		s := make1(t, k, c)
		if len(s) != codes.Len || strings.Count(s, "-") != 4 {
			t.Fatalf("%q: not five groups of five", s)
		}
		got, err := k.Check(s, now)
		if err != nil || got != c {
			t.Fatalf("%q: %+v %v, want %+v", s, got, err, c)
		}
		// Crockford's leniency: lower case, no hyphens, O for 0, I and L for 1.
		loose := strings.NewReplacer("-", "", "0", "o", "1", "l").Replace(strings.ToLower(s))
		if got, err := k.Check(loose, now); err != nil || got != c {
			t.Fatalf("%q read loosely as %q: %+v %v", s, loose, got, err)
		}
	}
}

// Any one character changed, and any two neighbours swapped, is invalid.
func TestTamperedIsInvalid(t *testing.T) {
	k := keyring(t, 1)
	s := make1(t, k, codes.Code{Key: 1, Batch: 9, Serial: 123456, Expires: now.Add(24 * time.Hour)})
	const alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
	for i := 0; i < len(s); i++ {
		if s[i] == '-' {
			continue
		}
		for _, c := range alphabet {
			if byte(c) == s[i] {
				continue
			}
			bad := s[:i] + string(c) + s[i+1:]
			if _, err := k.Check(bad, now); !errors.Is(err, codes.ErrInvalid) {
				t.Fatalf("%q (character %d changed) is %v", bad, i, err)
			}
		}
		if j := i + 1; j < len(s) && s[j] != '-' && s[j] != s[i] {
			swapped := s[:i] + string(s[j]) + string(s[i]) + s[j+1:]
			if _, err := k.Check(swapped, now); !errors.Is(err, codes.ErrInvalid) {
				t.Fatalf("%q (neighbours swapped) is %v", swapped, err)
			}
		}
	}
	for _, bad := range []string{"", s[:len(s)-1], s + "0", s + "-0", "U" + s[1:], strings.Repeat("0", 1000), s[:5] + "!" + s[6:]} {
		if _, err := k.Check(bad, now); !errors.Is(err, codes.ErrInvalid) {
			t.Fatalf("%q is %v", bad, err)
		}
	}
}

func TestExpiry(t *testing.T) {
	k := keyring(t, 1)
	c := codes.Code{Key: 1, Batch: 2, Serial: 3, Expires: now}
	s := make1(t, k, c)
	if _, err := k.Check(s, now.Add(-time.Second)); err != nil {
		t.Fatalf("a second before expiry: %v", err)
	}
	if got, err := k.Check(s, now); !errors.Is(err, codes.ErrExpired) || got != c {
		t.Fatalf("at expiry: %+v %v", got, err)
	}
	if _, err := k.Make(nil, codes.Code{Key: 1, Batch: 1, Expires: codes.Epoch.Add(-time.Minute)}); err == nil {
		t.Fatal("an expiry before 2024 was made")
	}
}

// New codes take the newest key; codes of an older key still verify while
// it is kept, and fail once it is dropped; a secret of another keyring
// never verifies.
func TestRotation(t *testing.T) {
	old := keyring(t, 1)
	s1 := make1(t, old, codes.Code{Key: old.Newest(), Batch: 1, Serial: 1})
	both := keyring(t, 1, 2)
	if both.Newest() != 2 {
		t.Fatalf("newest key: %d", both.Newest())
	}
	s2 := make1(t, both, codes.Code{Key: both.Newest(), Batch: 1, Serial: 1})
	for _, s := range []string{s1, s2} {
		if _, err := both.Check(s, now); err != nil {
			t.Fatalf("%q with both keys: %v", s, err)
		}
	}
	if _, err := keyring(t, 2).Check(s1, now); !errors.Is(err, codes.ErrInvalid) {
		t.Fatalf("a code of a dropped key: %v", err)
	}
	other, _ := codes.NewKeyring(map[uint8][]byte{1: bytes.Repeat([]byte("x"), 32)})
	if _, err := other.Check(s1, now); !errors.Is(err, codes.ErrInvalid) {
		t.Fatalf("a code checked with another secret: %v", err)
	}
	if _, err := codes.NewKeyring(map[uint8][]byte{1: []byte("short")}); err == nil {
		t.Fatal("a short secret was taken")
	}
}

func FuzzCheck(f *testing.F) {
	k := keyring(f, 1)
	b, _ := k.Make(nil, codes.Code{Key: 1, Batch: 5, Serial: 6, Expires: now.Add(time.Hour)})
	f.Add(string(b))
	f.Add("")
	f.Add("0000-0000")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := k.Check(s, now)
		if err != nil {
			if !errors.Is(err, codes.ErrInvalid) && !errors.Is(err, codes.ErrExpired) {
				t.Fatalf("%q: %v", s, err)
			}
			return
		}
		// A code that checks is one the keyring could have made: making it
		// again gives the canonical text, which checks the same.
		again, err := k.Make(nil, c)
		if err != nil {
			t.Fatalf("%q checks as %+v, which cannot be made: %v", s, c, err)
		}
		if c2, err := k.Check(string(again), now); err != nil || c2 != c {
			t.Fatalf("%q: %+v, made again %q: %+v %v", s, c, again, c2, err)
		}
	})
}

func BenchmarkCheck(b *testing.B) {
	k := keyring(b, 1)
	s := make1(b, k, codes.Code{Key: 1, Batch: 5, Serial: 6, Expires: now.Add(time.Hour)})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := k.Check(s, now); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkCheckOneCore is one core's rate of checks: 1e9 / ns per op.
func BenchmarkCheckOneCore(b *testing.B) {
	k := keyring(b, 1)
	s := make1(b, k, codes.Code{Key: 1, Batch: 5, Serial: 6, Expires: now.Add(time.Hour)})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := k.Check(s, now); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCheckInvalid(b *testing.B) {
	k := keyring(b, 1)
	s := []byte(make1(b, k, codes.Code{Key: 1, Batch: 5, Serial: 6}))
	s[3] = '9' + 'A' - s[3] // another character: the check character refuses it
	bad := string(s)
	b.ReportAllocs()
	for b.Loop() {
		k.Check(bad, now)
	}
}
