// Package postfixpolicy is the server side of Postfix's SMTP access policy
// delegation protocol (Postfix SMTPD_POLICY_README, "Protocol description"),
// answering SPEC §5 MaySend for `check_policy_service` in the
// smtpd_sender_restrictions of the submission services (SPEC §9).
//
// # Protocol
//
// Postfix connects (inet or unix socket) and keeps the connection open for
// many requests (smtpd_policy_service_max_idle, _max_ttl). A request is a
// sequence of "name=value" lines, each ended by a newline (LF), and ended by
// an empty line:
//
//	request=smtpd_access_policy
//	protocol_state=RCPT
//	sender=alice@example.com
//	sasl_username=alice@example.com
//	…
//	<empty line>
//
// The answer is one "action=…" line followed by an empty line. The action is
// an access(5) action: "DUNNO" (no opinion: Postfix goes on with the next
// restriction) or "NNN X.Y.Z text" (reject with exactly that reply).
//
// # Input validation
//
// The input is checked strictly; anything Postfix does not send closes the
// connection (and is logged at warning level) without an answer, so that
// Postfix applies smtpd_policy_service_default_action (451 4.3.5), never an
// accept:
//
//   - a line longer than MaxLineLength octets (newline included), more than
//     MaxAttributes attributes or more than MaxRequestSize octets per request;
//   - a line without "=", an empty name or a name with characters other than
//     ASCII letters, digits, "_", "-" and ".";
//   - a value holding NUL or CR (Postfix ends lines with LF only; CRLF is not
//     accepted), the same attribute twice, an empty request (a lone empty
//     line), a request without the "request" attribute, or end of file in
//     the middle of a request.
//
// # Decision
//
//   - request other than "smtpd_access_policy": action=DUNNO, logged at
//     warning level. It is the only request type Postfix defines; DUNNO is the
//     conventional answer of policy servers to what they do not handle, and
//     it grants nothing (the remaining restrictions still apply).
//   - empty sasl_username (unauthenticated client): action=DUNNO. The policy
//     applies to authenticated submission only; inbound mail is decided by the
//     socketmap tables (package socketmap).
//   - protocol_state VRFY or ETRN, or CONNECT, EHLO and HELO (where no sender
//     exists yet): action=DUNNO. In every other state (MAIL, RCPT, DATA,
//     END-OF-MESSAGE, BDAT, or a state this package does not know) the
//     decision is made, so an unknown state fails closed.
//   - no snapshot (the directory backend is down):
//     action=451 4.3.0 Temporary lookup failure — never an accept.
//   - otherwise policy.MaySend(snapshot, sasl_username, sender), where a
//     missing or empty sender attribute is the null sender (SPEC §5): allowed
//     → action=DUNNO (not OK: OK would skip the restrictions that follow,
//     such as reject_unauth_destination); denied → action= followed by the
//     Decision's reply code, enhanced status code and text, e.g.
//     "action=553 5.7.1 <S>: Sender address rejected: not owned by user L" —
//     the reply `mailgate serve` gives at MAIL FROM. Control characters in
//     the text are replaced by "?" so that the answer stays one line.
//
// Every decision is logged at debug level, every rejection at info level.
package postfixpolicy

import (
	"bufio"
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/mailgate/mailgate/internal/connserver"
	"github.com/mailgate/mailgate/internal/directory"
)

// Limits of one request.
const (
	MaxLineLength  = 4096    // octets per attribute line, newline included
	MaxAttributes  = 1000    // attributes per request
	MaxRequestSize = 1 << 16 // octets per request, empty line included
)

// DefaultIdleTimeout is the IdleTimeout used when it is zero. Postfix keeps
// idle policy connections for smtpd_policy_service_max_idle (300s).
const DefaultIdleTimeout = 5 * time.Minute

// ErrServerClosed is returned by Serve after Close.
var ErrServerClosed = errors.New("postfixpolicy: server closed")

// Server is a policy delegation server. Its fields must be set before
// Serve and not changed afterwards.
type Server struct {
	// Snapshot returns the directory in force; nil means the backend is
	// down, and every authenticated request gets a temporary failure.
	Snapshot func() *directory.Snapshot
	// Logger receives the log; nil discards it.
	Logger *slog.Logger
	// IdleTimeout is how long a connection may wait for (and take to send)
	// a request; 0 means DefaultIdleTimeout.
	IdleTimeout time.Duration

	once sync.Once
	cs   connserver.Server
}

// conns returns the connection plumbing, set up on first use.
func (s *Server) conns() *connserver.Server {
	s.once.Do(func() {
		s.cs.Handle = s.handle
		s.cs.Closed = ErrServerClosed
		s.cs.Logger = s.log()
	})
	return &s.cs
}

func (s *Server) log() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

func (s *Server) idle() time.Duration {
	if s.IdleTimeout <= 0 {
		return DefaultIdleTimeout
	}
	return s.IdleTimeout
}

// Serve accepts connections on l and handles each one concurrently until
// Close; it then returns ErrServerClosed. Any other error of l.Accept that
// is not temporary is returned. l is closed when Serve returns.
func (s *Server) Serve(l net.Listener) error { return s.conns().Serve(l) }

// Close closes every listener and every connection, and waits until the
// connection handlers have returned. Serve then returns ErrServerClosed.
func (s *Server) Close() error { return s.conns().Close() }

// handle serves the requests of one connection until EOF, an error, a
// malformed request or Close.
func (s *Server) handle(c net.Conn) {
	log := s.log().With("client", c.RemoteAddr().String())
	defer func() {
		if p := recover(); p != nil {
			log.Error("policy: internal error; connection closed", "panic", p)
		}
	}()
	br := bufio.NewReaderSize(c, MaxLineLength)
	bw := bufio.NewWriter(c)
	for {
		c.SetReadDeadline(time.Now().Add(s.idle()))
		attrs, err := readRequest(br)
		if err != nil {
			switch {
			case errors.Is(err, errEOF):
				log.Debug("policy connection closed by client")
			case errors.Is(err, errMalformed):
				log.Warn("policy: malformed request; connection closed", "err", err)
			case s.conns().IsClosed():
			default:
				log.Debug("policy connection ended", "err", err)
			}
			return
		}
		action := s.decide(attrs, log)
		c.SetWriteDeadline(time.Now().Add(s.idle()))
		bw.WriteString("action=")
		bw.WriteString(action)
		bw.WriteString("\n\n")
		if err := bw.Flush(); err != nil {
			log.Debug("policy: writing the answer", "err", err)
			return
		}
	}
}
