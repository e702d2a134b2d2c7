package server

import (
	"bytes"
	"net/netip"

	"github.com/valyala/fasthttp"
)

// clientIP is the shopper's address: the socket's peer, unless the peer is
// a trusted proxy (-trusted-proxies), in which case the proxy's X-Real-IP,
// or else the rightmost X-Forwarded-For address that is not itself a
// trusted proxy. Headers from untrusted peers are ignored: anyone can send
// them. Allocation-free.
func (s *Server) clientIP(ctx *fasthttp.RequestCtx) netip.Addr {
	peer := peerAddr(ctx)
	if !s.trusted(peer) {
		return peer
	}
	if v := bytes.TrimSpace(ctx.Request.Header.Peek("X-Real-IP")); len(v) > 0 {
		if a, err := netip.ParseAddr(b2s(v)); err == nil {
			return a.Unmap()
		}
	}
	xff := ctx.Request.Header.Peek("X-Forwarded-For")
	for len(xff) > 0 {
		i := bytes.LastIndexByte(xff, ',')
		part := bytes.TrimSpace(xff[i+1:])
		if i < 0 {
			xff = nil
		} else {
			xff = xff[:i]
		}
		a, err := netip.ParseAddr(b2s(part))
		if err != nil {
			break // garbage: trust nothing further left
		}
		if a = a.Unmap(); !s.trusted(a) {
			return a
		}
	}
	return peer
}

func peerAddr(ctx *fasthttp.RequestCtx) netip.Addr { return addrOf(ctx.RemoteAddr()) }

func (s *Server) trusted(a netip.Addr) bool {
	for _, p := range s.opts.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
