package pcretable

import (
	"fmt"
	"strings"
)

// maxGroupRef bounds group numbers while parsing; it is far above any
// possible number of capture groups.
const maxGroupRef = 1 << 20

// piece is one part of a parsed result: literal text, or a capture group
// reference (group > 0).
type piece struct {
	lit   string
	group int
}

// parseResult splits a result into literal text and $n references the way
// Postfix's mac_parse(3) does, and checks the references as dict_pcre's
// pre-scan does:
//
//   - "$$" is a literal "$";
//   - "${text}" and "$(text)" (with nesting of the same bracket) and "$name"
//     (name = ASCII letters, digits, underscore) are references;
//   - a "$" followed by nothing usable (end of text, white space, other
//     punctuation), or an unterminated "${"/"$(", is an error;
//   - a reference must be all digits and at least 1.
//
// It returns the pieces, the largest group number referenced (saturated at
// maxGroupRef) and that reference as written.
func parseResult(s string) ([]piece, int, string, error) {
	var (
		pieces []piece
		lit    strings.Builder
		maxSub int
		maxRef string
	)
	flushLit := func() {
		if lit.Len() > 0 {
			pieces = append(pieces, piece{lit: lit.String()})
			lit.Reset()
		}
	}
	for i := 0; i < len(s); {
		if s[i] != '$' {
			lit.WriteByte(s[i])
			i++
			continue
		}
		if i+1 < len(s) && s[i+1] == '$' {
			lit.WriteByte('$')
			i += 2
			continue
		}
		i++
		var name string
		if i < len(s) && (s[i] == '{' || s[i] == '(') {
			open := s[i]
			closeB := byte('}')
			if open == '(' {
				closeB = ')'
			}
			level := 1
			j := i + 1
			for ; j < len(s); j++ {
				if s[j] == open {
					level++
				} else if s[j] == closeB {
					level--
					if level == 0 {
						break
					}
				}
			}
			if j >= len(s) {
				return nil, 0, "", fmt.Errorf("truncated reference %q in result", s[i-1:])
			}
			name = s[i+1 : j]
			i = j + 1
		} else {
			j := i
			for j < len(s) && (isAlnum(s[j]) || s[j] == '_') {
				j++
			}
			name = s[i:j]
			i = j
		}
		if name == "" {
			return nil, 0, "", fmt.Errorf(`"$" not followed by a group number in result (write "$$" for a literal "$")`)
		}
		n := 0
		for k := 0; k < len(name); k++ {
			if name[k] < '0' || name[k] > '9' {
				return nil, 0, "", fmt.Errorf("non-numeric replacement index %q in result", name)
			}
			n = min(n*10+int(name[k]-'0'), maxGroupRef)
		}
		if n < 1 {
			return nil, 0, "", fmt.Errorf("out of range replacement index %q in result", name)
		}
		flushLit()
		pieces = append(pieces, piece{group: n})
		if n > maxSub {
			maxSub, maxRef = n, name
		}
	}
	flushLit()
	return pieces, maxSub, maxRef, nil
}
