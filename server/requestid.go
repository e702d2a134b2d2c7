package server

import (
	"crypto/rand"
	"encoding/hex"
	"strconv"
	"sync/atomic"

	"github.com/valyala/fasthttp"
)

// requestIDs makes X-Request-Id values for requests that came without one:
// a random prefix per process and a counter, unique without coordination.
type requestIDs struct {
	prefix [17]byte // 16 hex digits and '-'
	seq    atomic.Uint64
}

func newRequestIDs() *requestIDs {
	g := &requestIDs{}
	var r [8]byte
	rand.Read(r[:])
	hex.Encode(g.prefix[:16], r[:])
	g.prefix[16] = '-'
	return g
}

// maxEchoedRequestID bounds the X-Request-Id echoed back to the client.
const maxEchoedRequestID = 128

// set gives the response its X-Request-Id: the client's when it is 1-128
// printable ASCII characters without spaces, a new one otherwise.
func (g *requestIDs) set(ctx *fasthttp.RequestCtx) {
	if id := ctx.Request.Header.Peek("X-Request-Id"); validEcho(id) {
		ctx.Response.Header.SetBytesV("X-Request-Id", id)
		return
	}
	var buf [17 + 20]byte
	b := append(buf[:0], g.prefix[:]...)
	b = strconv.AppendUint(b, g.seq.Add(1), 36)
	ctx.Response.Header.SetBytesV("X-Request-Id", b)
}

func validEcho(id []byte) bool {
	if len(id) == 0 || len(id) > maxEchoedRequestID {
		return false
	}
	for _, c := range id {
		if c <= ' ' || c > '~' {
			return false
		}
	}
	return true
}
