// Package header parses the header block of an Internet message strictly
// (RFC 5322 §2.2 and §3.6, with the obsolete syntax of §4.5) and extracts its
// originator fields (From, Sender, Resent-From, Resent-Sender) for the
// submission checks of SPEC §6.
//
// The parser works on the raw bytes of the message as received at the end of
// SMTP DATA. It sees every field that any downstream consumer could see, and
// it refuses every construct that two consumers could read differently
// ("Composition Kills", USENIX Security 2020; "Weak Links in Authentication
// Chains", USENIX Security 2021): rather than guess what a mail client will
// display, an ambiguous message is rejected, with an *Error that names the
// field and the reason.
//
// # Rejected
//
//   - a line ending that is not CRLF: a bare CR or a bare LF anywhere in the
//     message, header and body (RFC 5322 §2.2, §2.3; RFC 5321 §2.3.8; the
//     "SMTP smuggling" attacks of 2023 use "\n.\r\n" and "\r\n.\n");
//   - NUL anywhere in the message (RFC 5322 §4.1 allows it only in obs-utext;
//     C strings end there, so consumers disagree about what follows);
//   - a first line that starts with white space (it would be a continuation
//     of nothing: some readers drop it, some read a field);
//   - a field name that is empty, contains a byte outside printable US-ASCII
//     (RFC 5322 §3.6.8 ftext: %d33-57 / %d59-126), or white space anywhere but
//     directly before the colon; a line without a colon (this includes a
//     field name folded over two lines, "From\r\n : …");
//   - a continuation line that holds only white space (RFC 5322 §3.2.2 forbids
//     it; the §4.2 obs-FWS allows it, and readers that treat it as the end of
//     the header block see a different message);
//   - a continuation line that reads like an originator field (" From: …",
//     " Sender: …"): line-based readers that strip leading white space take it
//     for a second From;
//   - a header block larger than MaxBlock (64 KiB).
//
// White space between the field name and the colon (obs-optional, RFC 5322
// §4.5: "From : x") is accepted and removed from the Key, so that "From :"
// counts as a From field (net/mail files it under the key "From ").
//
// Parsing is linear in the size of the message: every byte is looked at a
// bounded number of times (Go's own net/mail had quadratic-time bugs).
package header

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
)

// MaxBlock is the largest accepted header block, in bytes (fields with their
// CRLFs, without the empty line that ends the block).
const MaxBlock = 64 << 10

// Field is one header field.
type Field struct {
	Name   string `json:"name"`   // the field name as written (without white space before the colon)
	Key    string `json:"key"`    // canonical name: Name in lowercase
	Raw    []byte `json:"-"`      // the whole field as received, including folding and the final CRLF; it aliases the input of Parse
	Value  string `json:"value"`  // the field body after the colon, unfolded (RFC 5322 §2.2.3: every CRLF removed); nothing else changed
	Offset int    `json:"offset"` // byte offset of the field in the message
}

// Block is a parsed header block.
type Block struct {
	Fields []Field // in message order
	Size   int     // size of the header block: the fields with their CRLFs
	Body   int     // byte offset of the body: after the empty line, or len(raw) when there is none
}

// Get returns the fields whose Key is key (compared case-insensitively), in
// message order.
func (b *Block) Get(key string) []Field {
	var out []Field
	for _, f := range b.Fields {
		if strings.EqualFold(f.Key, key) {
			out = append(out, f)
		}
	}
	return out
}

// Error is the error type of this package.
type Error struct {
	// Field names the header field concerned: a canonical originator name
	// ("From", "Sender", "Resent-From", "Resent-Sender"), the name as written
	// (printable ASCII), or, for a malformed name, the name quoted Go-style.
	// It is empty when the problem is in the block or the body as a whole.
	Field  string
	Reason string // what is wrong; attacker-supplied text is quoted with %+q (ASCII only)
	Offset int    // byte offset in the message (or in the field value, for ParseMailboxList), -1 when unknown
	Body   bool   // the problem is in the message body
}

func (e *Error) Error() string {
	switch {
	case e.Body:
		return "message body: " + e.Reason
	case e.Field != "":
		return "header field " + e.Field + ": " + e.Reason
	}
	return "header block: " + e.Reason
}

func errorf(field string, off int, format string, args ...any) *Error {
	return &Error{Field: field, Offset: off, Reason: fmt.Sprintf(format, args...)}
}

// span is a field found by the first pass, as offsets into raw.
// MaxBlock keeps every offset of the header block within an int32.
type span struct {
	start, nameEnd, colon, end int32 // end: after the last line of the field (its CRLF included)
	keyOff, valOff, valEnd     int32 // offsets of the lowercased key (-1 when unused) and of the unfolded value in the block string
	common                     int8  // commonKeys index + 1 of the key; 0: the name is its own key; -1: lowercase it
	folded                     bool
}

// spanPool recycles the scratch slice of Parse's first pass.
var spanPool = sync.Pool{New: func() any { s := make([]span, 0, 32); return &s }}

// maxPooledSpans bounds what the pool keeps (a 64 KiB block has at most
// 16 K fields; keeping 4 K spans costs 128 KiB).
const maxPooledSpans = 4096

// Parse parses the header block at the start of raw, a whole message with
// CRLF line endings. The block ends at the first empty line; when there is
// none, the whole input is the header block (and its last line may lack its
// CRLF). The body, when present, is checked for NUL, bare CR and bare LF.
// Errors are *Error.
func Parse(raw []byte) (*Block, error) {
	n := len(raw)
	if n > 0 && isWSP(raw[0]) {
		return nil, errorf("", 0, "the first line starts with white space (RFC 5322 §2.2: a field starts with its name)")
	}
	sp := spanPool.Get().(*[]span)
	defer func() {
		if cap(*sp) <= maxPooledSpans {
			spanPool.Put(sp)
		}
	}()
	spans := (*sp)[:0]
	defer func() { *sp = spans[:0] }()
	cur := -1 // index in spans of the field being read
	pos := 0
	hdrEnd, body := n, n
	for pos < n {
		rest := raw[pos:]
		lf := bytes.IndexByte(rest, '\n')
		line, next := rest, n
		if lf >= 0 {
			if lf == 0 || rest[lf-1] != '\r' {
				return nil, errorf(lineField(raw, rest[:lf], spans, cur), pos+lf, "bare LF (line feed without carriage return) at byte offset %d; lines must end in CRLF (RFC 5322 §2.2, RFC 5321 §2.3.8)", pos+lf)
			}
			line, next = rest[:lf-1], pos+lf+1
		}
		if len(line) == 0 && lf >= 0 { // the empty line: end of the header block
			hdrEnd, body = pos, next
			break
		}
		if next > MaxBlock {
			return nil, errorf("", pos, "the header block is larger than %d bytes", MaxBlock)
		}
		if i := bytes.IndexByte(line, '\r'); i >= 0 {
			return nil, errorf(lineField(raw, line, spans, cur), pos+i, "bare CR (carriage return without line feed) at byte offset %d (RFC 5322 §2.2, RFC 5321 §2.3.8)", pos+i)
		}
		if i := bytes.IndexByte(line, 0); i >= 0 {
			return nil, errorf(lineField(raw, line, spans, cur), pos+i, "NUL byte at byte offset %d", pos+i)
		}
		if isWSP(line[0]) {
			// A continuation line (RFC 5322 §2.2.3); cur >= 0 because the
			// first line was checked above.
			if allWSP(line) {
				return nil, errorf(fieldName(raw, spans, cur), pos, "line %q at byte offset %d holds only white space (RFC 5322 §3.2.2); some readers take it for the end of the header block", line, pos)
			}
			if name, ok := originatorLookalike(line); ok {
				return nil, errorf(fieldName(raw, spans, cur), pos, "continuation line at byte offset %d starts like a %s field (%+q); a reader that ignores the indentation sees a second %s", pos, name, truncate(string(line), 40), name)
			}
			spans[cur].folded = true
			spans[cur].end = int32(next)
			pos = next
			continue
		}
		nameEnd, colon, err := fieldNameEnd(line, pos)
		if err != nil {
			return nil, err
		}
		spans = append(spans, span{start: int32(pos), nameEnd: int32(pos + nameEnd), colon: int32(pos + colon), end: int32(next), keyOff: -1, valOff: -1})
		cur = len(spans) - 1
		pos = next
	}
	if err := checkBody(raw, body); err != nil {
		return nil, err
	}

	// One string holds, field after field, the name, the lowercased key
	// when it differs from the name and is not a common one, and the
	// unfolded value; names, keys and values are slices of it. A block
	// costs a constant number of allocations, whatever its number of fields.
	size := 0
	for i := range spans {
		s := &spans[i]
		s.common = commonKey(raw[s.start:s.nameEnd])
		size += int(s.nameEnd-s.start) + int(s.end-s.colon)
		if s.common < 0 {
			size += int(s.nameEnd - s.start)
		}
	}
	var all strings.Builder
	all.Grow(size)
	for i := range spans {
		s := &spans[i]
		all.Write(raw[s.start:s.nameEnd])
		if s.common < 0 {
			s.keyOff = int32(all.Len())
			for _, c := range raw[s.start:s.nameEnd] {
				if 'A' <= c && c <= 'Z' {
					c += 'a' - 'A'
				}
				all.WriteByte(c)
			}
		}
		s.valOff = int32(all.Len())
		v := raw[s.colon+1 : valueEnd(raw, int(s.end))]
		for s.folded && len(v) > 0 {
			j := bytes.Index(v, crlf)
			if j < 0 {
				break
			}
			all.Write(v[:j])
			v = v[j+2:]
		}
		all.Write(v)
		s.valEnd = int32(all.Len())
	}
	str := all.String()
	b := &Block{Fields: make([]Field, len(spans)), Size: hdrEnd, Body: body}
	off := 0 // offset of the current field's name in str
	for i, s := range spans {
		nameLen := int(s.nameEnd - s.start)
		name := str[off : off+nameLen]
		key := name
		switch {
		case s.common > 0:
			key = commonKeys[s.common-1]
		case s.common < 0:
			key = str[s.keyOff : int(s.keyOff)+nameLen]
		}
		b.Fields[i] = Field{Name: name, Key: key, Raw: raw[s.start:s.end:s.end], Value: str[s.valOff:s.valEnd], Offset: int(s.start)}
		off = int(s.valEnd)
	}
	return b, nil
}

var crlf = []byte("\r\n")

// valueEnd returns the end of a field's value: end without the final CRLF.
func valueEnd(raw []byte, end int) int {
	if end >= 2 && raw[end-1] == '\n' {
		return end - 2
	}
	return end
}

// fieldNameEnd parses the field name at the start of line (RFC 5322 §3.6.8
// field-name = 1*ftext; §4.5 obs-optional allows *WSP before the colon) and
// returns the end of the name and the index of the colon. off is the offset
// of line in the message.
func fieldNameEnd(line []byte, off int) (nameEnd, colon int, err *Error) {
	for k := 0; k < len(line); k++ {
		c := line[k]
		switch {
		case c == ':':
			if k == 0 {
				return 0, 0, errorf("", off, "empty field name at byte offset %d", off)
			}
			return k, k, nil
		case isWSP(c):
			j := k
			for j < len(line) && isWSP(line[j]) {
				j++
			}
			if j < len(line) && line[j] == ':' {
				return k, j, nil
			}
			if j == len(line) {
				return 0, 0, errorf(safeName(line[:k]), off, "line without a colon at byte offset %d (a field name folded over two lines, or not a header field)", off)
			}
			return 0, 0, errorf(safeName(line[:j+1]), off+k, "white space inside the field name at byte offset %d (RFC 5322 §3.6.8)", off+k)
		case c >= 0x80:
			return 0, 0, errorf(safeName(line[:k+1]), off+k, "8-bit byte 0x%02X in the field name at byte offset %d (RFC 5322 §3.6.8: printable US-ASCII only)", c, off+k)
		case c < '!' || c == 0x7f:
			return 0, 0, errorf(safeName(line[:k+1]), off+k, "control character 0x%02X in the field name at byte offset %d (RFC 5322 §3.6.8)", c, off+k)
		}
	}
	return 0, 0, errorf(safeName(line), off, "line without a colon at byte offset %d (a field name folded over two lines, or not a header field)", off)
}

// checkBody checks raw[start:] for NUL, bare LF and bare CR, and reports the
// first one found. Each byte class is searched with bytes.IndexByte (linear).
func checkBody(raw []byte, start int) *Error {
	first, what := -1, ""
	note := func(i int, w string) {
		if i >= 0 && (first < 0 || i < first) {
			first, what = i, w
		}
	}
	if i := bytes.IndexByte(raw[start:], 0); i >= 0 {
		note(start+i, "NUL byte")
	}
	for off := start; off < len(raw); {
		i := bytes.IndexByte(raw[off:], '\n')
		if i < 0 {
			break
		}
		k := off + i
		if k == 0 || raw[k-1] != '\r' || k-1 < start {
			note(k, "bare LF (line feed without carriage return)")
			break
		}
		off = k + 1
	}
	for off := start; off < len(raw); {
		i := bytes.IndexByte(raw[off:], '\r')
		if i < 0 {
			break
		}
		k := off + i
		if k+1 >= len(raw) || raw[k+1] != '\n' {
			note(k, "bare CR (carriage return without line feed)")
			break
		}
		off = k + 1
	}
	if first < 0 {
		return nil
	}
	return &Error{Body: true, Offset: first, Reason: fmt.Sprintf("%s at byte offset %d; lines must end in CRLF and the message must not contain NUL (RFC 5322 §2.3, RFC 5321 §2.3.8: SMTP smuggling)", what, first)}
}

// originatorLookalike reports whether a continuation line reads like an
// originator field once its leading white space is removed.
func originatorLookalike(line []byte) (string, bool) {
	i := 0
	for i < len(line) && isWSP(line[i]) {
		i++
	}
	j := i
	for j < len(line) && isFtext(line[j]) {
		j++
	}
	name := line[i:j]
	for j < len(line) && isWSP(line[j]) {
		j++
	}
	if j >= len(line) || line[j] != ':' {
		return "", false
	}
	if c, ok := originatorName(string(name)); ok {
		return c, true
	}
	return "", false
}

// Originator field names (RFC 5322 §3.6.2, §3.6.6), canonical spelling.
const (
	From         = "From"
	Sender       = "Sender"
	ResentFrom   = "Resent-From"
	ResentSender = "Resent-Sender"
)

// originatorName returns the canonical spelling of an originator field name.
func originatorName(name string) (string, bool) {
	for _, c := range [...]string{From, Sender, ResentFrom, ResentSender} {
		if strings.EqualFold(name, c) {
			return c, true
		}
	}
	return "", false
}

// commonKeys avoids an allocation for the usual field names.
var commonKeys = [...]string{
	"from", "to", "cc", "bcc", "subject", "date", "message-id", "sender", "reply-to",
	"mime-version", "content-type", "content-transfer-encoding", "in-reply-to",
	"references", "user-agent", "resent-from", "resent-sender", "received",
	"return-path", "dkim-signature", "x-mailer", "content-language",
}

// commonKey classifies a field name: 0 when it is all lowercase (it is its
// own key), i+1 when its key is commonKeys[i], -1 when it must be lowercased.
func commonKey(name []byte) int8 {
	lower := true
	for _, c := range name {
		if 'A' <= c && c <= 'Z' {
			lower = false
			break
		}
	}
	if lower {
		return 0
	}
	for i, k := range commonKeys {
		if len(k) == len(name) && bytes.EqualFold([]byte(k), name) {
			return int8(i + 1)
		}
	}
	return -1
}

// fieldName names the field being read, for error messages.
func fieldName(raw []byte, spans []span, cur int) string {
	if cur < 0 {
		return ""
	}
	return safeName(raw[spans[cur].start:spans[cur].nameEnd])
}

// lineField names, for error messages, the field that line belongs to: the
// current field for a continuation line, else the name that starts line.
func lineField(raw, line []byte, spans []span, cur int) string {
	if len(line) == 0 {
		return ""
	}
	if isWSP(line[0]) {
		return fieldName(raw, spans, cur)
	}
	end := bytes.IndexByte(line, ':')
	if end < 0 {
		end = len(line)
	}
	name := bytes.TrimRight(line[:end], " \t")
	if len(name) == 0 {
		return ""
	}
	return safeName(name)
}

// safeName returns a field name for messages: as written when it is made of
// ftext only, else quoted (ASCII only), and truncated.
func safeName(b []byte) string {
	ok := len(b) > 0 && len(b) <= 76
	for _, c := range b {
		if !isFtext(c) {
			ok = false
			break
		}
	}
	if ok {
		if c, isOrig := originatorName(string(b)); isOrig {
			return c
		}
		return string(b)
	}
	return fmt.Sprintf("%+q", truncate(string(b), 40))
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func isWSP(c byte) bool { return c == ' ' || c == '\t' }

// isFtext: RFC 5322 §3.6.8 ftext = %d33-57 / %d59-126.
func isFtext(c byte) bool { return c >= 33 && c <= 126 && c != ':' }

func allWSP(b []byte) bool {
	for _, c := range b {
		if !isWSP(c) {
			return false
		}
	}
	return true
}
