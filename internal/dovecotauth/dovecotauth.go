// Package dovecotauth is the server side of the Dovecot authentication
// protocol (auth client protocol, version 1), as Postfix speaks it with
// smtpd_sasl_type = dovecot (src/xsasl/xsasl_dovecot_server.c): `mailgate
// serve --sasl` (SPEC §9). Postfix then needs no Dovecot for SMTP AUTH; the
// credentials are checked by package authn against the accounts, with the
// same per-network back-off and credential cache as the SMTP listeners.
//
// # Protocol
//
// Lines end with LF; fields are separated by TAB. Field values use Dovecot's
// tab-escaping: \001 followed by '0' (NUL), '1' (\001), 't' (TAB), 'r' (CR),
// 'n' or 'l' (LF), or any other byte (that byte). Parameters after the
// required ones are "name=value" pairs or bare flags; unknown ones are
// ignored.
//
// On connect the server sends its handshake at once:
//
//	VERSION	1	2
//	MECH	PLAIN	plaintext
//	MECH	LOGIN	plaintext
//	SPID	<process id>
//	CUID	<connection number>
//	COOKIE	<32 hex digits, random per server>
//	DONE
//
// The client must send "VERSION	1	<minor>" and then "CPID	<pid>" (major
// version 1, numbers in decimal) within HandshakeTimeout. Then it sends
//
//	AUTH	<id>	<mech>	service=<s>	[secured]	[nologin]	[lip=<ip>]	[rip=<ip>]	[resp=<base64>]
//	CONT	<id>	<base64>
//
// and the server answers each request with
//
//	CONT	<id>	<base64 challenge>        the mechanism needs more data
//	OK	<id>	user=<canonical address>  authenticated
//	FAIL	<id>	[user=<login>]	reason=<text>	[temp]
//
// PLAIN (RFC 4616): the response is authzid NUL authcid NUL password, from
// resp= or, without it, from the CONT that answers an empty challenge. The
// authorization identity must be empty or equal (ignoring case) to the
// authentication identity: proxy authorization is not offered. LOGIN: the
// server asks "Username:" (unless resp= carries it) and then "Password:".
//
// The client address for authn's back-off is rip=; without a valid rip= all
// such attempts share one bucket (see package authn). The answer to a failed
// check is FAIL with reason= the text of authn's reply ("Authentication
// credentials invalid"); Postfix turns it into "535 5.7.8 Error:
// authentication failed: <reason>". A temporary failure (authn's 454, no
// directory loaded, a wait that would outlast 8 s) adds the "temp" flag,
// which Postfix answers with "454 4.7.0 Temporary authentication failure".
// Postfix waits 10 s for an answer (AUTH_TIMEOUT); authn's back-off can be
// longer, so a check that has not been decided after 8 s is answered
// with a temporary failure, and the abandoned check verifies nothing (authn
// stops waiting when its context ends).
//
// # Concurrency and limits
//
// One connection may carry several requests at once (each Postfix smtpd
// process keeps one connection; other clients may pipeline): requests are
// identified by their id, checks run concurrently, and answers are written as
// they are ready. The reader enforces:
//
//   - a line is at most MaxLineLength bytes; a longer line, a line with a
//     control character other than TAB and the escape byte, a broken escape,
//     a malformed handshake, an unknown command, a malformed id, an AUTH
//     without service=, or an id already in use closes the connection;
//   - at most MaxPending requests may wait for a CONT; when one more arrives
//     the oldest is answered with FAIL and forgotten (a client that gave up
//     in the middle of LOGIN leaves such requests behind);
//   - at most MaxInFlight checks run at once per connection; a request
//     beyond that is answered FAIL ... temp;
//   - at most MaxConns connections are served; more are closed at once.
//
// A CONT for an id that is not waiting for one is answered with FAIL (or
// closes the connection when the id is being checked, since a second answer
// for it would follow). An established connection has no idle timeout:
// Postfix keeps it open and would take a closed one for a failed
// authentication.
package dovecotauth

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mailgate/mailgate/internal/authn"
	"github.com/mailgate/mailgate/internal/connserver"
	"github.com/mailgate/mailgate/internal/directory"
	"github.com/mailgate/mailgate/internal/policy"
)

// Limits and timeouts of the server.
const (
	MaxLineLength    = 16384 // bytes, without the LF (Dovecot's own expectation)
	MaxPending       = 16    // requests waiting for a CONT, per connection
	MaxInFlight      = 16    // credential checks running, per connection
	MaxConns         = 1024  // connections served at once
	HandshakeTimeout = 30 * time.Second
	writeTimeout     = 10 * time.Second // per answer
)

// authWait is the longest wait for authn's answer (back-off included),
// below Postfix's 10 s AUTH_TIMEOUT; a variable for the tests.
var authWait = 8 * time.Second

// ErrServerClosed is returned by Serve after Close.
var ErrServerClosed = errors.New("dovecotauth: server closed")

// Server answers Dovecot authentication protocol clients. Snapshot returns
// the directory in force (nil when none is loaded); Auth checks the
// credentials.
type Server struct {
	Snapshot func() *directory.Snapshot
	Auth     *authn.Authenticator // same back-off and cache as the SMTP server
	Logger   *slog.Logger

	once   sync.Once
	cs     connserver.Server
	cuid   atomic.Uint64
	cookie string
}

// conns returns the connection plumbing (and draws the cookie), set up on
// first use.
func (s *Server) conns() *connserver.Server {
	s.once.Do(func() {
		var b [16]byte
		_, _ = rand.Read(b[:])
		s.cookie = hex.EncodeToString(b[:])
		s.cs.Handle = s.handle
		s.cs.Closed = ErrServerClosed
		s.cs.Logger = s.logger()
		s.cs.MaxConns = MaxConns
	})
	return &s.cs
}

func (s *Server) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

// Serve accepts connections on l until Close, then returns ErrServerClosed.
// l is closed when Serve returns.
func (s *Server) Serve(l net.Listener) error { return s.conns().Serve(l) }

// Close stops every Serve, closes all connections (abandoning their checks)
// and waits for their goroutines to end.
func (s *Server) Close() error { return s.conns().Close() }

// handle serves one connection (connserver closes it afterwards).
func (s *Server) handle(nc net.Conn) {
	ctx, cancel := context.WithCancel(context.Background())
	c := &conn{
		srv:      s,
		nc:       nc,
		ctx:      ctx,
		cancel:   cancel,
		pending:  map[uint32]*request{},
		inFlight: map[uint32]bool{},
		log:      s.logger().With("remote", nc.RemoteAddr().String()),
	}
	c.serve()
}

// request is an authentication that waits for a CONT.
type request struct {
	id    uint32
	mech  string // "PLAIN" or "LOGIN"
	user  string // LOGIN: the user name, once received
	rip   netip.Addr
	seq   uint64 // arrival order, for eviction
	gotID bool   // LOGIN: user name received
}

type conn struct {
	srv    *Server
	nc     net.Conn
	ctx    context.Context
	cancel context.CancelFunc
	log    *slog.Logger

	wmu sync.Mutex // serializes writes

	mu       sync.Mutex // guards pending, inFlight, seq
	pending  map[uint32]*request
	inFlight map[uint32]bool
	seq      uint64
	checks   sync.WaitGroup
}

func (c *conn) close() {
	c.cancel()
	_ = c.nc.Close()
}

func (c *conn) serve() {
	defer func() {
		c.close()
		c.checks.Wait()
	}()
	cuid := c.srv.cuid.Add(1)
	if !c.write(
		[]string{"VERSION", "1", "2"},
		[]string{"MECH", "PLAIN", "plaintext"},
		[]string{"MECH", "LOGIN", "plaintext"},
		[]string{"SPID", strconv.Itoa(os.Getpid())},
		[]string{"CUID", strconv.FormatUint(cuid, 10)},
		[]string{"COOKIE", c.srv.cookie},
		[]string{"DONE"},
	) {
		return
	}
	r := bufio.NewReaderSize(c.nc, MaxLineLength+1)
	_ = c.nc.SetReadDeadline(time.Now().Add(HandshakeTimeout))
	if err := c.handshake(r); err != nil {
		c.log.Info("dovecotauth: handshake failed; closing", "err", err)
		return
	}
	_ = c.nc.SetReadDeadline(time.Time{})
	for {
		fields, err := readLine(r)
		if err != nil {
			if !errors.Is(err, io.EOF) && c.ctx.Err() == nil {
				c.log.Info("dovecotauth: closing connection", "err", err)
			}
			return
		}
		if err := c.command(fields); err != nil {
			c.log.Info("dovecotauth: protocol error; closing connection", "err", err)
			return
		}
	}
}

// readLine reads one line and parses it.
func readLine(r *bufio.Reader) ([]string, error) {
	line, err := r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		return nil, fmt.Errorf("line longer than %d bytes", MaxLineLength)
	}
	if err != nil {
		if len(line) > 0 && errors.Is(err, io.EOF) {
			return nil, errors.New("connection closed in the middle of a line")
		}
		return nil, err
	}
	return ParseLine(line[:len(line)-1])
}

func (c *conn) handshake(r *bufio.Reader) error {
	f, err := readLine(r)
	if err != nil {
		return err
	}
	if len(f) < 3 || f[0] != "VERSION" || f[1] != "1" || !isNumber(f[2]) {
		return fmt.Errorf("expected VERSION 1 <minor>, got %q", strings.Join(f, " "))
	}
	f, err = readLine(r)
	if err != nil {
		return err
	}
	if len(f) < 2 || f[0] != "CPID" || !isNumber(f[1]) {
		return fmt.Errorf("expected CPID <pid>, got %q", strings.Join(f, " "))
	}
	return nil
}

func isNumber(s string) bool {
	if s == "" || len(s) > 10 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func parseID(s string) (uint32, error) {
	if !isNumber(s) {
		return 0, fmt.Errorf("malformed request id %q", s)
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("malformed request id %q", s)
	}
	return uint32(n), nil
}

// command handles one line after the handshake; an error closes the
// connection.
func (c *conn) command(f []string) error {
	switch f[0] {
	case "AUTH":
		return c.auth(f[1:])
	case "CONT":
		return c.cont(f[1:])
	}
	return fmt.Errorf("unknown command %q", f[0])
}

func (c *conn) auth(args []string) error {
	if len(args) < 2 {
		return errors.New("AUTH without id and mechanism")
	}
	id, err := parseID(args[0])
	if err != nil {
		return err
	}
	var (
		service  string
		resp     string
		haveResp bool
		rip      netip.Addr
	)
	for _, p := range args[2:] {
		name, value, _ := strings.Cut(p, "=")
		switch name {
		case "service":
			service = value
		case "resp":
			resp, haveResp = value, true
		case "rip":
			if a, err := netip.ParseAddr(value); err == nil {
				rip = a.Unmap()
			}
		}
	}
	if service == "" {
		return errors.New("AUTH without service=")
	}
	c.mu.Lock()
	if _, dup := c.pending[id]; dup || c.inFlight[id] {
		c.mu.Unlock()
		return fmt.Errorf("request id %d already in use", id)
	}
	c.mu.Unlock()

	req := &request{id: id, rip: rip}
	switch {
	case strings.EqualFold(args[1], "PLAIN"):
		req.mech = "PLAIN"
		if !haveResp {
			return c.challenge(req, "")
		}
		c.plain(req, resp)
	case strings.EqualFold(args[1], "LOGIN"):
		req.mech = "LOGIN"
		if !haveResp || resp == "" {
			return c.challenge(req, "Username:")
		}
		user, ok := decode(resp)
		if !ok {
			c.fail(id, "", "Invalid base64 data in initial response", false)
			return nil
		}
		req.user, req.gotID = user, true
		return c.challenge(req, "Password:")
	default:
		c.fail(id, "", "Unsupported authentication mechanism", false)
	}
	return nil
}

// challenge remembers req as waiting for a CONT and sends the challenge.
func (c *conn) challenge(req *request, text string) error {
	c.mu.Lock()
	var evicted *request
	if _, ok := c.pending[req.id]; !ok && len(c.pending) >= MaxPending {
		for _, p := range c.pending {
			if evicted == nil || p.seq < evicted.seq {
				evicted = p
			}
		}
		delete(c.pending, evicted.id)
	}
	c.seq++
	req.seq = c.seq
	c.pending[req.id] = req
	c.mu.Unlock()
	if evicted != nil {
		c.log.Info("dovecotauth: too many unfinished requests; dropping the oldest", "id", evicted.id)
		c.fail(evicted.id, evicted.user, "Too many unfinished authentication requests", true)
	}
	c.write([]string{"CONT", strconv.FormatUint(uint64(req.id), 10), base64.StdEncoding.EncodeToString([]byte(text))})
	return nil
}

func (c *conn) cont(args []string) error {
	if len(args) < 1 {
		return errors.New("CONT without id")
	}
	id, err := parseID(args[0])
	if err != nil {
		return err
	}
	data := ""
	if len(args) > 1 {
		data = args[1]
	}
	c.mu.Lock()
	req, ok := c.pending[id]
	busy := c.inFlight[id]
	delete(c.pending, id)
	c.mu.Unlock()
	if busy {
		return fmt.Errorf("CONT for request %d, which is being checked", id)
	}
	if !ok {
		c.fail(id, "", "Unknown authentication request", false)
		return nil
	}
	switch {
	case req.mech == "PLAIN":
		c.plain(req, data)
	case !req.gotID:
		user, ok := decode(data)
		if !ok {
			c.fail(id, "", "Invalid base64 data in continued response", false)
			return nil
		}
		req.user, req.gotID = user, true
		return c.challenge(req, "Password:")
	default:
		password, ok := decode(data)
		if !ok {
			c.fail(id, req.user, "Invalid base64 data in continued response", false)
			return nil
		}
		c.check(req, req.user, password)
	}
	return nil
}

// plain decodes a PLAIN response (RFC 4616) and checks it.
func (c *conn) plain(req *request, b64 string) {
	msg, ok := decode(b64)
	if !ok {
		c.fail(req.id, "", "Invalid base64 data in response", false)
		return
	}
	authz, rest, ok1 := strings.Cut(msg, "\x00")
	authc, password, ok2 := strings.Cut(rest, "\x00")
	if !ok1 || !ok2 || authc == "" || strings.IndexByte(password, 0) >= 0 {
		c.fail(req.id, "", "Invalid PLAIN response", false)
		return
	}
	if authz != "" && !strings.EqualFold(authz, authc) {
		c.fail(req.id, authc, "Proxy authorization is not supported", false)
		return
	}
	c.check(req, authc, password)
}

func decode(s string) (string, bool) {
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil {
		return "", false
	}
	return string(b), true
}

// check runs the credential check of req in its own goroutine.
func (c *conn) check(req *request, login, password string) {
	c.mu.Lock()
	if len(c.inFlight) >= MaxInFlight {
		c.mu.Unlock()
		c.fail(req.id, login, "Too many concurrent authentication requests", true)
		return
	}
	c.inFlight[req.id] = true
	c.checks.Add(1)
	c.mu.Unlock()
	go func() {
		defer c.checks.Done()
		reply := c.verify(req, login, password)
		c.mu.Lock()
		delete(c.inFlight, req.id)
		c.mu.Unlock()
		if reply != nil {
			c.write(reply)
		}
	}()
}

// verify returns the answer to a request (nil when the connection is gone).
func (c *conn) verify(req *request, login, password string) []string {
	id := strconv.FormatUint(uint64(req.id), 10)
	var snap *directory.Snapshot
	if c.srv.Snapshot != nil {
		snap = c.srv.Snapshot()
	}
	if snap == nil || c.srv.Auth == nil {
		c.log.Warn("dovecotauth: no directory loaded; authentication deferred", "id", req.id)
		return failLine(id, login, authn.ErrTemporaryFailure.Text, true)
	}
	ctx, cancel := context.WithTimeout(c.ctx, authWait)
	defer cancel()
	addr, err := c.srv.Auth.Authenticate(ctx, snap, req.rip, login, password)
	if err == nil {
		user := addr.String()
		if !safe(user) {
			c.log.Error("dovecotauth: account address cannot be sent in the protocol", "id", req.id)
			return failLine(id, "", authn.ErrTemporaryFailure.Text, true)
		}
		c.log.Debug("dovecotauth: authenticated", "id", req.id, "user", user, "mech", req.mech, "rip", req.rip.String())
		return []string{"OK", id, "user=" + user}
	}
	var r policy.Reply
	switch {
	case errors.As(err, &r):
		c.log.Info("dovecotauth: authentication failed", "id", req.id, "mech", req.mech, "rip", req.rip.String(), "reply", r.String())
		return failLine(id, login, r.Text, r.Temporary())
	case c.ctx.Err() != nil:
		return nil
	default:
		c.log.Info("dovecotauth: authentication not decided in time", "id", req.id, "rip", req.rip.String(), "err", err)
		return failLine(id, login, authn.ErrTemporaryFailure.Text, true)
	}
}

// fail sends a FAIL answer.
func (c *conn) fail(id uint32, login, reason string, temp bool) {
	c.write(failLine(strconv.FormatUint(uint64(id), 10), login, reason, temp))
}

func failLine(id, login, reason string, temp bool) []string {
	f := []string{"FAIL", id}
	if login != "" && safe(login) && len(login) <= 512 {
		f = append(f, "user="+login)
	}
	f = append(f, "reason="+reason)
	if temp {
		f = append(f, "temp")
	}
	return f
}

// safe reports whether s can be sent unescaped: Postfix does not undo the
// tab-escaping, so values with control characters are left out instead.
func safe(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f {
			return false
		}
	}
	return true
}

// write sends lines; on error it closes the connection and returns false.
func (c *conn) write(lines ...[]string) bool {
	var b []byte
	for _, l := range lines {
		b = AppendLine(b, l)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.ctx.Err() != nil {
		return false
	}
	_ = c.nc.SetWriteDeadline(time.Now().Add(writeTimeout))
	if _, err := c.nc.Write(b); err != nil {
		c.log.Info("dovecotauth: write failed; closing connection", "err", err)
		c.close()
		return false
	}
	return true
}

// ParseLine splits one protocol line (without its LF) into TAB-separated
// fields and undoes the tab-escaping of each. It refuses an empty line, a
// line longer than MaxLineLength, control characters other than TAB and the
// escape byte \001, and an escape byte at the end of a field.
func ParseLine(line []byte) ([]string, error) {
	if len(line) == 0 {
		return nil, errors.New("empty line")
	}
	if len(line) > MaxLineLength {
		return nil, fmt.Errorf("line longer than %d bytes", MaxLineLength)
	}
	var fields []string
	var cur []byte
	for i := 0; i < len(line); i++ {
		ch := line[i]
		switch {
		case ch == '\t':
			fields = append(fields, string(cur))
			cur = cur[:0]
		case ch == 1:
			if i+1 >= len(line) || line[i+1] == '\t' {
				return nil, fmt.Errorf("escape byte at the end of a field at offset %d", i)
			}
			i++
			switch e := line[i]; e {
			case '0':
				cur = append(cur, 0)
			case '1':
				cur = append(cur, 1)
			case 't':
				cur = append(cur, '\t')
			case 'r':
				cur = append(cur, '\r')
			case 'n', 'l':
				cur = append(cur, '\n')
			default:
				if e < 0x20 || e == 0x7f {
					return nil, fmt.Errorf("control character 0x%02X at offset %d", e, i)
				}
				cur = append(cur, e)
			}
		case ch < 0x20 || ch == 0x7f:
			return nil, fmt.Errorf("control character 0x%02X at offset %d", ch, i)
		default:
			cur = append(cur, ch)
		}
	}
	fields = append(fields, string(cur))
	if fields[0] == "" {
		return nil, errors.New("empty command name")
	}
	return fields, nil
}

// AppendLine appends the fields, tab-escaped and TAB-separated, and a LF.
func AppendLine(b []byte, fields []string) []byte {
	for i, f := range fields {
		if i > 0 {
			b = append(b, '\t')
		}
		for j := 0; j < len(f); j++ {
			switch ch := f[j]; ch {
			case 0:
				b = append(b, 1, '0')
			case 1:
				b = append(b, 1, '1')
			case '\t':
				b = append(b, 1, 't')
			case '\r':
				b = append(b, 1, 'r')
			case '\n':
				b = append(b, 1, 'n')
			default:
				b = append(b, ch)
			}
		}
	}
	return append(b, '\n')
}
