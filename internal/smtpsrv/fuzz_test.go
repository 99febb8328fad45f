package smtpsrv

import (
	"bytes"
	"testing"
)

// FuzzMessageChecks: the end-of-DATA checks on attacker bytes never panic;
// a message that passes checkLines has CRLF lines only; stripping the trace
// fields keeps the body byte for byte, never grows the message, leaves no
// Return-Path field in the header, and is idempotent.
func FuzzMessageChecks(f *testing.F) {
	for _, s := range []string{
		"Subject: x\r\n\r\nbody\r\n",
		"Return-Path: <a@b>\r\nSubject: x\r\n\r\nReturn-Path: body\r\n",
		"Authentication-Results: mx.example.test; dkim=pass\r\n\tfolded\r\nX: y\r\n\r\n",
		"Authentication-Results:mx.example.test.\r\n\r\n",
		"return-path :<x>\r\n",
		"\r\n",
		"no header end",
		"a\nb",
		"Return-Path: x\r\n folded\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if checkLines(data) == nil {
			if bytes.Contains(bytes.ReplaceAll(data, []byte("\r\n"), nil), []byte("\n")) || bytes.Contains(bytes.ReplaceAll(data, []byte("\r\n"), nil), []byte("\r")) {
				t.Fatalf("bare CR or LF passed: %q", data)
			}
		}
		end := headerEnd(data)
		if end < 0 || end > len(data) {
			t.Fatalf("headerEnd %d of %d", end, len(data))
		}
		body := append([]byte(nil), data[end:]...)
		out, newEnd := stripTraceFields(append([]byte(nil), data...), end, "mx.example.test")
		if len(out) > len(data) || newEnd > end || !bytes.Equal(out[newEnd:], body) {
			t.Fatalf("strip changed the body or grew: %q → %q", data, out)
		}
		for _, line := range bytes.Split(out[:newEnd], []byte("\r\n")) {
			name, _, ok := bytes.Cut(line, []byte(":"))
			if ok && len(line) > 0 && line[0] != ' ' && line[0] != '\t' && bytes.EqualFold(bytes.TrimRight(name, " \t"), []byte("Return-Path")) {
				t.Fatalf("Return-Path left in %q", out[:newEnd])
			}
		}
		again, againEnd := stripTraceFields(append([]byte(nil), out...), newEnd, "mx.example.test")
		if !bytes.Equal(again, out) || againEnd != newEnd {
			t.Fatalf("not idempotent: %q → %q", out, again)
		}
	})
}
