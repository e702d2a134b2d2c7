package storecand

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// root is where data directories go: on /tmp's file system (real fsync).
func root(tb testing.TB) string {
	r := os.Getenv("STORECAND_DIR")
	if r == "" {
		r = "/tmp/storecand/data"
	}
	if err := os.MkdirAll(r, 0o750); err != nil {
		tb.Fatal(err)
	}
	return r
}

func benchCands() []string {
	if c := os.Getenv("STORECAND_CANDS"); c != "" {
		return strings.Split(c, ",")
	}
	return []string{"store", "pebble-gc", "pebble-apply", "log", "log-falloc", "log-zeroed"}
}

// BenchmarkAppend is the testing.B form: b.RunParallel with
// SetParallelism(N/GOMAXPROCS) for N >= GOMAXPROCS, a plain loop for N=1.
// Use it for profiles: go test -bench 'Append/store/N=1024$' -cpuprofile ...
func BenchmarkAppend(b *testing.B) {
	for _, cand := range benchCands() {
		for _, n := range []int{1, 64, 1024} {
			b.Run(fmt.Sprintf("%s/N=%d", cand, n), func(b *testing.B) {
				dir, err := os.MkdirTemp(root(b), cand+"-")
				if err != nil {
					b.Fatal(err)
				}
				defer os.RemoveAll(dir)
				s, err := Candidates[cand](dir)
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				ctx := context.Background()
				b.ReportAllocs()
				cpu0 := procCPU()
				b.ResetTimer()
				if n == 1 {
					for i := 0; i < b.N; i++ {
						if err := s.Append(ctx, NewOrder()); err != nil {
							b.Fatal(err)
						}
					}
				} else {
					b.SetParallelism(n / runtime.GOMAXPROCS(0))
					b.RunParallel(func(pb *testing.PB) {
						for pb.Next() {
							if err := s.Append(ctx, NewOrder()); err != nil {
								b.Error(err)
								return
							}
						}
					})
				}
				b.StopTimer()
				cpu := procCPU() - cpu0
				b.ReportMetric(float64(cpu.Nanoseconds())/1e3/float64(b.N), "cpu-µs/order")
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "orders/s")
			})
		}
	}
}

// TestInterleaved is the comparison run: every candidate at every N, reps
// rounds, the order of candidates rotated each round, all in one process.
// STORECAND_RUN=1 go test -run TestInterleaved -v -timeout 30m
func TestInterleaved(t *testing.T) {
	if os.Getenv("STORECAND_RUN") == "" {
		t.Skip("set STORECAND_RUN=1")
	}
	dur := envDur("STORECAND_DUR", 2*time.Second)
	warm := envDur("STORECAND_WARM", 300*time.Millisecond)
	reps := 3
	if r, err := strconv.Atoi(os.Getenv("STORECAND_REPS")); err == nil {
		reps = r
	}
	cands := append([]string{"null"}, benchCands()...)
	ns := []int{1, 64, 1024}
	res := map[string][]Result{}
	t.Logf("start %s UTC, GOMAXPROCS=%d, dur=%s warm=%s reps=%d", time.Now().UTC().Format(time.RFC3339), runtime.GOMAXPROCS(0), dur, warm, reps)
	for rep := 0; rep < reps; rep++ {
		for _, n := range ns {
			for i := range cands {
				c := cands[(i+rep)%len(cands)]
				runtime.GC()
				r, err := Run(root(t), c, n, warm, dur)
				if err != nil {
					t.Fatalf("%s N=%d: %v", c, n, err)
				}
				if r.Errors > 0 {
					t.Errorf("%s N=%d: %d append errors", c, n, r.Errors)
				}
				k := fmt.Sprintf("%s/%d", c, n)
				res[k] = append(res[k], r)
				t.Logf("rep %d %-13s N=%-5d %9.0f orders/s %9.0f ns/op %6.1f allocs/op %7.2f cpu-µs/order", rep, c, n, r.OrdersPerSec(), r.NsPerOp(), r.AllocsPerOp(), r.CPUusPerOrder())
			}
		}
	}
	t.Logf("end %s UTC", time.Now().UTC().Format(time.RFC3339))
	var sb strings.Builder
	fmt.Fprintf(&sb, "\n| candidate | N | orders/s | ns/op | allocs/op | CPU µs/order | orders/s vs store | CPU/order vs store |\n|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, c := range cands {
		for _, n := range ns {
			rs := res[fmt.Sprintf("%s/%d", c, n)]
			bs := res[fmt.Sprintf("store/%d", n)]
			ops, ns_, al, cpu := med(rs, Result.OrdersPerSec), med(rs, Result.NsPerOp), med(rs, Result.AllocsPerOp), med(rs, Result.CPUusPerOrder)
			fmt.Fprintf(&sb, "| %s | %d | %.0f | %.0f | %.1f | %.2f | %.2fx | %.2fx |\n", c, n, ops, ns_, al, cpu,
				ops/med(bs, Result.OrdersPerSec), cpu/med(bs, Result.CPUusPerOrder))
		}
	}
	// Paired ratios: each round's run against the same round's store run at
	// the same N, then the median; less sensitive to the machine's drift.
	fmt.Fprintf(&sb, "\n| candidate | N | median paired orders/s ratio | median paired CPU/order ratio |\n|---|---:|---:|---:|\n")
	for _, c := range cands {
		for _, n := range ns {
			rs, bs := res[fmt.Sprintf("%s/%d", c, n)], res[fmt.Sprintf("store/%d", n)]
			var tp, cp []float64
			for i := range rs {
				if i < len(bs) {
					tp = append(tp, rs[i].OrdersPerSec()/bs[i].OrdersPerSec())
					cp = append(cp, rs[i].CPUusPerOrder()/bs[i].CPUusPerOrder())
				}
			}
			sort.Float64s(tp)
			sort.Float64s(cp)
			if len(tp) > 0 {
				fmt.Fprintf(&sb, "| %s | %d | %.2fx | %.2fx |\n", c, n, tp[len(tp)/2], cp[len(cp)/2])
			}
		}
	}
	t.Log(sb.String())
	if p := os.Getenv("STORECAND_TABLE"); p != "" {
		os.WriteFile(p, []byte(sb.String()), 0o644)
	}
}

func med(rs []Result, f func(Result) float64) float64 {
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = f(r)
	}
	sort.Float64s(v)
	if len(v) == 0 {
		return 0
	}
	return v[len(v)/2]
}

func envDur(k string, d time.Duration) time.Duration {
	if v, err := time.ParseDuration(os.Getenv(k)); err == nil {
		return v
	}
	return d
}

// TestReadBack checks that each candidate keeps what it acknowledged and can
// be read by id and by user after reopening.
func TestReadBack(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := OpenPebbleGC(filepath.Join(dir, "p"))
	if err != nil {
		t.Fatal(err)
	}
	o := NewOrder()
	if err := s.Append(ctx, o); err != nil {
		t.Fatal(err)
	}
	s.Close()
	db, err := pebble.Open(filepath.Join(dir, "p"), pebbleOptions())
	if err != nil {
		t.Fatal(err)
	}
	v, cl, err := db.Get(orderKey(nil, o.ID))
	if err != nil {
		t.Fatal(err)
	}
	id, _, user, _, _, req, _, err := DecodeOrder(v)
	cl.Close()
	if err != nil || id != o.ID || user != o.UserID || req != o.RequestID {
		t.Fatalf("got %d %q %q %v", id, user, req, err)
	}
	pre := []byte("u/" + o.UserID + "/")
	it, _ := db.NewIter(&pebble.IterOptions{LowerBound: pre, UpperBound: append(append([]byte{}, pre[:len(pre)-1]...), '/'+1)})
	n := 0
	for it.First(); it.Valid(); it.Next() {
		n++
	}
	it.Close()
	db.Close()
	if n != 1 {
		t.Fatalf("user scan found %d", n)
	}
	for _, mode := range []LogMode{LogGrow, LogFallocate, LogZeroed} {
		ld := filepath.Join(dir, fmt.Sprint("l", mode))
		l, err := OpenLog(ld, mode)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 10; i++ {
			if err := l.Append(ctx, NewOrder()); err != nil {
				t.Fatal(err)
			}
		}
		l.Close()
		cnt := 0
		if _, err := ScanLog(filepath.Join(ld, "orders.log"), func(int64, []byte) error { cnt++; return nil }); err != nil || cnt != 10 {
			t.Fatalf("mode %d: %d records, %v", mode, cnt, err)
		}
	}
}
