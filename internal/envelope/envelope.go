// Package envelope parses the argument of MAIL FROM for
// `mailgate check message --mail-from`. It validates everything: the path
// through package address (no source routes, no NUL, nothing trimmed) and
// the ESMTP parameters by their RFC 5321 syntax.
//
// `mailgate serve` receives the command through go-smtp, which splits the
// path from the parameters itself; the server then validates the address it
// gets with the same package address rules (internal/smtpsrv), so both
// accept and refuse the same addresses. The one difference: a source route
// ("<@a,@b:u@c>"), which this package refuses, is dropped by go-smtp before
// the server sees it — RFC 5321 Appendix C lets a server ignore it, and the
// route then reaches nobody downstream either.
package envelope

import (
	"fmt"
	"strings"

	"github.com/mailgate/mailgate/internal/address"
)

// MailFrom is a parsed MAIL FROM argument.
type MailFrom struct {
	Sender   address.Address // zero for the null sender
	Null     bool            // "<>"
	SMTPUTF8 bool            // the SMTPUTF8 parameter (RFC 6531 §3.4)
	Params   map[string]string
}

// Error is a syntax error in an envelope command, with its SMTP reply code.
type Error struct {
	Code     int    // 501 syntax, 555 unrecognized parameter
	Enhanced string // RFC 3463
	Msg      string
}

func (e *Error) Error() string { return fmt.Sprintf("%d %s %s", e.Code, e.Enhanced, e.Msg) }

// known MAIL FROM parameters: SIZE (RFC 1870), BODY (RFC 6152, RFC 3030),
// SMTPUTF8 (RFC 6531), AUTH (RFC 4954 §5, accepted and ignored: SPEC §6),
// RET and ENVID (RFC 3461).
var known = map[string]bool{"SIZE": true, "BODY": true, "SMTPUTF8": true, "AUTH": true, "RET": true, "ENVID": true}

// ParseMailFrom parses what follows "MAIL FROM:": a reverse-path (RFC 5321
// §4.1.2; "<>" is the null sender; angle brackets may be omitted, as many
// clients do) and optional ESMTP parameters (§4.1.1.2).
func ParseMailFrom(arg string) (MailFrom, error) {
	var m MailFrom
	path, rest, _ := strings.Cut(arg, " ")
	params, err := parseParams(rest)
	if err != nil {
		return m, err
	}
	m.Params = params
	if _, ok := params["SMTPUTF8"]; ok {
		if params["SMTPUTF8"] != "" {
			return m, &Error{501, "5.5.4", "SMTPUTF8 takes no value"}
		}
		m.SMTPUTF8 = true
	}
	if b, ok := params["BODY"]; ok {
		switch strings.ToUpper(b) {
		case "7BIT", "8BITMIME", "BINARYMIME":
		default:
			return m, &Error{501, "5.5.4", fmt.Sprintf("BODY=%s: expected 7BIT, 8BITMIME or BINARYMIME", b)}
		}
	}
	if s, ok := params["SIZE"]; ok {
		if s == "" || len(s) > 20 || strings.Trim(s, "0123456789") != "" {
			return m, &Error{501, "5.5.4", fmt.Sprintf("SIZE=%s is not a number", s)}
		}
	}
	a, null, err := address.ParseReversePath(path, address.Options{UTF8Local: m.SMTPUTF8})
	if err != nil {
		return m, &Error{501, "5.1.7", "Bad sender address syntax: " + reason(err)}
	}
	m.Sender, m.Null = a, null
	return m, nil
}

func parseParams(s string) (map[string]string, error) {
	out := map[string]string{}
	if s == "" {
		return out, nil
	}
	for _, p := range strings.Split(s, " ") {
		if p == "" {
			return nil, &Error{501, "5.5.4", "empty parameter (two spaces?)"}
		}
		k, v, hasV := strings.Cut(p, "=")
		if !validKeyword(k) {
			return nil, &Error{501, "5.5.4", fmt.Sprintf("malformed parameter %q", p)}
		}
		if hasV && !validValue(v) {
			return nil, &Error{501, "5.5.4", fmt.Sprintf("malformed value of parameter %q", k)}
		}
		k = strings.ToUpper(k)
		if !known[k] {
			return nil, &Error{555, "5.5.4", fmt.Sprintf("unsupported parameter %s", k)}
		}
		if _, dup := out[k]; dup {
			return nil, &Error{501, "5.5.4", fmt.Sprintf("parameter %s given twice", k)}
		}
		out[k] = v
	}
	return out, nil
}

// validKeyword: esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-").
func validKeyword(k string) bool {
	if k == "" || k[0] == '-' {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// validValue: esmtp-value = 1*(%d33-60 / %d62-126); RFC 6531 §3.3 also
// allows UTF-8, which no parameter here needs.
func validValue(v string) bool {
	if v == "" {
		return false
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 33 || c > 126 || c == '=' {
			return false
		}
	}
	return true
}

func reason(err error) string {
	if e, ok := err.(*address.Error); ok {
		return e.Reason
	}
	return err.Error()
}
