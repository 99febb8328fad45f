package smtpclient

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
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
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailgate/mailgate/internal/queue"
)

const (
	maxReplyLine  = 4096 // longest reply line read (RFC 5321 §4.5.3.1.5 allows 512)
	maxReplyLines = 256  // most lines in one (multiline) reply
)

// session is one SMTP connection. It is used by one goroutine at a time.
type session struct {
	c    *Client
	ctx  context.Context // of the current use, for error messages
	log  *slog.Logger
	host string // server host name: RemoteMTA, TLS ServerName
	key  string // pool key, host:port
	addr string // the address connected to, ip:port
	raw  net.Conn
	br   *bufio.Reader
	bw   *bufio.Writer
	ext  map[string]string // EHLO keywords (upper case) and their parameters
	tls  bool

	reused bool // taken from the pool
	broken bool // must not be reused

	// Pool bookkeeping, guarded by pool.mu.
	pooled bool
	gen    uint64
	timer  *time.Timer
}

// reply is an SMTP reply (RFC 5321 §4.2).
type reply struct {
	code  int
	enh   smtp.EnhancedCode // zero when the reply has none (RFC 2034, RFC 3463)
	lines []string          // the text of each line, without code and enhanced code
}

func (r reply) text() string { return strings.TrimSpace(strings.Join(r.lines, " ")) }

func (r reply) enhanced() string {
	if r.enh == (smtp.EnhancedCode{}) {
		return ""
	}
	return fmt.Sprintf("%d.%d.%d", r.enh[0], r.enh[1], r.enh[2])
}

// err returns the reply as go-smtp's error type.
func (r reply) err() *smtp.SMTPError {
	return &smtp.SMTPError{Code: r.code, EnhancedCode: r.enh, Message: r.text()}
}

func (r reply) is2xx() bool { return r.code >= 200 && r.code < 300 }

// connect connects to address a of target t and opens an SMTP session:
// greeting, EHLO, STARTTLS when offered. A failure is temporary: the caller
// tries the next address.
func (c *Client) connect(ctx context.Context, log *slog.Logger, t target, a netip.Addr) (*session, *failure) {
	addr := net.JoinHostPort(a.String(), t.port)
	nc, err := c.dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		f := &failure{enh: "4.4.1", msg: fmt.Sprintf("connect to %s[%s]: %v", t.host, addr, unwrapNetErr(err)), temp: true}
		if ctx.Err() != nil {
			f = interrupted(ctx)
		}
		log.Debug("connect failed", "host", t.host, "addr", addr, "error", err)
		return nil, f
	}
	s := &session{
		c:    c,
		ctx:  ctx,
		log:  c.log.With("host", t.host, "addr", addr),
		host: t.host,
		key:  t.key(),
		addr: addr,
		raw:  nc,
		br:   bufio.NewReaderSize(nc, maxReplyLine),
		bw:   bufio.NewWriterSize(nc, 16<<10),
	}
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	f := s.open()
	if !stop() && f == nil {
		f = interrupted(ctx)
	}
	if f != nil {
		if f.code != 0 && !s.broken {
			s.quit() // the server answered: say goodbye (RFC 5321 §3.1 after a 554 greeting)
		} else {
			nc.Close()
		}
		s.log.Debug("session failed", "error", f.msg)
		return nil, f
	}
	s.log.Debug("session opened", "tls", s.tls)
	return s, nil
}

// open reads the greeting, says EHLO and starts TLS if offered.
func (s *session) open() *failure {
	s.deadline(s.c.o.CommandTimeout)
	rep, err := s.readReply()
	if err != nil {
		return s.netFail("reading the greeting", err)
	}
	if rep.code != 220 {
		// RFC 5321 §3.1, §5.1: a server that does not greet with 220 is
		// skipped for the next one (Postfix smtp_skip_5xx_greeting).
		return s.replyFail("refused to talk to me", rep)
	}
	if f := s.hello(); f != nil {
		return f
	}
	if _, ok := s.ext["STARTTLS"]; !ok {
		return nil
	}
	rep, err = s.cmd("STARTTLS")
	if err != nil {
		return s.netFail("sending STARTTLS", err)
	}
	if rep.code == 421 {
		return s.replyFail("refused STARTTLS", rep)
	}
	if rep.code != 220 {
		// RFC 3207 §4: the server declined; no TLS byte was exchanged and
		// the session goes on in plaintext (opportunistic TLS).
		s.log.Info("STARTTLS refused; continuing without TLS", "code", rep.code, "reply", rep.text())
		return nil
	}
	if s.br.Buffered() > 0 {
		// Plaintext sent after the 220 would be read as if protected by
		// TLS (response injection): refuse the session.
		s.broken = true
		return &failure{enh: "4.7.5", msg: fmt.Sprintf("host %s[%s] sent data after its STARTTLS reply", s.host, s.addr), temp: true, remote: s.host}
	}
	cfg := s.c.tls.Clone()
	if cfg.ServerName == "" {
		cfg.ServerName = s.host
	}
	tc := tls.Client(s.raw, cfg)
	s.deadline(s.c.o.CommandTimeout)
	if err := tc.Handshake(); err != nil {
		// Not retried in plaintext on the same host (see package comment).
		s.broken = true
		s.log.Warn("TLS handshake failed", "error", err)
		f := &failure{enh: "4.7.5", msg: fmt.Sprintf("TLS handshake with %s[%s] failed: %v", s.host, s.addr, err), temp: true, remote: s.host}
		if s.ctx.Err() != nil {
			f = interrupted(s.ctx)
		}
		return f
	}
	s.tls = true
	s.br.Reset(tc)
	s.bw.Reset(tc)
	// RFC 3207 §4.2: the client must discard what it learned before TLS
	// and send EHLO again.
	return s.hello()
}

// hello sends EHLO, or HELO when the server does not know EHLO
// (RFC 5321 §4.1.4: 500 or 502).
func (s *session) hello() *failure {
	s.ext = nil
	rep, err := s.cmd("EHLO " + s.c.o.Hostname)
	if err != nil {
		return s.netFail("sending EHLO", err)
	}
	if rep.code == 500 || rep.code == 502 {
		rep, err = s.cmd("HELO " + s.c.o.Hostname)
		if err != nil {
			return s.netFail("sending HELO", err)
		}
		if rep.code == 250 {
			s.ext = map[string]string{}
			return nil
		}
	}
	if rep.code != 250 {
		return s.replyFail("refused EHLO/HELO", rep)
	}
	s.ext = make(map[string]string, len(rep.lines))
	for _, line := range rep.lines[1:] {
		kw, param, _ := strings.Cut(strings.TrimSpace(line), " ")
		if kw != "" {
			s.ext[strings.ToUpper(kw)] = strings.TrimSpace(param)
		}
	}
	return nil
}

func (s *session) has(ext string) bool {
	_, ok := s.ext[ext]
	return ok
}

// sizeLimit returns the server's SIZE limit (RFC 1870 §4), 0 if none.
func (s *session) sizeLimit() int64 {
	n, err := strconv.ParseInt(s.ext["SIZE"], 10, 64)
	if err != nil || n < 0 {
		return 0
	}
	return n
}

// deadline bounds the next reads and writes.
func (s *session) deadline(d time.Duration) {
	s.raw.SetDeadline(time.Now().Add(d))
}

// cmd sends one command and reads its reply.
func (s *session) cmd(line string) (reply, error) {
	s.deadline(s.c.o.CommandTimeout)
	s.bw.WriteString(line)
	s.bw.WriteString("\r\n")
	if err := s.bw.Flush(); err != nil {
		return reply{}, err
	}
	return s.readReply()
}

var errProtocol = errors.New("SMTP protocol error")

// readReply reads one reply, multiline included (RFC 5321 §4.2.1), and
// parses its enhanced status code (RFC 2034 §4, RFC 3463 §2) when its class
// matches the reply code.
func (s *session) readReply() (reply, error) {
	var rep reply
	for n := 0; ; n++ {
		if n == maxReplyLines {
			return rep, fmt.Errorf("%w: reply longer than %d lines", errProtocol, maxReplyLines)
		}
		b, err := s.br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			return rep, fmt.Errorf("%w: reply line longer than %d bytes", errProtocol, maxReplyLine)
		}
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return rep, err
		}
		line := strings.TrimRight(string(b), "\r\n")
		if len(line) < 3 || !isDigits(line[:3]) || line[0] < '1' || line[0] > '5' || len(line) > 3 && line[3] != ' ' && line[3] != '-' {
			return rep, fmt.Errorf("%w: malformed reply line %q", errProtocol, truncate(line, 80))
		}
		code, _ := strconv.Atoi(line[:3])
		if n > 0 && code != rep.code {
			return rep, fmt.Errorf("%w: reply code changed from %d to %d within a reply", errProtocol, rep.code, code)
		}
		rep.code = code
		text := ""
		if len(line) > 4 {
			text = line[4:]
		}
		rep.lines = append(rep.lines, text)
		if len(line) == 3 || line[3] == ' ' {
			break
		}
	}
	if tok, _, _ := strings.Cut(rep.lines[0], " "); tok != "" {
		if enh, ok := parseEnhanced(tok, rep.code); ok {
			rep.enh = enh
			for i, l := range rep.lines {
				if l == tok || strings.HasPrefix(l, tok+" ") {
					rep.lines[i] = strings.TrimPrefix(strings.TrimPrefix(l, tok), " ")
				}
			}
		}
	}
	return rep, nil
}

// parseEnhanced parses "class.subject.detail" (RFC 3463 §2: class 2, 4 or 5
// matching the reply code's first digit, subject and detail of 1 to 3
// digits).
func parseEnhanced(tok string, code int) (smtp.EnhancedCode, bool) {
	var e smtp.EnhancedCode
	parts := strings.Split(tok, ".")
	if len(parts) != 3 || len(parts[0]) != 1 || int(parts[0][0]-'0') != code/100 {
		return e, false
	}
	for i, p := range parts {
		if len(p) < 1 || len(p) > 3 || !isDigits(p) {
			return e, false
		}
		e[i], _ = strconv.Atoi(p)
	}
	if e[0] != 2 && e[0] != 4 && e[0] != 5 {
		return e, false
	}
	return e, true
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// netFail is a lost or timed out connection; the session is broken.
func (s *session) netFail(while string, err error) *failure {
	s.broken = true
	if s.ctx.Err() != nil {
		return interrupted(s.ctx)
	}
	what := "lost connection with"
	if errors.Is(err, os.ErrDeadlineExceeded) {
		what = "conversation timed out with"
	} else if errors.Is(err, errProtocol) {
		what = "protocol error from"
	}
	return &failure{enh: "4.4.2", msg: fmt.Sprintf("%s %s[%s] while %s: %v", what, s.host, s.addr, while, unwrapNetErr(err)), temp: true, remote: s.host}
}

// replyFail is a session-level refusal (greeting, EHLO, STARTTLS): the
// next host is tried, so it is temporary whatever its code.
func (s *session) replyFail(what string, rep reply) *failure {
	if rep.code == 421 {
		s.broken = true // RFC 5321 §3.8: the server is closing the channel
	}
	return &failure{code: rep.code, enh: rep.enhanced(), temp: true, remote: s.host,
		msg: fmt.Sprintf("host %s[%s] %s: %d %s", s.host, s.addr, what, rep.code, rep.text())}
}

func interrupted(ctx context.Context) *failure {
	return &failure{enh: "4.4.7", msg: fmt.Sprintf("delivery interrupted: %v", context.Cause(ctx)), temp: true}
}

// unwrapNetErr drops the *net.OpError decoration that repeats addresses.
func unwrapNetErr(err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return oe.Err
	}
	return err
}

// quit ends the session politely (RFC 5321 §4.1.1.10) and closes it.
func (s *session) quit() {
	s.raw.SetDeadline(time.Now().Add(min(quitTimeout, s.c.o.CommandTimeout)))
	s.bw.WriteString("QUIT\r\n")
	if s.bw.Flush() == nil {
		s.readReply()
	}
	s.raw.Close()
}

// rset aborts the open transaction (RFC 5321 §4.1.1.5).
func (s *session) rset() {
	rep, err := s.cmd("RSET")
	if err != nil || rep.code != 250 {
		s.broken = true
	}
}

// release returns s to the pool, or closes it.
func (c *Client) release(s *session) {
	s.ctx = nil
	if s.br.Buffered() > 0 {
		// Bytes nobody asked for would be read as the next reply.
		s.log.Warn("server sent unsolicited data; closing the connection")
		s.broken = true
	}
	if s.broken {
		s.raw.Close()
		return
	}
	c.pool.put(s)
}

// txn is one mail transaction: the message and the recipients idx (indexes
// into rcpts and out, where the results go).
type txn struct {
	m     *message
	idx   []int
	rcpts []string
	out   []queue.Result
}

// result turns a server reply into the Result of rcpt.
func (s *session) result(rcpt string, rep reply) queue.Result {
	if !rep.is2xx() {
		s.log.Debug("refused", "rcpt", rcpt, "error", rep.err())
	}
	return queue.Result{
		Rcpt:     rcpt,
		Code:     rep.code,
		Enhanced: rep.enhanced(),
		Msg:      rep.text(),
		// 4xx is temporary (RFC 5321 §4.2.1), and so is anything that is
		// neither success nor permanent failure (an unexpected reply).
		Temporary: rep.code/100 != 2 && rep.code/100 != 5,
		RemoteMTA: s.host,
	}
}

// transact runs one mail transaction on s and fills tx.out. It returns true
// — with nothing filled — when s was reused and turned out dead before the
// server answered anything, so that the caller may retry on a fresh
// connection. s is released (pooled or closed) before transact returns.
func (c *Client) transact(ctx context.Context, s *session, tx *txn) (retry bool) {
	s.ctx = ctx
	stop := context.AfterFunc(ctx, func() { s.raw.Close() })
	defer func() {
		if !stop() || retry {
			s.broken = true
		}
		c.release(s)
	}()
	m := tx.m
	setAll := func(idx []int, f *failure) {
		for _, i := range idx {
			tx.out[i] = f.result(tx.rcpts[i])
		}
	}
	setReply := func(idx []int, rep reply) {
		for _, i := range idx {
			tx.out[i] = s.result(tx.rcpts[i], rep)
		}
	}
	// deadBeforeReply: a reused session failed before any reply.
	deadBeforeReply := func(err error, rep reply) bool {
		return s.reused && ctx.Err() == nil && (err != nil || rep.code == 421)
	}

	// Checks that need no round trip.
	rcpts := make([]string, len(tx.idx))
	for k, i := range tx.idx {
		rcpts[k] = tx.rcpts[i]
	}
	utf8 := m.envelopeUTF8(rcpts)
	if !s.has("SMTPUTF8") && (utf8 || m.env.SMTPUTF8 && !m.headerASCII()) {
		// RFC 6531 §3.5 (and RFC 6532 for the header): without the
		// server's SMTPUTF8 the message cannot be sent; 553 5.6.7
		// "Non-ASCII addresses not permitted".
		setAll(tx.idx, &failure{code: 553, enh: "5.6.7", remote: s.host,
			msg: fmt.Sprintf("SMTPUTF8 is required, but was not offered by host %s[%s]", s.host, s.addr)})
		return false
	}
	if limit := s.sizeLimit(); limit > 0 && m.size > limit {
		// RFC 1870 §6.1: do not send what the server announced it refuses.
		setAll(tx.idx, &failure{code: 552, enh: "5.3.4", remote: s.host,
			msg: fmt.Sprintf("message size %d exceeds size limit %d of host %s[%s]", m.size, limit, s.host, s.addr)})
		return false
	}

	mail := c.mailCommand(s, m, utf8 || m.env.SMTPUTF8 && s.has("SMTPUTF8"))
	var accepted []int
	txOpen := false // MAIL accepted and no reply to the end of data yet
	defer func() {
		if txOpen && !s.broken && !retry {
			s.rset()
		}
	}()

	if s.has("PIPELINING") {
		// RFC 2920 §3.1: MAIL, RCPT... and DATA (the last of the group)
		// in one write, then the replies in order.
		s.deadline(c.o.CommandTimeout)
		s.bw.WriteString(mail + "\r\n")
		for _, r := range rcpts {
			s.bw.WriteString("RCPT TO:<" + r + ">\r\n")
		}
		s.bw.WriteString("DATA\r\n")
		if err := s.bw.Flush(); err != nil {
			if deadBeforeReply(err, reply{}) {
				return true
			}
			setAll(tx.idx, s.netFail("sending MAIL FROM", err))
			return false
		}
		mrep, err := s.readReply()
		if deadBeforeReply(err, mrep) {
			return true
		}
		if err != nil {
			setAll(tx.idx, s.netFail("reading the reply to MAIL FROM", err))
			return false
		}
		if mrep.code == 421 {
			s.broken = true
			setReply(tx.idx, mrep)
			return false
		}
		txOpen = mrep.is2xx()
		for k, i := range tx.idx {
			s.deadline(c.o.CommandTimeout)
			rep, err := s.readReply()
			if err != nil {
				setAll(append(accepted, tx.idx[k:]...), s.netFail("reading the reply to RCPT TO", err))
				return false
			}
			switch {
			case !txOpen:
				tx.out[i] = s.result(tx.rcpts[i], mrep) // the reason is MAIL's refusal
			case rep.is2xx():
				accepted = append(accepted, i)
			default:
				tx.out[i] = s.result(tx.rcpts[i], rep)
			}
			if rep.code == 421 {
				s.broken = true
				setReply(append(accepted, tx.idx[k+1:]...), rep)
				return false
			}
		}
		s.deadline(c.o.CommandTimeout)
		drep, err := s.readReply()
		if err != nil {
			setAll(accepted, s.netFail("reading the reply to DATA", err))
			return false
		}
		if drep.code == 354 && len(accepted) == 0 {
			// RFC 2920 §3.1: DATA was accepted without a valid recipient;
			// end it with an empty message, whose reply does not matter.
			s.deadline(c.o.CommandTimeout)
			s.bw.WriteString(".\r\n")
			if err := s.bw.Flush(); err != nil {
				s.broken = true
				return false
			}
			if _, err := s.readReply(); err != nil {
				s.broken = true
			}
			txOpen = false
			return false
		}
		if drep.code != 354 {
			if drep.code == 421 {
				s.broken = true
			}
			if drep.is2xx() {
				drep.code = 451 // a broken server: 2xx is no answer to DATA
			}
			setReply(accepted, drep)
			return false
		}
	} else {
		rep, err := s.cmd(mail)
		if deadBeforeReply(err, rep) {
			return true
		}
		if err != nil {
			setAll(tx.idx, s.netFail("sending MAIL FROM", err))
			return false
		}
		if !rep.is2xx() {
			if rep.code == 421 {
				s.broken = true
			}
			setReply(tx.idx, rep)
			return false
		}
		txOpen = true
		for k, i := range tx.idx {
			rep, err := s.cmd("RCPT TO:<" + tx.rcpts[i] + ">")
			if err != nil {
				setAll(append(accepted, tx.idx[k:]...), s.netFail("sending RCPT TO", err))
				return false
			}
			if rep.code == 421 {
				s.broken = true
				setReply(append(accepted, tx.idx[k:]...), rep)
				return false
			}
			if rep.is2xx() {
				accepted = append(accepted, i)
			} else {
				tx.out[i] = s.result(tx.rcpts[i], rep)
			}
		}
		if len(accepted) == 0 {
			return false // the deferred RSET ends the transaction
		}
		rep, err = s.cmd("DATA")
		if err != nil {
			setAll(accepted, s.netFail("sending DATA", err))
			return false
		}
		if rep.code != 354 {
			if rep.code == 421 {
				s.broken = true
			}
			if rep.is2xx() {
				rep.code = 451
			}
			setReply(accepted, rep)
			return false
		}
	}

	// 354: send the message.
	if f := c.sendData(s, m); f != nil {
		setAll(accepted, f)
		return false
	}
	s.deadline(c.o.DataTimeout)
	rep, err := s.readReply()
	if err != nil {
		// The server may have taken the message: a later retry can
		// duplicate it (RFC 5321 §6.1 prefers that to losing it).
		setAll(accepted, s.netFail("reading the reply to the end of data", err))
		return false
	}
	txOpen = false // the end of data ends the transaction, whatever its reply
	if rep.code == 421 {
		s.broken = true
	}
	setReply(accepted, rep)
	if rep.is2xx() {
		s.log.Debug("message accepted", "rcpts", len(accepted), "reply", rep.text())
	}
	return false
}

// mailCommand builds MAIL FROM with the envelope's parameters the server
// supports.
func (c *Client) mailCommand(s *session, m *message, utf8 bool) string {
	var b strings.Builder
	b.WriteString("MAIL FROM:<")
	b.WriteString(m.from)
	b.WriteString(">")
	if s.has("SIZE") {
		fmt.Fprintf(&b, " SIZE=%d", m.size) // RFC 1870 §6
	}
	if bt := strings.ToUpper(m.env.BodyType); (bt == "8BITMIME" || bt == "7BIT") && s.has("8BITMIME") {
		b.WriteString(" BODY=" + bt) // RFC 6152 §2
	}
	if utf8 {
		b.WriteString(" SMTPUTF8") // RFC 6531 §3.4
	}
	if s.has("DSN") {
		// RFC 3461 §4.3 (RET) and §4.4 (ENVID, xtext of printable ASCII,
		// at most 100 characters).
		if ret := strings.ToUpper(m.env.Ret); ret == "FULL" || ret == "HDRS" {
			b.WriteString(" RET=" + ret)
		}
		if id := m.env.EnvID; id != "" {
			if len(id) <= 100 && isPrintableASCII(id) {
				b.WriteString(" ENVID=" + xtext(id))
			} else {
				s.log.Warn("ENVID not sent: not up to 100 printable ASCII characters", "envid", id)
			}
		}
	}
	return b.String()
}

// xtext encodes s as RFC 3461 §4 xtext.
func xtext(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if ch >= '!' && ch <= '~' && ch != '+' && ch != '=' {
			b.WriteByte(ch)
		} else {
			fmt.Fprintf(&b, "+%02X", ch)
		}
	}
	return b.String()
}

func isPrintableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// sendData sends the message after 354, with SMTP transparency, and the
// terminating "." line. Each write is bounded by DataTimeout.
func (c *Client) sendData(s *session, m *message) *failure {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	dw := &dotWriter{w: s.bw, bol: true}
	r := m.reader()
	for {
		n, rerr := r.Read(buf)
		if n > 0 {
			s.raw.SetWriteDeadline(time.Now().Add(c.o.DataTimeout))
			if _, err := dw.Write(buf[:n]); err != nil {
				return s.netFail("sending message data", err)
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			// DATA cannot be aborted: drop the connection, so that the
			// server discards the partial message (RFC 5321 §4.1.1.4).
			s.broken = true
			return &failure{enh: "4.3.0", msg: fmt.Sprintf("reading the queued message: %v", rerr), temp: true}
		}
	}
	s.raw.SetWriteDeadline(time.Now().Add(c.o.DataTimeout))
	if err := dw.Close(); err != nil {
		return s.netFail("sending the end of data", err)
	}
	return nil
}

// dotWriter writes message data with SMTP transparency (RFC 5321 §4.5.2): a
// line starting with "." gets another "."; a bare LF is sent as CRLF (RFC
// 5321 §2.3.8 forbids bare LF); everything else is sent as is. Close ends
// an unterminated last line and writes the ".\r\n" end of data.
type dotWriter struct {
	w   *bufio.Writer
	bol bool // at the beginning of a line
	cr  bool // the last byte written was CR
}

func (d *dotWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if d.bol && p[0] == '.' {
			d.w.WriteByte('.')
		}
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			d.w.Write(p)
			d.bol, d.cr = false, p[len(p)-1] == '\r'
			break
		}
		d.w.Write(p[:i])
		if i > 0 && p[i-1] != '\r' || i == 0 && !d.cr {
			d.w.WriteByte('\r')
		}
		d.w.WriteByte('\n')
		d.bol, d.cr = true, false
		p = p[i+1:]
	}
	if _, err := d.w.Write(nil); err != nil { // bufio's sticky write error
		return 0, err
	}
	return n, nil
}

func (d *dotWriter) Close() error {
	switch {
	case d.cr:
		d.w.WriteString("\n")
	case !d.bol:
		d.w.WriteString("\r\n")
	}
	d.w.WriteString(".\r\n")
	return d.w.Flush()
}

// message is the message being delivered, readable any number of times.
type message struct {
	from string
	env  queue.Envelope
	ra   io.ReaderAt
	size int64

	hdrChecked, hdrASCII bool
}

// newMessage reads body in place when it is an io.ReaderAt and io.Seeker
// (the queue's io.SectionReader), from its current offset; else it buffers
// it.
func newMessage(from string, env queue.Envelope, body io.Reader) (*message, error) {
	m := &message{from: from, env: env}
	ra, isRA := body.(io.ReaderAt)
	sk, isSk := body.(io.Seeker)
	if isRA && isSk {
		cur, err := sk.Seek(0, io.SeekCurrent)
		if err != nil {
			return nil, err
		}
		end, err := sk.Seek(0, io.SeekEnd)
		if err != nil {
			return nil, err
		}
		if _, err := sk.Seek(cur, io.SeekStart); err != nil {
			return nil, err
		}
		m.ra, m.size = io.NewSectionReader(ra, cur, end-cur), end-cur
		return m, nil
	}
	data, err := io.ReadAll(body)
	if err != nil {
		return nil, err
	}
	m.ra, m.size = bytes.NewReader(data), int64(len(data))
	return m, nil
}

func (m *message) reader() io.Reader { return io.NewSectionReader(m.ra, 0, m.size) }

// envelopeUTF8 reports whether the sender or one of rcpts is not ASCII.
func (m *message) envelopeUTF8(rcpts []string) bool {
	if !isASCII(m.from) {
		return true
	}
	for _, r := range rcpts {
		if !isASCII(r) {
			return true
		}
	}
	return false
}

// headerASCII reports whether the message header (up to the first empty
// line) is all ASCII. A read error counts as not ASCII.
func (m *message) headerASCII() bool {
	if m.hdrChecked {
		return m.hdrASCII
	}
	m.hdrChecked = true
	br := bufio.NewReaderSize(m.reader(), 8<<10)
	midLine := false // the previous read ended inside a long line
	for {
		line, err := br.ReadSlice('\n')
		for _, b := range line {
			if b >= 0x80 {
				return false
			}
		}
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			midLine = true
			continue
		case err == io.EOF:
			m.hdrASCII = true // a message without body
			return true
		case err != nil:
			return false
		}
		if !midLine && len(bytes.TrimRight(line, "\r\n")) == 0 {
			m.hdrASCII = true // the empty line that ends the header
			return true
		}
		midLine = false
	}
}
