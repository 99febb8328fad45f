package header

import (
	"encoding/base64"
	"fmt"
	"strings"
	"unicode/utf8"

	"golang.org/x/text/encoding/charmap"
)

// RFC 2047 encoded words ("=?charset?encoding?encoded-text?=") in display
// names and comments are decoded strictly: a malformed encoded word, an
// unknown charset, or a byte that is invalid in its charset is an error,
// never a replacement character or a word left as it is, because a reader
// that decodes more leniently would show something else.

// charsets are the charsets accepted in encoded words (names compared
// case-insensitively; an RFC 2231 §5 language suffix "*en" is ignored). A nil
// decoder means UTF-8 (checked for validity) or US-ASCII (7-bit only).
var charsets = map[string]*charmap.Charmap{
	"utf-8":        nil,
	"us-ascii":     nil,
	"iso-8859-1":   charmap.ISO8859_1,
	"iso-8859-2":   charmap.ISO8859_2,
	"iso-8859-3":   charmap.ISO8859_3,
	"iso-8859-4":   charmap.ISO8859_4,
	"iso-8859-5":   charmap.ISO8859_5,
	"iso-8859-6":   charmap.ISO8859_6,
	"iso-8859-7":   charmap.ISO8859_7,
	"iso-8859-8":   charmap.ISO8859_8,
	"iso-8859-9":   charmap.ISO8859_9,
	"iso-8859-10":  charmap.ISO8859_10,
	"iso-8859-13":  charmap.ISO8859_13,
	"iso-8859-14":  charmap.ISO8859_14,
	"iso-8859-15":  charmap.ISO8859_15,
	"iso-8859-16":  charmap.ISO8859_16,
	"windows-1250": charmap.Windows1250,
	"windows-1251": charmap.Windows1251,
	"windows-1252": charmap.Windows1252,
	"windows-1253": charmap.Windows1253,
	"windows-1254": charmap.Windows1254,
	"windows-1255": charmap.Windows1255,
	"windows-1256": charmap.Windows1256,
	"windows-1257": charmap.Windows1257,
	"windows-1258": charmap.Windows1258,
}

// isEncodedWordLike reports whether w has the outward form of an encoded
// word: it starts with "=?" and ends with "?=" (RFC 2047 §2).
func isEncodedWordLike(w string) bool {
	return len(w) >= 4 && strings.HasPrefix(w, "=?") && strings.HasSuffix(w, "?=")
}

// decodeWord decodes one encoded word (RFC 2047 §2–§4) to UTF-8. The result
// is valid UTF-8; it is not yet checked for forbidden characters.
func decodeWord(w string) (string, error) {
	if !isEncodedWordLike(w) {
		return "", fmt.Errorf("%+q is not an encoded word", w)
	}
	parts := strings.Split(w[2:len(w)-2], "?")
	if len(parts) != 3 {
		return "", fmt.Errorf("malformed encoded word %+q: want =?charset?encoding?text?= (RFC 2047 §2)", truncate(w, 60))
	}
	cs, enc, text := parts[0], parts[1], parts[2]
	if i := strings.IndexByte(cs, '*'); i >= 0 { // RFC 2231 §5: charset*language
		cs = cs[:i]
	}
	cs = strings.ToLower(cs)
	cm, ok := charsets[cs]
	if !ok {
		return "", fmt.Errorf("encoded word %+q uses the charset %+q, which is not accepted (accepted: utf-8, us-ascii, iso-8859-*, windows-125*)", truncate(w, 60), truncate(parts[0], 40))
	}
	if text == "" {
		return "", fmt.Errorf("encoded word %+q has empty encoded text (RFC 2047 §2)", w)
	}
	var data []byte
	switch enc {
	case "B", "b":
		b, err := base64.StdEncoding.Strict().DecodeString(text)
		if err != nil {
			return "", fmt.Errorf("encoded word %+q: invalid base64 (RFC 2047 §4.1): %v", truncate(w, 60), err)
		}
		data = b
	case "Q", "q":
		b, err := decodeQ(text)
		if err != nil {
			return "", fmt.Errorf("encoded word %+q: %v", truncate(w, 60), err)
		}
		data = b
	default:
		return "", fmt.Errorf("encoded word %+q: unknown encoding %+q (RFC 2047 §4: B or Q)", truncate(w, 60), truncate(enc, 20))
	}
	var out string
	switch {
	case cm != nil:
		d, err := decodeCharmap(cm, data, w)
		if err != nil {
			return "", err
		}
		out = d
	case cs == "us-ascii":
		for i, c := range data {
			if c >= utf8.RuneSelf {
				return "", fmt.Errorf("encoded word %+q: byte 0x%02X at offset %d is not US-ASCII", truncate(w, 60), c, i)
			}
		}
	default: // utf-8
		if !utf8.Valid(data) {
			return "", fmt.Errorf("encoded word %+q: invalid UTF-8 (RFC 3629)", truncate(w, 60))
		}
	}
	if cm == nil {
		out = string(data)
	}
	if strings.Contains(out, "=?") {
		// A reader that decodes repeatedly would see something else.
		return "", fmt.Errorf("encoded word %+q decodes to text that holds another encoded word", truncate(w, 60))
	}
	return out, nil
}

// decodeCharmap converts data from a single-byte charset; a byte that the
// charset does not define is an error.
func decodeCharmap(cm *charmap.Charmap, data []byte, w string) (string, error) {
	var b strings.Builder
	b.Grow(len(data))
	for i, c := range data {
		r := cm.DecodeByte(c)
		if r == utf8.RuneError {
			return "", fmt.Errorf("encoded word %+q: byte 0x%02X at offset %d is not defined in its charset", truncate(w, 60), c, i)
		}
		b.WriteRune(r)
	}
	return b.String(), nil
}

// decodeQ decodes the "Q" encoding (RFC 2047 §4.2): "_" is a space, "=XX" a
// byte in hexadecimal; every other character must be printable ASCII other
// than "?", "=", "_" and space.
func decodeQ(s string) ([]byte, error) {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '_':
			out = append(out, ' ')
		case c == '=':
			if i+2 >= len(s) {
				return nil, fmt.Errorf("truncated =XX escape at offset %d (RFC 2047 §4.2)", i)
			}
			h, ok1 := unhex(s[i+1])
			l, ok2 := unhex(s[i+2])
			if !ok1 || !ok2 {
				return nil, fmt.Errorf("invalid =XX escape %+q at offset %d (RFC 2047 §4.2)", s[i:i+3], i)
			}
			out = append(out, h<<4|l)
			i += 2
		case c > ' ' && c < 0x7f && c != '?':
			out = append(out, c)
		default:
			return nil, fmt.Errorf("character 0x%02X at offset %d is not allowed in Q-encoded text (RFC 2047 §4.2)", c, i)
		}
	}
	return out, nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

// decodeText decodes the words of a phrase part or comment text that may hold
// encoded words: every white-space separated piece that looks like an encoded
// word is decoded, white space between two adjacent encoded words is dropped
// (RFC 2047 §6.2), and a piece that contains "=?" without being a well-formed
// encoded word is an error. This is deliberately more eager than RFC 2047
// §5, which forbids encoded words inside quoted strings and comments' quoted
// pairs: mail clients decode them there anyway, so they are checked there.
func decodeText(s string) (string, error) {
	if !strings.Contains(s, "=?") {
		return s, nil
	}
	var b strings.Builder
	b.Grow(len(s))
	prevEncoded := false
	pendingWS := ""
	for i := 0; i < len(s); {
		j := i
		for j < len(s) && isWSP(s[j]) {
			j++
		}
		ws := s[i:j]
		k := j
		for k < len(s) && !isWSP(s[k]) {
			k++
		}
		piece := s[j:k]
		i = k
		if piece == "" {
			pendingWS = ws
			break
		}
		if isEncodedWordLike(piece) {
			d, err := decodeWord(piece)
			if err != nil {
				return "", err
			}
			if !prevEncoded {
				b.WriteString(ws)
			}
			b.WriteString(d)
			prevEncoded = true
			continue
		}
		if strings.Contains(piece, "=?") {
			return "", fmt.Errorf("%+q looks like an RFC 2047 encoded word but is not a well-formed one", truncate(piece, 60))
		}
		b.WriteString(ws)
		b.WriteString(piece)
		prevEncoded = false
	}
	b.WriteString(pendingWS)
	return b.String(), nil
}
