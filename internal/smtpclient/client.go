// Package smtpclient is mailgate's outbound SMTP client (SPEC §8): a
// queue.Deliverer that hands messages to a relay host or to the MX hosts of
// the recipients' domains (RFC 5321), in the manner of Postfix's smtp(8).
//
// # Routing
//
// With Options.RelayHost every recipient goes to that one destination, in
// Postfix relayhost syntax (docker-mailserver's RELAY_HOST): "[host]:port"
// connects to the addresses of host, "host:port" first looks up the MX
// records of host. Without a relay host the recipients are grouped by domain
// (lowercased) and each domain is routed by DNS:
//
//   - MX records are sorted by preference, equal preferences in random order
//     (RFC 5321 §5.1), and tried in that order, each host's addresses in turn;
//     a connection failure, a 4xx or 5xx greeting, a refused EHLO/HELO or a
//     failed TLS handshake moves on to the next address. At most 5 addresses
//     are tried per attempt (Postfix's smtp_mx_address_limit); when all fail
//     the recipients fail temporarily with the last error.
//   - A null MX "." (RFC 7505 §3) fails permanently with 5.1.10.
//   - No MX records: the domain's own A/AAAA records are the implicit MX
//     (RFC 5321 §5.1). A domain that does not exist (NXDOMAIN) fails
//     permanently with 5.1.2; any other DNS error is temporary (4.4.3). When
//     no MX host name exists in the DNS, delivery fails permanently (5.4.4).
//   - An address literal, user@[192.0.2.1] or user@[IPv6:2001:db8::1],
//     connects to that address (RFC 5321 §4.1.3).
//
// The destinations of one message are served one after the other, in the
// order of their first recipient.
//
// Domains are looked up as absolute names (with a trailing dot) in their
// A-label form (IDNA), so that the resolver's search list never applies; a
// custom Resolver sees names like "example.com.". Relay host names are
// looked up as given (they may be short names, such as a container name).
//
// # Transaction
//
// A session is EHLO (HELO when EHLO is refused with 500 or 502), then
// STARTTLS when offered (RFC 3207) with Options.TLSConfig — by default
// without certificate verification, like Postfix's
// smtp_tls_security_level=may (opportunistic TLS, RFC 7435) — then EHLO
// again. A STARTTLS command answered with an error reply leaves the session
// in plaintext, which continues (no TLS byte was exchanged). A failed TLS
// handshake is a temporary failure of that host and the next address is
// tried; the same host is not retried in plaintext, as a handshake failure
// cannot be told apart from an attacker stripping TLS.
//
// MAIL FROM carries the parameters of the queued envelope
// (queue.EnvelopeFromContext): SIZE when the server offers SIZE (RFC 1870;
// a message larger than the server's limit fails permanently with 552 5.3.4
// without being sent), BODY=7BIT or 8BITMIME when given and 8BITMIME is
// offered (RFC 6152; an 8-bit message is sent as is to a server that does not
// offer 8BITMIME: no MIME downgrade is implemented, as with Postfix's
// disable_mime_output_conversion=yes), SMTPUTF8 when the message needs it
// (RFC 6531) and RET/ENVID when the server offers DSN (RFC 3461 §4.3, §4.4).
// A message needs SMTPUTF8 when an envelope address is not ASCII, or when it
// was received with SMTPUTF8 and its header is not ASCII (RFC 6531 §3.4: a
// client should not request SMTPUTF8 when nothing needs it); a server
// without SMTPUTF8 then fails it permanently with 553 5.6.7 (RFC 6531 §3.5).
//
// When the server offers PIPELINING (RFC 2920) MAIL, the RCPTs and DATA go
// in one write. A transaction has at most 50 recipients (Postfix's
// smtp_destination_recipient_limit); more are sent in further transactions.
// The message is sent with SMTP transparency (RFC 5321 §4.5.2): a CRLF
// message arrives byte for byte; a bare LF is sent as CRLF (RFC 5321 §2.3.8).
//
// # Results
//
// Deliver returns one queue.Result per recipient, Rcpt exactly as passed: the
// RCPT reply for a refused recipient, the reply to DATA (or to the end of
// data) for the accepted ones. Code, Enhanced (RFC 3463, from the reply when
// its class matches the code) and Msg (the reply text) come from the server,
// RemoteMTA is its host name. 5xx replies are permanent; 4xx replies,
// network errors and timeouts are temporary (Temporary is set). Failures
// decided locally (DNS, connection) have Code 0 and an enhanced status that
// says whether they are permanent (5.x.x) or temporary (4.x.x) — except the
// two refusals decided from the server's EHLO reply, which carry the reply a
// server would give: 552 5.3.4 (SIZE) and 553 5.6.7 (SMTPUTF8).
//
// # Connection reuse
//
// After a transaction a healthy session is kept idle for reuse, at most
// Options.MaxIdle per destination host:port, and closed with QUIT after
// Options.IdleTimeout. A delivery first looks for an idle session to any
// host of the destination, in preference order, before connecting. An
// aborted transaction is ended with RSET before the session is kept; after a
// completed one (the reply to the end of data) the server's state is already
// reset (RFC 5321 §4.1.1.4) and no round trip is spent. The next transaction
// on a reused session is its liveness check: if the session turns out to be
// dead before the server answered anything (a network error or 421 as the
// first reply), nothing was delivered, the idle sessions to that host are
// dropped and the transaction is retried once on a fresh connection.
// Sessions are used by one delivery at a time, so Deliver is safe to call
// from many goroutines.
//
// # Timeouts and cancellation
//
// Connecting is bounded by Options.DialTimeout; each command (with its reply,
// the greeting and the TLS handshake included) by Options.CommandTimeout;
// each write of the message data, and the wait for the reply to the end of
// data, by Options.DataTimeout (RFC 5321 §4.5.3.2 recommends 5 and 10
// minutes). Canceling the context closes the connection at once; the
// recipients not yet answered fail temporarily.
package smtpclient

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/mailgate/mailgate/internal/queue"
)

// Resolver is the part of *net.Resolver the client uses.
type Resolver interface {
	LookupMX(ctx context.Context, name string) ([]*net.MX, error)
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
}

// Options configure a Client. Zero values mean the defaults.
type Options struct {
	Hostname       string        // EHLO name (required)
	RelayHost      string        // "host:port" or "[host]:port" (brackets: no MX lookup); "": MX lookup per recipient domain
	Port           string        // port used with MX lookup; default "25"
	Resolver       Resolver      // default net.DefaultResolver
	DialTimeout    time.Duration // default 30s
	CommandTimeout time.Duration // default 5m
	DataTimeout    time.Duration // default 10m
	TLSConfig      *tls.Config   // for opportunistic STARTTLS; default: no verification; ServerName is set per host when empty
	MaxIdle        int           // idle connections kept per destination for reuse; default 4; negative: no reuse
	IdleTimeout    time.Duration // default 30s; idle connections are closed after it
	Logger         *slog.Logger  // default: discard
}

// Defaults.
const (
	DefaultPort           = "25"
	DefaultDialTimeout    = 30 * time.Second
	DefaultCommandTimeout = 5 * time.Minute
	DefaultDataTimeout    = 10 * time.Minute
	DefaultMaxIdle        = 4
	DefaultIdleTimeout    = 30 * time.Second
)

const (
	// maxRcpts is the most recipients in one transaction (Postfix's
	// smtp_destination_recipient_limit; RFC 5321 §4.5.3.1.8 only promises
	// 100).
	maxRcpts = 50
	// maxAddrs is the most server addresses tried per delivery attempt
	// (Postfix's smtp_mx_address_limit).
	maxAddrs = 5
	// quitTimeout bounds the polite QUIT when a session is discarded.
	quitTimeout = 5 * time.Second
)

// Client delivers messages over SMTP. It is safe for concurrent use.
type Client struct {
	o      Options
	log    *slog.Logger
	relay  *destination // nil: MX routing per recipient domain
	dialer net.Dialer
	tls    *tls.Config
	pool   *pool
}

var _ queue.Deliverer = (*Client)(nil)

// New validates o, fills in the defaults and returns a Client.
func New(o Options) (*Client, error) {
	if o.Hostname == "" {
		return nil, errors.New("smtpclient: Options.Hostname (the EHLO name) is required")
	}
	if !validHostname(o.Hostname) {
		return nil, fmt.Errorf("smtpclient: Options.Hostname %q is not a host name or address literal", o.Hostname)
	}
	if o.Port == "" {
		o.Port = DefaultPort
	}
	if err := checkPort(o.Port); err != nil {
		return nil, fmt.Errorf("smtpclient: Options.Port: %w", err)
	}
	c := &Client{}
	if o.RelayHost != "" {
		d, err := parseRelayHost(o.RelayHost)
		if err != nil {
			return nil, fmt.Errorf("smtpclient: Options.RelayHost: %w", err)
		}
		c.relay = &d
	}
	if o.Resolver == nil {
		o.Resolver = net.DefaultResolver
	}
	for _, d := range []*time.Duration{&o.DialTimeout, &o.CommandTimeout, &o.DataTimeout, &o.IdleTimeout} {
		if *d < 0 {
			return nil, fmt.Errorf("smtpclient: negative timeout %v", *d)
		}
	}
	if o.DialTimeout == 0 {
		o.DialTimeout = DefaultDialTimeout
	}
	if o.CommandTimeout == 0 {
		o.CommandTimeout = DefaultCommandTimeout
	}
	if o.DataTimeout == 0 {
		o.DataTimeout = DefaultDataTimeout
	}
	if o.MaxIdle == 0 {
		o.MaxIdle = DefaultMaxIdle
	}
	if o.IdleTimeout == 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	c.tls = o.TLSConfig
	if c.tls == nil {
		// Opportunistic TLS authenticates nobody, so any version and any
		// certificate beat plaintext (RFC 7435 §3; Postfix "may").
		c.tls = &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS10}
	}
	c.o = o
	c.log = o.Logger
	c.dialer = net.Dialer{Timeout: o.DialTimeout}
	c.pool = newPool(max(o.MaxIdle, 0), o.IdleTimeout)
	return c, nil
}

// Close closes the idle connections (with QUIT) and waits for that. Deliver
// calls after Close fail temporarily; sessions still in use when Close is
// called are closed when their delivery ends.
func (c *Client) Close() error {
	c.pool.close()
	return nil
}

// Deliver delivers the message read from body to rcpts, returning one
// Result per recipient, in the order of rcpts. See the package comment.
func (c *Client) Deliver(ctx context.Context, from string, rcpts []string, body io.Reader) []queue.Result {
	out := make([]queue.Result, len(rcpts))
	for i, r := range rcpts {
		out[i].Rcpt = r
	}
	if len(rcpts) == 0 {
		return out
	}
	fillAll := func(f failure) {
		for i := range out {
			out[i] = f.result(rcpts[i])
		}
	}
	if c.pool.isClosed() {
		fillAll(failure{enh: "4.3.2", msg: "SMTP client is shut down", temp: true})
		return out
	}
	qid, env, _ := queue.EnvelopeFromContext(ctx)
	m, err := newMessage(from, env, body)
	if err != nil {
		fillAll(failure{enh: "4.3.0", msg: fmt.Sprintf("reading the queued message: %v", err), temp: true})
		return out
	}
	log := c.log
	if qid != "" {
		log = log.With("id", qid)
	}
	if bad := badText(from); bad != "" {
		// The queue validates paths; this guards the command line itself.
		fillAll(failure{enh: "5.1.7", msg: fmt.Sprintf("invalid sender address <%s>: %s", from, bad)})
		return out
	}
	for _, g := range c.group(rcpts, out) {
		c.deliverGroup(ctx, log, m, g, rcpts, out)
	}
	return out
}

// group is the recipients (indexes into rcpts) going to one destination.
type group struct {
	domain string // the lowercased recipient domain, "" with a relay host
	idx    []int
}

// group groups the recipients by destination. Recipients that cannot be
// routed get their (permanent) result in out at once.
func (c *Client) group(rcpts []string, out []queue.Result) []*group {
	var gs []*group
	byDomain := make(map[string]*group)
	for i, r := range rcpts {
		if bad := badText(r); bad != "" {
			out[i] = failure{enh: "5.1.3", msg: fmt.Sprintf("invalid recipient address <%s>: %s", r, bad)}.result(r)
			continue
		}
		var dom string
		if c.relay == nil {
			at := strings.LastIndexByte(r, '@')
			if at < 0 || at == len(r)-1 {
				out[i] = failure{enh: "5.1.3", msg: fmt.Sprintf("recipient address <%s> has no domain to route by", r)}.result(r)
				continue
			}
			dom = strings.ToLower(r[at+1:])
		}
		g := byDomain[dom]
		if g == nil {
			g = &group{domain: dom}
			byDomain[dom] = g
			gs = append(gs, g)
		}
		g.idx = append(g.idx, i)
	}
	return gs
}

// deliverGroup routes one group and delivers it, maxRcpts recipients per
// transaction. A recipient listed twice gets the result of its first copy.
func (c *Client) deliverGroup(ctx context.Context, log *slog.Logger, m *message, g *group, rcpts []string, out []queue.Result) {
	var targets []target
	var f *failure
	if c.relay != nil {
		targets, f = c.route(ctx, *c.relay)
	} else {
		log = log.With("domain", g.domain)
		targets, f = c.routeDomain(ctx, g.domain)
	}
	if f != nil {
		log.Debug("no route", "error", f.msg)
		for _, i := range g.idx {
			out[i] = f.result(rcpts[i])
		}
		return
	}
	first := make(map[string]int, len(g.idx))
	var uniq []int
	for _, i := range g.idx {
		if _, dup := first[rcpts[i]]; !dup {
			first[rcpts[i]] = i
			uniq = append(uniq, i)
		}
	}
	for len(uniq) > 0 {
		n := min(len(uniq), maxRcpts)
		c.deliverChunk(ctx, log, m, targets, uniq[:n], rcpts, out)
		uniq = uniq[n:]
	}
	for _, i := range g.idx {
		if j := first[rcpts[i]]; j != i {
			out[i] = out[j]
			out[i].Rcpt = rcpts[i]
		}
	}
}

// deliverChunk makes one delivery attempt of m to the recipients idx: on an
// idle session to one of targets if there is one, else on a new connection
// to the first target address that accepts a session.
func (c *Client) deliverChunk(ctx context.Context, log *slog.Logger, m *message, targets []target, idx []int, rcpts []string, out []queue.Result) {
	tx := &txn{m: m, idx: idx, rcpts: rcpts, out: out}
	for _, t := range targets {
		s := c.pool.get(t.key())
		if s == nil {
			continue
		}
		if !c.transact(ctx, s, tx) {
			return
		}
		// The idle session was dead before the server answered anything:
		// nothing happened; its siblings are probably dead too (a server
		// restart). Retry once, on a fresh connection.
		log.Debug("reused connection is dead; retrying on a new one", "host", s.host, "addr", s.addr)
		c.pool.drop(t.key())
		break
	}

	last := failure{enh: "4.4.4", msg: "no server to connect to", temp: true}
	tried, notFound, lookups := 0, 0, 0
targets:
	for _, t := range targets {
		if tried == maxAddrs || ctx.Err() != nil {
			break
		}
		addrs, f := c.addrs(ctx, t)
		if f != nil {
			lookups++
			if f.notFound {
				notFound++
			}
			last = *f
			continue
		}
		for _, a := range addrs {
			if tried == maxAddrs || ctx.Err() != nil {
				break targets
			}
			tried++
			s, f := c.connect(ctx, log, t, a)
			if f != nil {
				last = *f
				continue
			}
			c.transact(ctx, s, tx) // a fresh session is never retried
			return
		}
	}
	if ctx.Err() != nil {
		last = failure{enh: "4.4.7", msg: fmt.Sprintf("delivery interrupted: %v", context.Cause(ctx)), temp: true}
	} else if tried == 0 && lookups == len(targets) && notFound == lookups {
		// Every MX host name is unknown to the DNS: no host can ever be
		// reached (RFC 5321 §5.1: "unable to deliver").
		last = failure{enh: "5.4.4", msg: "unable to route: " + last.msg}
	}
	log.Debug("delivery attempt failed", "error", last.msg, "temporary", last.temp)
	for _, i := range idx {
		out[i] = last.result(rcpts[i])
	}
}

// failure is a result decided locally, or for a whole transaction.
type failure struct {
	code     int    // SMTP reply code, 0 if no reply
	enh      string // RFC 3463 status
	msg      string
	temp     bool
	remote   string // RemoteMTA
	notFound bool   // a DNS "not found" (for deliverChunk's bookkeeping)
}

func (f failure) result(rcpt string) queue.Result {
	return queue.Result{Rcpt: rcpt, Code: f.code, Enhanced: f.enh, Msg: f.msg, Temporary: f.temp, RemoteMTA: f.remote}
}

// badText reports why s cannot go into a command line, or "".
func badText(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f {
			return "control character"
		}
	}
	return ""
}

// validHostname accepts a DNS name or an address literal ("[192.0.2.1]")
// for the EHLO argument (RFC 5321 §4.1.1.1).
func validHostname(h string) bool {
	if strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]") {
		return len(h) > 2 && badText(h) == "" && !strings.ContainsAny(h, " ")
	}
	if len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(strings.TrimSuffix(h, "."), ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for i := 0; i < len(label); i++ {
			b := label[i]
			if !(b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '-' || b == '_') {
				return false
			}
		}
	}
	return true
}

func checkPort(p string) error {
	n, err := strconv.Atoi(p)
	if err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%q is not a port number (1-65535)", p)
	}
	return nil
}
