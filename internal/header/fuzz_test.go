package header

import (
	"bufio"
	"bytes"
	"errors"
	netmail "net/mail"
	"strings"
	"testing"
	"unicode/utf8"

	gomail "github.com/emersion/go-message/mail"
	gotextproto "github.com/emersion/go-message/textproto"

	"github.com/mailgate/mailgate/internal/address"
)

// FuzzParse: whatever the input, Parse does not panic and either returns an
// *Error with a printable message, or a Block that accounts for every byte of
// the header block, whose fields have clean names and values, in a message
// that has only CRLF line endings and no NUL — and in which go-message and
// net/mail see the same fields.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		typicalMessage(),
		"From: a@b\r\n\r\nbody\r\n",
		"From : a@b\r\nFrom: c@d\r\n\r\n",
		"From\r\n : a@b\r\n\r\n",
		" From: a@b\r\n\r\n",
		"To: x\r\n From: a@b\r\n\r\n",
		"Subject: a\r\n \r\nFrom: a@b\r\n\r\n",
		"From: a@b\r\n\r\nx\r\n.\nMAIL FROM:<c@d>\r\n",
		"Fröm: a@b\r\n\r\n",
		"From: a@b",
		"A: b\r\n\tc\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		b, err := Parse(raw)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %T is not *Error", err)
			}
			if e.Offset < -1 || e.Offset > len(raw) {
				t.Fatalf("offset %d outside the input (%d bytes)", e.Offset, len(raw))
			}
			checkMessageText(t, err.Error())
			return
		}
		if b.Size > MaxBlock || b.Size > b.Body || b.Body > len(raw) {
			t.Fatalf("Size %d Body %d for %d bytes", b.Size, b.Body, len(raw))
		}
		var all []byte
		for _, fl := range b.Fields {
			all = append(all, fl.Raw...)
			if fl.Name == "" || fl.Key != strings.ToLower(fl.Name) {
				t.Fatalf("field name %q key %q", fl.Name, fl.Key)
			}
			for i := 0; i < len(fl.Name); i++ {
				if !isFtext(fl.Name[i]) {
					t.Fatalf("field name %q has byte 0x%02X", fl.Name, fl.Name[i])
				}
			}
			if strings.ContainsAny(fl.Value, "\r\n\x00") {
				t.Fatalf("value %q has CR, LF or NUL", fl.Value)
			}
		}
		if !bytes.Equal(all, raw[:b.Size]) {
			t.Fatalf("fields cover %q, header block is %q", all, raw[:b.Size])
		}
		if b.Body != len(raw) && !bytes.Equal(raw[b.Size:b.Body], []byte("\r\n")) {
			t.Fatalf("block and body separated by %q", raw[b.Size:b.Body])
		}
		for i, c := range raw {
			switch {
			case c == 0:
				t.Fatalf("accepted NUL at %d", i)
			case c == '\n' && (i == 0 || raw[i-1] != '\r'):
				t.Fatalf("accepted bare LF at %d", i)
			case c == '\r' && (i+1 == len(raw) || raw[i+1] != '\n'):
				t.Fatalf("accepted bare CR at %d", i)
			}
		}
		compareReaders(t, raw, b)
	})
}

// compareReaders checks that go-message and net/mail see the fields that
// Parse sees (names compared without surrounding white space, ignoring case).
func compareReaders(t *testing.T, raw []byte, b *Block) {
	t.Helper()
	var ours []string
	for _, fl := range b.Fields {
		ours = append(ours, fl.Key)
	}
	h, err := gotextproto.ReadHeader(bufio.NewReader(bytes.NewReader(raw)))
	if err == nil {
		var theirs []string
		fields := h.Fields()
		for fields.Next() {
			theirs = append(theirs, strings.ToLower(strings.TrimSpace(fields.Key())))
		}
		if strings.Join(theirs, "\n") != strings.Join(ours, "\n") {
			t.Fatalf("go-message sees fields %q, Parse sees %q", theirs, ours)
		}
	}
	if m, err := netmail.ReadMessage(bytes.NewReader(raw)); err == nil {
		count := map[string]int{}
		for k, vs := range m.Header {
			count[strings.ToLower(strings.TrimSpace(k))] += len(vs)
		}
		for _, k := range ours {
			count[k]--
		}
		for k, n := range count {
			if n != 0 {
				t.Fatalf("net/mail sees %d more field(s) %q than Parse (%q)", n, k, ours)
			}
		}
	}
}

// FuzzOriginators: whatever the field value, ParseMailboxList does not panic
// and either returns an *Error, or mailboxes whose addr-spec is part of the
// value and is what address.Parse makes of it, whose display names and
// comments are clean — and net/mail and go-message, when they can read the
// value at all, find the same addresses and no display name that holds one.
func FuzzOriginators(f *testing.F) {
	for _, s := range []string{
		"User One <user1@example.com>",
		"user1@example.com (User One)",
		"\"One, User\" <user1@example.com>, b@example.org",
		"=?utf-8?q?J=C3=B6rg?= <j@example.com>",
		"=?utf-8?b?dXNlcjJAZXhhbXBsZS5jb20=?= <user1@example.com>",
		"<@a.example:user@example.com>",
		"Team: a@example.com;",
		"a@example.com (b@example.com)",
		"\"a@example.com\" <b@example.com>",
		"<a@example.com>\\,<b@example.com>",
		"John Q. Public <jqp@example.com>",
		"<user@bücher.example>",
		"< a@example.com >",
		"\"=?utf-8?q?J=C3=B6rg?=\" <j@example.com>",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, value string) {
		mbs, err := ParseMailboxList(value)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %T is not *Error", err)
			}
			if e.Offset < -1 || e.Offset > len(value) {
				t.Fatalf("offset %d outside the value (%d bytes)", e.Offset, len(value))
			}
			checkMessageText(t, err.Error())
			return
		}
		if len(mbs) == 0 {
			t.Fatal("no mailbox and no error")
		}
		want := map[address.Address]int{}
		for _, mb := range mbs {
			if !strings.Contains(value, mb.Spec) {
				t.Fatalf("spec %q is not in the value %q", mb.Spec, value)
			}
			a, err := address.Parse(mb.Spec, address.Options{UTF8Local: true})
			if err != nil || a != mb.Address {
				t.Fatalf("spec %q: address.Parse = %v, %v; mailbox has %v", mb.Spec, a, err, mb.Address)
			}
			if r := checkText(mb.Name, "name"); r != "" {
				t.Fatalf("display name %q: %s", mb.Name, r)
			}
			for _, c := range mb.Comments {
				if r := checkText(c, "comment"); r != "" {
					t.Fatalf("comment %q: %s", c, r)
				}
			}
			want[a]++
		}
		compareList := func(reader string, list []*netmail.Address) {
			got := map[address.Address]int{}
			for _, x := range list {
				a, err := address.Parse(x.Address, address.Options{UTF8Local: true})
				if err != nil {
					t.Fatalf("%s reads %q as %q, which is not a valid address (we read %v)", reader, value, x.Address, mbs)
				}
				got[a]++
				if strings.ContainsAny(x.Name, "@＠﹫<>") {
					t.Fatalf("%s reads %q with the display name %q", reader, value, x.Name)
				}
			}
			if len(got) != len(want) {
				t.Fatalf("%s reads %q as %v, we read %v", reader, value, list, mbs)
			}
			for a, n := range want {
				if got[a] != n {
					t.Fatalf("%s reads %q as %v, we read %v", reader, value, list, mbs)
				}
			}
		}
		if list, err := netmail.ParseAddressList(value); err == nil {
			compareList("net/mail", list)
		}
		if list, err := gomail.ParseAddressList(value); err == nil {
			compareList("go-message", list)
		}
	})
}

// checkMessageText: error messages are valid UTF-8 without control
// characters, so that they are safe to log and to put in a reply.
func checkMessageText(t *testing.T, s string) {
	t.Helper()
	if !utf8.ValidString(s) {
		t.Fatalf("error message %q is not valid UTF-8", s)
	}
	for _, r := range s {
		if r < ' ' || r == 0x7f || (r >= 0x80 && r <= 0x9f) {
			t.Fatalf("error message %q has the control character U+%04X", s, r)
		}
	}
}
