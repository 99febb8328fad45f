// Package pcretable evaluates Postfix pcre_table(5) files (mailgate's
// postfix-regexp.cf) in Go, giving for every file it accepts exactly the
// answer "postmap -q KEY pcre:FILE" gives, byte for byte (verified against
// Postfix 3.7 built with PCRE2 by the differential test). A construct that
// Go's regexp cannot evaluate identically, and every line Postfix would warn
// about, is a *ParseError "FILE:LINE: reason" instead of a silent difference.
//
// # File format (as Postfix reads it)
//
// Logical lines are assembled as by Postfix's readllines(3): empty lines,
// white-space-only lines and lines whose first non-space character is "#"
// are ignored wherever they occur, including between a line and its
// continuation; a line starting with white space (space, tab, CR, VT, FF)
// continues the current logical line: it is appended without the newline
// and with its leading white space; trailing white space of the logical line
// is removed. A rule's line number is that of its first physical line.
// CRLF files are accepted: CR is white space, so it disappears at the end of
// a logical line; a CR ending a physical line that is continued stays in the
// logical line (Postfix keeps it too, so a continued result contains "\r").
//
// Rules:
//
//	/pattern/flags result      result when pattern matches the key
//	!/pattern/flags result     result when it does not (each "!" toggles;
//	                           white space may separate them)
//	if /pattern/flags          the rules up to the matching endif apply only
//	if !/pattern/flags         when the pattern matches (does not match)
//	endif
//
// "if" and "endif" are case-insensitive and nest. The delimiter is the first
// character after the "!"s; a backslash escapes the next character while the
// closing delimiter is searched and is kept in the pattern. Flags toggle
// PCRE options starting from CASELESS and DOTALL on: i (case), m (multiline),
// s (dotall), A (anchored), E (dollar-endonly), U (ungreedy), X (a no-op with
// PCRE2; Postfix only warns). The result is the rest of the logical line
// after white space. In it "$$" is "$", and $n, ${n}, $(n) insert capture
// group n (a Postfix mac_parse reference, so "$1x" is the reference "1x"
// and an error, "${1}x" is group 1 then "x"); an unset or empty group
// inserts nothing. The first matching rule wins, in file order.
//
// # Errors
//
// Parse reports every problem it finds, one *ParseError per problem, and
// returns no table. These are errors because Postfix warns and skips (or
// half-applies) the line: unknown flag, missing pattern or closing
// delimiter, "endif" without "if" (also the endif of an if whose pattern
// is broken), "if" without "endif", text after "if /re/" or "endif", a line
// starting with a letter that is not if/endif, a continuation line at the
// start of the file, a pattern PCRE2 rejects (including more than 250 nested
// parentheses and, conservatively, patterns above 1,500 Go instructions,
// near PCRE2's 64 KiB compiled-size limit), "$" not followed by a reference
// ("x$", "$-"), an unterminated "${" or "$(", a non-numeric ("$1x",
// "${a}") or zero reference, a reference beyond the number of capture
// groups, any $n in a negated rule, an empty result (Postfix warns and
// returns ""). Also errors although Postfix accepts them silently: a NUL
// byte (Postfix truncates the line there), a reference number so large that
// Postfix's atoi wraps it around ($4294967297 is $1 to Postfix).
//
// Rejected because Go's regexp cannot evaluate them identically:
// backreferences (\1..\9, \g, \k, (?P=name); this includes octal escapes
// written \101, which PCRE reads as a backreference or as octal depending
// on the number of groups: write \x41), look-ahead and look-behind, atomic
// groups, possessive quantifiers, recursion and subroutine calls,
// conditionals, (?#...) comments, (*VERB)s, callouts, branch reset, the x
// flag and (?x) (and the other PCRE-only options (?J), (?n), (?^)), \Z, \G,
// \K, \C, \R, \X, \h, \H, \v, \V, \N, \p, \P, \c, \o, \Q..\E inside a
// character class, "[:" in a class that is not a POSIX class, POSIX
// collating elements, counted repetition above 1000, invalid UTF-8 in a
// pattern, a quantifier after an assertion or option setting, group names
// PCRE refuses, and any repeated (*, +, {n,m} with m > 1) subexpression
// that contains a capture group and can match the empty string, such as
// (a*)+, (|a)* or (a?){2} (Go and PCRE capture different text there; the
// differential test shows real differences when this check is disabled).
// An optional group (x)? is fine: Postfix substitutes an unset and an
// empty group alike.
//
// Translated so that Go behaves like PCRE: \s and \S (PCRE2's \s includes
// VT, Go's does not), \e, \xHH, \x{HH}, octal escapes \0.., \b inside a
// class (backspace), "{" that does not start a valid quantifier (a literal
// in PCRE2 10.42, e.g. a{,3}), a stray \E (ignored), \Q..\E.
//
// # Bytes, not characters
//
// Postfix does not enable PCRE2_UTF, so PCRE matches bytes: "." matches one
// byte of a UTF-8 character, [ö] is a class of two bytes, and bytes above
// 0x7f have no case. This package reproduces that exactly: pattern and key
// are mapped byte by byte (bytes >= 0x80 to private-use runes that have no
// case and belong to no class), so non-ASCII keys, even invalid UTF-8, get
// Postfix's answers; results contain the original bytes. This is Postfix
// with smtputf8_enable=no (the default below compatibility_level 1, and what
// the differential test runs). With smtputf8_enable=yes Postfix in addition
// refuses keys that are not valid UTF-8 and fails a lookup whose result is
// not valid UTF-8 (a capture that splits a character); callers that need
// that can check utf8.ValidString on the key and the result.
//
// # Deliberate differences
//
//   - A key containing a newline or NUL byte never matches (Lookup returns
//     false). PCRE's "$" also matches before a final newline and its
//     multiline "^" does not match after one, and Postfix keys are C strings;
//     mailgate's keys are canonical addresses without control characters.
//   - PCRE gives up on a rule whose backtracking exceeds its match limit
//     (Postfix logs a warning and treats the rule as not matching, even a
//     negated one); Go's regexp runs in linear time and always answers.
//
// # Performance
//
// Lookup does not run every rule. Parse extracts from each pattern (with
// regexp/syntax) the longest literal every match must contain, and for a
// rule inside positive "if" blocks also the literals of the enclosing
// conditions, keeping the longest. An Aho-Corasick automaton over these
// literals selects in one pass over the key the rules that can match; rules
// without a literal (negated rules, patterns such as /^(.*)$/) are always
// evaluated. Candidates are evaluated in file order with their if/endif
// conditions, so the result is the same as sequential evaluation.
package pcretable

import (
	"errors"
	"fmt"
	"regexp"
	"regexp/syntax"
	"strconv"
	"strings"
	"unicode/utf8"
)

// ParseError is one problem in a table, reported as "FILE:LINE: MSG".
type ParseError struct {
	File string
	Line int
	Msg  string
}

func (e *ParseError) Error() string { return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg) }

// Match is the answer of a successful Lookup.
type Match struct {
	Result string // the substituted result text
	Line   int    // line of the matching rule
	Rule   string // the rule as written (pattern with delimiters and flags), for provenance
}

// RuleInfo describes one match rule (if/endif are not rules).
type RuleInfo struct {
	Line    int
	Rule    string
	Result  string // the result as written, before substitution
	Negated bool
}

// Table is a parsed pcre_table. It is immutable and safe for concurrent use.
type Table struct {
	rules []rule
	conds []cond
	ops   []op // the file's rules in order, for the sequential reference evaluator
	index *acIndex
}

type rule struct {
	line    int
	text    string
	result  string // as written
	re      *regexp.Regexp
	negated bool
	pieces  []piece
	literal string   // result when it contains no group reference
	maxSub  int      // largest group referenced, 0 if none
	conds   []int32  // enclosing if conditions, outermost first
	lit     string   // required literal of a positive rule, for the index
	req     []string // every required literal of a positive rule (ASCII-folded): a pre-filter before the regexp runs
}

type cond struct {
	line    int
	re      *regexp.Regexp
	negated bool
	lit     string // required literal of a positive condition
}

type opKind uint8

const (
	opMatch opKind = iota
	opIf
	opEndif
)

type op struct {
	kind  opKind
	idx   int32 // rule or cond index
	endif int32 // for opIf: index in ops of the matching endif
}

// maxInst bounds the size of a pattern (in Go regexp instructions).
const maxInst = 1500

// compiled is a parsed pattern.
type compiled struct {
	re   *regexp.Regexp
	tree *syntax.Regexp
}

// Parse parses a pcre_table. name is the file name used in errors
// ("postfix-regexp.cf"). Every problem is reported, each as a *ParseError; the
// error returned is errors.Join of all of them (nil when none). On error the
// returned table is nil.
func Parse(name string, data []byte) (*Table, error) {
	lines, errs := readLogicalLines(name, data)
	t := &Table{}
	fail := func(line int, format string, args ...any) {
		errs = append(errs, &ParseError{File: name, Line: line, Msg: fmt.Sprintf(format, args...)})
	}
	type open struct {
		cond  int32
		opIdx int
		line  int
		bad   bool // the if has an error in its pattern (Postfix drops it)
	}
	var stack []open
	var condStack []int32
	for _, ll := range lines {
		s := ll.text
		switch {
		case !isAlnum(s[0]):
			pat, next, errMsg := splitPattern(s, 0)
			if errMsg != "" {
				fail(ll.line, "%s", errMsg)
				continue
			}
			r := rule{line: ll.line, text: s[:next], negated: !pat.match}
			p := next
			for p < len(s) && isSpace(s[p]) {
				p++
			}
			r.result = s[p:]
			c, cerr := compilePattern(pat)
			if cerr != nil {
				fail(ll.line, "%v", cerr)
			}
			pieces, maxSub, maxRef, serr := parseResult(r.result)
			switch {
			case r.result == "":
				fail(ll.line, "no result text after %s", r.text)
			case serr != nil:
				fail(ll.line, "%v", serr)
			case maxSub > 0 && r.negated:
				fail(ll.line, "$%s in the result of a negated rule (there is nothing to substitute)", maxRef)
			case cerr == nil && maxSub > c.re.NumSubexp():
				fail(ll.line, "result refers to group $%s but the pattern has %d capture group(s)", maxRef, c.re.NumSubexp())
			}
			if cerr != nil || serr != nil || r.result == "" {
				continue
			}
			r.re, r.pieces, r.maxSub = c.re, pieces, maxSub
			if maxSub == 0 {
				var b strings.Builder
				for _, pc := range pieces {
					b.WriteString(pc.lit)
				}
				r.literal = b.String()
			}
			if !r.negated {
				r.lit = bestLiteral(c.tree)
				r.req = requiredLiterals(c.tree)
			}
			r.conds = append([]int32(nil), condStack...)
			t.ops = append(t.ops, op{kind: opMatch, idx: int32(len(t.rules))})
			t.rules = append(t.rules, r)
		case len(s) >= 2 && strings.EqualFold(s[:2], "if") && (len(s) == 2 || !isAlnum(s[2])):
			p := 2
			for p < len(s) && isSpace(s[p]) {
				p++
			}
			cd := cond{line: ll.line}
			bad := false
			pat, next, errMsg := splitPattern(s, p)
			if errMsg != "" {
				fail(ll.line, "%s", errMsg)
				bad = true
			} else {
				cd.negated = !pat.match
				rest := strings.TrimLeft(s[next:], " \t\r\v\f")
				if rest != "" {
					fail(ll.line, "text after the if pattern: %q (a rule inside if..endif must not start with white space)", rest)
				}
				c, cerr := compilePattern(pat)
				if cerr != nil {
					fail(ll.line, "%v", cerr)
					bad = true
				} else {
					cd.re = c.re
					if !cd.negated {
						cd.lit = bestLiteral(c.tree)
					}
				}
			}
			// Push even a broken if, so that its endif still pairs up.
			ci := int32(len(t.conds))
			t.conds = append(t.conds, cd)
			stack = append(stack, open{cond: ci, opIdx: len(t.ops), line: ll.line, bad: bad})
			condStack = append(condStack, ci)
			t.ops = append(t.ops, op{kind: opIf, idx: ci})
		case len(s) >= 5 && strings.EqualFold(s[:5], "endif") && (len(s) == 5 || !isAlnum(s[5])):
			if len(stack) == 0 {
				fail(ll.line, "endif without matching if")
				continue
			}
			if rest := strings.TrimLeft(s[5:], " \t\r\v\f"); rest != "" {
				fail(ll.line, "text after endif: %q", rest)
			}
			top := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			if top.bad {
				fail(ll.line, "endif of the if at line %d, which has an error", top.line)
			}
			condStack = condStack[:len(condStack)-1]
			t.ops[top.opIdx].endif = int32(len(t.ops))
			t.ops = append(t.ops, op{kind: opEndif})
		default:
			fail(ll.line, "unrecognized line: a rule must start with a pattern delimiter such as \"/\", \"!\", \"if\" or \"endif\"")
		}
	}
	for i := len(stack) - 1; i >= 0; i-- {
		fail(stack[i].line, "if without matching endif")
	}
	if len(errs) > 0 {
		sortErrors(errs)
		return nil, errors.Join(errs...)
	}
	lits := make([]string, len(t.rules))
	for i := range t.rules {
		r := &t.rules[i]
		best := r.lit
		for _, ci := range r.conds {
			if l := t.conds[ci].lit; len(l) > len(best) {
				best = l
			}
		}
		lits[i] = best
	}
	t.index = buildIndex(lits)
	return t, nil
}

func sortErrors(errs []error) {
	// Stable insertion sort by line: errors are collected almost in order.
	line := func(e error) int {
		var pe *ParseError
		if errors.As(e, &pe) {
			return pe.Line
		}
		return 0
	}
	for i := 1; i < len(errs); i++ {
		for j := i; j > 0 && line(errs[j-1]) > line(errs[j]); j-- {
			errs[j-1], errs[j] = errs[j], errs[j-1]
		}
	}
}

// rawPattern is a pattern as found in a rule.
type rawPattern struct {
	text  string
	flags pcreFlags
	match bool // false for a negated pattern
}

// splitPattern reads "[!...]<d>pattern<d>flags" at s[p:], as Postfix's
// dict_pcre_get_pattern does. It returns the pattern and the offset after
// the flags, or an error message.
func splitPattern(s string, p int) (rawPattern, int, string) {
	rp := rawPattern{match: true, flags: pcreFlags{caseless: true, dotall: true}}
	for p < len(s) && (s[p] == '!' || isSpace(s[p])) {
		if s[p] == '!' {
			rp.match = !rp.match
		}
		p++
	}
	if p >= len(s) {
		return rp, 0, "no pattern"
	}
	delim := s[p]
	p++
	start := p
	for p < len(s) {
		if s[p] == '\\' {
			p++
			if p >= len(s) {
				break
			}
		} else if s[p] == delim {
			break
		}
		p++
	}
	if p >= len(s) {
		return rp, 0, fmt.Sprintf("no closing pattern delimiter %q", delimString(delim))
	}
	rp.text = s[start:p]
	p++
	f := &rp.flags
	for p < len(s) && !isSpace(s[p]) {
		switch s[p] {
		case 'i':
			f.caseless = !f.caseless
		case 'm':
			f.multiline = !f.multiline
		case 's':
			f.dotall = !f.dotall
		case 'x':
			return rp, 0, "flag x (extended mode) is not supported"
		case 'A':
			f.anchored = !f.anchored
		case 'U':
			f.ungreedy = !f.ungreedy
		case 'E', 'X':
			// DOLLAR_ENDONLY makes no difference for keys without a
			// newline; X is ignored by Postfix with PCRE2.
		default:
			return rp, 0, fmt.Sprintf("unknown pattern flag %q", delimString(s[p]))
		}
		p++
	}
	return rp, p, ""
}

func delimString(c byte) string {
	if c < 0x80 {
		return string(rune(c))
	}
	return fmt.Sprintf("\\x%02x", c)
}

// showPattern renders a pattern for an error message.
func showPattern(p string) string {
	for _, r := range p {
		if r == utf8.RuneError || r < 0x20 || r == 0x7f {
			return strconv.Quote(p)
		}
	}
	return "/" + p + "/"
}

func compilePattern(rp rawPattern) (*compiled, error) {
	src, err := translatePattern(rp.text, rp.flags)
	if err != nil {
		return nil, fmt.Errorf("pattern %s: %v", showPattern(rp.text), err)
	}
	tree, err := syntax.Parse(src, syntax.Perl)
	if err != nil {
		return nil, fmt.Errorf("pattern %s: %v", showPattern(rp.text), goErr(err))
	}
	if err := checkTree(tree); err != nil {
		return nil, fmt.Errorf("pattern %s: %v", showPattern(rp.text), err)
	}
	// PCRE2 refuses patterns whose compiled form exceeds 64 KiB; a Go
	// instruction never needs more than 33 bytes of PCRE2 code (a class),
	// so below this bound PCRE2 accepts whatever Go accepts.
	if prog, err := syntax.Compile(tree.Simplify()); err != nil || len(prog.Inst) > maxInst {
		return nil, fmt.Errorf("pattern %s: regular expression is too large", showPattern(rp.text))
	}
	re, err := regexp.Compile(src)
	if err != nil {
		return nil, fmt.Errorf("pattern /%s/: %v", rp.text, goErr(err))
	}
	return &compiled{re: re, tree: tree}, nil
}

func goErr(err error) string {
	var se *syntax.Error
	if errors.As(err, &se) {
		return string(se.Code)
	}
	return err.Error()
}

// Len returns the number of rules (if/endif not counted).
func (t *Table) Len() int { return len(t.rules) }

// Rules lists the rules in file order.
func (t *Table) Rules() []RuleInfo {
	out := make([]RuleInfo, len(t.rules))
	for i, r := range t.rules {
		out[i] = RuleInfo{Line: r.line, Rule: r.text, Result: r.result, Negated: r.negated}
	}
	return out
}

// mapKey returns the key in the mapped alphabet (see the package doc) and
// whether it can be looked up at all.
func mapKey(key string) (string, bool) {
	high := false
	for i := 0; i < len(key); i++ {
		switch c := key[i]; {
		case c == '\n' || c == 0:
			return "", false
		case c >= 0x80:
			high = true
		}
	}
	if !high {
		return key, true
	}
	var b strings.Builder
	b.Grow(len(key) * 3)
	for i := 0; i < len(key); i++ {
		if c := key[i]; c < 0x80 {
			b.WriteByte(c)
		} else {
			b.WriteRune(puaBase + rune(c))
		}
	}
	return b.String(), true
}

// unmap converts a substring of a mapped key back to bytes.
func unmap(s string, mapped bool) string {
	if !mapped {
		return s
	}
	b := make([]byte, 0, len(s))
	for _, r := range s {
		c, _ := runeByte(r)
		b = append(b, c)
	}
	return string(b)
}

// condMemo caches if-condition results during one lookup.
type condMemo struct{ known, val uint64 }

func (t *Table) condHolds(ci int32, key string, m *condMemo) bool {
	if ci < 64 {
		bit := uint64(1) << ci
		if m.known&bit != 0 {
			return m.val&bit != 0
		}
		c := &t.conds[ci]
		v := c.re.MatchString(key) != c.negated
		m.known |= bit
		if v {
			m.val |= bit
		}
		return v
	}
	c := &t.conds[ci]
	return c.re.MatchString(key) != c.negated
}

// try evaluates rule i (ignoring its if conditions).
func (t *Table) try(i int32, key string, mapped bool) (Match, bool) {
	r := &t.rules[i]
	if r.maxSub == 0 {
		if r.re.MatchString(key) == r.negated {
			return Match{}, false
		}
		return Match{Result: r.literal, Line: r.line, Rule: r.text}, true
	}
	loc := r.re.FindStringSubmatchIndex(key)
	if loc == nil {
		return Match{}, false
	}
	var b strings.Builder
	for _, pc := range r.pieces {
		if pc.group == 0 {
			b.WriteString(pc.lit)
			continue
		}
		s, e := loc[2*pc.group], loc[2*pc.group+1]
		if s >= 0 && e > s {
			b.WriteString(unmap(key[s:e], mapped))
		}
	}
	return Match{Result: b.String(), Line: r.line, Rule: r.text}, true
}

// Lookup returns the first matching rule's substituted result, as postmap -q
// would. A key containing a newline or NUL byte never matches.
func (t *Table) Lookup(key string) (Match, bool) {
	mk, ok := mapKey(key)
	if !ok || t == nil {
		return Match{}, false
	}
	mapped := len(mk) != len(key)
	var buf, nodeBuf [32]int32
	cands := t.index.candidates(buf[:0], nodeBuf[:0], key)
	always := t.index.always
	var memo condMemo
	var folded string
	ci, ai := 0, 0
	for ci < len(cands) || ai < len(always) {
		var i int32
		switch {
		case ai >= len(always) || ci < len(cands) && cands[ci] < always[ai]:
			i = cands[ci]
			ci++
		default:
			i = always[ai]
			ai++
		}
		if !t.hasRequired(i, key, &folded) || !t.condsHold(i, mk, &memo) {
			continue
		}
		if m, ok := t.try(i, mk, mapped); ok {
			return m, true
		}
	}
	return Match{}, false
}

// hasRequired reports whether key (ASCII-folded once, into *folded)
// contains every literal that rule i requires: a rule whose literals are
// missing cannot match, and checking them is much cheaper than running its
// regexp (rules of one domain share the indexed literal "@domain").
func (t *Table) hasRequired(i int32, key string, folded *string) bool {
	req := t.rules[i].req
	if len(req) == 0 {
		return true
	}
	if *folded == "" {
		*folded = foldString(key)
	}
	for _, l := range req {
		if !strings.Contains(*folded, l) {
			return false
		}
	}
	return true
}

// foldString is ASCII lowercasing (foldByte) of a whole string.
func foldString(s string) string {
	for i := 0; i < len(s); i++ {
		if foldByte(s[i]) != s[i] {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				b[j] = foldByte(b[j])
			}
			return string(b)
		}
	}
	return s
}

func (t *Table) condsHold(i int32, key string, memo *condMemo) bool {
	for _, c := range t.rules[i].conds {
		if !t.condHolds(c, key, memo) {
			return false
		}
	}
	return true
}

// lookupSequential evaluates the table exactly as Postfix's dict_pcre_lookup
// does, rule by rule, jumping over a failed if's body. It is the reference
// for the index.
func (t *Table) lookupSequential(key string) (Match, bool) {
	mk, ok := mapKey(key)
	if !ok || t == nil {
		return Match{}, false
	}
	mapped := len(mk) != len(key)
	for k := 0; k < len(t.ops); k++ {
		o := t.ops[k]
		switch o.kind {
		case opMatch:
			if m, ok := t.try(o.idx, mk, mapped); ok {
				return m, true
			}
		case opIf:
			c := &t.conds[o.idx]
			if c.re.MatchString(mk) == c.negated {
				k = int(o.endif)
			}
		}
	}
	return Match{}, false
}
