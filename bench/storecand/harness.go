package storecand

import (
	"context"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/flashsale/flashsale/engine"
)

// nextID hands out increasing order ids across all appenders.
var nextID atomic.Uint64

var base = time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)

// NewOrder builds the benchmark's order: id increasing, item "item-1", a
// distinct user per order ("u123456"), quantity 1, price 19900, a 16-byte
// request id, created_at in whole ms.
func NewOrder() *engine.Order {
	id := nextID.Add(1)
	var rb [16]byte
	req := strconv.AppendUint(append(rb[:0], "req-"...), id+1e11, 10) // "req-" + 12 digits = 16 bytes
	return &engine.Order{
		ID:         id,
		ItemID:     "item-1",
		UserID:     "u" + strconv.FormatUint(id, 10),
		Quantity:   1,
		PriceCents: 19900,
		RequestID:  string(req),
		CreatedAt:  base.Add(time.Duration(id) * time.Millisecond),
	}
}

// Result is one timed run.
type Result struct {
	Cand    string
	N       int
	Orders  int64
	Wall    time.Duration
	CPU     time.Duration // process user+system during the run
	Mallocs uint64
	Errors  int64
}

func (r Result) OrdersPerSec() float64 { return float64(r.Orders) / r.Wall.Seconds() }
func (r Result) NsPerOp() float64      { return float64(r.Wall.Nanoseconds()) / float64(r.Orders) }
func (r Result) AllocsPerOp() float64  { return float64(r.Mallocs) / float64(r.Orders) }
func (r Result) CPUusPerOrder() float64 {
	return float64(r.CPU.Nanoseconds()) / 1e3 / float64(r.Orders)
}

func procCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// Run opens cand in a fresh dir under root, warms up briefly, then has n
// goroutines append orders until d has passed, and closes and removes the
// store. Only the timed window is measured (open/close excluded).
func Run(root, cand string, n int, warm, d time.Duration) (Result, error) {
	dir, err := os.MkdirTemp(root, cand+"-")
	if err != nil {
		return Result{}, err
	}
	defer os.RemoveAll(dir)
	s, err := Candidates[cand](dir)
	if err != nil {
		return Result{}, err
	}
	defer s.Close()
	ctx := context.Background()

	var phase atomic.Int32 // 0 warm-up, 1 measured, 2 stop
	var count, errs atomic.Int64
	var wg sync.WaitGroup
	var started sync.WaitGroup
	started.Add(n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			started.Done()
			var local int64
			for {
				if phase.Load() == 2 {
					break
				}
				if err := s.Append(ctx, NewOrder()); err != nil {
					errs.Add(1)
				}
				if phase.Load() == 1 { // completions inside the window
					local++
				}
			}
			count.Add(local)
		}()
	}
	started.Wait()
	time.Sleep(warm)
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	cpu0, t0 := procCPU(), time.Now()
	phase.Store(1)
	time.Sleep(d)
	phase.Store(2)
	t1, cpu1 := time.Now(), procCPU()
	runtime.ReadMemStats(&ms1)
	wg.Wait()
	return Result{Cand: cand, N: n, Orders: count.Load(), Wall: t1.Sub(t0), CPU: cpu1 - cpu0,
		Mallocs: ms1.Mallocs - ms0.Mallocs, Errors: errs.Load()}, nil
}
