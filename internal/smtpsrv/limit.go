package smtpsrv

import (
	"net"
	"net/netip"
	"sync"
	"time"
)

// limiter counts the open connections, overall and per client address, for
// every listener of one Server, and remembers them for Shutdown.
type limiter struct {
	mu       sync.Mutex
	max      int
	maxPerIP int
	total    int
	perIP    map[netip.Addr]int
	conns    map[*trackedConn]struct{}
	draining bool
}

func newLimiter(max, maxPerIP int) *limiter {
	return &limiter{max: max, maxPerIP: maxPerIP, perIP: map[netip.Addr]int{}, conns: map[*trackedConn]struct{}{}}
}

// limitListener wraps a listener: a connection over the limits is answered
// "421 4.7.0" (RFC 5321 §3.8: a server may refuse service with 421 and
// close) and closed before the SMTP server ever sees it.
type limitListener struct {
	net.Listener
	lim      *limiter
	hostname string
	// plain: the first bytes on the wire are SMTP (not a TLS handshake), so
	// a 421 can be written; on an implicit-TLS listener the connection is
	// just closed.
	plain bool
	onRej func(reason string, remote netip.Addr)
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := remoteIP(c)
		reason := l.lim.admit(ip)
		if reason == "" {
			tc := &trackedConn{Conn: c, lim: l.lim, ip: ip}
			l.lim.mu.Lock()
			l.lim.conns[tc] = struct{}{}
			l.lim.mu.Unlock()
			return tc, nil
		}
		if l.onRej != nil {
			l.onRej(reason, ip)
		}
		if l.plain {
			_ = c.SetWriteDeadline(time.Now().Add(time.Second))
			_, _ = c.Write([]byte("421 4.7.0 " + l.hostname + " " + reason + ", try again later\r\n"))
		}
		_ = c.Close()
	}
}

// admit counts a new connection from ip, or returns why it is refused.
func (l *limiter) admit(ip netip.Addr) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.draining:
		return "Service shutting down"
	case l.total >= l.max:
		return "Too many connections"
	case l.perIP[ip] >= l.maxPerIP:
		return "Too many connections from your address"
	}
	l.total++
	l.perIP[ip]++
	return ""
}

func (l *limiter) release(tc *trackedConn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.conns[tc]; !ok {
		return
	}
	delete(l.conns, tc)
	l.total--
	if n := l.perIP[tc.ip] - 1; n > 0 {
		l.perIP[tc.ip] = n
	} else {
		delete(l.perIP, tc.ip)
	}
}

// drain refuses new connections and closes every connection that is not in
// the middle of a mail transaction; those close themselves when their
// transaction ends (trackedConn.setBusy).
func (l *limiter) drain() {
	l.mu.Lock()
	l.draining = true
	var idle []*trackedConn
	for tc := range l.conns {
		if !tc.busy {
			idle = append(idle, tc)
		}
	}
	l.mu.Unlock()
	for _, tc := range idle {
		_ = tc.Close()
	}
}

// closeAll closes every connection (the end of a shutdown grace period).
func (l *limiter) closeAll() {
	l.mu.Lock()
	all := make([]*trackedConn, 0, len(l.conns))
	for tc := range l.conns {
		all = append(all, tc)
	}
	l.mu.Unlock()
	for _, tc := range all {
		_ = tc.Close()
	}
}

func (l *limiter) open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

// trackedConn is an accepted connection counted by the limiter.
type trackedConn struct {
	net.Conn
	lim  *limiter
	ip   netip.Addr
	once sync.Once
	busy bool // guarded by lim.mu: inside a mail transaction
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.lim.release(c) })
	return err
}

// setBusy marks the start (true) or the end (false) of a mail transaction.
// At the end of one during a shutdown, the connection is closed: the reply
// to the transaction has been written, and nothing else is started.
func (c *trackedConn) setBusy(b bool) {
	c.lim.mu.Lock()
	c.busy = b
	closeNow := !b && c.lim.draining
	c.lim.mu.Unlock()
	if closeNow {
		_ = c.Close()
	}
}

func remoteIP(c net.Conn) netip.Addr {
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		if ip, ok := netip.AddrFromSlice(ta.IP); ok {
			return ip.Unmap()
		}
	}
	if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

func (l *limiter) isDraining() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.draining
}
