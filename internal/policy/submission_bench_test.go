package policy

import (
	"fmt"
	"strings"
	"testing"
)

// typicalSubmission is a 2 KiB message with 10 header fields from the
// given address.
func typicalSubmission(from string) []byte {
	var b strings.Builder
	b.WriteString("From: Someone <" + from + ">\r\n")
	b.WriteString("To: Bob <bob@example.net>, carol@example.org\r\n")
	b.WriteString("Cc: Dave <dave@example.com>\r\n")
	b.WriteString("Subject: =?utf-8?q?Quarterly_report_=E2=80=94_draft?=\r\n")
	b.WriteString("Date: Mon, 1 Jan 2024 10:00:00 +0000\r\n")
	b.WriteString("Message-ID: <20240101100000.12345@client.example>\r\n")
	b.WriteString("MIME-Version: 1.0\r\n")
	b.WriteString("Content-Type: text/plain; charset=utf-8\r\n")
	b.WriteString("Content-Transfer-Encoding: 8bit\r\n")
	b.WriteString("User-Agent: Example Mail 1.0\r\n\r\n")
	for b.Len() < 2048 {
		b.WriteString("Lorem ipsum dolor sit amet, consectetur adipiscing elit.\r\n")
	}
	return []byte(b.String())
}

// bigSubmission has a header block of about size bytes: the From field,
// then Received-like fields of ~400 bytes folded every ~70.
func bigSubmission(size int) []byte {
	var b strings.Builder
	b.WriteString("From: <user1@localhost.localdomain>\r\n")
	line := "from relay.example.net (relay.example.net [192.0.2.7]) by mx.example.com"
	for i := 0; ; i++ {
		f := fmt.Sprintf("Received: %s\r\n\t%s\r\n\t%s\r\n\t%s\r\n\t%s; id %d\r\n", line, line, line, line, line, i)
		if b.Len()+len(f) > size-4 {
			break
		}
		b.WriteString(f)
	}
	b.WriteString("\r\nbody\r\n")
	return []byte(b.String())
}

// BenchmarkCheckSubmission is the whole SPEC §6 decision: MaySend on the
// envelope, the header parse, originator extraction and MaySend on From.
func BenchmarkCheckSubmission(b *testing.B) {
	snap := load(b, nil, nil)
	for _, c := range []struct {
		name, env string
		raw       []byte
	}{
		{"typical-10-fields-2KiB-own-address", user1, typicalSubmission(user1)},
		{"typical-10-fields-2KiB-alias", "alias1@localhost.localdomain", typicalSubmission("alias1@localhost.localdomain")},
		{"header-16KiB", user1, bigSubmission(16 << 10)},
		{"header-32KiB", user1, bigSubmission(32 << 10)},
		{"header-64KiB", user1, bigSubmission(64<<10 - 64)},
	} {
		b.Run(c.name, func(b *testing.B) {
			if s := CheckSubmission(snap, user1, c.env, c.raw); !s.Allowed {
				b.Fatalf("not allowed: %s", s.Reply)
			}
			b.SetBytes(int64(len(c.raw)))
			b.ReportAllocs()
			for b.Loop() {
				CheckSubmission(snap, user1, c.env, c.raw)
			}
		})
	}
}
