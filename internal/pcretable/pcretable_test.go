package pcretable

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func mustParse(t *testing.T, table string) *Table {
	t.Helper()
	tab, err := Parse("postfix-regexp.cf", []byte(table))
	if err != nil {
		t.Fatalf("Parse(%q): %v", table, err)
	}
	return tab
}

func TestLookup(t *testing.T) {
	type lk struct {
		key    string
		found  bool
		result string
		line   int
	}
	tests := []struct {
		name  string
		table string
		keys  []lk
	}{
		{"plain", "/^a@b$/ c@d\n", []lk{{"a@b", true, "c@d", 1}, {"A@B", true, "c@d", 1}, {"xa@b", false, "", 0}}},
		{"first match wins", "/a/ one\n/a/ two\n/b/ three\n", []lk{{"ab", true, "one", 1}, {"b", true, "three", 3}, {"c", false, "", 0}}},
		{"case flag", "/^A$/i upper\n", []lk{{"A", true, "upper", 1}, {"a", false, "", 0}}},
		{"case flag twice", "/^A$/ii both\n", []lk{{"a", true, "both", 1}}},
		{"dotall off", "/^a.b$/s x\n", []lk{{"a-b", true, "x", 1}}},
		{"anchored", "/b/A x\n", []lk{{"bc", true, "x", 1}, {"ab", false, "", 0}}},
		{"anchored alternation", "/b|c/A x\n", []lk{{"cx", true, "x", 1}, {"xc", false, "", 0}}},
		{"ungreedy", "/^(a+)/U [$1]\n", []lk{{"aaa", true, "[a]", 1}}},
		{"multiline and endonly accepted", "/^a$/mE x\n", []lk{{"a", true, "x", 1}}},
		{"extra is a no-op", "/^a$/X x\n", []lk{{"a", true, "x", 1}}},
		{"negated", "!/^a/ not-a\n", []lk{{"b", true, "not-a", 1}, {"a", false, "", 0}}},
		{"double negation", "!!/^a/ a\n", []lk{{"a", true, "a", 1}, {"b", false, "", 0}}},
		{"spaced negation", "! ! /^a/ a\n!\t/^b/ not-b\n", []lk{{"a", true, "a", 1}, {"c", true, "not-b", 2}, {"b", false, "", 0}}},
		{"negated dollar", "!/x/ $$5\n", []lk{{"a", true, "$5", 1}}},
		{"substitution forms", "/^(a)(b)(c)$/ $1-${2}-$(3)-$$-$$1-${1}x\n", []lk{{"abc", true, "a-b-c-$-$1-ax", 1}}},
		{"leading zero reference", "/^(a)$/ $01\n", []lk{{"a", true, "a", 1}}},
		{"unset group", "/^(a)?(b)$/ [$1][$2]\n", []lk{{"b", true, "[][b]", 1}}},
		{"empty group", "/^(a*)(b)$/ [$1][$2]\n", []lk{{"b", true, "[][b]", 1}}},
		{"group 10", "/^(a)(b)(c)(d)(e)(f)(g)(h)(i)(j)$/ $10\n", []lk{{"abcdefghij", true, "j", 1}}},
		{"named groups count", "/^(?<u>[^@]+)@(?P<d>.+)$/ $2:$1\n", []lk{{"u@d", true, "d:u", 1}}},
		{"result keeps inner white space", "/^a$/ x  y\tz   \n", []lk{{"a", true, "x  y\tz", 1}}},
		{"if", "if /@x$/\n/^a@/ ax\nendif\n/^a@/ other\n", []lk{{"a@x", true, "ax", 2}, {"a@y", true, "other", 4}}},
		{"if negated", "if !/@x$/\n/^a@/ not-x\nendif\n", []lk{{"a@y", true, "not-x", 2}, {"a@x", false, "", 0}}},
		{"if nested", "if /a/\nif /b/\n/c/ abc\nendif\n/./ a\nendif\n", []lk{{"abc", true, "abc", 3}, {"ac", true, "a", 5}, {"bc", false, "", 0}}},
		{"if case insensitive keywords", "IF /a/\n/b/ ab\nEndIf\n", []lk{{"ab", true, "ab", 2}}},
		{"if without space", "if/a/\n/b/ ab\nendif\n", []lk{{"ab", true, "ab", 2}}},
		{"other delimiter", "|^a/b$| slash\n%^c%  pct\n", []lk{{"a/b", true, "slash", 1}, {"c", true, "pct", 2}}},
		{"hash delimiter is a comment", "#^c# hash\n", []lk{{"c", false, "", 0}}},
		{"escaped delimiter", `/^a\/b$/ x` + "\n", []lk{{"a/b", true, "x", 1}}},
		{"escaped pipe delimiter is literal", `|^a\|b$| x` + "\n", []lk{{"a|b", true, "x", 1}, {"a", false, "", 0}}},
		{"continuation", "/^a$/ one\n two\n\tthree\n", []lk{{"a", true, "one two\tthree", 1}}},
		{"comment and blank between continuation", "/^a$/ one\n# c\n\n  # d\n two\n", []lk{{"a", true, "one two", 1}}},
		{"pattern continued", "/^a\n b$/ x\n", []lk{{"a b", true, "x", 1}}},
		{"crlf", "/^a$/ x\r\n/^b$/ y\r\n", []lk{{"a", true, "x", 1}, {"b", true, "y", 2}}},
		{"crlf continuation keeps CR", "/^a$/ x\r\n y\r\n", []lk{{"a", true, "x\r y", 1}}},
		{"form feed and VT continue", "/^a$/ x\n\fy\n\vz\n", []lk{{"a", true, "x\fy\vz", 1}}},
		{"CR-only line is blank", "/^a$/ x\n\r\n/^b$/ y\n", []lk{{"a", true, "x", 1}, {"b", true, "y", 3}}},
		{"no final newline", "/^a$/ x", []lk{{"a", true, "x", 1}}},
		{"comment lines count", "# c\n\n/^a$/ x\n", []lk{{"a", true, "x", 3}}},
		{"s and S include VT", `/^\s\S$/ x` + "\n", []lk{{"\va", true, "x", 1}, {"\ta", true, "x", 1}}},
		{"hex and octal", `/^\x41\x{42}\043\0101$/ x` + "\n", []lk{{"AB#\b1", true, "x", 1}}},
		{"escape e", `/^\e$/ x` + "\n", []lk{{"\x1b", true, "x", 1}}},
		{"backspace in class", `/^[\b]$/ x` + "\n", []lk{{"\b", true, "x", 1}, {"b", false, "", 0}}},
		{"brace literals", "/^a{,2}$/ x\n/^b{x$/ y\n", []lk{{"a{,2}", true, "x", 1}, {"b{x", true, "y", 2}, {"aa", false, "", 0}}},
		{"quote", `/^\Qa.b\E$/ x` + "\n", []lk{{"a.b", true, "x", 1}, {"axb", false, "", 0}}},
		{"stray E", `/^a\Eb$/ x` + "\n", []lk{{"ab", true, "x", 1}}},
		{"class range split at ASCII boundary", `/^[\x7f-\xff]$/ x` + "\n", []lk{{"k", false, "", 0}, {"K", false, "", 0}, {"\xe9", true, "x", 1}}},
		{"bytes not runes", "/^(.)(.)$/ [$1][$2]\n", []lk{{"é", true, "[\xc3][\xa9]", 1}}},
		{"invalid utf8 key", "/^(.)$/ [$1]\n", []lk{{"\xff", true, "[\xff]", 1}}},
		{"no case above ASCII", "/^é$/ x\n", []lk{{"é", true, "x", 1}, {"É", false, "", 0}}},
		{"non-ASCII class is bytes", "/^[é]$/ x\n", []lk{{"\xc3", true, "x", 1}, {"é", false, "", 0}}},
		{"newline key", "!/x/ y\n", []lk{{"a\nb", false, "", 0}, {"a\x00", false, "", 0}, {"a", true, "y", 1}}},
		{"empty key", "/^$/ empty\n", []lk{{"", true, "empty", 1}}},
	}
	// The expectations are Postfix's answers: with postmap installed, check
	// them against it too.
	var pm *postmap
	if _, err := lookPostmap(); err == nil || os.Getenv("CI") == "true" {
		pm = needPostmap(t)
	}
	dir := t.TempDir()
	for ti, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tab := mustParse(t, tc.table)
			if pm != nil {
				f := filepath.Join(dir, fmt.Sprintf("t%d.cf", ti))
				if err := os.WriteFile(f, []byte(tc.table), 0o644); err != nil {
					t.Fatal(err)
				}
				var keys []string
				for _, k := range tc.keys {
					if !strings.ContainsAny(k.key, "\n\x00") {
						keys = append(keys, k.key)
					}
				}
				res, stderr, err := pm.query(f, keys)
				if err != nil || dropXWarnings(stderr) != "" {
					t.Errorf("postmap: %v %s", err, stderr)
				}
				for i, k := range keys {
					for _, e := range tc.keys {
						if e.key != k {
							continue
						}
						if v, ok := res[i]; ok != e.found || v != e.result {
							t.Errorf("postmap -q %q = %q, %v; the test expects %q, %v", k, v, ok, e.result, e.found)
						}
					}
				}
			}
			for _, k := range tc.keys {
				m, ok := tab.Lookup(k.key)
				if ok != k.found || m.Result != k.result || (ok && m.Line != k.line) {
					t.Errorf("Lookup(%q) = %+v, %v; want %q line %d, %v", k.key, m, ok, k.result, k.line, k.found)
				}
				m2, ok2 := tab.lookupSequential(k.key)
				if ok2 != ok || m2 != m {
					t.Errorf("sequential Lookup(%q) = %+v, %v; indexed %+v, %v", k.key, m2, ok2, m, ok)
				}
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name  string
		table string
		want  []string // each must be a substring of one error
	}{
		{"unknown flag", "/a/q x\n", []string{`postfix-regexp.cf:1: unknown pattern flag "q"`}},
		{"x flag", "/a/x x\n", []string{"postfix-regexp.cf:1: flag x (extended mode) is not supported"}},
		{"no closing delimiter", "\n/abc x\n", []string{`postfix-regexp.cf:2: no closing pattern delimiter "/"`}},
		{"no pattern", "!!\n", []string{"postfix-regexp.cf:1: no pattern"}},
		{"empty result", "/a/\n", []string{"postfix-regexp.cf:1: no result text after /a/"}},
		{"endif without if", "endif\n", []string{"postfix-regexp.cf:1: endif without matching if"}},
		{"if without endif", "/a/ x\nif /a/\nif /b/\nendif\n", []string{"postfix-regexp.cf:2: if without matching endif"}},
		{"text after if", "if /a/ x\nendif\n", []string{`postfix-regexp.cf:1: text after the if pattern: "x"`}},
		{"text after endif", "if /a/\nendif x\n", []string{`postfix-regexp.cf:2: text after endif: "x"`}},
		{"broken if", "if /(/\nendif\n", []string{"postfix-regexp.cf:1: pattern /(/: missing closing )", "postfix-regexp.cf:2: endif of the if at line 1"}},
		{"unrecognized", "foo bar\n", []string{"postfix-regexp.cf:1: unrecognized line"}},
		{"orphan continuation", " /a/ x\n  more\n/b/ y\n", []string{"postfix-regexp.cf:1: continuation line"}},
		{"NUL", "/a/ x\x00\n", []string{"postfix-regexp.cf:1: NUL byte"}},
		{"go rejects", "/a(/ x\n", []string{"postfix-regexp.cf:1: pattern /a(/: missing closing )"}},
		{"backreference", `/(a)\1/ x` + "\n", []string{`postfix-regexp.cf:1: pattern /(a)\1/: backreferences (\1) are not supported`}},
		{"lookahead", "/(?=a)/ x\n", []string{"postfix-regexp.cf:1: pattern /(?=a)/: look-ahead assertions are not supported"}},
		{"negative lookahead", "/(?!a)/ x\n", []string{"look-ahead assertions"}},
		{"lookbehind", "/(?<=a)b/ x\n/(?<!a)b/ x\n", []string{"postfix-regexp.cf:1: pattern /(?<=a)b/: look-behind", "postfix-regexp.cf:2: pattern /(?<!a)b/: look-behind"}},
		{"atomic", "/(?>a)/ x\n", []string{"atomic groups"}},
		{"possessive", "/a*+/ x\n/a{2}+/ x\n", []string{"postfix-regexp.cf:1: pattern /a*+/: possessive", "postfix-regexp.cf:2: pattern /a{2}+/: possessive"}},
		{"Z", `/a\Z/ x` + "\n", []string{`\Z is not supported`}},
		{"K", `/a\Kb/ x` + "\n", []string{`\K is not supported`}},
		{"G", `/\Ga/ x` + "\n", []string{`\G is not supported`}},
		{"recursion", "/(a(?R))/ x\n/(a)(?1)/ x\n", []string{"postfix-regexp.cf:1: pattern /(a(?R))/: recursion", "postfix-regexp.cf:2: pattern /(a)(?1)/: recursion"}},
		{"conditional", "/(a)(?(1)b)/ x\n", []string{"conditional groups"}},
		{"comment group", "/a(?#x)/ x\n", []string{"(?#...) comments are not supported"}},
		{"inline x", "/(?x)a/ x\n", []string{"extended mode (x) is not supported"}},
		{"verb", "/(*UTF)a/ x\n", []string{"(*VERB)"}},
		{"big repeat", "/a{1001}/ x\n/a{1,1001}/ x\n", []string{"postfix-regexp.cf:1: pattern /a{1001}/: counted repetition {1001}: more than 1000", "postfix-regexp.cf:2: pattern /a{1,1001}/: counted repetition"}},
		{"repeat order", "/a{3,2}/ x\n", []string{"numbers out of order"}},
		{"invalid utf8", "/\xff/ x\n", []string{`postfix-regexp.cf:1: pattern "\xff": pattern is not valid UTF-8`}},
		{"nullable capture star", "/(a*)+/ x\n/(|a)*/ x\n/(a?){2}/ x\n", []string{"postfix-regexp.cf:1: pattern /(a*)+/: a repeated group", "postfix-regexp.cf:2: pattern /(|a)*/: a repeated group", "postfix-regexp.cf:3: pattern /(a?){2}/: a repeated group"}},
		{"quantifier after assertion", "/^*a/ x\n/a$+/ x\n", []string{"postfix-regexp.cf:1: pattern /^*a/: quantifier \"*\" does not follow a repeatable item", "postfix-regexp.cf:2: pattern /a$+/: quantifier"}},
		{"v escape", `/\v/ x` + "\n", []string{`\v (vertical white space) is not supported`}},
		{"property", `/\p{L}/ x` + "\n", []string{"Unicode property escapes"}},
		{"big code point", `/\x{100}/ x` + "\n", []string{"too large"}},
		{"bad class range", `/[\d-z]/ x` + "\n" + "/[z-a]/ x\n", []string{"postfix-regexp.cf:1: pattern /[\\d-z]/: invalid range", "postfix-regexp.cf:2: pattern /[z-a]/: range out of order"}},
		{"collating", "/[[.a.]]/ x\n", []string{"POSIX collating elements"}},
		{"group name digit", "/(?<1a>x)/ x\n", []string{"must start with a letter"}},
		{"dollar at end", "/(a)/ x$\n", []string{`postfix-regexp.cf:1: "$" not followed by a group number`}},
		{"dollar space", "/(a)/ $ x\n", []string{`"$" not followed by a group number`}},
		{"non-numeric", "/(a)/ $1x\n/(a)/ ${a}\n", []string{`postfix-regexp.cf:1: non-numeric replacement index "1x"`, `postfix-regexp.cf:2: non-numeric replacement index "a"`}},
		{"zero", "/(a)/ $0\n", []string{`out of range replacement index "0"`}},
		{"truncated", "/(a)/ ${1\n", []string{"truncated reference"}},
		{"too few groups", "/(a)/ $2\n", []string{"postfix-regexp.cf:1: result refers to group $2 but the pattern has 1 capture group(s)"}},
		{"negated substitution", "!/(a)/ $1\n", []string{"postfix-regexp.cf:1: $1 in the result of a negated rule"}},
		{"line of continued rule", "/ok/ x\n/bad\n  still bad\n", []string{"postfix-regexp.cf:2: no closing pattern delimiter"}},
		{"every error reported", "/a/q x\n/b/ ok\n/(c)/ $2\nendif\n", []string{"postfix-regexp.cf:1:", "postfix-regexp.cf:3:", "postfix-regexp.cf:4:"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tab, err := Parse("postfix-regexp.cf", []byte(tc.table))
			if err == nil || tab != nil {
				t.Fatalf("Parse(%q) = %v, %v; want an error", tc.table, tab, err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Parse(%q) error:\n%v\nwant it to contain %q", tc.table, err, w)
				}
			}
			// Every joined error is a *ParseError.
			var list []error
			if j, ok := err.(interface{ Unwrap() []error }); ok {
				list = j.Unwrap()
			}
			if len(list) == 0 {
				t.Fatalf("error is not an errors.Join: %T", err)
			}
			for _, e := range list {
				var pe *ParseError
				if !errors.As(e, &pe) || pe.File != "postfix-regexp.cf" || pe.Line < 1 {
					t.Errorf("error %v is not a *ParseError with file and line", e)
				}
			}
		})
	}
}

func TestParseErrorFormat(t *testing.T) {
	e := &ParseError{File: "postfix-regexp.cf", Line: 7, Msg: "bad"}
	if got := e.Error(); got != "postfix-regexp.cf:7: bad" {
		t.Errorf("Error() = %q", got)
	}
	_, err := Parse("f.cf", []byte("/a/q x\n/b/q y\n"))
	var pe *ParseError
	if !errors.As(err, &pe) || pe.Line != 1 {
		t.Errorf("errors.As: %v %+v", err, pe)
	}
	if n := strings.Count(err.Error(), "\n"); n != 1 {
		t.Errorf("want two joined errors, got %q", err)
	}
}

func TestEmptyTable(t *testing.T) {
	for _, in := range []string{"", "\n\n", "# only a comment\n", "   \n\t\n"} {
		tab := mustParse(t, in)
		if tab.Len() != 0 || len(tab.Rules()) != 0 {
			t.Errorf("%q: %d rules", in, tab.Len())
		}
		if _, ok := tab.Lookup("a@b"); ok {
			t.Errorf("%q: empty table matched", in)
		}
	}
}

func TestRules(t *testing.T) {
	tab := mustParse(t, "# c\n/^a$/i one\nif /x/\n! /^b$/ two\n three\nendif\n|c| $$\n")
	want := []RuleInfo{
		{Line: 2, Rule: "/^a$/i", Result: "one"},
		{Line: 4, Rule: "! /^b$/", Result: "two three", Negated: true},
		{Line: 7, Rule: "|c|", Result: "$$"},
	}
	if tab.Len() != len(want) {
		t.Fatalf("Len() = %d, want %d", tab.Len(), len(want))
	}
	got := tab.Rules()
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("Rules()[%d] = %+v, want %+v", i, got[i], want[i])
		}
	}
	m, ok := tab.Lookup("xz")
	if !ok || m != (Match{Result: "two three", Line: 4, Rule: "! /^b$/"}) {
		t.Errorf("Lookup provenance = %+v, %v", m, ok)
	}
	m, ok = tab.Lookup("c")
	if !ok || m != (Match{Result: "$", Line: 7, Rule: "|c|"}) {
		t.Errorf("Lookup provenance = %+v, %v", m, ok)
	}
}

func TestNilTable(t *testing.T) {
	var tab *Table
	if _, ok := tab.Lookup("a"); ok {
		t.Error("nil table matched")
	}
}

func TestConcurrentLookup(t *testing.T) {
	tab := mustParse(t, "if /@example\\.com$/\n/^(.*)@/ $1@x\nendif\n!/@/ none\n")
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 500; i++ {
				k := fmt.Sprintf("u%d@example.com", g*1000+i)
				m, ok := tab.Lookup(k)
				if !ok || m.Result != fmt.Sprintf("u%d@x", g*1000+i) {
					t.Errorf("Lookup(%q) = %+v %v", k, m, ok)
					return
				}
			}
		}(g)
	}
	wg.Wait()
}

func TestRequiredLiterals(t *testing.T) {
	tests := []struct{ pattern, want string }{
		{`^user[0-9]+@domain123\.example$`, "@domain123.example"},
		{`^Alice@Example\.COM$`, "alice@example.com"},
		{`^(.*)$`, ""},
		{`a|b`, ""},
		{`(abc)+x`, "abc"},
		{`(?:abcd)?x`, "x"},
		{`x{0}abcdef`, "abcdef"},
		{`[aA][bB]cd`, "abcd"},
		{`é@x`, "é@x"},
		{`^\bab\b$`, "ab"},
	}
	for _, tc := range tests {
		c, err := compilePattern(rawPattern{text: tc.pattern, match: true, flags: pcreFlags{caseless: true, dotall: true}})
		if err != nil {
			t.Fatalf("%s: %v", tc.pattern, err)
		}
		if got := bestLiteral(c.tree); got != tc.want {
			t.Errorf("bestLiteral(%s) = %q, want %q", tc.pattern, got, tc.want)
		}
	}
}
