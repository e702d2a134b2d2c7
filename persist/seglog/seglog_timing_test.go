package seglog

import (
	"math"
	"syscall"
	"testing"
	"time"
)

// BenchmarkCommit: one record of 1,700 bytes (a batch of ~20 orders) per
// commit, each made durable: with direct writes over zeros written ahead
// (as the log runs where the filesystem takes O_DIRECT), with a write and
// an fdatasync over zeros written ahead (as it runs elsewhere), and into a
// file that grows with every commit (as it ran before zeros ahead: the
// fdatasync of a write that changes the file's size also commits the
// size). Reports the process's CPU per commit beside the time.
func BenchmarkCommit(b *testing.B) {
	for _, c := range []struct {
		name            string
		buffered, ahead bool
	}{{"direct", false, true}, {"zeros-ahead", true, true}, {"growing", true, false}} {
		b.Run(c.name, func(b *testing.B) {
			l, err := Open(Options{Dir: b.TempDir(), Buffered: c.buffered}, func(Pos, []byte) error { return nil })
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			if !c.ahead {
				l.zeroed = math.MaxInt64 // never reached: no zeros are written
			}
			rec := make([]byte, 1700)
			rec[0] = 1
			var ru0, ru1 syscall.Rusage
			syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
			b.ResetTimer()
			for range b.N {
				if err := l.Begin(); err != nil {
					b.Fatal(err)
				}
				l.Add(rec)
				if err := l.Commit(); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			if l.Direct() == c.buffered {
				b.Fatalf("Direct() = %v", l.Direct())
			}
			syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
			cpu := time.Duration(ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano())
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/op")
		})
	}
}
