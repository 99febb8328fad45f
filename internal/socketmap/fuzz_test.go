package socketmap

import (
	"bufio"
	"bytes"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/internal/directory"
)

// FuzzNetstring checks readNetstring on arbitrary input: it never panics,
// never returns more than the limit, a success consumed exactly one
// canonical netstring, and every error is errEOF, errMalformed or the
// reader's; the request that follows is answered with a well-formed reply.
func FuzzNetstring(f *testing.F) {
	for _, s := range []string{
		"0:,", "5:hello,", "27:aliases alias1@localhost.d,", "9:domains x,5:xx yy,",
		"", "abc", "-1:x,", "01:a,", "00:,", "5:hello;", "10:short,", ":,",
		"100001:", "99999999999999999999:", "5:hel", "3:a b,garbage",
		"7:senders,", "8:nosuch x,", "16:mailboxes \x00@\xff.c,",
	} {
		f.Add([]byte(s))
	}
	snap := fixtureSnapshot(f)
	srv := &Server{Snapshot: func() *directory.Snapshot { return snap }}
	log := slog.New(slog.DiscardHandler)
	f.Fuzz(func(t *testing.T, data []byte) {
		const max = 64
		br := bufio.NewReader(bytes.NewReader(data))
		got, err := readNetstring(br, max)
		if err != nil {
			if !errors.Is(err, errEOF) && !errors.Is(err, errMalformed) {
				t.Fatalf("unexpected error %v", err)
			}
			if errors.Is(err, errEOF) && len(data) != 0 {
				t.Fatalf("errEOF on %d octets", len(data))
			}
			return
		}
		if len(got) > max {
			t.Fatalf("payload of %d octets over %d", len(got), max)
		}
		enc := strconv.Itoa(len(got)) + ":" + string(got) + ","
		if !strings.HasPrefix(string(data), enc) {
			t.Fatalf("decoded %q is not the prefix of %q", enc, data)
		}
		if rest := len(data) - len(enc); br.Buffered() != rest && rest < 4096 {
			t.Fatalf("consumed %d octets, want %d", len(data)-br.Buffered(), len(enc))
		}
		r := srv.answer(got, log)
		switch {
		case strings.HasPrefix(r, "OK "), r == "NOTFOUND ", strings.HasPrefix(r, "TEMP "), strings.HasPrefix(r, "PERM "):
		default:
			t.Fatalf("reply %q", r)
		}
		if strings.ContainsAny(r, "\x00\r\n") || len(r) > MaxNetstring {
			t.Fatalf("bad reply %q", r)
		}
	})
}
