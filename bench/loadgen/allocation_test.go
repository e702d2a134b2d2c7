//go:build !race

package loadgen

import (
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

func TestRecordingDoesNotAllocate(t *testing.T) {
	out := make(chan secondTally, 4)
	hfree := make(chan *hdrhistogram.Histogram, 4)
	for range 4 {
		hfree <- newHistogram(2)
	}
	go func() {
		for t := range out {
			t.hist.Reset()
			hfree <- t.hist
		}
	}()
	r := newRecorder(out, hfree)
	body := []byte(`{"error":{"code":"sold_out","message":"item x is sold out"}}`)
	sec := 0
	n := testing.AllocsPerRun(10000, func() {
		sec++ // a new second each time: the hand-off is exercised too
		r.record(sec/100, 1500*time.Microsecond, 409, body)
	})
	if n != 0 {
		t.Fatalf("recording allocates %v times", n)
	}
	if r.statuses[409] == 0 || r.codes[3] == 0 {
		t.Fatal("nothing counted")
	}
}
