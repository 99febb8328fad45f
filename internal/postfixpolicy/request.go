package postfixpolicy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/mailgate/mailgate/internal/directory"
	"github.com/mailgate/mailgate/internal/policy"
)

var (
	// errEOF: the client closed the connection between two requests.
	errEOF = errors.New("end of connection")
	// errMalformed wraps every protocol violation.
	errMalformed = errors.New("malformed policy request")
)

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errMalformed, fmt.Sprintf(format, args...))
}

// readRequest reads one request (attribute lines up to the empty line) from
// br, whose buffer must hold MaxLineLength octets. It returns errEOF at a
// clean end of connection, an error wrapping errMalformed for input that
// breaks the rules of the package comment, or the I/O error.
func readRequest(br *bufio.Reader) (map[string]string, error) {
	attrs := map[string]string{}
	size := 0
	for {
		line, err := br.ReadSlice('\n')
		switch {
		case err == bufio.ErrBufferFull:
			return nil, malformed("line longer than %d octets", MaxLineLength)
		case err == io.EOF && len(line) == 0 && len(attrs) == 0 && size == 0:
			return nil, errEOF
		case err == io.EOF:
			return nil, malformed("end of file in the middle of a request")
		case err != nil:
			return nil, err
		}
		if len(line) > MaxLineLength {
			return nil, malformed("line longer than %d octets", MaxLineLength)
		}
		size += len(line)
		if size > MaxRequestSize {
			return nil, malformed("request larger than %d octets", MaxRequestSize)
		}
		line = line[:len(line)-1]
		if len(line) == 0 {
			if len(attrs) == 0 {
				return nil, malformed("empty request")
			}
			if _, ok := attrs["request"]; !ok {
				return nil, malformed("no request attribute")
			}
			return attrs, nil
		}
		if len(attrs) >= MaxAttributes {
			return nil, malformed("more than %d attributes", MaxAttributes)
		}
		name, value, ok := strings.Cut(string(line), "=")
		if !ok {
			return nil, malformed("line without '=': %.64q", line)
		}
		if !validName(name) {
			return nil, malformed("invalid attribute name %.64q", name)
		}
		if i := strings.IndexAny(value, "\x00\r"); i >= 0 {
			return nil, malformed("attribute %s: value holds %q at offset %d", name, value[i], i)
		}
		if _, dup := attrs[name]; dup {
			return nil, malformed("attribute %s given twice", name)
		}
		attrs[name] = value
	}
}

func validName(n string) bool {
	if n == "" {
		return false
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// The answers that do not come from a Decision.
const (
	actionDunno    = "DUNNO"
	actionTempFail = "451 4.3.0 Temporary lookup failure"
)

// noSenderStates are the protocol_state values where no sender exists or
// where sender ownership is not the question (VRFY, ETRN).
var noSenderStates = map[string]bool{"CONNECT": true, "EHLO": true, "HELO": true, "VRFY": true, "ETRN": true}

// decide answers one request (see the package comment); the result is the
// action without "action=".
func (s *Server) decide(attrs map[string]string, log *slog.Logger) string {
	if req := attrs["request"]; req != "smtpd_access_policy" {
		log.Warn("policy: unknown request type; answering DUNNO", "request", req)
		return actionDunno
	}
	login, sender, state := attrs["sasl_username"], attrs["sender"], attrs["protocol_state"]
	if login == "" {
		log.Debug("policy decision", "state", state, "sender", sender, "action", actionDunno, "why", "not authenticated")
		return actionDunno
	}
	if noSenderStates[state] {
		log.Debug("policy decision", "state", state, "login", login, "action", actionDunno, "why", "no sender in this state")
		return actionDunno
	}
	snap := s.snapshot()
	if snap == nil {
		log.Warn("policy: directory unavailable; temporary failure", "login", login, "sender", sender)
		return actionTempFail
	}
	d := policy.MaySend(snap, login, sender)
	if d.Allowed {
		log.Debug("policy decision", "state", state, "login", login, "sender", sender, "rule", d.Rule, "action", actionDunno)
		return actionDunno
	}
	action := oneLine(d.Reply.String())
	log.Info("policy: sender rejected", "state", state, "login", login, "sender", sender, "rule", d.Rule, "action", action,
		"client", attrs["client_address"], "queue_id", attrs["queue_id"])
	return action
}

func (s *Server) snapshot() *directory.Snapshot {
	if s.Snapshot == nil {
		return nil
	}
	return s.Snapshot()
}

// oneLine replaces control characters (which could end the action line or
// start another attribute) by "?".
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r >= 0x80 && r < 0xa0 {
			return '?'
		}
		return r
	}, s)
}
