package header

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
)

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func TestParseMailboxListOK(t *testing.T) {
	type mb struct{ name, addr, spec string }
	cases := []struct {
		value    string
		want     []mb
		comments []string // of the first mailbox
	}{
		{"user@example.com", []mb{{"", "user@example.com", "user@example.com"}}, nil},
		{" <user@example.com> ", []mb{{"", "user@example.com", "user@example.com"}}, nil},
		{"<USER@Example.COM>", []mb{{"", "user@example.com", "USER@Example.COM"}}, nil},
		{"User One <user@example.com>", []mb{{"User One", "user@example.com", "user@example.com"}}, nil},
		{"\"One, User\" <user@example.com>", []mb{{"One, User", "user@example.com", "user@example.com"}}, nil},
		{"\"Re: team; all\" <user@example.com>", []mb{{"Re: team; all", "user@example.com", "user@example.com"}}, nil},
		{`"Quote \" and \\ backslash" <user@example.com>`, []mb{{`Quote " and \ backslash`, "user@example.com", "user@example.com"}}, nil},
		{"\"\" <user@example.com>", []mb{{"", "user@example.com", "user@example.com"}}, nil},
		{"John Q. Public <jqp@example.com>", []mb{{"John Q. Public", "jqp@example.com", "jqp@example.com"}}, nil},
		{"user@example.com (User One)", []mb{{"", "user@example.com", "user@example.com"}}, []string{"User One"}},
		{"(lead) user@example.com (a (nested) comment)", []mb{{"", "user@example.com", "user@example.com"}}, []string{"lead", "a (nested) comment"}},
		{"User (the first) One <user@example.com> (work)", []mb{{"User One", "user@example.com", "user@example.com"}}, []string{"the first", "work"}},
		{"< user@example.com >", []mb{{"", "user@example.com", "user@example.com"}}, nil},
		{"Jörg Müller <joerg@example.com>", []mb{{"Jörg Müller", "joerg@example.com", "joerg@example.com"}}, nil},
		{"山田太郎 <taro@example.jp>", []mb{{"山田太郎", "taro@example.jp", "taro@example.jp"}}, nil},
		{"=?utf-8?q?J=C3=B6rg_M=C3=BCller?= <joerg@example.com>", []mb{{"Jörg Müller", "joerg@example.com", "joerg@example.com"}}, nil},
		{"=?UTF-8?B?" + b64("Jörg") + "?= =?UTF-8?B?" + b64(" Müller") + "?= <joerg@example.com>", []mb{{"Jörg Müller", "joerg@example.com", "joerg@example.com"}}, nil},
		{"=?utf-8?q?J=C3=B6rg?= M. <joerg@example.com>", []mb{{"Jörg M.", "joerg@example.com", "joerg@example.com"}}, nil},
		{"=?iso-8859-1?q?J=F6rg?= <joerg@example.com>", []mb{{"Jörg", "joerg@example.com", "joerg@example.com"}}, nil},
		{"=?windows-1251?b?" + "y+jn4A==" + "?= <liza@example.ru>", []mb{{"Лиза", "liza@example.ru", "liza@example.ru"}}, nil},
		{"=?utf-8*de?q?J=C3=B6rg?= <joerg@example.com>", []mb{{"Jörg", "joerg@example.com", "joerg@example.com"}}, nil},
		{"\"=?utf-8?q?J=C3=B6rg?=\" <joerg@example.com>", []mb{{"Jörg", "joerg@example.com", "joerg@example.com"}}, nil},
		{"user@example.com (=?utf-8?q?J=C3=B6rg?=)", []mb{{"", "user@example.com", "user@example.com"}}, []string{"Jörg"}},
		{"\"user\"@example.com", []mb{{"", "user@example.com", `"user"@example.com`}}, nil},
		{"<user@bücher.example>", []mb{{"", "user@xn--bcher-kva.example", "user@bücher.example"}}, nil},
		{"<jörg@example.com>", []mb{{"", "jörg@example.com", "jörg@example.com"}}, nil},
		{"a@example.com, B <b@example.com>,c@example.com", []mb{{"", "a@example.com", "a@example.com"}, {"B", "b@example.com", "b@example.com"}, {"", "c@example.com", "c@example.com"}}, nil},
		{"User\t One\t<user@example.com>", []mb{{"User One", "user@example.com", "user@example.com"}}, nil},
	}
	for _, c := range cases {
		got, err := ParseMailboxList(c.value)
		if err != nil {
			t.Errorf("ParseMailboxList(%q): %v", c.value, err)
			continue
		}
		if len(got) != len(c.want) {
			t.Errorf("ParseMailboxList(%q) = %d mailboxes, want %d", c.value, len(got), len(c.want))
			continue
		}
		for i, w := range c.want {
			if got[i].Name != w.name || got[i].Address.String() != w.addr || got[i].Spec != w.spec {
				t.Errorf("ParseMailboxList(%q)[%d] = {%q %q %q}, want {%q %q %q}", c.value, i, got[i].Name, got[i].Address, got[i].Spec, w.name, w.addr, w.spec)
			}
		}
		if c.comments != nil && strings.Join(got[0].Comments, "|") != strings.Join(c.comments, "|") {
			t.Errorf("ParseMailboxList(%q) comments %q, want %q", c.value, got[0].Comments, c.comments)
		}
	}
}

func TestParseMailboxListErrors(t *testing.T) {
	cases := []struct{ value, reason string }{
		// empty and list structure
		{"", "no address"},
		{"   ", "no address"},
		{"(only a comment)", "no address"},
		{"<user@example.com>,", "empty list element after the last comma"},
		{", <user@example.com>", "empty list element"},
		{"a@example.com,,b@example.com", "empty list element"},
		// groups and routes
		{"Team: a@example.com, b@example.com;", "group syntax"},
		{"undisclosed-recipients:;", "group syntax"},
		{": a@example.com", "group syntax"},
		{"a@example.com;", "group syntax"},
		{"<@relay.example:user@example.com>", "source route"},
		{"<@a.example,@b.example:user@example.com>", "source route"},
		{"< @a.example:user@example.com>", "source route"},
		{"@a.example:user@example.com", "group syntax"},
		{"<user:x@example.com>", "inside <…>"},
		// second addresses and trailing text
		{"<a@example.com> <b@example.com>", "unexpected '<'"},
		{"<a@example.com>b@example.com", "unexpected"},
		{"<a@example.com>\\,<b@example.com>", "backslash outside"},
		{"a@example.com b@example.com", "more than one address"},
		{"a@example.com <b@example.com>", "display name contains '@'"},
		{"<a@example.com> trailing", "unexpected"},
		{"<<a@example.com>>", "unexpected '<'"},
		{"<a@example.com", "without '>'"},
		{"a@example.com>", "'>' without '<'"},
		{"<>", "empty address"},
		{"User One", "is not an address"},
		{"=?utf-8?b?" + b64("<a@example.com>") + "?=,<b@example.com>", "is not an address"},
		// obsolete white space inside the addr-spec
		{"user @ example.com", "white space or a comment inside the address"},
		{"user(c)@example.com", "white space or a comment inside the address"},
		{"<user@example.com (c)>", "comment inside <…>"},
		{"<user@ example.com>", "unexpected"},
		// tokens
		{"\"unterminated <a@example.com>", "unterminated quoted string"},
		{"(unterminated <a@example.com>", "unterminated comment"},
		{"a) <a@example.com>", "')' without '('"},
		{"<a@[192.0.2.1]>", "domain literal"},
		{"Bell\x07 <a@example.com>", "control character 0x07"},
		{"Del\x7f <a@example.com>", "control character 0x7F"},
		{"\xff <a@example.com>", "invalid UTF-8"},
		// addresses (address.Parse)
		{"<user\u200b@example.com>", "invalid address"},
		{"<user@example.com\u2000>", "invalid address"},
		{"<\"user@other.example\"@example.com>", "invalid address"},
		{"<user@example.com.>", "invalid address"},
		{"<=?utf-8?b?" + b64("ceo") + "?=@example.com>", "encoded word"},
		// display names
		{"\"b@example.com\" <a@example.com>", "is another address than"},
		{"a@example.com <a@example.com>", "display name contains '@'"},
		{"\"a@example.com\" (c) <b@example.com>", "is another address than"},
		{"\"Bob <b@example.com>\" <a@example.com>", "angle bracket"},
		{"\"Bob >\" <a@example.com>", "angle bracket"},
		{"b＠example.com <a@example.com>", "FULLWIDTH COMMERCIAL AT"},
		{"b﹫example.com <a@example.com>", "SMALL COMMERCIAL AT"},
		{"Bob ‹b› <a@example.com>", "look-alike of <"},
		{"=?utf-8?b?" + b64("b@example.com") + "?= <a@example.com>", "COMMERCIAL AT"},
		{"=?utf-8?q?b=40example=2Ecom?= <a@example.com>", "COMMERCIAL AT"},
		{"=?utf-8?q?b=40example.com?= <a@example.com>", "looks like an RFC 2047 encoded word"},
		{"=?utf-8?q?b?= =?utf-8?q?=40example=2Ecom?= <a@example.com>", "COMMERCIAL AT"},
		{"\"=?utf-8?q?b=40example.com?=\" <a@example.com>", "COMMERCIAL AT"},
		{"=?utf-8?b?" + b64("\u202eBob") + "?= <a@example.com>", "bidirectional control"},
		{"\u202emoc.elpmaxe <a@example.com>", "bidirectional control"},
		{"Bo\u200bb <a@example.com>", "Cf"},
		{"Bob\u2000 <a@example.com>", "non-ASCII white-space"},
		{"Bob\u00a0Smith <a@example.com>", "non-ASCII white-space"},
		{"\u3164 <a@example.com>", "invisible"},
		{"Bob\ufe0f <a@example.com>", "invisible"},
		{"\"Bob\x01\" <a@example.com>", "control character"},
		{"=?iso-8859-1?q?=85?= <a@example.com>", "control character"},
		{"\"Bob\ue000\" <a@example.com>", "private-use"},
		{". Bob <a@example.com>", "starts with '.'"},
		// encoded words
		{"=?x-unknown?q?Bob?= <a@example.com>", "not accepted"},
		{"=?utf-7?q?Bob?= <a@example.com>", "not accepted"},
		{"=?iso-2022-jp?b?GyRCJUYlOSVIGyhC?= <a@example.com>", "not accepted"},
		{"=?utf-8?x?Bob?= <a@example.com>", "unknown encoding"},
		{"=?utf-8?q?=FF?= <a@example.com>", "invalid UTF-8"},
		{"=?utf-8?b?" + b64("J\xc3") + "?= =?utf-8?b?" + b64("\xb6rg") + "?= <a@example.com>", "invalid UTF-8"},
		{"=?utf-8?b?not base64?= <a@example.com>", "looks like an RFC 2047 encoded word"},
		{"=?utf-8?b?Qm9i?= <a@example.com>x", "unexpected"},
		{"=?utf-8?b?Qm9?= <a@example.com>", "invalid base64"},
		{"=?utf-8?q??= <a@example.com>", "empty encoded text"},
		{"=?utf-8?q?a?b?= <a@example.com>", "malformed encoded word"},
		{"=?us-ascii?q?=E9?= <a@example.com>", "not US-ASCII"},
		{"=?windows-1252?q?=81?= <a@example.com>", "not defined in its charset"},
		{"x=?utf-8?q?Bob?= <a@example.com>", "looks like an RFC 2047 encoded word"},
		{"=?utf-8?q?Bob?=x <a@example.com>", "looks like an RFC 2047 encoded word"},
		{"=?utf-8?q?=3D=3Futf-8=3Fq=3FBob=3F=3D?= <a@example.com>", "another encoded word"},
		// comments
		{"a@example.com (b@example.com)", "COMMERCIAL AT"},
		{"a@example.com (see <this>)", "angle bracket"},
		{"a@example.com (a (b@c) d)", "COMMERCIAL AT"},
		{"a@example.com (=?utf-8?q?b=40example.com?=)", "COMMERCIAL AT"},
		{"a@example.com (\\@)", "COMMERCIAL AT"},
		{"a@example.com (\u200f)", "bidirectional"},
		{"a@example.com (=?bogus?q?x?=)", "not accepted"},
	}
	for _, c := range cases {
		got, err := ParseMailboxList(c.value)
		if err == nil {
			t.Errorf("ParseMailboxList(%q) = %+v, want an error containing %q", c.value, got, c.reason)
			continue
		}
		var e *Error
		if !errors.As(err, &e) {
			t.Errorf("ParseMailboxList(%q): error %T is not *Error", c.value, err)
			continue
		}
		if !strings.Contains(e.Reason, c.reason) {
			t.Errorf("ParseMailboxList(%q): %q, want it to contain %q", c.value, e.Reason, c.reason)
		}
	}
}

func TestDecodedEqualsItself(t *testing.T) {
	// "=?" produced by decoding is refused (no double decoding by readers).
	if _, err := ParseMailboxList("=?utf-8?b?" + b64("=?utf-8?q?x?=") + "?= <a@example.com>"); err == nil {
		t.Error("nested encoded word accepted")
	}
}

func TestParseMailbox(t *testing.T) {
	if m, err := ParseMailbox("A <a@example.com>"); err != nil || m.Address.String() != "a@example.com" {
		t.Errorf("ParseMailbox: %v %+v", err, m)
	}
	if _, err := ParseMailbox("a@example.com, b@example.com"); err == nil || !strings.Contains(err.Error(), "more than one address") {
		t.Errorf("ParseMailbox two: %v", err)
	}
}

func TestOriginators(t *testing.T) {
	parse := func(t *testing.T, raw string) *Block {
		t.Helper()
		b, err := Parse([]byte(raw))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	t.Run("ok", func(t *testing.T) {
		b := parse(t, "Resent-From: r1@example.com, R2 <r2@example.com>\r\nResent-Sender: rs@example.com\r\n"+
			"FROM : A <a@example.com>\r\nsender: s@example.com\r\nReply-To: x@other.example, y@other.example\r\n\r\n")
		got, err := b.Originators()
		if err != nil {
			t.Fatal(err)
		}
		want := []string{"Resent-From r1@example.com", "Resent-From r2@example.com", "Resent-Sender rs@example.com", "From a@example.com", "Sender s@example.com"}
		if len(got) != len(want) {
			t.Fatalf("got %+v", got)
		}
		for i, w := range want {
			if g := got[i].Field + " " + got[i].Mailbox.Address.String(); g != w {
				t.Errorf("originator %d = %s, want %s", i, g, w)
			}
		}
	})
	cases := []struct{ name, raw, field, reason string }{
		{"no From", "Sender: s@example.com\r\n\r\n", "From", "no From field"},
		{"two From", "From: a@example.com\r\nFrom: a@example.com\r\n\r\n", "From", "more than one From field"},
		{"From and from", "From: a@example.com\r\nfrom: b@example.com\r\n\r\n", "From", "more than one From field"},
		{"From and From :", "From: a@example.com\r\nFrom : b@example.com\r\n\r\n", "From", "more than one From field"},
		{"From<TAB>: and FROM", "From\t: b@example.com\r\nFROM:a@example.com\r\n\r\n", "From", "more than one From field"},
		{"From two addresses", "From: a@example.com, b@example.com\r\n\r\n", "From", "more than one address"},
		{"From empty", "From:\r\n\r\n", "From", "no address"},
		{"From group", "From: G: a@example.com;\r\n\r\n", "From", "group syntax"},
		{"two Sender", "From: a@example.com\r\nSender: a@example.com\r\nSENDER: a@example.com\r\n\r\n", "Sender", "more than one Sender field"},
		{"Sender two addresses", "From: a@example.com\r\nSender: a@example.com, b@example.com\r\n\r\n", "Sender", "more than one address"},
		{"Resent-Sender two addresses", "From: a@example.com\r\nResent-Sender: a@example.com, b@example.com\r\n\r\n", "Resent-Sender", "more than one address"},
		{"Resent-From group", "From: a@example.com\r\nResent-From: G:;\r\n\r\n", "Resent-From", "group syntax"},
		{"Sender garbage", "From: a@example.com\r\nsender: <a@example.com> x\r\n\r\n", "Sender", "unexpected"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := parse(t, c.raw).Originators()
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v", err)
			}
			if e.Field != c.field || !strings.Contains(e.Reason, c.reason) {
				t.Errorf("got %q %q, want %q and a reason containing %q", e.Field, e.Reason, c.field, c.reason)
			}
		})
	}
}
