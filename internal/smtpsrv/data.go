package smtpsrv

import (
	"bytes"
	"errors"
	"io"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailgate/mailgate/internal/delivery"
	"github.com/mailgate/mailgate/internal/header"
	"github.com/mailgate/mailgate/internal/policy"
)

var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// Data receives the message (DATA or BDAT), checks it, and stores it.
func (s *session) Data(r io.Reader) error {
	if !s.inTx || len(s.rcpts) == 0 {
		return reply(503, "5.5.1", "Bad sequence of commands")
	}
	// data_timeout bounds the whole transfer: a read deadline for DATA, and
	// a timer for BDAT, whose chunk commands each reset the read deadline.
	s.setDataDeadline()
	if s.tc != nil {
		tc := s.tc
		timer := time.AfterFunc(s.srv.cfg.DataTimeout, func() {
			s.srv.log.Info("data timeout: closing the connection", "client", tc.ip.String())
			_ = tc.Close()
		})
		defer timer.Stop()
	}
	buf := bufPool.Get().(*bytes.Buffer)
	buf.Reset()
	defer func() {
		if buf.Cap() <= 1<<20 {
			bufPool.Put(buf)
		}
	}()
	if _, err := buf.ReadFrom(r); err != nil {
		var se *smtp.SMTPError
		if errors.As(err, &se) {
			return se // 552 5.3.4 over the size limit
		}
		if errors.Is(err, smtp.ErrTooLongLine) {
			// A permanent problem of the message: retrying cannot help.
			return reply(552, "5.6.0", "Message has a line longer than the limit")
		}
		s.srv.log.Info("message transfer failed", "listener", s.mode.String(), "client", s.ip.String(), "err", err)
		return reply(451, "4.4.2", "Message transfer failed")
	}
	raw := buf.Bytes()
	if e := checkLines(raw); e != nil {
		s.srv.log.Info("message rejected", "listener", s.mode.String(), "client", s.ip.String(), "reply", e.Error())
		return e
	}
	hdrEnd := headerEnd(raw)
	if s.mode == Inbound && hdrEnd > MaxHeader {
		return reply(552, "5.3.4", "Message header exceeds the limit")
	}
	raw, hdrEnd = stripTraceFields(raw, hdrEnd, s.srv.cfg.Hostname)
	id := s.newID()
	var extra []byte
	if s.mode != Inbound {
		res := policy.CheckSubmission(s.snap, s.loginName, s.from.String(), raw)
		if !res.Allowed {
			s.srv.log.Info("message rejected", "listener", s.mode.String(), "client", s.ip.String(), "login", s.login.String(), "check", res.Check, "field", res.Field, "reply", res.Reply.String())
			return smtpErr(res.Reply)
		}
		extra = s.missingFields(raw, id)
	}
	received := s.received(id)
	msg := make([]byte, 0, len(received)+len(extra)+len(raw))
	msg = append(append(append(msg, received...), extra...), raw...)
	env := delivery.Envelope{From: s.from.String(), SMTPUTF8: s.utf8 || has8bit(raw[:hdrEnd]), BodyType: s.body}
	out, err := s.srv.cfg.Deliver.Accept(env, s.rcpts, msg)
	if err != nil {
		s.srv.log.Error("delivery failed; message not accepted", "id", id, "client", s.ip.String(), "err", err)
		return reply(451, "4.3.0", "Temporary local problem, please try again")
	}
	s.srv.log.Info("accepted", "id", id, "listener", s.mode.String(), "client", s.ip.String(), "login", s.login.String(),
		"from", s.from.String(), "rcpts", len(s.rcpts), "size", len(msg), "local", len(out.Local), "queued", out.QueueID)
	// go-smtp writes a returned SMTPError as the reply, so a 250 with the ID
	// is returned this way.
	return reply(250, "2.0.0", "OK: queued as "+id)
}

// checkLines refuses a bare CR or LF (RFC 5321 §2.3.8: lines end with CRLF
// only), and NUL (RFC 5322 §2.2 / §3.5 forbid it). Both are what "SMTP
// smuggling" and header-confusion attacks use; a message passed on with them
// could be split differently by the next server.
func checkLines(b []byte) *smtp.SMTPError {
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '\r':
			if i+1 >= len(b) || b[i+1] != '\n' {
				return reply(550, "5.6.0", "Message contains a bare CR; lines must end with CRLF (RFC 5321 section 2.3.8)")
			}
			i++
		case '\n':
			return reply(550, "5.6.0", "Message contains a bare LF; lines must end with CRLF (RFC 5321 section 2.3.8)")
		case 0:
			return reply(550, "5.6.0", "Message contains a NUL character")
		}
	}
	return nil
}

// headerEnd returns the size of the header block including the empty line
// (or len(b) when there is no body).
func headerEnd(b []byte) int {
	if bytes.HasPrefix(b, []byte("\r\n")) {
		return 2
	}
	if i := bytes.Index(b, []byte("\r\n\r\n")); i >= 0 {
		return i + 4
	}
	return len(b)
}

// stripTraceFields removes from the header block (the first hdrEnd bytes of
// raw) every Return-Path field — it is added at final delivery (RFC 5321
// §4.4), so a client-supplied one is always a forgery — and every
// Authentication-Results field whose authserv-id is our host name (RFC 8601
// §5: a receiver must remove such fields it did not add), SPEC §6. It
// returns the message and the new header size; raw is modified in place.
func stripTraceFields(raw []byte, hdrEnd int, hostname string) ([]byte, int) {
	drop := func(field []byte) bool {
		name, value, ok := bytes.Cut(field, []byte(":"))
		if !ok {
			return false
		}
		name = bytes.TrimRight(name, " \t")
		switch {
		case bytes.EqualFold(name, []byte("Return-Path")):
			return true
		case bytes.EqualFold(name, []byte("Authentication-Results")):
			id := bytes.TrimLeft(value, " \t\r\n")
			if i := bytes.IndexAny(id, "; \t\r\n"); i >= 0 {
				id = id[:i]
			}
			return bytes.EqualFold(bytes.TrimSuffix(id, []byte(".")), []byte(hostname))
		}
		return false
	}
	out := raw[:0]
	for i := 0; i < hdrEnd; {
		// A field runs to the CRLF that is not followed by white space.
		j := i
		for {
			k := bytes.Index(raw[j:hdrEnd], []byte("\r\n"))
			if k < 0 {
				j = hdrEnd
				break
			}
			j += k + 2
			if j >= hdrEnd || (raw[j] != ' ' && raw[j] != '\t') {
				break
			}
		}
		if !drop(raw[i:j]) {
			out = append(out, raw[i:j]...)
		}
		i = j
	}
	newEnd := len(out)
	out = append(out, raw[hdrEnd:]...)
	return out, newEnd
}

func has8bit(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 {
			return true
		}
	}
	return false
}

// missingFields returns Date and Message-ID fields for a submitted message
// that lacks them (RFC 6409 §8.2, §8.3: the MSA may add them).
func (s *session) missingFields(raw []byte, id string) []byte {
	blk, err := header.Parse(raw)
	if err != nil {
		return nil // CheckSubmission accepted it, so this does not happen
	}
	var out []byte
	if len(blk.Get("date")) == 0 {
		out = append(out, "Date: "+s.srv.cfg.Now().Format(rfc5322Date)+"\r\n"...)
	}
	if len(blk.Get("message-id")) == 0 {
		out = append(out, "Message-ID: <"+id+"@"+s.srv.cfg.Hostname+">\r\n"...)
	}
	return out
}

const rfc5322Date = "Mon, 02 Jan 2006 15:04:05 -0700"

// received returns the Received field of RFC 5321 §4.4: the client's HELO
// name (sanitized: it is the client's claim), its address, our name, the
// protocol (RFC 3848), the ID, the recipient when there is exactly one, and
// the date.
func (s *session) received(id string) []byte {
	var b bytes.Buffer
	b.WriteString("Received: from ")
	b.WriteString(sanitizeHelo(s.helo))
	b.WriteString(" ([")
	if s.ip.Is6() {
		b.WriteString("IPv6:")
	}
	b.WriteString(s.ip.String())
	b.WriteString("])\r\n\tby ")
	b.WriteString(s.srv.cfg.Hostname)
	b.WriteString(" (mailgate) with ")
	b.WriteString(s.protocol())
	b.WriteString(" id ")
	b.WriteString(id)
	if len(s.rcpts) == 1 {
		b.WriteString("\r\n\tfor <")
		b.WriteString(s.rcpts[0].Original)
		b.WriteString(">")
	}
	b.WriteString(";\r\n\t")
	b.WriteString(s.srv.cfg.Now().Format(rfc5322Date))
	b.WriteString("\r\n")
	return b.Bytes()
}

// sanitizeHelo keeps a HELO argument that looks like a domain or an address
// literal, and replaces anything else, so the client cannot inject text into
// the Received field.
func sanitizeHelo(h string) string {
	if h == "" || len(h) > 255 {
		return "unknown"
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_' || c == ':' || c == '[' || c == ']') {
			return "unknown"
		}
	}
	return h
}
