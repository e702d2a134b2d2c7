//go:build !race

package scenario

import (
	"testing"

	"github.com/valyala/fasthttp"
)

func TestFlashDoesNotAllocate(t *testing.T) {
	fl := NewFlash(FlashOptions{Item: "it", Prefix: "p", Users: 100, RetryPct: 10, DoublePct: 10, ReadPct: 20})
	var req fasthttp.Request
	var resp fasthttp.Response
	resp.SetStatusCode(201)
	resp.SetBodyString(`{"order_id":"382442883795386368","item_id":"it"}`)
	n := 0
	allocs := testing.AllocsPerRun(1000, func() {
		req.Reset()
		fl.Fill(n%fl.Requests(), &req)
		fl.Done(n%fl.Requests(), &resp, nil)
		n++
	})
	if allocs != 0 {
		t.Fatalf("a flash request allocates %v times", allocs)
	}
}
