package postfixpolicy

import (
	"bufio"
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/internal/directory"
)

// FuzzParseRequest checks readRequest on arbitrary input: no panic, every
// error is errEOF, errMalformed (or the reader's), an accepted request obeys
// the limits and the name rules, and its answer is one well-formed line.
func FuzzParseRequest(f *testing.F) {
	for _, s := range []string{
		request("sasl_username", "user1@localhost.localdomain", "sender", "user1@localhost.localdomain"),
		request("sasl_username", "user2@otherdomain.tld", "sender", "alias1@localhost.localdomain"),
		request("sasl_username", "user1@localhost.localdomain", "sender", ""),
		request("sasl_username", "user1@localhost.localdomain\x01", "sender", "a\x7f@b"),
		request("request", "other"),
		"request=smtpd_access_policy\n\nrequest=smtpd_access_policy\nsender=x\n\n",
		"", "\n", "request\n\n", "=\n\n", "request=smtpd_access_policy\r\n\r\n",
		"request=smtpd_access_policy\nsender=a\nsender=b\n\n", "request=smtpd_access_policy\nx=\x00\n\n",
		"request=smtpd_access_policy\nsender=a@b.c",
	} {
		f.Add([]byte(s))
	}
	snap := fixtureSnapshot(f, nil)
	srv := &Server{Snapshot: func() *directory.Snapshot { return snap }}
	log := slog.New(slog.DiscardHandler)
	f.Fuzz(func(t *testing.T, data []byte) {
		br := bufio.NewReaderSize(bytes.NewReader(data), MaxLineLength)
		for {
			attrs, err := readRequest(br)
			if err != nil {
				if !errors.Is(err, errEOF) && !errors.Is(err, errMalformed) {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if len(attrs) > MaxAttributes || len(attrs) == 0 {
				t.Fatalf("%d attributes", len(attrs))
			}
			if _, ok := attrs["request"]; !ok {
				t.Fatal("request without the request attribute")
			}
			size := 1
			for n, v := range attrs {
				if !validName(n) || strings.ContainsAny(v, "\x00\r\n") || len(n)+len(v)+2 > MaxLineLength {
					t.Fatalf("accepted attribute %q=%q", n, v)
				}
				size += len(n) + len(v) + 2
			}
			if size > MaxRequestSize {
				t.Fatalf("accepted a request of %d octets", size)
			}
			action := srv.decide(attrs, log)
			if action == "" || strings.ContainsAny(action, "\x00\r\n") {
				t.Fatalf("action %q", action)
			}
			if action != actionDunno && !(len(action) > 4 && (action[0] == '4' || action[0] == '5') && action[3] == ' ') {
				t.Fatalf("action %q is neither DUNNO nor a 4xx/5xx reply", action)
			}
		}
	})
}
