package header

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestParseFields(t *testing.T) {
	raw := "From: User One <user1@example.com>\r\n" +
		"To: a@example.com,\r\n\tb@example.com\r\n" +
		"Subject : hello\r\n" +
		"X-Empty:\r\n" +
		"mime-version: 1.0\r\n" +
		"\r\n" +
		"body line\r\n"
	b, err := Parse([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	want := []struct{ name, key, value, raw string }{
		{"From", "from", " User One <user1@example.com>", "From: User One <user1@example.com>\r\n"},
		{"To", "to", " a@example.com,\tb@example.com", "To: a@example.com,\r\n\tb@example.com\r\n"},
		{"Subject", "subject", " hello", "Subject : hello\r\n"},
		{"X-Empty", "x-empty", "", "X-Empty:\r\n"},
		{"mime-version", "mime-version", " 1.0", "mime-version: 1.0\r\n"},
	}
	if len(b.Fields) != len(want) {
		t.Fatalf("got %d fields, want %d: %+v", len(b.Fields), len(want), b.Fields)
	}
	off := 0
	for i, w := range want {
		f := b.Fields[i]
		if f.Name != w.name || f.Key != w.key || f.Value != w.value || string(f.Raw) != w.raw || f.Offset != off {
			t.Errorf("field %d = {%q %q %q %q %d}, want {%q %q %q %q %d}", i, f.Name, f.Key, f.Value, f.Raw, f.Offset, w.name, w.key, w.value, w.raw, off)
		}
		off += len(w.raw)
	}
	if b.Size != off || b.Body != off+2 || raw[b.Body:] != "body line\r\n" {
		t.Errorf("Size %d Body %d, want %d %d", b.Size, b.Body, off, off+2)
	}
	if got := b.Get("SUBJECT"); len(got) != 1 || got[0].Name != "Subject" {
		t.Errorf("Get(SUBJECT) = %+v", got)
	}
	if got := b.Get("cc"); got != nil {
		t.Errorf("Get(cc) = %+v", got)
	}
}

func TestParseShapes(t *testing.T) {
	cases := []struct {
		name        string
		raw         string
		fields      int
		size, body  int
		lastValue   string
		obsFromSeen bool
	}{
		{"empty input", "", 0, 0, 0, "", false},
		{"empty header", "\r\nbody\r\n", 0, 0, 2, "", false},
		{"no empty line", "From: a@b\r\nTo: c@d\r\n", 2, 20, 20, " c@d", false},
		{"last line unterminated", "From: a@b\r\nTo: c@d", 2, 18, 18, " c@d", false},
		{"no body after empty line", "From: a@b\r\n\r\n", 1, 11, 13, " a@b", false},
		{"obs-optional From :", "From : a@b\r\n\r\n", 1, 12, 14, " a@b", true},
		{"obs-optional From<TAB>:", "From\t\t: a@b\r\n\r\n", 1, 13, 15, " a@b", true},
		{"folded value", "Subject: a\r\n b\r\n\tc\r\n\r\n", 1, 20, 22, " a b\tc", false},
		{"body with empty lines and a dot", "A: b\r\n\r\n\r\n.\r\n\r\n", 1, 6, 8, " b", false},
		{"8-bit value (RFC 6532)", "Subject: Grüße\r\n\r\n", 1, 18, 20, " Grüße", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b, err := Parse([]byte(c.raw))
			if err != nil {
				t.Fatal(err)
			}
			if len(b.Fields) != c.fields || b.Size != c.size || b.Body != c.body {
				t.Fatalf("fields %d size %d body %d, want %d %d %d", len(b.Fields), b.Size, b.Body, c.fields, c.size, c.body)
			}
			if c.fields > 0 && b.Fields[c.fields-1].Value != c.lastValue {
				t.Errorf("last value %q, want %q", b.Fields[c.fields-1].Value, c.lastValue)
			}
			if c.obsFromSeen && (b.Fields[0].Key != "from" || b.Fields[0].Name != "From") {
				t.Errorf("obs-optional From: Name %q Key %q", b.Fields[0].Name, b.Fields[0].Key)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	big := "Subject: " + strings.Repeat("x", MaxBlock) + "\r\n\r\n"
	folded := "Subject: x" + strings.Repeat("\r\n y", MaxBlock/4) + "\r\n\r\n"
	cases := []struct {
		name, raw string
		field     string // expected Error.Field
		body      bool
		reason    string // substring of Reason
	}{
		{"first line starts with SP", " From: a@b\r\nFrom: c@d\r\n\r\n", "", false, "first line starts with white space"},
		{"first line starts with TAB", "\tFrom: a@b\r\n\r\n", "", false, "first line starts with white space"},
		{"first line is white space only", " \r\n\r\n", "", false, "first line starts with white space"},
		{"bare LF in header", "From: a@b\nTo: c@d\r\n\r\n", "From", false, "bare LF"},
		{"bare LF ends header", "From: a@b\r\n\nbody", "", false, "bare LF"},
		{"bare LF first byte", "\nFrom: a@b\r\n\r\n", "", false, "bare LF"},
		{"bare CR in header", "Subject: a\rFrom: c@d\r\n\r\n", "Subject", false, "bare CR"},
		{"bare CR at end of input", "Subject: a\r", "Subject", false, "bare CR"},
		{"CR CR LF", "Subject: a\r\r\n\r\n", "Subject", false, "bare CR"},
		{"bare LF in body", "From: a@b\r\n\r\nline\n.\r\n", "", true, "bare LF"},
		{"bare LF smuggling dot", "From: a@b\r\n\r\nx\r\n.\nMAIL FROM:<x@y>\r\n", "", true, "bare LF"},
		{"bare CR in body", "From: a@b\r\n\r\nline\r.\r\n", "", true, "bare CR"},
		{"bare CR at end of body", "From: a@b\r\n\r\nline\r", "", true, "bare CR"},
		{"body starts with LF", "From: a@b\r\n\r\n\nx\r\n", "", true, "bare LF"},
		{"NUL in value", "Subject: a\x00b\r\n\r\n", "Subject", false, "NUL"},
		{"NUL in name", "Sub\x00ject: a\r\n\r\n", `"Sub\x00ject"`, false, "NUL"},
		{"NUL in body", "From: a@b\r\n\r\nab\x00c\r\n", "", true, "NUL"},
		{"8-bit in field name", "Fröm: a@b\r\n\r\n", `"Fr\xc3"`, false, "8-bit byte 0xC3"},
		{"Cyrillic o in From", "Fr\xd0\xbem: a@b\r\n\r\n", `"Fr\xd0"`, false, "8-bit byte"},
		{"space inside field name", "Fr om: a@b\r\n\r\n", `"Fr o"`, false, "white space inside the field name"},
		{"tab inside field name", "From\tX: a@b\r\n\r\n", `"From\tX"`, false, "white space inside the field name"},
		{"mbox From_ line", "From user@example.com Mon Jan  1 00:00:00 2024\r\nFrom: a@b\r\n\r\n", `"From u"`, false, "white space inside the field name"},
		{"empty field name", ": a@b\r\n\r\n", "", false, "empty field name"},
		{"control in field name", "From\x01: a@b\r\n\r\n", `"From\x01"`, false, "control character 0x01"},
		{"DEL in field name", "From\x7f: a@b\r\n\r\n", `"From\x7f"`, false, "control character 0x7F"},
		{"line without colon", "Hello world\r\n\r\n", `"Hello w"`, false, "white space inside the field name"},
		{"line without colon, no space", "Hello\r\n\r\n", "Hello", false, "line without a colon"},
		{"folded field name", "From\r\n : a@b\r\n\r\n", "From", false, "line without a colon"},
		{"name then white space only", "From \r\n: a@b\r\n\r\n", "From", false, "line without a colon"},
		{"whitespace-only continuation", "Subject: a\r\n \r\nFrom: a@b\r\n\r\n", "Subject", false, "only white space"},
		{"tab-only continuation", "Subject: a\r\n\t\t\r\n\r\n", "Subject", false, "only white space"},
		{"continuation reads as From", "To: x@y\r\n From: a@b\r\nFrom: c@d\r\n\r\n", "To", false, "starts like a From field"},
		{"continuation reads as sender", "To: x@y\r\n\tsender : a@b\r\n\r\n", "To", false, "starts like a Sender field"},
		{"continuation reads as Resent-From", "To: x@y\r\n RESENT-FROM:a@b\r\n\r\n", "To", false, "starts like a Resent-From field"},
		{"header block too large", big, "", false, "larger than 65536"},
		{"folded header block too large", folded, "", false, "larger than 65536"},
		{"no empty line, too large", strings.Repeat("X-A: b\r\n", MaxBlock/8+1), "", false, "larger than 65536"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b, err := Parse([]byte(c.raw))
			if err == nil {
				t.Fatalf("accepted: %+v", b)
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %T %v is not *Error", err, err)
			}
			if e.Field != c.field || e.Body != c.body || !strings.Contains(e.Reason, c.reason) {
				t.Errorf("got Field %q Body %v Reason %q; want Field %q Body %v reason containing %q", e.Field, e.Body, e.Reason, c.field, c.body, c.reason)
			}
			if e.Offset < 0 || e.Offset > len(c.raw) {
				t.Errorf("offset %d out of range", e.Offset)
			}
			if msg := e.Error(); !isPrintableASCIIOrText(msg) {
				t.Errorf("Error() has raw control bytes: %q", msg)
			}
		})
	}
}

// isPrintableASCIIOrText reports whether s has no C0 controls other than TAB
// (error texts may hold "§" and "…").
func isPrintableASCIIOrText(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' && s[i] != '\t' || s[i] == 0x7f {
			return false
		}
	}
	return true
}

func TestParseLimitExact(t *testing.T) {
	// A block of exactly MaxBlock bytes is accepted; one more byte is not.
	line := "X-Pad: "
	n := MaxBlock - len(line) - 2
	raw := line + strings.Repeat("y", n) + "\r\n\r\nbody"
	b, err := Parse([]byte(raw))
	if err != nil || b.Size != MaxBlock {
		t.Fatalf("exact limit: %v %+v", err, b)
	}
	raw = line + strings.Repeat("y", n+1) + "\r\n\r\nbody"
	if _, err := Parse([]byte(raw)); err == nil {
		t.Fatal("MaxBlock+1 accepted")
	}
}

func TestParseRawConcatenation(t *testing.T) {
	raw := []byte(typicalMessage())
	b, err := Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	var all []byte
	for _, f := range b.Fields {
		all = append(all, f.Raw...)
	}
	if !bytes.Equal(all, raw[:b.Size]) {
		t.Fatal("the fields' Raw do not add up to the header block")
	}
	if len(b.Fields) != 10 {
		t.Fatalf("typical message has %d fields", len(b.Fields))
	}
}

// typicalMessage is a 2 KiB message with 10 header fields.
func typicalMessage() string {
	h := "Received: from client.example.com (client.example.com [192.0.2.1])\r\n\tby mail.example.com with ESMTPSA id 4AbCdEf\r\n\tfor <bob@example.com>; Mon, 1 Jan 2024 10:00:00 +0000\r\n" +
		"From: =?utf-8?q?J=C3=B6rg_M=C3=BCller?= <joerg@example.com>\r\n" +
		"To: Bob <bob@example.com>, \"Carol, C.\" <carol@example.com>\r\n" +
		"Cc: dave@example.com\r\n" +
		"Subject: Quarterly report, with a long subject line that is folded\r\n over two lines\r\n" +
		"Date: Mon, 1 Jan 2024 10:00:00 +0000\r\n" +
		"Message-ID: <20240101100000.12345@client.example.com>\r\n" +
		"MIME-Version: 1.0\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\n" +
		"Content-Transfer-Encoding: 8bit\r\n" +
		"\r\n"
	body := strings.Repeat("Hello Bob, this is the quarterly report. Numbers follow.\r\n", 1+(2048-len(h))/58)
	return (h + body)[:2046] + "\r\n"
}

// TestParseLinear parses the worst inputs of 64 KiB that the format allows
// (one huge folded field, thousands of tiny fields, a huge body) and checks
// that each takes a bounded time. The benchmarks show the linearity; this
// only catches a quadratic regression, with a generous bound.
// TestParseLargeInputs parses the inputs that would expose a quadratic path
// (many fields, many folds, a long line, a large body, no line ends). It
// asserts no timing — speed is measured by the benchmarks
// (BenchmarkParse*, linear in the header size) — but a quadratic parser
// would make this test run for minutes and hit the test timeout.
func TestParseLargeInputs(t *testing.T) {
	inputs := map[string][]byte{
		"many fields":  []byte(strings.Repeat("A:b\r\n", (MaxBlock-1)/5) + "\r\n"),
		"many folds":   []byte("A:" + strings.Repeat("\r\n b", (MaxBlock-10)/4) + "\r\n\r\n"),
		"long line":    []byte("A:" + strings.Repeat("b", MaxBlock-10) + "\r\n\r\n"),
		"big body":     []byte("A: b\r\n\r\n" + strings.Repeat("0123456789abcd\r\n", 1<<20)),
		"no line ends": bytes.Repeat([]byte("x"), 4<<20),
	}
	for name, in := range inputs {
		for range 10 {
			if b, err := Parse(in); err == nil && b.Body > len(in) {
				t.Errorf("%s: body offset %d beyond the input", name, b.Body)
			}
		}
	}
}

func benchHeader(size int) []byte {
	var b strings.Builder
	b.WriteString("From: Alice <alice@example.com>\r\n")
	for i := 0; b.Len() < size-80; i++ {
		fmt.Fprintf(&b, "X-Field-%d: value %d with some text, folded\r\n here\r\n", i, i)
	}
	for b.Len() < size-2 {
		b.WriteString("Y: z\r\n"[:min(6, size-2-b.Len())])
	}
	s := b.String()
	if !strings.HasSuffix(s, "\r\n") {
		s = s[:strings.LastIndex(s, "\r\n")+2]
	}
	return []byte(s + "\r\nbody\r\n")
}

// benchParse reports, besides ns/op, the process CPU time per parse
// (cpu-ns/op, GC included): on a shared machine the wall clock also counts
// the time other processes hold the CPU.
func benchParse(b *testing.B, raw []byte) {
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	start := cpuTime()
	for b.Loop() {
		if _, err := Parse(raw); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(cpuTime()-start)/float64(b.N), "cpu-ns/op")
}

func BenchmarkParse(b *testing.B) {
	b.Run("typical-10-fields-2KiB", func(b *testing.B) { benchParse(b, []byte(typicalMessage())) })
	// Worst case for the per-field cost: many small folded fields (~36 bytes).
	for _, kib := range []int{8, 16, 32, 64} {
		raw := benchHeader(kib << 10)
		b.Run(fmt.Sprintf("header-%dKiB", kib), func(b *testing.B) { benchParse(b, raw) })
	}
	// A long but ordinary header: Received chains, DKIM signatures (~400-byte fields).
	b.Run("header-64KiB-400B-fields", func(b *testing.B) { benchParse(b, benchLargeFields(64<<10)) })
}

// benchLargeFields builds a header block of size bytes made of ~400-byte
// fields folded every ~70 bytes, like Received and DKIM-Signature fields.
func benchLargeFields(size int) []byte {
	var b strings.Builder
	b.WriteString("From: Alice <alice@example.com>\r\n")
	line := "from relay.example.net (relay.example.net [192.0.2.7]) by mx.example.com"
	for i := 0; ; i++ {
		f := fmt.Sprintf("Received: %s\r\n\t%s\r\n\t%s\r\n\t%s\r\n\t%s; id %d\r\n", line, line, line, line, line, i)
		if b.Len()+len(f) > size {
			break
		}
		b.WriteString(f)
	}
	return []byte(b.String() + "\r\nbody\r\n")
}

func BenchmarkOriginators(b *testing.B) {
	raw := []byte(typicalMessage())
	blk, err := Parse(raw)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := blk.Originators(); err != nil {
			b.Fatal(err)
		}
	}
}
