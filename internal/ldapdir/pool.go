package ldapdir

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync/atomic"
	"time"

	"github.com/go-ldap/ldap/v3"
)

const (
	maxIdle     = 8               // idle connections kept per pool
	maxOpen     = 32              // connections in use at once per pool
	maxIdleTime = 2 * time.Minute // an idle connection older than this is not reused
)

var errClosed = errors.New("LDAP source closed")

// endpoint is where and how to connect.
type endpoint struct {
	scheme   string // "ldap" or "ldaps"
	hostport string
	tls      *tls.Config
	startTLS bool
	timeout  time.Duration
}

// pool is a bounded set of connections to the server. The service pool's
// connections are bound as the service (BindDN); the auth pool's are used
// only to check users' passwords by binding as them, never to search.
type pool struct {
	name   string // "service" or "auth", for logs
	ep     endpoint
	bindDN string // "" for none (anonymous)
	bindPW string
	log    *slog.Logger
	stats  *counters
	idle   chan idleConn
	sem    chan struct{}
	closed atomic.Bool
}

func newPool(name string, ep endpoint, bindDN, bindPW string, log *slog.Logger, stats *counters) *pool {
	return &pool{
		name:   name,
		ep:     ep,
		bindDN: bindDN,
		bindPW: bindPW,
		log:    log,
		stats:  stats,
		idle:   make(chan idleConn, maxIdle),
		sem:    make(chan struct{}, maxOpen),
	}
}

// run runs op on a connection of the pool. When op fails with a network
// error (or leaves the connection closed), the connection is discarded with
// every idle one (a server restart kills them all), and op is retried once on
// a freshly dialled connection, unless the time-out has already been spent.
// Errors are returned as they are; the caller wraps them.
func (p *pool) run(op func(*ldap.Conn) error) error {
	if p.closed.Load() {
		return errClosed
	}
	timer := time.NewTimer(p.ep.timeout)
	select {
	case p.sem <- struct{}{}:
		timer.Stop()
	case <-timer.C:
		return fmt.Errorf("all %d %s connections busy for %v", maxOpen, p.name, p.ep.timeout)
	}
	defer func() { <-p.sem }()

	start := time.Now()
	fresh := false
	for {
		c, err := p.get(fresh)
		if err != nil {
			return err
		}
		err = op(c)
		if !isConnError(err) && !c.IsClosing() {
			p.put(c)
			return err
		}
		c.Close()
		p.drain()
		if fresh || time.Since(start) >= p.ep.timeout {
			return err
		}
		p.stats.retries.Add(1)
		p.log.Debug("ldap: connection failed, retrying on a new one", "pool", p.name, "err", err)
		fresh = true
	}
}

// isConnError reports whether err says the connection is unusable.
func isConnError(err error) bool {
	if err == nil {
		return false
	}
	if ldap.IsErrorWithCode(err, ldap.ErrorNetwork) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne)
}

// get returns an idle connection, or a new one (always new when fresh).
func (p *pool) get(fresh bool) (*ldap.Conn, error) {
	if !fresh {
		for ic, ok := p.takeIdle(); ok; ic, ok = p.takeIdle() {
			// A connection idle for long may have been dropped silently
			// (server idle time-out, firewall): it would cost a time-out.
			if !ic.c.IsClosing() && time.Since(ic.since) < maxIdleTime {
				return ic.c, nil
			}
			ic.c.Close()
		}
	}
	return p.dial()
}

// idleConn is an idle connection and when it became idle.
type idleConn struct {
	c     *ldap.Conn
	since time.Time
}

// takeIdle returns an idle connection, if there is one.
func (p *pool) takeIdle() (idleConn, bool) {
	select {
	case ic := <-p.idle:
		return ic, true
	default:
		return idleConn{}, false
	}
}

// put returns a healthy connection to the idle set, or closes it.
func (p *pool) put(c *ldap.Conn) {
	if p.closed.Load() {
		c.Close()
		return
	}
	select {
	case p.idle <- idleConn{c, time.Now()}:
		if p.closed.Load() { // Close ran meanwhile: do not leave it behind
			p.drain()
		}
	default:
		c.Close()
	}
}

// drain closes every idle connection.
func (p *pool) drain() {
	for ic, ok := p.takeIdle(); ok; ic, ok = p.takeIdle() {
		ic.c.Close()
	}
}

func (p *pool) close() {
	p.closed.Store(true)
	p.drain()
}

// dial opens a connection: TCP (or TLS for ldaps://) with the time-out,
// StartTLS when configured, and the pool's bind. The whole set-up is bounded
// by the time-out through a deadline on the socket.
func (p *pool) dial() (*ldap.Conn, error) {
	p.stats.dials.Add(1)
	ep := p.ep
	deadline := time.Now().Add(ep.timeout)
	d := net.Dialer{Timeout: ep.timeout}
	raw, err := d.Dial("tcp", ep.hostport)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", ep.hostport, err)
	}
	if err := raw.SetDeadline(deadline); err != nil {
		raw.Close()
		return nil, fmt.Errorf("connect to %s: %w", ep.hostport, err)
	}
	nc := raw
	isTLS := ep.scheme == "ldaps"
	if isTLS {
		tc := tls.Client(raw, ep.tls)
		if err := tc.Handshake(); err != nil {
			raw.Close()
			return nil, fmt.Errorf("TLS handshake with %s: %w", ep.hostport, err)
		}
		nc = tc
	}
	c := ldap.NewConn(nc, isTLS)
	c.Start()
	c.SetTimeout(ep.timeout)
	if ep.startTLS && !isTLS {
		if err := c.StartTLS(ep.tls); err != nil {
			c.Close()
			return nil, fmt.Errorf("StartTLS with %s: %w", ep.hostport, err)
		}
	}
	if p.bindDN != "" {
		if err := c.Bind(p.bindDN, p.bindPW); err != nil {
			c.Close()
			if ldap.IsErrorWithCode(err, ldap.LDAPResultInvalidCredentials) {
				return nil, fmt.Errorf("bind as %q (ldap_bind_dn) at %s: wrong ldap_bind_pw or DN: %w", p.bindDN, ep.hostport, err)
			}
			return nil, fmt.Errorf("bind as %q (ldap_bind_dn) at %s: %w", p.bindDN, ep.hostport, err)
		}
	}
	if err := raw.SetDeadline(time.Time{}); err != nil {
		c.Close()
		return nil, fmt.Errorf("connect to %s: %w", ep.hostport, err)
	}
	p.log.Debug("ldap: connected", "pool", p.name, "server", ep.hostport)
	return c, nil
}
