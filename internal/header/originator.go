package header

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/mailgate/mailgate/internal/address"
)

// Originator extraction (RFC 5322 §3.4, §3.6.2, §3.6.6, with the obsolete
// forms of §4.4 recognised so that they can be refused).
//
// A field value is read as a mailbox-list:
//
//	mailbox-list = mailbox *("," mailbox)
//	mailbox      = name-addr / addr-spec
//	name-addr    = [display-name] angle-addr
//	angle-addr   = [CFWS] "<" addr-spec ">" [CFWS]
//	display-name = phrase            ; words, and "." (obs-phrase, §4.1)
//
// and, stricter than the grammar so that every reader finds the same
// address:
//
//   - the addr-spec is one contiguous run of text (no white space or comment
//     inside it; obs-local-part and obs-domain with CFWS are refused), handed
//     as written to address.Parse with UTF8Local — there is no second
//     address parser here; an addr-spec that contains "=?" (an encoded word
//     that a client might decode) is refused;
//   - inside "<" … ">" only white space may surround the addr-spec: no
//     comment, no obs-route ("<@a,@b:u@d>", §4.4), no second "<";
//   - a group ("name: … ;", §3.4 and RFC 6854), an empty list element
//     (obs-mbox-list ", ,", §4.4), a domain literal, a backslash outside a
//     quoted string, and anything after the address other than a comment
//     or the next "," are refused;
//   - the display name and every comment are RFC 2047-decoded (rfc2047.go)
//     and must then be valid UTF-8 without control, bidi, format (Cf),
//     invisible or non-ASCII space characters, and without "@", "<", ">" or a
//     look-alike of them: a display name that holds an address — any
//     address, even the From address itself — is refused.

// Mailbox is one mailbox of an address list.
type Mailbox struct {
	Name     string          `json:"name,omitempty"`     // display name, RFC 2047-decoded, words joined by one space
	Address  address.Address `json:"address"`            // canonical address
	Spec     string          `json:"spec"`               // the addr-spec as written
	Comments []string        `json:"comments,omitempty"` // decoded comments around the mailbox

	// nameAddr is the address a display name consists of ("a@d" <a@d>,
	// as many clients write when no name is set); it must equal Address.
	nameAddr *address.Address
}

// Originator is one mailbox of an originator field.
type Originator struct {
	Field   string  `json:"field"`  // canonical field name: From, Sender, Resent-From or Resent-Sender
	Offset  int     `json:"offset"` // byte offset of the field in the message
	Mailbox Mailbox `json:"mailbox"`
}

// Originators checks the originator fields of b (SPEC §6) and returns their
// mailboxes in message order:
//
//   - From exactly once (RFC 5322 §3.6: min 1, max 1), with exactly one
//     mailbox (SPEC §6, stricter than §3.6.2, which allows a list with Sender);
//   - Sender at most once (§3.6), with exactly one mailbox (§3.6.2);
//   - every Resent-From a mailbox-list, every Resent-Sender one mailbox
//     (§3.6.6).
//
// Field names compare case-insensitively and "From :" is a From field.
// Errors are *Error whose Field is the canonical field name.
func (b *Block) Originators() ([]Originator, error) {
	var from, sender []int
	for i, f := range b.Fields {
		switch f.Key {
		case "from":
			from = append(from, i)
		case "sender":
			sender = append(sender, i)
		}
	}
	switch {
	case len(from) == 0:
		return nil, &Error{Field: From, Offset: -1, Reason: "no From field (RFC 5322 §3.6 requires exactly one)"}
	case len(from) > 1:
		return nil, &Error{Field: From, Offset: b.Fields[from[1]].Offset, Reason: fmt.Sprintf("more than one From field (at byte offsets %d and %d; RFC 5322 §3.6 allows exactly one)", b.Fields[from[0]].Offset, b.Fields[from[1]].Offset)}
	case len(sender) > 1:
		return nil, &Error{Field: Sender, Offset: b.Fields[sender[1]].Offset, Reason: fmt.Sprintf("more than one Sender field (at byte offsets %d and %d; RFC 5322 §3.6 allows at most one)", b.Fields[sender[0]].Offset, b.Fields[sender[1]].Offset)}
	}
	var out []Originator
	for _, f := range b.Fields {
		name, ok := originatorName(f.Key)
		if !ok {
			continue
		}
		mbs, err := ParseMailboxList(f.Value)
		if err != nil {
			var e *Error
			if errors.As(err, &e) {
				return nil, &Error{Field: name, Offset: f.Offset, Reason: e.Reason}
			}
			return nil, &Error{Field: name, Offset: f.Offset, Reason: err.Error()}
		}
		if len(mbs) > 1 && name != ResentFrom {
			return nil, &Error{Field: name, Offset: f.Offset, Reason: fmt.Sprintf("more than one address (%d); %s must hold exactly one mailbox", len(mbs), name)}
		}
		for _, mb := range mbs {
			out = append(out, Originator{Field: name, Offset: f.Offset, Mailbox: mb})
		}
	}
	return out, nil
}

// ParseMailbox parses a field value that must hold exactly one mailbox.
// Errors are *Error (Offset is a byte offset in value).
func ParseMailbox(value string) (Mailbox, error) {
	mbs, err := ParseMailboxList(value)
	if err != nil {
		return Mailbox{}, err
	}
	if len(mbs) != 1 {
		return Mailbox{}, &Error{Offset: -1, Reason: fmt.Sprintf("more than one address (%d); exactly one mailbox is expected", len(mbs))}
	}
	return mbs[0], nil
}

// ParseMailboxList parses a field value as a mailbox-list (RFC 5322 §3.4)
// with the restrictions described above. Errors are *Error (Offset is a
// byte offset in value).
func ParseMailboxList(value string) ([]Mailbox, error) {
	toks, err := tokenize(value)
	if err != nil {
		return nil, err
	}
	p := &mparser{v: value, toks: toks}
	var out []Mailbox
	for {
		var mb Mailbox
		if err := p.skipCFWS(&mb); err != nil {
			return nil, err
		}
		if p.eof() {
			if len(out) == 0 {
				return nil, p.errAt(len(value), "no address")
			}
			return nil, p.errAt(len(value), "empty list element after the last comma (obs-mbox-list, RFC 5322 §4.4, is not accepted)")
		}
		if p.isSpecial(',') {
			return nil, p.errAt(p.toks[p.i].start, "empty list element at offset %d (obs-mbox-list, RFC 5322 §4.4, is not accepted)", p.toks[p.i].start)
		}
		if err := p.mailbox(&mb); err != nil {
			return nil, err
		}
		if err := p.skipCFWS(&mb); err != nil {
			return nil, err
		}
		out = append(out, mb)
		if p.eof() {
			return out, nil
		}
		if !p.isSpecial(',') {
			return nil, p.unexpected("after the address " + fmt.Sprintf("%+q", truncate(mb.Spec, 60)))
		}
		p.i++
	}
}

// ---------------------------------------------------------------------------
// Tokens (RFC 5322 §3.2)

type tokKind uint8

const (
	tkAtom    tokKind = iota + 1 // 1*atext, with UTF8-non-ascii (RFC 6532 §3.2)
	tkQuoted                     // quoted-string; text is the unescaped content
	tkComment                    // comment; text is the decoded content
	tkWSP                        // a run of SP / HTAB
	tkSpecial                    // one of < > : ; @ , .
)

type token struct {
	kind       tokKind
	c          byte // tkSpecial: the character
	start, end int  // byte offsets in the value
	text       string
}

// atextASCII per RFC 5322 §3.2.3.
var atextASCII = func() (t [utf8.RuneSelf]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = true, true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for _, c := range "!#$%&'*+-/=?^_`{|}~" {
		t[c] = true
	}
	return t
}()

func tokenize(v string) ([]token, *Error) {
	toks := make([]token, 0, 8)
	errAt := func(off int, format string, args ...any) *Error {
		return &Error{Offset: off, Reason: fmt.Sprintf(format, args...)}
	}
	for i := 0; i < len(v); {
		c := v[i]
		switch {
		case isWSP(c):
			j := i + 1
			for j < len(v) && isWSP(v[j]) {
				j++
			}
			toks = append(toks, token{kind: tkWSP, start: i, end: j})
			i = j
		case c == '(':
			end, content, err := scanComment(v, i)
			if err != nil {
				return nil, err
			}
			decoded, derr := decodeText(content)
			if derr != nil {
				return nil, errAt(i, "comment at offset %d: %v", i, derr)
			}
			if reason := checkText(decoded, "comment"); reason != "" {
				return nil, errAt(i, "%s (comment at offset %d)", reason, i)
			}
			toks = append(toks, token{kind: tkComment, start: i, end: end, text: decoded})
			i = end
		case c == '"':
			end, content, err := scanQuoted(v, i)
			if err != nil {
				return nil, err
			}
			toks = append(toks, token{kind: tkQuoted, start: i, end: end, text: content})
			i = end
		case c == '<' || c == '>' || c == ':' || c == ';' || c == '@' || c == ',' || c == '.':
			toks = append(toks, token{kind: tkSpecial, c: c, start: i, end: i + 1})
			i++
		case c == '[' || c == ']':
			return nil, errAt(i, "domain literal (%q at offset %d) is not accepted (SPEC §1: no address literals)", c, i)
		case c == ')':
			return nil, errAt(i, "')' without '(' at offset %d", i)
		case c == '\\':
			return nil, errAt(i, "backslash outside a quoted string or comment at offset %d (RFC 5322 §3.2.1)", i)
		case c < utf8.RuneSelf && atextASCII[c], c >= utf8.RuneSelf:
			j := i
			for j < len(v) {
				if v[j] < utf8.RuneSelf {
					if !atextASCII[v[j]] {
						break
					}
					j++
					continue
				}
				r, n := utf8.DecodeRuneInString(v[j:])
				if r == utf8.RuneError && n == 1 {
					return nil, errAt(j, "invalid UTF-8 at offset %d (byte 0x%02X)", j, v[j])
				}
				j += n
			}
			toks = append(toks, token{kind: tkAtom, start: i, end: j, text: v[i:j]})
			i = j
		default: // controls and DEL
			return nil, errAt(i, "control character 0x%02X at offset %d", c, i)
		}
	}
	return toks, nil
}

// scanComment reads the comment that starts at v[i] == '(' (RFC 5322 §3.2.2:
// nested comments, quoted-pairs) and returns the offset after it and its
// content with quoted-pairs unescaped. Nesting is counted, not recursed.
func scanComment(v string, i int) (int, string, *Error) {
	var b strings.Builder
	depth := 0
	for j := i; j < len(v); j++ {
		c := v[j]
		switch c {
		case '\\':
			if j+1 >= len(v) {
				return 0, "", &Error{Offset: j, Reason: fmt.Sprintf("backslash at the end of the comment that starts at offset %d", i)}
			}
			j++
			b.WriteByte(v[j])
		case '(':
			if depth > 0 {
				b.WriteByte(c)
			}
			depth++
		case ')':
			depth--
			if depth == 0 {
				return j + 1, b.String(), nil
			}
			b.WriteByte(c)
		default:
			b.WriteByte(c)
		}
	}
	return 0, "", &Error{Offset: i, Reason: fmt.Sprintf("unterminated comment starting at offset %d", i)}
}

// scanQuoted reads the quoted-string that starts at v[i] == '"' (RFC 5322
// §3.2.4) and returns the offset after it and its unescaped content.
func scanQuoted(v string, i int) (int, string, *Error) {
	var b strings.Builder
	for j := i + 1; j < len(v); j++ {
		switch c := v[j]; c {
		case '\\':
			if j+1 >= len(v) {
				return 0, "", &Error{Offset: j, Reason: fmt.Sprintf("backslash at the end of the quoted string that starts at offset %d", i)}
			}
			j++
			b.WriteByte(v[j])
		case '"':
			return j + 1, b.String(), nil
		default:
			b.WriteByte(c)
		}
	}
	return 0, "", &Error{Offset: i, Reason: fmt.Sprintf("unterminated quoted string starting at offset %d", i)}
}

// ---------------------------------------------------------------------------
// Mailboxes

type mparser struct {
	v    string
	toks []token
	i    int
}

func (p *mparser) eof() bool { return p.i >= len(p.toks) }

func (p *mparser) isSpecial(c byte) bool {
	return p.i < len(p.toks) && p.toks[p.i].kind == tkSpecial && p.toks[p.i].c == c
}

func (p *mparser) errAt(off int, format string, args ...any) *Error {
	return &Error{Offset: off, Reason: fmt.Sprintf(format, args...)}
}

// unexpected reports the current token.
func (p *mparser) unexpected(where string) *Error {
	t := p.toks[p.i]
	return p.errAt(t.start, "unexpected %s at offset %d %s (trailing text, a second address or a group)", describeToken(p.v, t), t.start, where)
}

func describeToken(v string, t token) string {
	switch t.kind {
	case tkSpecial:
		return fmt.Sprintf("%q", t.c)
	case tkQuoted:
		return "quoted string " + fmt.Sprintf("%+q", truncate(v[t.start:t.end], 60))
	}
	return fmt.Sprintf("%+q", truncate(v[t.start:t.end], 60))
}

// skipCFWS skips white space and comments, keeping the comments in mb.
func (p *mparser) skipCFWS(mb *Mailbox) *Error {
	for p.i < len(p.toks) {
		switch t := p.toks[p.i]; t.kind {
		case tkWSP:
		case tkComment:
			mb.Comments = append(mb.Comments, t.text)
		default:
			return nil
		}
		p.i++
	}
	return nil
}

// mailbox parses one mailbox; p is at a token that is neither white space,
// a comment nor ",".
func (p *mparser) mailbox(mb *Mailbox) *Error {
	var words []int // indices of the tokens that are not CFWS
	for !p.eof() {
		t := p.toks[p.i]
		if t.kind == tkWSP {
			p.i++
			continue
		}
		if t.kind == tkComment {
			mb.Comments = append(mb.Comments, t.text)
			p.i++
			continue
		}
		if t.kind == tkSpecial && strings.IndexByte("<>,:;", t.c) >= 0 {
			break
		}
		words = append(words, p.i)
		p.i++
	}
	if p.eof() || p.isSpecial(',') {
		return p.bareAddrSpec(mb, words)
	}
	t := p.toks[p.i]
	switch t.c {
	case '<':
		if err := p.displayName(mb, words); err != nil {
			return err
		}
		if err := p.angleAddr(mb); err != nil {
			return err
		}
		// SPEC §6: the display name may hold no address other than the
		// mailbox's own.
		if mb.nameAddr != nil && *mb.nameAddr != mb.Address {
			return p.errAt(t.start, "the display name %+q is another address than <%s>", truncate(mb.Name, 80), mb.Address)
		}
		return nil
	case ':':
		return p.errAt(t.start, "':' at offset %d: group syntax (display-name \":\" [mailbox-list] \";\", RFC 5322 §3.4, RFC 6854) is not accepted in an originator field", t.start)
	case ';':
		return p.errAt(t.start, "';' at offset %d: group syntax is not accepted in an originator field", t.start)
	default: // '>'
		return p.errAt(t.start, "'>' without '<' at offset %d", t.start)
	}
}

// bareAddrSpec takes words (a mailbox without angle brackets) as one
// addr-spec.
func (p *mparser) bareAddrSpec(mb *Mailbox, words []int) *Error {
	ats := 0
	for _, w := range words {
		if t := p.toks[w]; t.kind == tkSpecial && t.c == '@' {
			ats++
		}
	}
	first, last := p.toks[words[0]], p.toks[words[len(words)-1]]
	raw := p.v[first.start:last.end]
	for k := 1; k < len(words); k++ {
		if words[k] != words[k-1]+1 {
			switch {
			case ats > 1:
				return p.errAt(first.start, "more than one address in %+q (a second address, or an address used as display name, outside <…>)", truncate(raw, 80))
			case ats == 0:
				return p.errAt(first.start, "%+q is not an address (a display name must be followed by <address>)", truncate(raw, 80))
			}
			return p.errAt(p.toks[words[k-1]].end, "white space or a comment inside the address %+q (obs-local-part / obs-domain, RFC 5322 §4.4, are not accepted)", truncate(raw, 80))
		}
	}
	if ats == 0 {
		return p.errAt(first.start, "%+q is not an address (a display name must be followed by <address>)", truncate(raw, 80))
	}
	return p.addrSpec(mb, raw, first.start)
}

// displayName builds the decoded display name from words (obs-phrase: words
// and "."), and checks it.
func (p *mparser) displayName(mb *Mailbox, words []int) *Error {
	if len(words) == 0 {
		return nil
	}
	// A display name that is one plain quoted string holding exactly an
	// address ("a@d" <a@d>) is accepted when the address is the mailbox's
	// own (checked by the caller). Encoded words and unquoted forms never are.
	if t := p.toks[words[0]]; len(words) == 1 && t.kind == tkQuoted && !strings.Contains(t.text, "=?") && strings.Contains(t.text, "@") {
		if a, err := address.Parse(t.text, address.Options{UTF8Local: true}); err == nil {
			mb.Name, mb.nameAddr = t.text, &a
			return nil
		}
	}
	var b strings.Builder
	prevEncoded := false
	for k, w := range words {
		t := p.toks[w]
		gap, wspOnly := false, true
		if k > 0 && w != words[k-1]+1 {
			gap = true
			for g := words[k-1] + 1; g < w; g++ {
				if p.toks[g].kind != tkWSP {
					wspOnly = false
				}
			}
		}
		var text string
		encoded := false
		switch t.kind {
		case tkSpecial:
			if t.c == '@' {
				return p.errAt(t.start, "the display name contains '@' at offset %d: an address outside <…> (a display name must not hold an address)", t.start)
			}
			if k == 0 { // t.c == '.': obs-phrase starts with a word (RFC 5322 §4.1)
				return p.errAt(t.start, "the display name starts with %q at offset %d (RFC 5322 §4.1 obs-phrase starts with a word)", t.c, t.start)
			}
			text = string(t.c)
		case tkQuoted:
			d, err := decodeText(t.text)
			if err != nil {
				return p.errAt(t.start, "display name: %v", err)
			}
			text = d
		default: // tkAtom
			switch {
			case isEncodedWordLike(t.text):
				d, err := decodeWord(t.text)
				if err != nil {
					return p.errAt(t.start, "display name: %v", err)
				}
				text, encoded = d, true
			case strings.Contains(t.text, "=?"):
				return p.errAt(t.start, "display name: %+q looks like an RFC 2047 encoded word but is not a well-formed one", truncate(t.text, 60))
			default:
				text = t.text
			}
		}
		if gap && !(encoded && prevEncoded && wspOnly) { // RFC 2047 §6.2
			b.WriteByte(' ')
		}
		b.WriteString(text)
		prevEncoded = encoded
	}
	name := b.String()
	if reason := checkText(name, "the display name"); reason != "" {
		return p.errAt(p.toks[words[0]].start, "%s (decoded display name %+q)", reason, truncate(name, 80))
	}
	mb.Name = name
	return nil
}

// angleAddr parses "<" addr-spec ">"; p is at "<".
func (p *mparser) angleAddr(mb *Mailbox) *Error {
	open := p.toks[p.i]
	p.i++
	skipWSP := func() *Error {
		for !p.eof() {
			switch t := p.toks[p.i]; t.kind {
			case tkWSP:
				p.i++
				continue
			case tkComment:
				return p.errAt(t.start, "comment inside <…> at offset %d", t.start)
			}
			break
		}
		return nil
	}
	if err := skipWSP(); err != nil {
		return err
	}
	if p.eof() {
		return p.errAt(open.start, "'<' at offset %d without '>'", open.start)
	}
	if p.isSpecial('@') {
		return p.errAt(p.toks[p.i].start, "source route (obs-route \"<@domain,…:address>\", RFC 5322 §4.4, RFC 5321 Appendix C) is not accepted")
	}
	if p.isSpecial('>') {
		return p.errAt(open.start, "empty address <> at offset %d", open.start)
	}
	start := p.i
	for !p.eof() {
		t := p.toks[p.i]
		if t.kind == tkAtom || t.kind == tkQuoted || (t.kind == tkSpecial && (t.c == '.' || t.c == '@')) {
			p.i++
			continue
		}
		break
	}
	end := p.i
	if err := skipWSP(); err != nil {
		return err
	}
	if p.eof() {
		return p.errAt(open.start, "'<' at offset %d without '>'", open.start)
	}
	if !p.isSpecial('>') || end == start {
		t := p.toks[p.i]
		if t.kind == tkSpecial && t.c == ':' {
			return p.errAt(t.start, "':' inside <…> at offset %d (a source route or a group; not accepted)", t.start)
		}
		return p.unexpected("inside <…>")
	}
	p.i++ // '>'
	raw := p.v[p.toks[start].start:p.toks[end-1].end]
	return p.addrSpec(mb, raw, p.toks[start].start)
}

// addrSpec validates raw with address.Parse (the one address parser).
func (p *mparser) addrSpec(mb *Mailbox, raw string, off int) *Error {
	if strings.Contains(raw, "=?") {
		return p.errAt(off, "the address %+q contains \"=?\", the start of an RFC 2047 encoded word; encoded words are not allowed in addresses (RFC 2047 §5)", truncate(raw, 80))
	}
	a, err := address.Parse(raw, address.Options{UTF8Local: true})
	if err != nil {
		var ae *address.Error
		if errors.As(err, &ae) {
			return p.errAt(off, "invalid address %+q: %s", truncate(raw, 80), ae.Reason)
		}
		return p.errAt(off, "invalid address %+q: %v", truncate(raw, 80), err)
	}
	mb.Address, mb.Spec = a, raw
	return nil
}

// ---------------------------------------------------------------------------
// Characters of display names and comments

// checkText checks decoded display-name or comment text and returns a
// reason, or "".
func checkText(s, what string) string {
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			return fmt.Sprintf("%s contains invalid UTF-8 at byte offset %d (byte 0x%02X)", what, i, s[i])
		}
		if kind := textForbidden(r); kind != "" {
			return fmt.Sprintf("%s contains U+%04X (%s) at byte offset %d", what, r, kind, i)
		}
		i += n
	}
	return ""
}

// lookalikes of "@", "<" and ">" (Unicode confusables).
var lookalikes = map[rune]string{
	0xFF20: "FULLWIDTH COMMERCIAL AT, a look-alike of @",
	0xFE6B: "SMALL COMMERCIAL AT, a look-alike of @",
	0xFF1C: "FULLWIDTH LESS-THAN SIGN, a look-alike of <",
	0xFF1E: "FULLWIDTH GREATER-THAN SIGN, a look-alike of >",
	0xFE64: "SMALL LESS-THAN SIGN, a look-alike of <",
	0xFE65: "SMALL GREATER-THAN SIGN, a look-alike of >",
	0x2039: "SINGLE LEFT-POINTING ANGLE QUOTATION MARK, a look-alike of <",
	0x203A: "SINGLE RIGHT-POINTING ANGLE QUOTATION MARK, a look-alike of >",
	0x2329: "LEFT-POINTING ANGLE BRACKET, a look-alike of <",
	0x232A: "RIGHT-POINTING ANGLE BRACKET, a look-alike of >",
	0x3008: "LEFT ANGLE BRACKET, a look-alike of <",
	0x3009: "RIGHT ANGLE BRACKET, a look-alike of >",
	0x27E8: "MATHEMATICAL LEFT ANGLE BRACKET, a look-alike of <",
	0x27E9: "MATHEMATICAL RIGHT ANGLE BRACKET, a look-alike of >",
	0x276E: "HEAVY LEFT-POINTING ANGLE QUOTATION MARK ORNAMENT, a look-alike of <",
	0x276F: "HEAVY RIGHT-POINTING ANGLE QUOTATION MARK ORNAMENT, a look-alike of >",
	0x02C2: "MODIFIER LETTER LEFT ARROWHEAD, a look-alike of <",
	0x02C3: "MODIFIER LETTER RIGHT ARROWHEAD, a look-alike of >",
	0x1438: "CANADIAN SYLLABICS PA, a look-alike of <",
	0x1433: "CANADIAN SYLLABICS PO, a look-alike of >",
}

// textForbidden classifies a rune that may not appear in a decoded display
// name or comment, or returns "".
func textForbidden(r rune) string {
	switch {
	case r == '@':
		return "COMMERCIAL AT: a display name or comment must not hold an address"
	case r == '<' || r == '>':
		return "an angle bracket: a display name or comment must not hold an address"
	case r == '\t' || (r >= ' ' && r < 0x7f):
		return ""
	case r < ' ' || r == 0x7f || (r >= 0x80 && r <= 0x9f):
		return "a control character"
	case r == utf8.RuneError:
		return "REPLACEMENT CHARACTER, a sign of a decoding error"
	}
	if l, ok := lookalikes[r]; ok {
		return l
	}
	switch {
	case unicode.Is(unicode.Bidi_Control, r):
		return "a bidirectional control character"
	case unicode.Is(unicode.Cf, r):
		return "an invisible format character, Unicode category Cf"
	case unicode.Is(unicode.White_Space, r) || unicode.In(r, unicode.Zs, unicode.Zl, unicode.Zp):
		return "a non-ASCII white-space character"
	case unicode.Is(unicode.Other_Default_Ignorable_Code_Point, r) || unicode.Is(unicode.Variation_Selector, r) ||
		r == 0x2800 || r == 0x115F || r == 0x1160 || r == 0x3164 || r == 0xFFA0:
		return "an invisible character"
	case unicode.Is(unicode.Co, r):
		return "a private-use character"
	case unicode.Is(unicode.Noncharacter_Code_Point, r):
		return "a noncharacter"
	case !unicode.In(r, unicode.L, unicode.M, unicode.N, unicode.P, unicode.S):
		return "an unassigned code point"
	}
	return ""
}
