package address

import (
	"errors"
	"strings"
	"testing"
	"unicode"
)

var (
	ascii = Options{}
	utf8L = Options{UTF8Local: true}
)

// TestParseHostile: every input must be rejected, with a Reason containing want.
func TestParseHostile(t *testing.T) {
	long := func(n int, c string) string { return strings.Repeat(c, n) }
	// 64 + 1 + 190 = 255 octets; every label is ≤ 63.
	addr255 := long(64, "a") + "@" + long(63, "b") + "." + long(63, "c") + "." + long(62, "d")
	tests := []struct {
		name, in string
		opt      Options
		want     string // substring of Reason
	}{
		// structure
		{"empty", "", ascii, "empty address"},
		{"at only", "@", ascii, "empty local part"},
		{"no domain", "user@", ascii, "empty domain"},
		{"no local", "@domain", ascii, "empty local part"},
		{"no at", "user", ascii, "missing @"},
		{"two at", "a@b@example.com", ascii, "more than one @"},
		{"two at adjacent", "a@@example.com", ascii, "more than one @"},
		{"source route", "@a:u@b", ascii, "source routes"},
		{"source route list", "@a,@b:u@c", ascii, "source routes"},
		{"source route bracketed", "<@a:u@b>", ascii, "more than one @"},
		{"angle brackets", "<alice@example.com>", ascii, "'<'"},
		{"display name", "Alice <alice@example.com>", ascii, "U+0020"},
		{"comment", "alice(x)@example.com", ascii, "'('"},

		// local part
		{"leading dot", ".alice@example.com", ascii, "starts with a dot"},
		{"trailing dot local", "alice.@example.com", ascii, "ends with a dot"},
		{"double dot local", "al..ice@example.com", ascii, "two consecutive dots at byte offset 3"},
		{"local 65", long(65, "a") + "@example.com", ascii, "local part is 65 octets, more than 64"},
		{"quoted space", `"a b"@example.com`, ascii, "U+0020"},
		{"quoted at", `"a@b"@example.com`, ascii, "'@'"},
		{"quoted empty", `""@example.com`, ascii, `empty quoted local part`},
		{"quoted escaped dot", `"a\.b"@example.com`, ascii, "escapes '.'"},
		{"quoted escaped quote", `"a\"b"@example.com`, ascii, `escapes '"'`},
		{"quoted escaped backslash", `"a\\b"@example.com`, ascii, `escapes '\\'`},
		{"quoted escaped space", `"a\ b"@example.com`, ascii, "U+0020"},
		{"quoted double dot", `"a..b"@example.com`, ascii, "two consecutive dots"},
		{"quoted leading dot", `".a"@example.com`, ascii, "starts with a dot"},
		{"quoted unterminated", `"alice@example.com`, ascii, "unterminated"},
		{"quoted then text", `"a"b@example.com`, ascii, "must be followed by @"},
		{"quote inside", `a"b"@example.com`, ascii, `'"'`},
		{"quoted comma", `"a,b"@example.com`, ascii, "','"},
		{"quoted 65", `"` + long(63, "a") + `"@example.com`, ascii, "local part is 65 octets"},

		// domain
		{"ipv4 literal", "u@[127.0.0.1]", ascii, "IP literals are not accepted"},
		{"ipv6 literal", "u@[IPv6:::1]", ascii, "IP literals are not accepted"},
		{"ipv6 literal full", "u@[IPv6:2001:db8::1]", ascii, "IP literals are not accepted"},
		{"bare ipv4", "u@127.0.0.1", ascii, "looks like an IP address"},
		{"numeric", "user@123.456", ascii, "looks like an IP address"},
		{"numeric single", "user@123", ascii, "looks like an IP address"},
		{"hex tld", "user@127.0x1", ascii, "looks like an IP address"},
		{"trailing dot", "user@example.com.", ascii, "ends with a dot"},
		{"leading dot domain", "user@.example.com", ascii, "empty label at byte offset 5"},
		{"empty label", "user@example..com", ascii, "empty label at byte offset 13"},
		{"label 64", "user@" + long(64, "a") + ".com", ascii, "more than 63"},
		{"leading hyphen", "user@-bad.com", ascii, "starts with a hyphen"},
		{"trailing hyphen", "user@bad-.com", ascii, "ends with a hyphen"},
		{"underscore", "user@_dmarc.example.com", ascii, "'_'"},
		{"colon", "user@example.com:25", ascii, "':'"},
		{"slash", "user@example.com/x", ascii, "'/'"},
		{"address 255", addr255, ascii, "address is 255 octets, more than 254"},
		{"invalid punycode", "xn--zz@xn--zz", ascii, "invalid A-label"},
		{"invalid punycode label", "user@xn--zz.example", ascii, "invalid A-label"},
		{"ascii punycode", "user@xn--abc-.example", ascii, "hyphen"},
		{"ascii punycode 2", "user@xn--abc-9ab.example", ascii, "A-label"},
		{"empty punycode", "user@xn--.example", ascii, "hyphen"},
		{"punycode of symbol", "user@xn--n3h.example", ascii, "U+2603"},
		{"symbol U-label", "user@\u2603.example", ascii, "U+2603"},
		{"fullwidth domain", "user@\uff45xample.com", ascii, "U+FF45"},
		{"ideographic full stop", "user@b\u00fccher\u3002example", ascii, "U+3002"},
		{"kelvin domain", "user@\u212aelvin.example", ascii, "U+212A"},
		{"dotted I domain", "user@\u0130stanbul.example", ascii, "U+0130"},
		{"U-label double hyphen", "user@b\u00fc--x.example", ascii, `"--"`},
		{"U-label leading hyphen", "user@-b\u00fc.example", ascii, "hyphen"},
		{"U-label not NFC", "user@bu\u0308cher.example", ascii, "NFC"},
		{"combining first", "user@\u0308a.example", ascii, "combining mark"},
		{"middle dot alone", "user@a\u00b7b.example", ascii, "U+00B7"},

		// characters that are never valid, anywhere
		{"NUL", "ali\x00ce@example.com", ascii, "U+0000 (NULL, a control character) at byte offset 3"},
		{"CR", "alice@example.com\r", ascii, "U+000D"},
		{"LF", "alice\n@example.com", ascii, "U+000A"},
		{"CRLF", "alice@example.com\r\n", ascii, "U+000D"},
		{"TAB", "alice@example.com\t", ascii, "U+0009"},
		{"ESC", "\x1b[31malice@example.com", ascii, "U+001B"},
		{"DEL", "alice\x7f@example.com", ascii, "U+007F"},
		{"C1 NEL", "alice\u0085@example.com", utf8L, "U+0085"},
		{"C1 CSI", "alice@exa\u009bmple.com", ascii, "U+009B"},
		{"trailing space", "alice@example.com ", ascii, "U+0020 (SPACE, a white-space character) at byte offset 17 (trailing"},
		{"leading space", " alice@example.com", ascii, "U+0020 (SPACE, a white-space character) at byte offset 0 (leading"},
		{"leading tab", "\talice@example.com", ascii, "U+0009"},
		{"en quad", "alice@example.com\u2000", ascii, "U+2000 (EN QUAD, a white-space character) at byte offset 17"},
		{"en quad local utf8", "alice\u2000@example.com", utf8L, "U+2000"},
		{"nbsp", "alice\u00a0@example.com", utf8L, "U+00A0"},
		{"nbsp domain", "alice@example.com\u00a0", ascii, "U+00A0"},
		{"ideographic space", "alice@example\u3000.com", ascii, "U+3000"},
		{"line separator", "alice\u2028@example.com", utf8L, "U+2028"},
		{"narrow nbsp", "alice\u202f@example.com", utf8L, "U+202F"},
		{"ogham space", "alice\u1680@example.com", utf8L, "U+1680"},
		{"zwsp", "ali\u200bce@example.com", utf8L, "U+200B (ZERO WIDTH SPACE"},
		{"zwsp domain", "alice@exam\u200bple.com", ascii, "U+200B"},
		{"zwj", "alice@exam\u200dple.com", ascii, "U+200D"},
		{"zwnj local", "ali\u200cce@example.com", utf8L, "U+200C"},
		{"rlo", "alice\u202e@example.com", utf8L, "U+202E (RIGHT-TO-LEFT OVERRIDE, a bidirectional control character)"},
		{"rlo domain", "alice@\u202emoc.elpmaxe", ascii, "U+202E"},
		{"lrm", "alice@example.com\u200e", ascii, "U+200E"},
		{"rli", "alice\u2067@example.com", utf8L, "U+2067"},
		{"bom", "\ufeffalice@example.com", ascii, "U+FEFF"},
		{"bom utf8", "\ufeffalice@example.com", utf8L, "U+FEFF"},
		{"soft hyphen", "al\u00adice@example.com", utf8L, "U+00AD (SOFT HYPHEN"},
		{"soft hyphen domain", "alice@exam\u00adple.com", ascii, "U+00AD"},
		{"word joiner", "alice@example\u2060.com", ascii, "U+2060"},
		{"mongolian vowel separator", "alice\u180e@example.com", utf8L, "U+180E"},
		{"tag character", "alice\U000E0041@example.com", utf8L, "U+E0041"},
		{"variation selector", "alice\ufe0f@example.com", utf8L, "U+FE0F"},
		{"hangul filler", "\u3164@example.com", utf8L, "U+3164"},
		{"braille blank", "a\u2800@example.com", utf8L, "U+2800"},
		{"private use", "a\ue000@example.com", utf8L, "U+E000"},
		{"noncharacter", "a\ufdd0@example.com", utf8L, "U+FDD0"},
		{"replacement char", "a\ufffd@example.com", utf8L, "U+FFFD"},
		{"unassigned", "a\U0003FFF0@example.com", utf8L, "unassigned"},

		// invalid UTF-8 (RFC 3629)
		{"0xff", "alice\xff@example.com", utf8L, "invalid UTF-8 at byte offset 5 (byte 0xFF"},
		{"0xff domain", "alice@example.com\xff", ascii, "invalid UTF-8 at byte offset 17"},
		{"lone continuation", "alice\x80@example.com", utf8L, "continuation byte"},
		{"truncated 2", "alice\xc3@example.com", utf8L, "truncated"},
		{"truncated 3", "alice@exa\xe2\x82mple.com", ascii, "truncated"},
		{"truncated at end", "alice@example.com\xf0\x9f\x98", ascii, "truncated"},
		{"overlong slash", "alice\xc0\xaf@example.com", utf8L, "overlong"},
		{"overlong at", "alice\xc1\x80example.com", utf8L, "overlong"},
		{"overlong 3", "alice\xe0\x80\xaf@example.com", utf8L, "overlong"},
		{"overlong 4", "alice\xf0\x80\x80\xaf@example.com", utf8L, "overlong"},
		{"overlong NUL", "alice\xc0\x80@example.com", utf8L, "overlong"},
		{"surrogate high", "alice\xed\xa0\x80@example.com", utf8L, "surrogate"},
		{"surrogate low", "alice@ex\xed\xbf\xbf.com", ascii, "surrogate"},
		{"above max", "alice\xf4\x90\x80\x80@example.com", utf8L, "above U+10FFFF"},

		// homoglyphs and case
		{"cyrillic a ascii", "\u0430dmin@example.com", ascii, "non-ASCII U+0430 at byte offset 0"},
		{"kelvin ascii", "\u212aelvin@example.com", ascii, "U+212A"},
		{"kelvin utf8", "\u212aelvin@example.com", utf8L, "U+212A"},
		{"dotted I utf8", "\u0130nfo@example.com", utf8L, "lowercases to ASCII"},
		{"fullwidth local", "\uff41dmin@example.com", utf8L, "compatibility character U+FF41"},
		{"math bold local", "\U0001d41admin@example.com", utf8L, "compatibility character U+1D41A"},
		{"ligature", "\ufb01le@example.com", utf8L, "U+FB01"},
		{"not NFC local", "cafe\u0301@example.com", utf8L, "NFC"},
		{"non-ascii quoted without utf8", "\"caf\u00e9\"@example.com", ascii, "U+00E9"},
		{"escaped non-ascii", "\"caf\\\u00e9\"@example.com", utf8L, "escapes U+00E9"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := Parse(tt.in, tt.opt)
			if err == nil {
				t.Fatalf("Parse(%q) = %q, want error containing %q", tt.in, a, tt.want)
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("Parse(%q) error %T is not *Error", tt.in, err)
			}
			if e.Input != tt.in {
				t.Errorf("Error.Input = %q, want %q", e.Input, tt.in)
			}
			if !strings.Contains(e.Reason, tt.want) {
				t.Errorf("Parse(%q) reason %q does not contain %q", tt.in, e.Reason, tt.want)
			}
			if !a.IsZero() {
				t.Errorf("Parse(%q) returned %v with an error", tt.in, a)
			}
			if !strings.HasPrefix(err.Error(), "invalid address ") {
				t.Errorf("Error() = %q", err.Error())
			}
		})
	}
}

func TestParseValid(t *testing.T) {
	tests := []struct {
		in   string
		opt  Options
		want string
	}{
		{"alice@example.com", ascii, "alice@example.com"},
		{"first.last@example.com", ascii, "first.last@example.com"},
		{"first-name@example.com", ascii, "first-name@example.com"},
		{"first.name.x@sub.domain.example.co.uk", ascii, "first.name.x@sub.domain.example.co.uk"},
		{"o'brien@example.com", ascii, "o'brien@example.com"},
		{"a_b+tag@example.com", ascii, "a_b+tag@example.com"},
		{"!#$%&'*+-/=?^_`{|}~@example.com", ascii, "!#$%&'*+-/=?^_`{|}~@example.com"},
		{"x@a-b.example", ascii, "x@a-b.example"},
		{"x@3com.com", ascii, "x@3com.com"},
		{"x@ab--cd.example", ascii, "x@ab--cd.example"},
		{"postmaster@localhost", ascii, "postmaster@localhost"},
		{"root@localhost.localdomain", ascii, "root@localhost.localdomain"},
		{"ALICE@EXAMPLE.COM", ascii, "alice@example.com"},
		{"Alice.Smith@Example.Com", ascii, "alice.smith@example.com"},
		{`"alice"@example.com`, ascii, "alice@example.com"},
		{`"Alice"@example.com`, ascii, "alice@example.com"},
		{`"first.name"@example.com`, ascii, "first.name@example.com"},
		{`"al\ice"@example.com`, ascii, "alice@example.com"},
		{"+alice@example.com", ascii, "+alice@example.com"},
		{"admin+alice@example.com", ascii, "admin+alice@example.com"},
		{"xn--zz@example.com", ascii, "xn--zz@example.com"}, // a local part is not a label
		{"user@b\u00fccher.example", ascii, "user@xn--bcher-kva.example"},
		{"user@B\u00dcCHER.EXAMPLE", ascii, "user@xn--bcher-kva.example"},
		{"user@xn--bcher-kva.example", ascii, "user@xn--bcher-kva.example"},
		{"user@XN--BCHER-KVA.EXAMPLE", ascii, "user@xn--bcher-kva.example"},
		{"user@col\u00b7legi.cat", ascii, "user@xn--collegi-xma.cat"},
		{"user@\u0645\u062b\u0627\u0644.example", ascii, "user@xn--mgbh0fb.example"},
		{"user@\u4f8b\u3048.example", ascii, "user@xn--r8jz45g.example"},
		{strings.Repeat("a", 64) + "@example.com", ascii, strings.Repeat("a", 64) + "@example.com"},
		{"a@" + strings.Repeat("b", 63) + ".example", ascii, "a@" + strings.Repeat("b", 63) + ".example"},
		{"caf\u00e9@example.com", utf8L, "caf\u00e9@example.com"},
		{"CAF\u00c9@example.com", utf8L, "caf\u00e9@example.com"},
		{"\u00c0B@example.com", utf8L, "\u00e0b@example.com"},
		{"\u0414\u0438\u043c\u0430@example.com", utf8L, "\u0434\u0438\u043c\u0430@example.com"},
		{"\"caf\u00e9\"@example.com", utf8L, "caf\u00e9@example.com"},
		{"stra\u00dfe@example.com", utf8L, "stra\u00dfe@example.com"},
		{"\u7528\u6237@\u4f8b\u5b50.\u5e7f\u544a", utf8L, "\u7528\u6237@xn--fsqu00a.xn--4rr70v"},
	}
	for _, tt := range tests {
		a, err := Parse(tt.in, tt.opt)
		if err != nil {
			t.Errorf("Parse(%q): %v", tt.in, err)
			continue
		}
		if a.String() != tt.want {
			t.Errorf("Parse(%q) = %q, want %q", tt.in, a, tt.want)
		}
		b, err := Parse(a.String(), tt.opt)
		if err != nil || b != a {
			t.Errorf("Parse(Parse(%q).String()) = %q, %v; want %q", tt.in, b, err, a)
		}
	}
}

func TestLengthLimits(t *testing.T) {
	// exactly 254 octets: accepted
	addr254 := strings.Repeat("a", 64) + "@" + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + "." + strings.Repeat("d", 61)
	if len(addr254) != 254 {
		t.Fatal(len(addr254))
	}
	if _, err := Parse(addr254, ascii); err != nil {
		t.Errorf("254-octet address: %v", err)
	}
	// domain of exactly 253 octets: ParseDomain accepts, 254 rejects
	d253 := strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + "." + strings.Repeat("d", 61)
	if len(d253) != 253 {
		t.Fatal(len(d253))
	}
	if _, err := ParseDomain(d253); err != nil {
		t.Errorf("253-octet domain: %v", err)
	}
	if _, err := ParseDomain(d253 + "d"); err == nil || !strings.Contains(err.Error(), "more than 253") {
		t.Errorf("254-octet domain: %v", err)
	}
	// U-labels whose A-label form exceeds 63 octets
	long := ""
	for r := rune(0x4e00); r < 0x4e00+60; r++ {
		long += string(r)
	}
	if _, err := ParseDomain(long + ".example"); err == nil {
		t.Error("U-label with a 63+ octet A-label accepted")
	}
	// a non-ASCII local part longer than 64 octets
	if _, err := ParseLocal(strings.Repeat("\u00e9", 33), utf8L); err == nil || !strings.Contains(err.Error(), "more than 64") {
		t.Errorf("66-octet UTF-8 local part: %v", err)
	}
}

func TestHomoglyphs(t *testing.T) {
	admin, err := Parse("admin@example.com", ascii)
	if err != nil {
		t.Fatal(err)
	}
	// Cyrillic а (U+0430) in the local part
	if _, err := Parse("\u0430dmin@example.com", ascii); err == nil {
		t.Error("Cyrillic local part accepted without UTF8Local")
	}
	cyr, err := Parse("\u0430dmin@example.com", utf8L)
	if err != nil {
		t.Fatalf("Cyrillic local part with UTF8Local: %v", err)
	}
	if cyr == admin || cyr.Local == "admin" {
		t.Errorf("Cyrillic %q equals %q", cyr, admin)
	}
	// Cyrillic е (U+0435) and х (U+0445) in the domain: a different xn-- domain
	d, err := Parse("admin@\u0435\u0445ample.com", ascii)
	if err != nil {
		t.Fatal(err)
	}
	if d == admin || d.Domain == "example.com" || !strings.HasPrefix(d.Domain, "xn--") {
		t.Errorf("Cyrillic domain gave %q", d)
	}
}

func TestIDNEquality(t *testing.T) {
	u, err1 := Parse("user@b\u00fccher.example", ascii)
	a, err2 := Parse("user@xn--bcher-kva.example", ascii)
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	if u != a {
		t.Errorf("%q != %q", u, a)
	}
	for _, in := range []string{"b\u00fccher.example", "B\u00dcCHER.example", "xn--bcher-kva.example", "XN--BCHER-KVA.EXAMPLE"} {
		d, err := ParseDomain(in)
		if err != nil || d != "xn--bcher-kva.example" {
			t.Errorf("ParseDomain(%q) = %q, %v", in, d, err)
		}
	}
}

func TestParseDomain(t *testing.T) {
	good := map[string]string{
		"localhost":             "localhost",
		"LocalHost":             "localhost",
		"localhost.localdomain": "localhost.localdomain",
		"mail.example.com":      "mail.example.com",
		"a.b.c.d.e.f.example":   "a.b.c.d.e.f.example",
	}
	for in, want := range good {
		if d, err := ParseDomain(in); err != nil || d != want {
			t.Errorf("ParseDomain(%q) = %q, %v; want %q", in, d, err, want)
		}
	}
	bad := map[string]string{
		"":              "empty domain",
		"[127.0.0.1]":   "IP literals",
		"example.com.":  "ends with a dot",
		".":             "ends with a dot",
		"a..b":          "empty label",
		"1.2.3.4":       "IP address",
		"x@example.com": "'@'",
		" example.com":  "U+0020",
		"example.com\n": "U+000A",
		"exa mple.com":  "U+0020",
		"xn--zz":        "invalid A-label",
	}
	for in, want := range bad {
		_, err := ParseDomain(in)
		var e *Error
		if !errors.As(err, &e) || !strings.Contains(e.Reason, want) || e.Input != in {
			t.Errorf("ParseDomain(%q) = %v, want *Error containing %q", in, err, want)
		}
	}
}

func TestParseLocal(t *testing.T) {
	good := map[string]string{
		"alice":      "alice",
		"Alice":      "alice",
		`"alice"`:    "alice",
		"first.last": "first.last",
		"+alice":     "+alice",
	}
	for in, want := range good {
		if l, err := ParseLocal(in, ascii); err != nil || l != want {
			t.Errorf("ParseLocal(%q) = %q, %v; want %q", in, l, err, want)
		}
	}
	bad := map[string]string{
		"":                      "empty local part",
		"alice@example.com":     "'@'",
		".alice":                "starts with a dot",
		"alice ":                "U+0020",
		`"a b"`:                 "U+0020",
		`"a"b`:                  "after the closing quote",
		`""`:                    "empty quoted",
		"\u0430dmin":            "U+0430",
		strings.Repeat("a", 65): "more than 64",
	}
	for in, want := range bad {
		_, err := ParseLocal(in, ascii)
		var e *Error
		if !errors.As(err, &e) || !strings.Contains(e.Reason, want) {
			t.Errorf("ParseLocal(%q) = %v, want *Error containing %q", in, err, want)
		}
	}
	if l, err := ParseLocal("\u0414\u0438\u043c\u0430", utf8L); err != nil || l != "\u0434\u0438\u043c\u0430" {
		t.Errorf("ParseLocal(Дима) = %q, %v", l, err)
	}
}

func TestSplitExtension(t *testing.T) {
	tests := []struct {
		local, delims    string
		base, delim, ext string
		ok               bool
	}{
		{"alice++x", "+", "alice", "+", "+x", true},
		{"alice+x", "+", "alice", "+", "x", true},
		{"alice+", "+", "alice", "+", "", true},
		{"alice+x", "", "alice", "+", "x", true}, // "" means the default "+"
		{"+alice", "+", "", "", "", false},
		{"++alice", "+", "", "", "", false},
		{"alice", "+", "", "", "", false},
		{"", "+", "", "", "", false},
		{"a-b+c", "+-", "a", "-", "b+c", true},
		{"a+b-c", "+-", "a", "+", "b-c", true},
		{"admin+alice", "+", "admin", "+", "alice", true},
		{"alias1~test", "~", "alias1", "~", "test", true},
		{"alice-x", "+", "", "", "", false},
		{"caf\u00e9\u00a7x", "\u00a7", "caf\u00e9", "\u00a7", "x", true},
	}
	for _, tt := range tests {
		base, delim, ext, ok := SplitExtension(tt.local, tt.delims)
		if base != tt.base || delim != tt.delim || ext != tt.ext || ok != tt.ok {
			t.Errorf("SplitExtension(%q, %q) = %q, %q, %q, %v; want %q, %q, %q, %v",
				tt.local, tt.delims, base, delim, ext, ok, tt.base, tt.delim, tt.ext, tt.ok)
		}
		if ok && base+delim+ext != tt.local {
			t.Errorf("SplitExtension(%q): parts do not rejoin", tt.local)
		}
	}
	// +alice@d is a valid address, but has no base.
	a, err := Parse("+alice@example.com", ascii)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, ok := SplitExtension(a.Local, "+"); ok {
		t.Error("+alice split")
	}
	a, err = Parse("Admin+Alice@example.com", ascii)
	if err != nil {
		t.Fatal(err)
	}
	if base, _, ext, ok := SplitExtension(a.Local, "+"); !ok || base != "admin" || ext != "alice" {
		t.Errorf("admin+alice: %q %q %v", base, ext, ok)
	}
}

func TestAddressMethods(t *testing.T) {
	var z Address
	if !z.IsZero() || z.String() != "" {
		t.Errorf("zero Address: IsZero=%v String=%q", z.IsZero(), z.String())
	}
	a := Address{Local: "user1", Domain: "example.com"}
	if a.IsZero() || a.String() != "user1@example.com" {
		t.Errorf("%v", a)
	}
	if got := a.WithExtension("~", "test"); got.String() != "user1~test@example.com" {
		t.Errorf("WithExtension = %q", got)
	}
	if got := a.WithExtension("", ""); got != a {
		t.Errorf("WithExtension empty = %q", got)
	}
	if a.String() != "user1@example.com" {
		t.Error("WithExtension modified its receiver")
	}
	e := &Error{Input: "a\u2000@b", Reason: "x"}
	if e.Error() != `invalid address "a\u2000@b": x` {
		t.Errorf("Error() = %q", e.Error())
	}
}

func BenchmarkParse(b *testing.B) {
	for _, bc := range []struct{ name, in string }{
		{"ascii", "alice.smith+tag@mail.example.com"},
		{"ascii-upper", "Alice.Smith@Mail.Example.COM"},
		{"idn", "user@b\u00fccher.example"},
		{"alabel", "user@xn--bcher-kva.example"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Parse(bc.in, ascii); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestAllCodePoints checks, for every Unicode scalar value r, that whatever
// Parse and ParseDomain accept containing r is a fixed point of its own
// canonical form, and that no accepted address contains a forbidden character.
func TestAllCodePoints(t *testing.T) {
	if testing.Short() {
		t.Skip("slow; skipped with -short")
	}
	for r := rune(0); r <= unicode.MaxRune; r++ {
		if r >= 0xD800 && r <= 0xDFFF {
			continue
		}
		if r >= 0x40000 && r < 0xE0000 && r%0x1000 != 0 {
			continue // planes 4–13 are unassigned: sample them
		}
		s := "a" + string(r)
		if a, err := Parse(s+"@x.example", utf8L); err == nil {
			if why := checkCanonical(a); why != "" {
				t.Errorf("%U: %q: %s", r, a, why)
			}
			if b, err := Parse(a.String(), utf8L); err != nil || b != a {
				t.Errorf("%U: %q reparses as %q, %v", r, a, b, err)
			}
		}
		if d, err := ParseDomain(s + ".example"); err == nil {
			if d2, err := ParseDomain(d); err != nil || d2 != d {
				t.Errorf("%U: domain %q reparses as %q, %v", r, d, d2, err)
			}
		}
	}
}
