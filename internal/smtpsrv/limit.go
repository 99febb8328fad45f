package smtpsrv

import (
	"net"
	"net/netip"
	"sync"
	"time"
)

// limiter counts the open connections of each listener, overall and per
// client network, and remembers every connection of the Server for
// Shutdown. The limits apply per listener, so that a flood of idle
// connections on the inbound port cannot lock users out of submission.
type limiter struct {
	mu       sync.Mutex
	max      int
	maxPerIP int
	total    map[Mode]int
	perIP    map[clientKey]int
	conns    map[*trackedConn]struct{}
	draining bool
}

// clientKey is a listener and a client network: an IPv4 address, or the
// /64 of an IPv6 address (one IPv6 host usually holds a whole /64).
type clientKey struct {
	mode Mode
	net  netip.Prefix
}

func keyOf(mode Mode, ip netip.Addr) clientKey {
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, err := ip.Prefix(bits)
	if err != nil {
		p = netip.Prefix{}
	}
	return clientKey{mode, p}
}

func newLimiter(max, maxPerIP int) *limiter {
	return &limiter{max: max, maxPerIP: maxPerIP, total: map[Mode]int{}, perIP: map[clientKey]int{}, conns: map[*trackedConn]struct{}{}}
}

// limitListener wraps a listener: a connection over the limits is answered
// "421 4.7.0" (RFC 5321 §3.8: a server may refuse service with 421 and
// close) and closed before the SMTP server ever sees it.
type limitListener struct {
	net.Listener
	lim      *limiter
	mode     Mode
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
		tc := &trackedConn{Conn: c, lim: l.lim, ip: ip, key: keyOf(l.mode, ip)}
		reason := l.lim.admit(tc)
		if reason == "" {
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

// admit counts and registers a new connection, or returns why it is
// refused (one critical section, so that drain sees every connection).
func (l *limiter) admit(tc *trackedConn) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.draining:
		return "Service shutting down"
	case l.total[tc.key.mode] >= l.max:
		return "Too many connections"
	case l.perIP[tc.key] >= l.maxPerIP:
		return "Too many connections from your address"
	}
	l.total[tc.key.mode]++
	l.perIP[tc.key]++
	l.conns[tc] = struct{}{}
	return ""
}

func (l *limiter) release(tc *trackedConn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.conns[tc]; !ok {
		return
	}
	delete(l.conns, tc)
	l.total[tc.key.mode]--
	if n := l.perIP[tc.key] - 1; n > 0 {
		l.perIP[tc.key] = n
	} else {
		delete(l.perIP, tc.key)
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
	return len(l.conns)
}

// trackedConn is an accepted connection counted by the limiter.
type trackedConn struct {
	net.Conn
	lim  *limiter
	ip   netip.Addr
	key  clientKey
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
