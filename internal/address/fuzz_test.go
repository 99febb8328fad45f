package address

import (
	"errors"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

// checkCanonical reports what is wrong with a canonical address, or "".
func checkCanonical(a Address) string {
	s := a.String()
	switch {
	case a.Local == "" || a.Domain == "":
		return "empty part"
	case strings.Count(s, "@") != 1:
		return "not exactly one @"
	case len(s) > maxAddress:
		return "longer than 254 octets"
	case len(a.Local) > maxLocal:
		return "local part longer than 64 octets"
	case len(a.Domain) > maxDomain:
		return "domain longer than 253 octets"
	case !utf8.ValidString(s):
		return "invalid UTF-8"
	case !isASCII(a.Domain):
		return "non-ASCII domain"
	case strings.HasSuffix(a.Domain, ".") || strings.Contains(a.Domain, ".."):
		return "bad dots in domain"
	case strings.ToLower(a.Domain) != a.Domain:
		return "domain not lowercase"
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r <= 0x9f) || r == '"' || r == '\\' ||
			unicode.IsSpace(r) || unicode.Is(unicode.Cf, r) || unicode.Is(unicode.Zs, r) || r == utf8.RuneError {
			return "forbidden character " + describeRune(r, "")
		}
		if 'A' <= r && r <= 'Z' {
			return "uppercase ASCII"
		}
	}
	return ""
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"alice@example.com", "Alice.Smith+tag@Mail.Example.COM", `"alice"@example.com`,
		`"al\ice"@d.example`, "user@b\u00fccher.example", "user@xn--bcher-kva.example",
		"@a:u@b", "u@[127.0.0.1]", "u@[IPv6:::1]", "a@b.", "a@b..c", "\"a b\"@d", "\"\"@d",
		"alice@example.com\u2000", "\u0430dmin@example.com", "caf\u00e9@example.com",
		"\u212aelvin@example.com", "a@\u212a.example", "user@xn--zz.example", "a\xff@b",
		"a@\xed\xa0\x80", "user@\u0645\u062b\u0627\u0644.example", "x@col\u00b7legi.cat",
	} {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, s string, utf8Local bool) {
		opt := Options{UTF8Local: utf8Local}
		a, err := Parse(s, opt)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Input != s || e.Reason == "" {
				t.Fatalf("Parse(%q): bad error %#v", s, err)
			}
			if !a.IsZero() {
				t.Fatalf("Parse(%q) returned %q with an error", s, a)
			}
			return
		}
		if why := checkCanonical(a); why != "" {
			t.Fatalf("Parse(%q) = %q: %s", s, a, why)
		}
		if !utf8Local && !isASCII(a.Local) {
			t.Fatalf("Parse(%q) = %q: non-ASCII local part without UTF8Local", s, a)
		}
		if len(s) > maxAddress {
			t.Fatalf("Parse accepted a %d-octet input", len(s))
		}
		// The canonical form is a fixed point.
		b, err := Parse(a.String(), opt)
		if err != nil {
			t.Fatalf("Parse(%q) = %q, but reparsing fails: %v", s, a, err)
		}
		if b != a {
			t.Fatalf("Parse(%q) = %q, reparsed as %q", s, a, b)
		}
		// Parts parse alone to the same values.
		d, err := ParseDomain(a.Domain)
		if err != nil || d != a.Domain {
			t.Fatalf("ParseDomain(%q) = %q, %v", a.Domain, d, err)
		}
		l, err := ParseLocal(a.Local, opt)
		if err != nil || l != a.Local {
			t.Fatalf("ParseLocal(%q) = %q, %v", a.Local, l, err)
		}
		// The domain as written parses to the same canonical domain.
		at := strings.LastIndexByte(s, '@')
		if d, err := ParseDomain(s[at+1:]); err != nil || d != a.Domain {
			t.Fatalf("ParseDomain(%q) = %q, %v; Parse gave %q", s[at+1:], d, err, a.Domain)
		}
		if l, err := ParseLocal(s[:at], opt); err != nil || l != a.Local {
			t.Fatalf("ParseLocal(%q) = %q, %v; Parse gave %q", s[:at], l, err, a.Local)
		}
		// Nothing trimmed: the input itself has no leading or trailing space.
		if strings.TrimSpace(s) != s {
			t.Fatalf("Parse(%q) accepted surrounding white space", s)
		}
	})
}

func FuzzParseDomain(f *testing.F) {
	for _, s := range []string{
		"example.com", "EXAMPLE.COM", "localhost", "b\u00fccher.example", "xn--bcher-kva.example",
		"XN--BCHER-KVA.example", "[127.0.0.1]", "123.456", "127.0x1", "a..b", "a.", "-a.com",
		"xn--zz", "xn--abc-", "\u2603.example", "\u0645\u062b\u0627\u0644.example", "col\u00b7legi.cat",
		"example.com\u3002", "\u212a.example", "ab--cd.example", "b\u00fc--x.example",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDomain(s)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Input != s || e.Reason == "" {
				t.Fatalf("ParseDomain(%q): bad error %#v", s, err)
			}
			return
		}
		if d == "" || len(d) > maxDomain || !isASCII(d) || strings.ToLower(d) != d {
			t.Fatalf("ParseDomain(%q) = %q", s, d)
		}
		for _, l := range strings.Split(d, ".") {
			if reason := checkLDHLabel(l, 0); reason != "" {
				t.Fatalf("ParseDomain(%q) = %q: %s", s, d, reason)
			}
		}
		if d2, err := ParseDomain(d); err != nil || d2 != d {
			t.Fatalf("ParseDomain(%q) = %q, but ParseDomain(%q) = %q, %v", s, d, d, d2, err)
		}
		if len(s)+2 <= maxAddress && len(d)+2 <= maxAddress {
			a, err := Parse("x@"+s, Options{})
			if err != nil || a.Domain != d {
				t.Fatalf("ParseDomain(%q) = %q, but Parse(x@…) = %q, %v", s, d, a, err)
			}
		}
	})
}

func FuzzSplitExtension(f *testing.F) {
	for _, s := range [][2]string{
		{"alice++x", "+"}, {"alice+", "+"}, {"+alice", "+"}, {"alice", "+"}, {"a-b+c", "+-"},
		{"alice+x", ""}, {"caf\u00e9\u00a7x", "\u00a7"}, {"a\xffb", "\xff"}, {"a\xffb", "\ufffd"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, local, delims string) {
		base, delim, ext, ok := SplitExtension(local, delims)
		if delims == "" {
			delims = "+"
		}
		if !ok {
			if base != "" || delim != "" || ext != "" {
				t.Fatalf("SplitExtension(%q, %q) not ok but returned parts", local, delims)
			}
			// Either no delimiter at all, or one at the very start.
			for i := 0; i < len(local); {
				_, n := utf8.DecodeRuneInString(local[i:])
				if i > 0 && isDelim(local[i:i+n], delims) && !isDelim(local[:firstLen(local)], delims) {
					t.Fatalf("SplitExtension(%q, %q) missed the delimiter at %d", local, delims, i)
				}
				i += n
			}
			return
		}
		if base+delim+ext != local {
			t.Fatalf("SplitExtension(%q, %q): %q+%q+%q", local, delims, base, delim, ext)
		}
		if base == "" || delim == "" || !isDelim(delim, delims) {
			t.Fatalf("SplitExtension(%q, %q) = %q, %q, %q", local, delims, base, delim, ext)
		}
		if n := firstLen(delim); n != len(delim) {
			t.Fatalf("delimiter %q is more than one character", delim)
		}
		for i := 0; i < len(base); {
			_, n := utf8.DecodeRuneInString(base[i:])
			if isDelim(base[i:i+n], delims) {
				t.Fatalf("SplitExtension(%q, %q): base %q contains a delimiter", local, delims, base)
			}
			i += n
		}
		// On canonical local parts the split is stable: the base of a parsed
		// address has no delimiter, so splitting base+delim+ext again agrees.
		if b2, d2, e2, ok2 := SplitExtension(base+delim+ext, delims); !ok2 || b2 != base || d2 != delim || e2 != ext {
			t.Fatalf("SplitExtension not deterministic for %q", local)
		}
	})
}

// firstLen is the encoded length of the first character of s.
func firstLen(s string) int {
	if s == "" {
		return 0
	}
	_, n := utf8.DecodeRuneInString(s)
	return n
}
