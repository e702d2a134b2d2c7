package admission

import (
	"net/netip"
	"sync"
	"testing"
	"time"
)

func TestPerIPIsolatesNoisyClients(t *testing.T) {
	l := NewLimits(Options{IP: 100}, t0)
	noisy, quiet := netip.MustParseAddr("203.0.113.7"), netip.MustParseAddr("198.51.100.9")
	refused := 0
	for i := 0; i < 1000; i++ { // the noisy client sends 1000 at once
		if lim, _ := l.Allow(noisy, t0); lim == IP {
			refused++
		}
	}
	if refused != 1000-10 {
		t.Fatalf("noisy client: %d refused, want 990 (burst 10)", refused)
	}
	for i := 0; i < 10; i++ {
		if lim, _ := l.Allow(quiet, t0); lim != None {
			t.Fatalf("quiet client refused (%v) because of another", lim)
		}
	}
}

func TestGlobalAndItemLimits(t *testing.T) {
	l := NewLimits(Options{Global: 50, Item: 20, Warmup: time.Nanosecond}, t0.Add(-time.Second))
	ip := netip.MustParseAddr("192.0.2.1")
	n := 0
	for i := 0; i < 100; i++ {
		if lim, wait := l.Allow(ip, t0); lim == Global && wait > 0 {
			n++
		}
	}
	if n != 95 { // burst 5
		t.Fatalf("global refused %d of 100, want 95", n)
	}
	n = 0
	for i := 0; i < 100; i++ {
		if lim, _ := l.AllowItem("phone-1", t0); lim == Item {
			n++
		}
	}
	if n != 98 { // burst 2
		t.Fatalf("item refused %d of 100, want 98", n)
	}
	if lim, _ := l.AllowItem("other", t0); lim != None {
		t.Fatal("another item shares the limit")
	}
	off := NewLimits(Options{}, t0)
	if lim, _ := off.Allow(ip, t0); lim != None {
		t.Fatal("limits off refused")
	}
	if lim, _ := off.AllowItem("x", t0); lim != None {
		t.Fatal("item limit off refused")
	}
}

func TestIPTableIsBounded(t *testing.T) {
	l := NewLimits(Options{IP: 10, MaxIPs: 640, IPIdle: time.Minute}, t0)
	for i := 0; i < 20000; i++ {
		ip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		l.Allow(ip, t0.Add(time.Duration(i)*time.Millisecond))
	}
	if n := l.Clients(); n > 640 {
		t.Fatalf("%d clients tracked, bound 640", n)
	}
	l.Sweep(t0.Add(time.Hour))
	if n := l.Clients(); n != 0 {
		t.Fatalf("%d clients after the idle sweep", n)
	}
}

func TestInflight(t *testing.T) {
	f := NewInflight(2, 0)
	first, second, third := f.Acquire(), f.Acquire(), f.Acquire()
	if !first || !second || third {
		t.Fatal("bound of 2 not kept")
	}
	f.Release()
	if !f.Acquire() {
		t.Fatal("released slot not reusable")
	}
	// With a wait: a slot released within it is taken.
	w := NewInflight(1, time.Second)
	w.Acquire()
	var wg sync.WaitGroup
	wg.Go(func() {
		if !w.Acquire() {
			t.Error("waiter got no slot")
		}
	})
	time.Sleep(10 * time.Millisecond)
	w.Release()
	wg.Wait()
	// Past the wait: refused.
	short := NewInflight(1, time.Millisecond)
	short.Acquire()
	start := time.Now()
	if short.Acquire() || time.Since(start) > time.Second {
		t.Fatal("refusal did not come after the wait")
	}
}
