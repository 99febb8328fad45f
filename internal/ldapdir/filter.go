package ldapdir

import (
	"errors"
	"fmt"
	"strings"

	"github.com/go-ldap/ldap/v3"
)

// sampleKey is substituted into every template when it is checked.
const sampleKey = "sample.user@example.test"

// template is a parsed filter template: literal text and placeholders.
type template struct {
	setting string // the setting it came from, for error messages
	parts   []part
}

// part is literal filter text (placeholder 0) or a placeholder: 's' (the
// whole key), 'u' (its local part) or 'd' (its domain part).
type part struct {
	placeholder byte
	text        string
}

// parseTemplate parses a filter template (one of the ldap_query_filter_*
// settings) and checks that it compiles with a sample key.
//
// White space between filter components, which libldap and Postfix accept
// and docker-mailserver's filters contain, is removed first.
func parseTemplate(setting, s string) (*template, error) {
	t, err := parseTemplateText(setting, s)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", setting, err)
	}
	f, _ := t.expand(sampleKey) // never suppressed: the sample has both parts
	if _, err := ldap.CompileFilter(f); err != nil {
		return nil, fmt.Errorf("%s: %q is not a valid LDAP filter: %w", setting, s, err)
	}
	return t, nil
}

func parseTemplateText(setting, s string) (*template, error) {
	if strings.TrimSpace(s) == "" {
		return nil, errors.New("empty filter")
	}
	n := normalizeSpace(s)
	t := &template{setting: setting}
	var lit strings.Builder
	inValue := false // inside an assertion value (after the =)
	for i := 0; i < len(n); i++ {
		c := n[i]
		switch {
		case c == '%':
			if i+1 >= len(n) {
				return nil, fmt.Errorf("%q: a lone %% at the end (write %%%% for a literal %%)", s)
			}
			i++
			switch p := n[i]; p {
			case '%':
				lit.WriteByte('%')
			case 's', 'u', 'd':
				if !inValue {
					return nil, fmt.Errorf("%q: %%%c outside an assertion value (placeholders may only stand after the =)", s, p)
				}
				if lit.Len() > 0 {
					t.parts = append(t.parts, part{text: lit.String()})
					lit.Reset()
				}
				t.parts = append(t.parts, part{placeholder: p})
			default:
				return nil, fmt.Errorf("%q: unsupported placeholder %%%c (%%s, %%u, %%d and %%%% are supported)", s, p)
			}
			continue
		case c == '\\':
			// RFC 4515 §3: a backslash is followed by two hex digits.
			if i+2 >= len(n) || !isHex(n[i+1]) || !isHex(n[i+2]) {
				return nil, fmt.Errorf("%q: a backslash must be followed by two hex digits (RFC 4515)", s)
			}
			lit.WriteString(n[i : i+3])
			i += 2
			continue
		case c == ')':
			inValue = false
		case c == '=':
			inValue = true
		}
		lit.WriteByte(c)
	}
	if lit.Len() > 0 {
		t.parts = append(t.parts, part{text: lit.String()})
	}
	return t, nil
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// normalizeSpace removes the white space that sits between filter
// components: after a ")" when the next non-space is "(" or ")" or the
// end, and after the "&", "|" or "!" that opens a set, before its first
// "(". White space inside assertion values is kept: an unescaped ")" always
// ends a value, so the space after it is never part of one.
func normalizeSpace(s string) string {
	s = strings.TrimSpace(s)
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		b.WriteByte(c)
		switch c {
		case '\\':
			if i+1 < len(s) {
				i++
				b.WriteByte(s[i])
			}
		case ')':
			j := skipSpace(s, i+1)
			if j == len(s) || s[j] == '(' || s[j] == ')' {
				i = j - 1
			}
		case '&', '|', '!':
			if i > 0 && s[i-1] == '(' {
				j := skipSpace(s, i+1)
				if j < len(s) && s[j] == '(' {
					i = j - 1
				}
			}
		}
	}
	return b.String()
}

func skipSpace(s string, i int) int {
	for i < len(s) && isSpace(s[i]) {
		i++
	}
	return i
}

// splitKey returns the local and domain parts of a key: around its last @,
// or the whole key and "" when it has none.
func splitKey(key string) (local, domain string) {
	if i := strings.LastIndexByte(key, '@'); i >= 0 {
		return key[:i], key[i+1:]
	}
	return key, ""
}

// expand substitutes key into the template, every value escaped as an
// RFC 4515 assertion value. ok is false when the query is suppressed (as
// Postfix's ldap_table does): when the key is empty, when %u stands in the
// template and the key's local part is empty (a catch-all "@domain"), or
// when %d stands in it and the key has no domain part.
func (t *template) expand(key string) (filter string, ok bool) {
	if key == "" {
		return "", false
	}
	local, domain := splitKey(key)
	var b strings.Builder
	for _, p := range t.parts {
		var v string
		switch p.placeholder {
		case 0:
			b.WriteString(p.text)
			continue
		case 's':
			v = key
		case 'u':
			v = local
		case 'd':
			v = domain
		}
		if v == "" {
			return "", false
		}
		b.WriteString(ldap.EscapeFilter(v))
	}
	return b.String(), true
}
