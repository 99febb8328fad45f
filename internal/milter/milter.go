// Package milter is the milter of `mailgate serve --milter` (SPEC §9): it runs
// the submission checks of SPEC §6 for a Postfix that keeps its own queue and
// delivery, with the same verdicts, codes and texts as the submission
// listeners of `mailgate serve` (package smtpsrv).
//
// # Protocol
//
// The milter protocol is Sendmail's mail filter protocol as Postfix speaks it
// (milter8.c), implemented by github.com/emersion/go-milter (protocol version
// 2). At negotiation the milter asks Postfix not to send the connect, HELO,
// RCPT and end-of-header events, and for the right to change header fields
// (SMFIF_CHGHDRS), which it uses only to delete fields (below).
//
// Per message:
//
//   - MAIL FROM: the login is the value of the {auth_authen} macro, which
//     Postfix sends with MAIL FROM (it is in the default milter_mail_macros);
//     the envelope sender is the MAIL FROM address ("" for the null sender).
//     Without {auth_authen} the session is not authenticated: the milter
//     accepts the message at once (SMFIR_ACCEPT) and sees nothing more of it.
//     SPEC §6 is about authenticated submission; inbound mail is Postfix's.
//   - Header fields: go-milter hands over each field as a name and a value.
//     Postfix removes white space between the name and the colon, eats one
//     space after the colon (SMFIP_HDR_LEADSPC is a version 6 option, not
//     negotiated), and separates the lines of a folded field with a bare LF.
//     The header block is rebuilt as "Name: value\r\n" with every LF of the
//     value turned into CRLF, so folding is kept; only the white space around
//     the colon is not what the client wrote (it does not matter to any §6
//     check). Postfix hides its own Received field from milters.
//   - Body chunks: scanned, not stored.
//   - End of message: the verdict, as `mailgate serve` computes it at the end
//     of DATA:
//     1. a bare CR, a bare LF or a NUL anywhere in the message (header fields
//     as rebuilt, then the body) → 550 5.6.0 with the texts of smtpsrv;
//     2. no snapshot (directory not loaded) → 451 4.3.0 Temporary lookup
//     failure, never an accept;
//     3. Return-Path fields, and Authentication-Results fields whose
//     authserv-id is our host name, are left out of the checked block (as
//     smtpsrv strips them), and
//     policy.CheckSubmission(snapshot, login, envelope sender, header+CRLF)
//     decides. A rejection is sent as SMFIR_REPLYCODE with the exact code,
//     enhanced code and text of the Submission's Reply; Postfix passes it
//     to the client unchanged ('%' is doubled here because Postfix turns
//     "%%" back into '%' and drops a single '%').
//     4. accepted: the stripped fields are deleted from the message
//     (SMFIR_CHGHEADER with an empty value, highest index first so that
//     the indexes stay valid), and the message is accepted.
//
// The body is not passed to CheckSubmission: the only checks of the header
// parser that look at the body are bare CR, bare LF and NUL, and step 1 has
// already refused those with the reply smtpsrv gives (which also checks
// them first, before the envelope). The header block kept in memory is bounded:
// once it is larger than header.MaxBlock no further field is appended, which
// does not change the verdict (the parser refuses the block at that size
// anyway, or earlier).
//
// # Limits of the milter view
//
// Postfix sends header values as C strings, so a NUL inside a header field
// cuts the value there; the milter cannot see it. Postfix's
// message_reject_characters = \0 closes that gap. A bare LF ends a line for
// Postfix before the milter sees the message (smtpd_forbid_bare_newline
// decides whether Postfix refuses it); a bare CR and a NUL in the body do
// reach the milter and are refused.
package milter

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/textproto"
	"sort"
	"strings"
	"sync"

	gomilter "github.com/emersion/go-milter"

	"github.com/mailgate/mailgate/internal/directory"
	"github.com/mailgate/mailgate/internal/header"
	"github.com/mailgate/mailgate/internal/policy"
)

// ErrServerClosed is returned by Serve after Close.
var ErrServerClosed = errors.New("milter: server closed")

// Replies of the milter that do not come from package policy. The line-ending
// texts are those of the SMTP server (internal/smtpsrv).
var (
	ReplyTempFail = policy.Reply{Code: 451, Enhanced: "4.3.0", Text: "Temporary lookup failure"}
	replyBareCR   = policy.Reply{Code: 550, Enhanced: "5.6.0", Text: "Message contains a bare CR; lines must end with CRLF (RFC 5321 section 2.3.8)"}
	replyBareLF   = policy.Reply{Code: 550, Enhanced: "5.6.0", Text: "Message contains a bare LF; lines must end with CRLF (RFC 5321 section 2.3.8)"}
	replyNUL      = policy.Reply{Code: 550, Enhanced: "5.6.0", Text: "Message contains a NUL character"}
)

// Server is the milter server. Snapshot returns the directory in force, or nil
// when none is loaded. Hostname is our host name for Authentication-Results
// stripping; when empty, the snapshot's hostname setting is used.
type Server struct {
	Snapshot func() *directory.Snapshot
	Hostname string
	Logger   *slog.Logger

	mu     sync.Mutex
	closed bool
	lns    []*trackingListener
}

// Serve accepts milter connections on l until Close; it then returns
// ErrServerClosed. l is closed when Serve returns.
func (s *Server) Serve(l net.Listener) error {
	tl := &trackingListener{Listener: l, conns: map[net.Conn]struct{}{}}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		_ = l.Close()
		return ErrServerClosed
	}
	s.lns = append(s.lns, tl)
	s.mu.Unlock()

	ms := &gomilter.Server{
		NewMilter: func() gomilter.Milter { return &session{srv: s} },
		Actions:   gomilter.OptChangeHeader,
		Protocol:  gomilter.OptNoConnect | gomilter.OptNoHelo | gomilter.OptNoRcptTo | gomilter.OptNoEOH,
	}
	// go-milter's own Close is not used: it writes a flag that Serve reads
	// without synchronization. Closing the listener ends Serve just as well.
	err := ms.Serve(tl)
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return ErrServerClosed
	}
	return err
}

// Close stops every Serve and closes the open milter connections (Postfix
// then applies its milter_default_action to the messages in progress).
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	lns := s.lns
	s.lns = nil
	s.mu.Unlock()
	var first error
	for _, tl := range lns {
		if err := tl.closeAll(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

func (s *Server) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

// trackingListener remembers the accepted connections so that Close can
// end them.
type trackingListener struct {
	net.Listener
	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{}
}

func (tl *trackingListener) Accept() (net.Conn, error) {
	c, err := tl.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tl.mu.Lock()
	defer tl.mu.Unlock()
	if tl.closed {
		_ = c.Close()
		return nil, net.ErrClosed
	}
	tc := &trackedConn{Conn: c, tl: tl}
	tl.conns[tc] = struct{}{}
	return tc, nil
}

func (tl *trackingListener) closeAll() error {
	tl.mu.Lock()
	tl.closed = true
	conns := tl.conns
	tl.conns = map[net.Conn]struct{}{}
	tl.mu.Unlock()
	err := tl.Listener.Close()
	for c := range conns {
		_ = c.(*trackedConn).Conn.Close()
	}
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

type trackedConn struct {
	net.Conn
	tl   *trackingListener
	once sync.Once
}

// Read reads with quick ACKs (see quickAck).
func (c *trackedConn) Read(b []byte) (int, error) {
	quickAck(c.Conn)
	return c.Conn.Read(b)
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.tl.mu.Lock()
		delete(c.tl.conns, c)
		c.tl.mu.Unlock()
	})
	return err
}

// strip is a header field to delete when the message is accepted.
type strip struct {
	name  string // as Postfix gave it
	index int    // 1-based occurrence among the fields of that name (case-insensitive)
}

// session is the state of one milter connection; go-milter makes a new one
// after every final answer.
type session struct {
	srv *Server

	active bool // an authenticated message is in progress
	login  string
	sender string
	host   string // our host name, for Authentication-Results

	hdr    []byte         // the header block to check (without stripped fields)
	seen   map[string]int // occurrences per lowercase field name
	strips []strip
	lines  lineScanner
}

var _ gomilter.Milter = (*session)(nil)

func (m *session) reset() {
	*m = session{srv: m.srv}
}

func (m *session) Connect(string, string, uint16, net.IP, *gomilter.Modifier) (gomilter.Response, error) {
	return gomilter.RespContinue, nil
}

func (m *session) Helo(string, *gomilter.Modifier) (gomilter.Response, error) {
	return gomilter.RespContinue, nil
}

func (m *session) MailFrom(from string, mod *gomilter.Modifier) (gomilter.Response, error) {
	m.reset()
	login := mod.Macros["{auth_authen}"]
	if login == "" {
		login = mod.Macros["auth_authen"]
	}
	if login == "" {
		// Not an authenticated session: SPEC §6 does not apply.
		return gomilter.RespAccept, nil
	}
	m.active, m.login, m.sender = true, login, from
	m.host = m.srv.Hostname
	m.seen = map[string]int{}
	return gomilter.RespContinue, nil
}

func (m *session) RcptTo(string, *gomilter.Modifier) (gomilter.Response, error) {
	return gomilter.RespContinue, nil
}

func (m *session) Header(name, value string, _ *gomilter.Modifier) (gomilter.Response, error) {
	if !m.active {
		return gomilter.RespContinue, nil
	}
	field := rebuildField(name, value)
	m.lines.feed(field)
	key := strings.ToLower(name)
	m.seen[key]++
	if m.dropped(key, value) {
		m.strips = append(m.strips, strip{name: name, index: m.seen[key]})
		return gomilter.RespContinue, nil
	}
	if len(m.hdr) <= header.MaxBlock {
		m.hdr = append(m.hdr, field...)
	}
	return gomilter.RespContinue, nil
}

// dropped reports whether a field is one that smtpsrv strips before the
// checks: Return-Path, and Authentication-Results with our authserv-id.
func (m *session) dropped(key, value string) bool {
	switch key {
	case "return-path":
		return true
	case "authentication-results":
		id := strings.TrimLeft(value, " \t\r\n")
		if i := strings.IndexAny(id, "; \t\r\n"); i >= 0 {
			id = id[:i]
		}
		host := m.host
		if host == "" {
			if snap := m.snapshot(); snap != nil && snap.Settings != nil {
				host = snap.Settings.Hostname
				m.host = host
			}
		}
		return host != "" && strings.EqualFold(strings.TrimSuffix(id, "."), host)
	}
	return false
}

func (m *session) snapshot() *directory.Snapshot {
	if m.srv.Snapshot == nil {
		return nil
	}
	return m.srv.Snapshot()
}

func (m *session) Headers(textproto.MIMEHeader, *gomilter.Modifier) (gomilter.Response, error) {
	return gomilter.RespContinue, nil
}

func (m *session) BodyChunk(chunk []byte, _ *gomilter.Modifier) (gomilter.Response, error) {
	if !m.active {
		return gomilter.RespContinue, nil
	}
	if !m.lines.bodyStarted {
		m.lines.feed([]byte("\r\n"))
		m.lines.bodyStarted = true
	}
	m.lines.feed(chunk)
	return gomilter.RespContinue, nil
}

func (m *session) Body(mod *gomilter.Modifier) (gomilter.Response, error) {
	if !m.active {
		return gomilter.RespAccept, nil
	}
	log := m.srv.logger()
	if !m.lines.bodyStarted {
		m.lines.feed([]byte("\r\n"))
	}
	if r, bad := m.lines.finish(); bad {
		log.Info("milter: message rejected", "login", m.login, "from", m.sender, "check", "line-endings", "reply", r.String())
		return replyResponse(r), nil
	}
	snap := m.snapshot()
	if snap == nil {
		log.Warn("milter: no directory loaded; message deferred", "login", m.login, "from", m.sender)
		return replyResponse(ReplyTempFail), nil
	}
	raw := append(m.hdr[:len(m.hdr):len(m.hdr)], "\r\n"...)
	res := policy.CheckSubmission(snap, m.login, m.sender, raw)
	if !res.Allowed {
		log.Info("milter: message rejected", "login", m.login, "from", m.sender, "check", res.Check, "field", res.Field, "reply", res.Reply.String())
		return replyResponse(res.Reply), nil
	}
	sort.SliceStable(m.strips, func(i, j int) bool { return m.strips[i].index > m.strips[j].index })
	for _, st := range m.strips {
		if err := mod.ChangeHeader(st.index, st.name, ""); err != nil {
			return nil, err
		}
	}
	log.Debug("milter: message accepted", "login", m.login, "from", m.sender, "stripped", len(m.strips))
	return gomilter.RespAccept, nil
}

func (m *session) Abort(*gomilter.Modifier) error {
	m.reset()
	return nil
}

// rebuildField returns the field as the client sent it, as far as Postfix
// lets us know: "Name: value\r\n", with the LFs that separate the lines of a
// folded value turned into CRLF (a CR already before the LF is kept).
func rebuildField(name, value string) []byte {
	b := make([]byte, 0, len(name)+len(value)+8)
	b = append(b, name...)
	b = append(b, ':')
	if value != "" && value[0] != '\r' && value[0] != '\n' {
		b = append(b, ' ')
	}
	for i := 0; i < len(value); i++ {
		c := value[i]
		if c == '\n' && (i == 0 || value[i-1] != '\r') {
			b = append(b, '\r')
		}
		b = append(b, c)
	}
	return append(b, '\r', '\n')
}

// lineScanner finds the first bare CR, bare LF or NUL in a message fed in
// pieces, as smtpsrv's checkLines does on the whole message.
type lineScanner struct {
	prevCR      bool
	bodyStarted bool
	bad         *policy.Reply
}

func (l *lineScanner) feed(b []byte) {
	if l.bad != nil {
		return
	}
	for len(b) > 0 {
		if l.prevCR {
			if b[0] != '\n' {
				l.bad = &replyBareCR
				return
			}
			l.prevCR = false
			b = b[1:]
			continue
		}
		i := bytes.IndexAny(b, "\r\n\x00")
		if i < 0 {
			return
		}
		switch b[i] {
		case '\r':
			l.prevCR = true
		case '\n':
			l.bad = &replyBareLF
			return
		case 0:
			l.bad = &replyNUL
			return
		}
		b = b[i+1:]
	}
}

func (l *lineScanner) finish() (policy.Reply, bool) {
	if l.bad == nil && l.prevCR {
		l.bad = &replyBareCR
	}
	if l.bad != nil {
		return *l.bad, true
	}
	return policy.Reply{}, false
}

// replyResponse is the SMFIR_REPLYCODE answer for r. Postfix requires a 4xx
// or 5xx code whose enhanced code starts with the same digit; it replaces
// "%%" by '%' and drops a single '%', so '%' is doubled. Control characters
// cannot appear in a one-line reply and become '?'.
func replyResponse(r policy.Reply) gomilter.Response {
	if r.Code < 400 || r.Code > 599 || r.Enhanced == "" || r.Enhanced[0] != byte('0'+r.Code/100) {
		r = policy.Reply{Code: 451, Enhanced: "4.3.0", Text: "Temporary lookup failure"}
	}
	text := strings.Map(func(c rune) rune {
		if c < 0x20 || c == 0x7f {
			return '?'
		}
		return c
	}, r.Text)
	text = strings.ReplaceAll(text, "%", "%%")
	return gomilter.NewResponseStr(byte(gomilter.ActReplyCode), fmt.Sprintf("%03d %s %s", r.Code, r.Enhanced, text))
}
