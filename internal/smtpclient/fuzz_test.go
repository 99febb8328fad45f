package smtpclient

import (
	"bufio"
	"bytes"
	"testing"
)

// FuzzReadReply: whatever a remote server sends, reading its reply never
// panics, and an accepted reply is well-formed (RFC 5321 §4.2, RFC 3463).
func FuzzReadReply(f *testing.F) {
	for _, s := range []string{
		"250 ok\r\n",
		"250-mx.example\r\n250-PIPELINING\r\n250 SIZE 1000\r\n",
		"550 5.1.1 <u@d>: no such user\r\n",
		"451-4.3.0 first\r\n451 4.3.0 second\r\n",
		"250-a\r\n251 b\r\n",
		"2500 x\r\n",
		"550 4.1.1 class mismatch\r\n",
		"550 5.1.1234 bad detail\r\n",
		"220\r\n",
		"\r\n",
		"999 x\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s := &session{br: bufio.NewReaderSize(bytes.NewReader(data), maxReplyLine)}
		rep, err := s.readReply()
		if err != nil {
			return
		}
		if rep.code < 100 || rep.code > 599 {
			t.Fatalf("code %d accepted", rep.code)
		}
		if len(rep.lines) == 0 || len(rep.lines) > maxReplyLines {
			t.Fatalf("%d lines", len(rep.lines))
		}
		if rep.enh != ([3]int{}) && rep.enh[0] != rep.code/100 {
			t.Fatalf("enhanced code %v does not match reply code %d", rep.enh, rep.code)
		}
	})
}
