// Package address parses and canonicalizes mailbox addresses ("local@domain").
//
// Every address that enters mailgate — from the configuration files, from the
// command line and from SMTP — goes through this package, so it is strict:
// input is either accepted exactly as written (modulo case) or rejected with an
// *Error whose Reason names the problem, the offending character as U+XXXX and
// its byte offset. Nothing is ever trimmed or "cleaned" into a valid address
// (strings.TrimSpace would turn "alice@example.com\u2000" into someone else's
// address).
//
// # Accepted syntax
//
// A mailbox is Local-part "@" Domain (RFC 5321 §4.1.2, RFC 5322 §3.4.1):
//
//   - The local part is a dot-atom (RFC 5322 §3.2.3: atext runs separated by
//     single dots, no leading, trailing or double dot), or a quoted-string
//     (RFC 5321 §4.1.2) whose content is itself a valid dot-atom; such a
//     quoted local part is unquoted ("alice"@d is alice@d). A backslash may
//     only escape an atext character ("al\ice" is alice). Every other quoted
//     form (containing @, space, an escaped non-atext character, a control
//     character, or the empty "") is rejected: it could never be owned.
//   - Non-ASCII local parts (RFC 6531 §3.3, SMTPUTF8) are accepted only with
//     Options.UTF8Local. They must be valid UTF-8, in Unicode normalization
//     form NFC, and free of compatibility characters (NFKC-stable, so no
//     full-width or mathematical look-alikes of ASCII letters). Input that is
//     not normalized is rejected, never normalized.
//   - The domain is a sequence of LDH labels (RFC 1035 §2.3.1, RFC 1123 §2.1)
//     or IDNA2008 labels (RFC 5890–5893). U-labels are converted to A-labels
//     (bücher.example → xn--bcher-kva.example); an A-label (xn--…) must decode
//     to a valid U-label that encodes back to exactly the same A-label.
//     Single-label domains (localhost) are accepted.
//
// # Rejected everywhere
//
// Source routes (@a:u@b, RFC 5321 §4.1.2 A-d-l / Appendix C), address literals
// (u@[127.0.0.1], u@[IPv6:…], RFC 5321 §4.1.3), a trailing dot, empty labels,
// labels over 63 octets, domains over 253 octets, a final label that is
// numeric (123, 1.2.3.4, x.0x7f: it looks like an IP address), local parts
// over 64 octets, addresses over 254 octets (both limits are checked on the
// input and on the canonical form, RFC 5321 §4.5.3.1), more than one @
// outside quotes, and these characters anywhere in the input, quoted or not:
// invalid UTF-8 (RFC 3629: stray continuation bytes, truncated sequences,
// overlong encodings, UTF-16 surrogates, values above U+10FFFF), C0 and C1
// control characters, DEL, any white space (ASCII space and tab included, as
// well as U+00A0, U+2000–U+200A, U+3000, …), every Unicode format character
// (category Cf: bidi controls, zero-width characters, U+00AD SOFT HYPHEN,
// U+FEFF, …), other default-ignorable (invisible) characters, private-use
// characters, noncharacters, unassigned code points (as of the Unicode version
// of the Go toolchain) and U+FFFD REPLACEMENT CHARACTER.
//
// # Canonical form
//
// The local part is lowercased: ASCII letters always, non-ASCII runes with
// unicode.ToLower rune by rune (simple case mapping: "ß" stays "ß" and is not
// "ss"; final sigma "ς" stays distinct from "σ"). A non-ASCII rune that
// lowercases to an ASCII one (U+212A KELVIN SIGN → "k", U+0130 → "i") is an
// error, so that no non-ASCII spelling collapses into an ASCII mailbox. The
// domain is lowercased and converted to its A-label form. Comparisons must use
// the canonical form; Address values compare with ==.
//
// # Extensions
//
// SplitExtension splits a canonical local part at the first recipient
// delimiter character (Postfix recipient_delimiter semantics, SPEC §1).
package address

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/net/idna"
	"golang.org/x/text/unicode/norm"
)

// Size limits.
const (
	maxLocal   = 64  // RFC 5321 §4.5.3.1.1: local-part ≤ 64 octets
	maxDomain  = 253 // RFC 1035 §2.3.4 (255 octets in wire format) / RFC 5321 §4.5.3.1.2, without trailing dot
	maxLabel   = 63  // RFC 1035 §2.3.4: label ≤ 63 octets
	maxAddress = 254 // RFC 5321 §4.5.3.1.3: path ≤ 256 octets including "<" and ">"
)

// Address is a canonical mailbox: Local lowercased, Domain lowercased IDNA A-label.
//
// Values returned by Parse are canonical and can be compared with ==. The zero
// Address (IsZero) stands for "no address", e.g. the null sender <>.
type Address struct{ Local, Domain string }

// String returns Local + "@" + Domain, or "" for the zero Address.
func (a Address) String() string {
	if a.IsZero() {
		return ""
	}
	return a.Local + "@" + a.Domain
}

// IsZero reports whether a is the zero Address.
func (a Address) IsZero() bool { return a.Local == "" && a.Domain == "" }

// WithExtension returns a with delim+ext appended to the local part (used to
// carry an address extension into alias targets, SPEC §4 rule 4, like Postfix
// propagate_unmatched_extensions). delim and ext are expected to come from
// SplitExtension of a canonical local part; the result is not re-validated
// (it may, for instance, exceed 64 octets): call Parse(result.String(), opt)
// if it must be.
func (a Address) WithExtension(delim, ext string) Address {
	if delim == "" && ext == "" {
		return a
	}
	a.Local = a.Local + delim + ext
	return a
}

// Options controls what Parse and ParseLocal accept.
type Options struct {
	UTF8Local bool // allow non-ASCII local parts (SMTPUTF8, RFC 6531); false = ASCII only
}

// Error is the error type of every function here. Functions return it as *Error.
type Error struct {
	Input  string // the input as given (quoted with %q by Error, so it is safe to log)
	Reason string // what is wrong, with the offending character as U+XXXX and its byte offset where there is one
}

func (e *Error) Error() string { return fmt.Sprintf("invalid address %q: %s", e.Input, e.Reason) }

// Parse parses a full mailbox "local@domain" (RFC 5321 Mailbox; a quoted local
// part is unquoted when its content is a valid dot-atom, any other quoted form
// is an error). It returns the canonical address, or an *Error.
func Parse(s string, opt Options) (Address, error) {
	a, reason := parse(s, opt)
	if reason != "" {
		return Address{}, &Error{Input: s, Reason: reason}
	}
	return a, nil
}

// ParseDomain validates a domain (U-label or A-label form) and returns its
// canonical lowercase A-label form, or an *Error.
func ParseDomain(s string) (string, error) {
	if s == "" {
		return "", &Error{Input: s, Reason: "empty domain"}
	}
	if reason := checkRunes(s, 0); reason != "" {
		return "", &Error{Input: s, Reason: reason}
	}
	d, reason := parseDomain(s, 0)
	if reason != "" {
		return "", &Error{Input: s, Reason: reason}
	}
	return d, nil
}

// ParseLocal validates a bare local part (as Parse would the part before the
// @) and returns it in canonical form, or an *Error.
func ParseLocal(s string, opt Options) (string, error) {
	if s == "" {
		return "", &Error{Input: s, Reason: "empty local part"}
	}
	if reason := checkRunes(s, 0); reason != "" {
		return "", &Error{Input: s, Reason: reason}
	}
	l, reason := parseLocal(s, 0, opt)
	if reason != "" {
		return "", &Error{Input: s, Reason: reason}
	}
	return l, nil
}

// SplitExtension splits a canonical local part at the first character that is
// in delims (a set of characters; "" means the default "+"), SPEC §1. It
// returns the base, the delimiter character found and the extension after it,
// so that base+delim+ext == local. ok is false, and the other results empty,
// when local contains no delimiter or when the base would be empty ("+alice").
//
//	"alice++x", "+"  → "alice", "+", "+x", true
//	"alice+",   "+"  → "alice", "+", "", true
//	"a-b+c",    "+-" → "a", "-", "b+c", true
func SplitExtension(local, delims string) (base, delim, ext string, ok bool) {
	if delims == "" {
		delims = "+"
	}
	for i := 0; i < len(local); {
		n := 1
		if local[i] >= utf8.RuneSelf {
			_, n = utf8.DecodeRuneInString(local[i:])
		}
		if isDelim(local[i:i+n], delims) {
			if i == 0 {
				return "", "", "", false
			}
			return local[:i], local[i : i+n], local[i+n:], true
		}
		i += n
	}
	return "", "", "", false
}

// isDelim reports whether the encoded character c is one of the characters of
// delims. Characters are compared as byte sequences, so invalid UTF-8 never
// matches a different invalid byte.
func isDelim(c, delims string) bool {
	for j := 0; j < len(delims); {
		n := 1
		if delims[j] >= utf8.RuneSelf {
			_, n = utf8.DecodeRuneInString(delims[j:])
		}
		if delims[j:j+n] == c {
			return true
		}
		j += n
	}
	return false
}

// parse implements Parse; it returns a non-empty reason on error.
func parse(s string, opt Options) (Address, string) {
	if s == "" {
		return Address{}, "empty address"
	}
	if reason := checkRunes(s, 0); reason != "" {
		return Address{}, reason
	}
	if len(s) > maxAddress {
		return Address{}, fmt.Sprintf("address is %d octets, more than %d (RFC 5321 §4.5.3.1.3)", len(s), maxAddress)
	}
	if s[0] == '@' {
		// RFC 5321 §4.1.2: Path = "<" [ A-d-l ":" ] Mailbox ">"; source
		// routes are deprecated (Appendix C) and never accepted here.
		if strings.IndexByte(s, ':') >= 0 {
			return Address{}, "source routes (@host:user@domain) are not accepted"
		}
		return Address{}, "empty local part"
	}
	var localRaw, domainRaw string
	domainBase := 0
	if s[0] == '"' {
		end := quoteEnd(s)
		if end < 0 {
			return Address{}, "unterminated quoted local part"
		}
		if end+1 >= len(s) || s[end+1] != '@' {
			if end+1 >= len(s) {
				return Address{}, "missing @"
			}
			return Address{}, fmt.Sprintf("quoted local part must be followed by @, found %s at byte offset %d", describeByte(s, end+1), end+1)
		}
		localRaw, domainRaw, domainBase = s[:end+1], s[end+2:], end+2
	} else {
		at := strings.IndexByte(s, '@')
		if at < 0 {
			return Address{}, "missing @"
		}
		localRaw, domainRaw, domainBase = s[:at], s[at+1:], at+1
	}
	if i := strings.IndexByte(domainRaw, '@'); i >= 0 {
		return Address{}, fmt.Sprintf("more than one @ outside quotes (second @ at byte offset %d)", domainBase+i)
	}
	local, reason := parseLocal(localRaw, 0, opt)
	if reason != "" {
		return Address{}, reason
	}
	domain, reason := parseDomain(domainRaw, domainBase)
	if reason != "" {
		return Address{}, reason
	}
	if n := len(local) + 1 + len(domain); n > maxAddress {
		return Address{}, fmt.Sprintf("canonical address is %d octets, more than %d (RFC 5321 §4.5.3.1.3)", n, maxAddress)
	}
	return Address{Local: local, Domain: domain}, ""
}

// quoteEnd returns the index of the closing DQUOTE of the quoted-string that
// starts at s[0], honouring quoted-pairs (RFC 5321 §4.1.2), or -1.
func quoteEnd(s string) int {
	for i := 1; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '"':
			return i
		}
	}
	return -1
}

// ---------------------------------------------------------------------------
// Local part

// atext per RFC 5322 §3.2.3 (ASCII part; RFC 6531 §3.3 adds UTF8-non-ascii):
// ALPHA / DIGIT / "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "/" /
// "=" / "?" / "^" / "_" / "`" / "{" / "|" / "}" / "~".
var atext = func() (t [utf8.RuneSelf]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for _, c := range "!#$%&'*+-/=?^_`{|}~" {
		t[c] = true
	}
	return t
}()

// parseLocal validates raw (the local part as written, possibly quoted; its
// characters have already passed checkRunes) and returns the canonical local
// part. base is the byte offset of raw in the input, for messages.
func parseLocal(raw string, base int, opt Options) (string, string) {
	if raw == "" {
		return "", "empty local part"
	}
	if len(raw) > maxLocal {
		return "", fmt.Sprintf("local part is %d octets, more than %d (RFC 5321 §4.5.3.1.1)", len(raw), maxLocal)
	}
	content, cbase, quoted := raw, base, false
	if raw[0] == '"' {
		end := quoteEnd(raw)
		if end < 0 {
			return "", "unterminated quoted local part"
		}
		if end != len(raw)-1 {
			return "", fmt.Sprintf("text after the closing quote of the local part at byte offset %d", base+end+1)
		}
		content, cbase, quoted = raw[1:end], base+1, true
		if content == "" {
			return "", `empty quoted local part ""`
		}
	}
	reason, upper, nonASCII, escaped := checkDotAtom(content, cbase, quoted, opt.UTF8Local)
	if reason != "" {
		return "", reason
	}
	if escaped {
		content = unescape(content)
	}
	if nonASCII {
		// With quoted-pairs, offsets in messages refer to the unescaped content.
		return lowerUTF8Local(content, cbase)
	}
	if upper {
		content = lowerASCII(content)
	}
	return content, ""
}

// checkDotAtom checks that s is a dot-atom (RFC 5322 §3.2.3). When quoted is
// set, s is the content of a quoted-string and a quoted-pair (RFC 5321 §4.1.2)
// escaping an atext character counts as that character; any other escape is
// an error. Non-ASCII runes are atext only when utf8ok (RFC 6531 §3.3).
func checkDotAtom(s string, base int, quoted, utf8ok bool) (reason string, upper, nonASCII, escaped bool) {
	what := "local part"
	if quoted {
		what = "quoted local part"
	}
	prevDot := true // at the start a dot would be a leading dot
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '.':
			if i == 0 {
				return fmt.Sprintf("%s starts with a dot (RFC 5322 §3.2.3)", what), false, false, false
			}
			if prevDot {
				return fmt.Sprintf("%s has two consecutive dots at byte offset %d (RFC 5322 §3.2.3)", what, base+i), false, false, false
			}
			prevDot = true
			i++
			continue
		case c == '\\' && quoted:
			// quoted-pairSMTP = %d92 %d32-126 (RFC 5321 §4.1.2); only an
			// escaped atext character keeps the content a dot-atom.
			if i+1 >= len(s) || s[i+1] >= utf8.RuneSelf || !atext[s[i+1]] {
				return fmt.Sprintf("quoted local part escapes %s at byte offset %d; only letters, digits and atext may be escaped", describeByte(s, i+1), base+i+1), false, false, false
			}
			if 'A' <= s[i+1] && s[i+1] <= 'Z' {
				upper = true
			}
			escaped = true
			i += 2
		case c < utf8.RuneSelf:
			if !atext[c] {
				return fmt.Sprintf("%s contains %s at byte offset %d, which is not allowed in a dot-atom (RFC 5322 §3.2.3)", what, describeByte(s, i), base+i), false, false, false
			}
			if 'A' <= c && c <= 'Z' {
				upper = true
			}
			i++
		default:
			r, n := utf8.DecodeRuneInString(s[i:])
			if !utf8ok {
				return fmt.Sprintf("%s contains non-ASCII %s at byte offset %d; non-ASCII local parts need SMTPUTF8 (RFC 6531 §3.3)", what, describeRune(r, ""), base+i), false, false, false
			}
			nonASCII = true
			i += n
		}
		prevDot = false
	}
	if prevDot {
		if s == "" {
			return "empty local part", false, false, false
		}
		return fmt.Sprintf("%s ends with a dot (RFC 5322 §3.2.3)", what), false, false, false
	}
	return "", upper, nonASCII, escaped
}

// unescape removes the backslashes of quoted-pairs (already validated).
func unescape(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' {
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// lowerASCII lowercases the ASCII letters of s.
func lowerASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// lowerUTF8Local checks and lowercases a non-ASCII local part (RFC 6531 §3.3).
// The input must be NFC and NFKC-stable (rejected, never normalized); runes
// are lowercased with unicode.ToLower, and a non-ASCII rune must not become
// ASCII. The result is checked again so that the canonical form is a fixed
// point of Parse.
func lowerUTF8Local(s string, base int) (string, string) {
	if reason := checkUnicodeNormal(s, base, "local part"); reason != "" {
		return "", reason
	}
	out, reason := lowerNoCollapse(s, base, "local part", "address")
	if reason != "" {
		return "", reason
	}
	if out != s {
		if reason := checkRunes(out, 0); reason != "" {
			return "", "after lowercasing, the local part " + reason
		}
		if reason := checkUnicodeNormal(out, 0, "lowercased local part"); reason != "" {
			return "", reason
		}
	}
	if len(out) > maxLocal {
		return "", fmt.Sprintf("canonical local part is %d octets, more than %d (RFC 5321 §4.5.3.1.1)", len(out), maxLocal)
	}
	return out, ""
}

// checkUnicodeNormal rejects text that is not NFC (UAX #15) or that contains
// compatibility characters (not NFKC-stable: full-width letters, ligatures,
// mathematical alphanumerics, …).
func checkUnicodeNormal(s string, base int, what string) string {
	if !norm.NFC.IsNormalString(s) {
		i := norm.NFC.QuickSpanString(s)
		// QuickSpan stops at the start of the segment that needs work.
		r, _ := utf8.DecodeRuneInString(s[i:])
		return fmt.Sprintf("%s is not in Unicode normalization form NFC (near %s at byte offset %d); it is rejected, not normalized", what, describeRune(r, ""), base+i)
	}
	if !norm.NFKC.IsNormalString(s) {
		for i, r := range s {
			if r >= utf8.RuneSelf && !norm.NFKC.IsNormalString(string(r)) {
				return fmt.Sprintf("%s contains the compatibility character %s at byte offset %d (NFKC maps it to %q)", what, describeRune(r, ""), base+i, norm.NFKC.String(string(r)))
			}
		}
		return fmt.Sprintf("%s is not NFKC-stable (it contains compatibility characters)", what)
	}
	return ""
}

// ---------------------------------------------------------------------------
// Domain

// idnaProfile is IDNA2008 registration-strength validation (RFC 5891 §4) with
// no mapping at all: it rejects every character that UTS #46 would map,
// ignore or disallow (uppercase, full-width forms, U+3002 as a dot, …), checks
// NFC, STD3 (LDH) rules, the Bidi rule (RFC 5893) over the whole domain, the
// ContextJ rules and DNS lengths. Hyphen placement is checked by this package
// itself, so that ASCII labels such as "ab--cd" are treated alike in ASCII and
// internationalized domains.
var idnaProfile = idna.New(idna.ValidateForRegistration(), idna.CheckHyphens(false))

// ldh reports whether c is a lowercase letter, digit or hyphen.
func ldh(c byte) bool {
	return 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-'
}

// parseDomain validates d (characters already passed checkRunes) and returns
// its canonical A-label form. base is the byte offset of d in the input.
func parseDomain(d string, base int) (string, string) {
	if d == "" {
		return "", "empty domain"
	}
	if d[0] == '[' {
		// RFC 5321 §4.1.3 address-literal: [IPv4] or [IPv6:…].
		return "", "IP literals are not accepted (a mailbox domain must be a domain name)"
	}
	if len(d) > maxDomain {
		return "", fmt.Sprintf("domain is %d octets, more than %d (RFC 1035 §2.3.4, RFC 5321 §4.5.3.1.2)", len(d), maxDomain)
	}
	if d[len(d)-1] == '.' {
		return "", fmt.Sprintf("domain ends with a dot (trailing dot at byte offset %d)", base+len(d)-1)
	}
	upper, needIDNA := false, false
	start := 0
	for i := 0; i <= len(d); i++ {
		if i == len(d) || d[i] == '.' {
			label := d[start:i]
			if label == "" {
				return "", fmt.Sprintf("domain has an empty label at byte offset %d", base+i)
			}
			if len(label) >= 4 && strings.EqualFold(label[:4], "xn--") {
				needIDNA = true
			}
			if isASCII(label) {
				if reason := checkLDHLabel(label, base+start); reason != "" {
					return "", reason
				}
			}
			start = i + 1
			continue
		}
		c := d[i]
		switch {
		case c >= utf8.RuneSelf:
			needIDNA = true
		case 'A' <= c && c <= 'Z':
			upper = true
		case !ldh(c):
			// RFC 1035 §2.3.1 preferred name syntax, RFC 5321 §4.1.2 sub-domain.
			return "", fmt.Sprintf("domain contains %s at byte offset %d; only letters, digits, hyphens and dots are allowed (RFC 1035 §2.3.1)", describeByte(d, i), base+i)
		}
	}
	var out string
	if needIDNA {
		var reason string
		if out, reason = idnaDomain(d, base); reason != "" {
			return "", reason
		}
	} else {
		out = d
		if upper {
			out = lowerASCII(d)
		}
	}
	if reason := checkTLD(out); reason != "" {
		return "", reason
	}
	return out, ""
}

// checkLDHLabel checks an ASCII label (case-insensitively): LDH characters
// (RFC 1035 §2.3.1, with RFC 1123 §2.1 allowing a leading digit), no leading
// or trailing hyphen, at most 63 octets.
func checkLDHLabel(label string, off int) string {
	if len(label) > maxLabel {
		return fmt.Sprintf("domain label %q is %d octets, more than %d (RFC 1035 §2.3.4)", label, len(label), maxLabel)
	}
	for i := 0; i < len(label); i++ {
		c := label[i]
		if 'A' <= c && c <= 'Z' {
			continue
		}
		if !ldh(c) {
			return fmt.Sprintf("domain contains %s at byte offset %d; only letters, digits, hyphens and dots are allowed (RFC 1035 §2.3.1)", describeByte(label, i), off+i)
		}
	}
	if label[0] == '-' {
		return fmt.Sprintf("domain label %q starts with a hyphen (RFC 1035 §2.3.1)", label)
	}
	if label[len(label)-1] == '-' {
		return fmt.Sprintf("domain label %q ends with a hyphen (RFC 1035 §2.3.1)", label)
	}
	return ""
}

// checkTLD rejects a canonical domain whose last label is numeric (all digits,
// or 0x + hex digits): such a name looks like an IP address to inet_aton-style
// parsers (1.2.3.4, 123, 10.0x1), and RFC 3696 §2 forbids all-numeric TLDs.
func checkTLD(d string) string {
	tld := d[strings.LastIndexByte(d, '.')+1:]
	digits := tld
	if len(tld) >= 2 && tld[0] == '0' && tld[1] == 'x' {
		digits = tld[2:]
		for i := 0; i < len(digits); i++ {
			if c := digits[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
				return ""
			}
		}
		return fmt.Sprintf("domain ends in the hexadecimal label %q; it looks like an IP address", tld)
	}
	for i := 0; i < len(digits); i++ {
		if c := digits[i]; c < '0' || c > '9' {
			return ""
		}
	}
	return fmt.Sprintf("domain ends in the all-numeric label %q; it looks like an IP address (RFC 3696 §2)", tld)
}

// idnaDomain converts a domain that has U-labels or A-labels to canonical
// A-label form (RFC 5890 §2.3.2, RFC 5891 §4–5) and verifies the result:
//
//   - labels are lowercased rune by rune (ASCII and unicode.ToLower); a
//     non-ASCII rune that lowercases to ASCII is rejected;
//   - every A-label input is decoded and its U-label checked like a U-label
//     input; every U-label is checked (checkULabel);
//   - the whole U-form goes through idnaProfile.ToASCII (no mapping);
//   - every resulting label is LDH, ≤ 63 octets, and round-trips: an A-label
//     input must come back byte for byte (after lowercasing), a U-label input
//     must decode back to itself.
func idnaDomain(d string, base int) (string, string) {
	lowered, reason := lowerDomain(d, base)
	if reason != "" {
		return "", reason
	}
	labels := strings.Split(lowered, ".")
	ulabels := make([]string, len(labels))
	off := base // byte offset of the label in the input (of d, not of lowered)
	rest := d
	for i, l := range labels {
		origLen := strings.IndexByte(rest, '.')
		if origLen < 0 {
			origLen = len(rest)
		}
		rest = rest[min(origLen+1, len(rest)):]
		switch {
		case strings.HasPrefix(l, "xn--"):
			u, err := idnaProfile.ToUnicode(l)
			if err != nil {
				return "", fmt.Sprintf("invalid A-label %q at byte offset %d: %v", l, off, err)
			}
			if u == "" || isASCII(u) || strings.Contains(u, ".") {
				return "", fmt.Sprintf("invalid A-label %q at byte offset %d: it does not decode to a non-ASCII label", l, off)
			}
			if reason := checkRunes(u, 0); reason != "" {
				return "", fmt.Sprintf("A-label %q decodes to a label that %s", l, reason)
			}
			if reason := checkULabel(u, -1); reason != "" {
				return "", fmt.Sprintf("A-label %q decodes to %q: %s", l, u, reason)
			}
			ulabels[i] = u
		case isASCII(l):
			ulabels[i] = l
		default:
			// Offsets inside the label are those of the lowercased label;
			// they differ from the input only where lowercasing changed a
			// rune's encoded length.
			if reason := checkULabel(l, off); reason != "" {
				return "", reason
			}
			ulabels[i] = l
		}
		off += origLen + 1
	}
	a, err := idnaProfile.ToASCII(strings.Join(ulabels, "."))
	if err != nil {
		return "", fmt.Sprintf("invalid internationalized domain name (IDNA2008, RFC 5891): %v", err)
	}
	if len(a) > maxDomain {
		return "", fmt.Sprintf("domain is %d octets in A-label form, more than %d (RFC 1035 §2.3.4)", len(a), maxDomain)
	}
	alabels := strings.Split(a, ".")
	if len(alabels) != len(labels) {
		return "", "IDNA conversion changed the number of labels"
	}
	for i, al := range alabels {
		if al == "" || !isASCII(al) {
			return "", fmt.Sprintf("IDNA conversion produced an invalid label %q", al)
		}
		if reason := checkLDHLabel(al, 0); reason != "" {
			return "", reason
		}
		if isASCII(labels[i]) {
			if al != labels[i] {
				return "", fmt.Sprintf("A-label %q does not round-trip (it encodes back as %q)", labels[i], al)
			}
			continue
		}
		if !strings.HasPrefix(al, "xn--") {
			return "", fmt.Sprintf("IDNA conversion of %q produced %q, not an A-label", labels[i], al)
		}
		u, err := idnaProfile.ToUnicode(al)
		if err != nil || u != labels[i] {
			return "", fmt.Sprintf("U-label %q does not round-trip through its A-label %q", labels[i], al)
		}
	}
	return a, ""
}

// lowerDomain lowercases d rune by rune and rejects non-ASCII runes that
// lowercase to ASCII (U+212A KELVIN SIGN → k), so that dots stay the only
// label separators and no non-ASCII spelling becomes an ASCII name.
func lowerDomain(d string, base int) (string, string) {
	return lowerNoCollapse(d, base, "domain", "domain")
}

// lowerNoCollapse lowercases s rune by rune (ASCII letters, and non-ASCII
// runes with unicode.ToLower) and refuses a non-ASCII rune that lowercases
// to ASCII. what names the part in the reason, whole the kind of name.
func lowerNoCollapse(s string, base int, what, whole string) (string, string) {
	var b strings.Builder
	b.Grow(len(s))
	for i, r := range s {
		l := r
		if r < utf8.RuneSelf {
			if 'A' <= r && r <= 'Z' {
				l = r + 'a' - 'A'
			}
		} else {
			l = unicode.ToLower(r)
			if l < utf8.RuneSelf {
				return "", fmt.Sprintf("%s contains %s at byte offset %d, which lowercases to ASCII %q; rejected so that no non-ASCII spelling collapses into an ASCII %s", what, describeRune(r, ""), base+i, l, whole)
			}
		}
		b.WriteRune(l)
	}
	return b.String(), ""
}

// checkULabel applies the IDNA2008 rules (RFC 5891 §4.2, RFC 5892) to a
// lowercased non-ASCII label, in addition to what idnaProfile checks: NFC, no
// leading or trailing hyphen, no "--" in the third and fourth positions, no
// leading combining mark, only PVALID-like characters (RFC 5892 §2.1
// LetterDigits: Ll, Lo, Lm, Mn, Mc, Nd, plus the §2.6 exceptions; symbols,
// punctuation and emoji are rejected, which the idna package's UTS #46 tables
// would accept), and the CONTEXTO rules of RFC 5892 Appendix A. off is the
// byte offset of the label in the input, or -1 when the label was decoded from
// an A-label.
func checkULabel(u string, off int) string {
	at := func(i int) string {
		if off < 0 {
			return fmt.Sprintf("at byte offset %d of the decoded label", i)
		}
		return fmt.Sprintf("at byte offset %d", off+i)
	}
	if !norm.NFC.IsNormalString(u) {
		return fmt.Sprintf("domain label %q is not in Unicode normalization form NFC (RFC 5891 §5.4); it is rejected, not normalized", u)
	}
	var runes [4]rune
	n := 0
	hasArabicIndic, hasExtArabicIndic, hasKana := false, false, false
	for _, r := range u {
		if n < len(runes) {
			runes[n] = r
		}
		n++
		switch {
		case 0x0660 <= r && r <= 0x0669:
			hasArabicIndic = true
		case 0x06F0 <= r && r <= 0x06F9:
			hasExtArabicIndic = true
		case r != 0x30FB && unicode.In(r, unicode.Hiragana, unicode.Katakana, unicode.Han):
			hasKana = true
		}
	}
	if runes[0] == '-' || strings.HasSuffix(u, "-") {
		return fmt.Sprintf("domain label %q starts or ends with a hyphen (RFC 5891 §4.2.3.1)", u)
	}
	if n >= 4 && runes[2] == '-' && runes[3] == '-' {
		return fmt.Sprintf("domain label %q has \"--\" in the third and fourth positions (RFC 5891 §4.2.3.1)", u)
	}
	if unicode.Is(unicode.M, runes[0]) {
		return fmt.Sprintf("domain label %q starts with the combining mark %s (RFC 5891 §4.2.3.2)", u, describeRune(runes[0], ""))
	}
	if hasArabicIndic && hasExtArabicIndic {
		return fmt.Sprintf("domain label %q mixes Arabic-Indic and Extended Arabic-Indic digits (RFC 5892 Appendix A.8, A.9)", u)
	}
	prev := rune(-1)
	for i, r := range u {
		if r < utf8.RuneSelf {
			if !ldh(byte(r)) {
				return fmt.Sprintf("domain contains %s %s; only letters, digits and hyphens are allowed", describeRune(r, ""), at(i))
			}
			prev = r
			continue
		}
		next, _ := utf8.DecodeRuneInString(u[i+utf8.RuneLen(r):])
		ok := true
		switch r {
		case 0x00DF, 0x03C2, 0x06FD, 0x06FE, 0x0F0B, 0x3007: // RFC 5892 §2.6 exceptions: PVALID
		case 0x0640, 0x07FA, 0x302E, 0x302F, 0x3031, 0x3032, 0x3033, 0x3034, 0x3035, 0x303B: // §2.6 exceptions: DISALLOWED
			ok = false
		case 0x00B7: // MIDDLE DOT: only between two 'l' (Appendix A.3)
			ok = prev == 'l' && next == 'l'
		case 0x0375: // GREEK LOWER NUMERAL SIGN: followed by Greek (Appendix A.4)
			ok = unicode.Is(unicode.Greek, next)
		case 0x05F3, 0x05F4: // HEBREW GERESH / GERSHAYIM: preceded by Hebrew (Appendix A.5, A.6)
			ok = prev >= 0 && unicode.Is(unicode.Hebrew, prev)
		case 0x30FB: // KATAKANA MIDDLE DOT: label has Hiragana, Katakana or Han (Appendix A.7)
			ok = hasKana
		default:
			ok = unicode.In(r, unicode.Ll, unicode.Lo, unicode.Lm, unicode.Mn, unicode.Mc, unicode.Nd) &&
				!isOldHangulJamo(r) && !isIgnorableBlock(r)
		}
		if !ok {
			return fmt.Sprintf("domain contains %s %s, which IDNA2008 does not allow here (RFC 5892)", describeRune(r, ""), at(i))
		}
		prev = r
	}
	return ""
}

// isOldHangulJamo: RFC 5892 §2.9 (conjoining jamo are DISALLOWED; use syllables).
func isOldHangulJamo(r rune) bool {
	return 0x1100 <= r && r <= 0x11FF || 0xA960 <= r && r <= 0xA97F || 0xD7B0 <= r && r <= 0xD7FF
}

// isIgnorableBlock: RFC 5892 §2.8 (Combining Diacritical Marks for Symbols,
// Musical Symbols, Ancient Greek Musical Notation).
func isIgnorableBlock(r rune) bool {
	return 0x20D0 <= r && r <= 0x20FF || 0x1D100 <= r && r <= 0x1D24F
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// ---------------------------------------------------------------------------
// Characters that are never valid

// checkRunes rejects, anywhere in s: invalid UTF-8 (RFC 3629), controls, DEL,
// white space, format (Cf) and other invisible characters, private-use
// characters, noncharacters, unassigned code points and U+FFFD. base is the
// byte offset of s in the input.
func checkRunes(s string, base int) string {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c < 0x20 || c == 0x7f:
				return forbidden(rune(c), "a control character", s, i, base, 1)
			case c == ' ':
				return forbidden(' ', "a white-space character", s, i, base, 1)
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			return invalidUTF8(s, i, base)
		}
		if kind := forbiddenKind(r); kind != "" {
			return forbidden(r, kind, s, i, base, n)
		}
		i += n
	}
	return ""
}

// forbiddenKind classifies a non-ASCII rune that is never valid, or returns "".
func forbiddenKind(r rune) string {
	switch {
	case r <= 0x9f:
		return "a control character" // C1 controls U+0080–U+009F
	case r == utf8.RuneError:
		return "the replacement character, a sign of an earlier decoding error"
	case unicode.Is(unicode.White_Space, r) || unicode.Is(unicode.Zs, r):
		return "a white-space character"
	case unicode.Is(unicode.Bidi_Control, r):
		return "a bidirectional control character"
	case unicode.Is(unicode.Cf, r):
		return "an invisible format character, Unicode category Cf"
	case unicode.Is(unicode.Other_Default_Ignorable_Code_Point, r) || unicode.Is(unicode.Variation_Selector, r) || r == 0x2800:
		return "an invisible character"
	case unicode.Is(unicode.Co, r):
		return "a private-use character"
	case unicode.Is(unicode.Noncharacter_Code_Point, r):
		return "a noncharacter"
	case !unicode.In(r, unicode.L, unicode.M, unicode.N, unicode.P, unicode.S, unicode.Z):
		// Cc, Cf, Co were handled above and Cs cannot be decoded from valid
		// UTF-8; what is left is Cn (Go's unicode.C includes Cn).
		return "an unassigned code point"
	}
	return ""
}

func forbidden(r rune, kind, s string, i, base, n int) string {
	where := ""
	if unicode.Is(unicode.White_Space, r) {
		switch {
		case i == 0:
			where = " (leading white space is not trimmed)"
		case i+n == len(s):
			where = " (trailing white space is not trimmed)"
		}
	}
	return fmt.Sprintf("contains %s at byte offset %d%s", describeRune(r, kind), base+i, where)
}

// invalidUTF8 describes the invalid UTF-8 sequence at s[i] (RFC 3629 §3–4).
func invalidUTF8(s string, i, base int) string {
	c := s[i]
	var next byte
	hasNext := i+1 < len(s)
	if hasNext {
		next = s[i+1]
	}
	var what string
	switch {
	case c >= 0x80 && c <= 0xbf:
		what = "unexpected continuation byte"
	case c == 0xc0 || c == 0xc1:
		what = "overlong encoding"
	case c >= 0xf5:
		what = "byte that never appears in UTF-8"
	case c == 0xe0 && hasNext && next >= 0x80 && next <= 0x9f,
		c == 0xf0 && hasNext && next >= 0x80 && next <= 0x8f:
		what = "overlong encoding"
	case c == 0xed && hasNext && next >= 0xa0 && next <= 0xbf:
		what = "UTF-16 surrogate encoded in UTF-8"
	case c == 0xf4 && hasNext && next >= 0x90 && next <= 0xbf:
		what = "code point above U+10FFFF"
	default:
		what = "truncated sequence"
	}
	return fmt.Sprintf("invalid UTF-8 at byte offset %d (byte 0x%02X: %s)", base+i, c, what)
}

// runeNames names the characters most often used to disguise addresses; the
// others are described by their code point and class only.
var runeNames = map[rune]string{
	0x00: "NULL", 0x09: "CHARACTER TABULATION", 0x0A: "LINE FEED", 0x0B: "LINE TABULATION",
	0x0C: "FORM FEED", 0x0D: "CARRIAGE RETURN", 0x1B: "ESCAPE", 0x20: "SPACE", 0x7F: "DELETE",
	0x85: "NEXT LINE", 0xA0: "NO-BREAK SPACE", 0xAD: "SOFT HYPHEN", 0x034F: "COMBINING GRAPHEME JOINER",
	0x061C: "ARABIC LETTER MARK", 0x115F: "HANGUL CHOSEONG FILLER", 0x1160: "HANGUL JUNGSEONG FILLER",
	0x1680: "OGHAM SPACE MARK", 0x180E: "MONGOLIAN VOWEL SEPARATOR",
	0x2000: "EN QUAD", 0x2001: "EM QUAD", 0x2002: "EN SPACE", 0x2003: "EM SPACE",
	0x2004: "THREE-PER-EM SPACE", 0x2005: "FOUR-PER-EM SPACE", 0x2006: "SIX-PER-EM SPACE",
	0x2007: "FIGURE SPACE", 0x2008: "PUNCTUATION SPACE", 0x2009: "THIN SPACE", 0x200A: "HAIR SPACE",
	0x200B: "ZERO WIDTH SPACE", 0x200C: "ZERO WIDTH NON-JOINER", 0x200D: "ZERO WIDTH JOINER",
	0x200E: "LEFT-TO-RIGHT MARK", 0x200F: "RIGHT-TO-LEFT MARK", 0x2028: "LINE SEPARATOR",
	0x2029: "PARAGRAPH SEPARATOR", 0x202A: "LEFT-TO-RIGHT EMBEDDING", 0x202B: "RIGHT-TO-LEFT EMBEDDING",
	0x202C: "POP DIRECTIONAL FORMATTING", 0x202D: "LEFT-TO-RIGHT OVERRIDE", 0x202E: "RIGHT-TO-LEFT OVERRIDE",
	0x202F: "NARROW NO-BREAK SPACE", 0x205F: "MEDIUM MATHEMATICAL SPACE", 0x2060: "WORD JOINER",
	0x2061: "FUNCTION APPLICATION", 0x2062: "INVISIBLE TIMES", 0x2063: "INVISIBLE SEPARATOR",
	0x2064: "INVISIBLE PLUS", 0x2066: "LEFT-TO-RIGHT ISOLATE", 0x2067: "RIGHT-TO-LEFT ISOLATE",
	0x2068: "FIRST STRONG ISOLATE", 0x2069: "POP DIRECTIONAL ISOLATE", 0x2800: "BRAILLE PATTERN BLANK",
	0x3000: "IDEOGRAPHIC SPACE", 0x3002: "IDEOGRAPHIC FULL STOP", 0x3164: "HANGUL FILLER",
	0xFEFF: "ZERO WIDTH NO-BREAK SPACE", 0xFFA0: "HALFWIDTH HANGUL FILLER", 0xFFFD: "REPLACEMENT CHARACTER",
	0x212A: "KELVIN SIGN", 0x0130: "LATIN CAPITAL LETTER I WITH DOT ABOVE",
}

// describeRune formats r as "U+XXXX (NAME, kind)"; name and kind are optional.
func describeRune(r rune, kind string) string {
	name := runeNames[r]
	switch {
	case name != "" && kind != "":
		return fmt.Sprintf("U+%04X (%s, %s)", r, name, kind)
	case name != "":
		return fmt.Sprintf("U+%04X (%s)", r, name)
	case kind != "":
		return fmt.Sprintf("U+%04X (%s)", r, kind)
	case r > 0x20 && r < 0x7f:
		return fmt.Sprintf("%q (U+%04X)", r, r)
	}
	return fmt.Sprintf("U+%04X", r)
}

// describeByte describes the character that starts at s[i] (or the end of s).
func describeByte(s string, i int) string {
	if i >= len(s) {
		return "the end of the input"
	}
	r, n := utf8.DecodeRuneInString(s[i:])
	if r == utf8.RuneError && n == 1 {
		return fmt.Sprintf("byte 0x%02X", s[i])
	}
	return describeRune(r, "")
}
