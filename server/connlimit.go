package server

import (
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"
)

// perIPListener refuses a client's connections past max at once, with a
// 429 in the contract's shape. It replaces fasthttp's MaxConnsPerIP, whose
// connection wrapper races with Server.Shutdown in v1.74.0 (the race
// detector caught it in TestTooManyConnectionsFromOneIP).
type perIPListener struct {
	net.Listener
	s   *Server
	max int

	mu     sync.Mutex
	counts map[netip.Addr]int
}

func (s *Server) limitConnsPerIP(l net.Listener) net.Listener {
	if s.opts.MaxConnsPerIP <= 0 {
		return l
	}
	return &perIPListener{Listener: l, s: s, max: s.opts.MaxConnsPerIP, counts: map[netip.Addr]int{}}
}

func (l *perIPListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := addrOf(c.RemoteAddr())
		l.mu.Lock()
		if l.counts[ip] >= l.max {
			l.mu.Unlock()
			l.s.metrics.connsRefused.Inc()
			go l.refuse(c)
			continue
		}
		l.counts[ip]++
		l.mu.Unlock()
		return &countedConn{Conn: c, l: l, ip: ip}, nil
	}
}

const tooManyConns = `{"error":{"code":"rate_limited","message":"too many connections from this client"}}`

// refuse answers 429 and closes, without reading the request.
func (l *perIPListener) refuse(c net.Conn) {
	defer c.Close()
	c.SetWriteDeadline(time.Now().Add(time.Second))
	id := append(l.s.ids.prefix[:], strconv.FormatUint(l.s.ids.seq.Add(1), 36)...)
	c.Write([]byte("HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nRetry-After: " + retryAfterSeconds +
		"\r\nX-Request-Id: " + string(id) + "\r\nConnection: close\r\nContent-Length: " + strconv.Itoa(len(tooManyConns)) +
		"\r\n\r\n" + tooManyConns))
}

type countedConn struct {
	net.Conn
	l    *perIPListener
	ip   netip.Addr
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		if c.l.counts[c.ip]--; c.l.counts[c.ip] <= 0 {
			delete(c.l.counts, c.ip)
		}
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}

func addrOf(a net.Addr) netip.Addr {
	if t, ok := a.(*net.TCPAddr); ok {
		ip, _ := netip.AddrFromSlice(t.IP)
		return ip.Unmap()
	}
	return netip.Addr{}
}
