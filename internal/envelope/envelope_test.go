package envelope

import "testing"

func TestParseMailFrom(t *testing.T) {
	cases := []struct {
		in     string
		sender string
		null   bool
		utf8   bool
		code   int // 0: ok
	}{
		{"<user@example.com>", "user@example.com", false, false, 0},
		{"user@example.com", "user@example.com", false, false, 0},
		{"<>", "", true, false, 0},
		{"<> BODY=8BITMIME", "", true, false, 0},
		{"<User@Example.com> SIZE=1000 BODY=8bitmime AUTH=<> RET=HDRS ENVID=x", "user@example.com", false, false, 0},
		{"<j\u00f6rg@example.com> SMTPUTF8", "j\u00f6rg@example.com", false, true, 0},
		{"<j\u00f6rg@example.com>", "", false, false, 501},
		{"<@relay.example:user@example.com>", "", false, false, 501},
		{"<user@example.com\x00>", "", false, false, 501},
		{"<user@example.com> FOO=bar", "", false, false, 555},
		{"<user@example.com> SIZE=abc", "", false, false, 501},
		{"<user@example.com> SIZE=1 SIZE=2", "", false, false, 501},
		{"<user@example.com>  SIZE=1", "", false, false, 501},
		{"<user@example.com> BODY=9BIT", "", false, false, 501},
		{"<user@example.com> SMTPUTF8=yes", "", false, false, 501},
		{"<user@example.com> =x", "", false, false, 501},
		{"", "", false, false, 501},
		{" <user@example.com>", "", false, false, 501},
		{"<user@[127.0.0.1]>", "", false, false, 501},
	}
	for _, c := range cases {
		m, err := ParseMailFrom(c.in)
		code := 0
		if e, ok := err.(*Error); ok {
			code = e.Code
		} else if err != nil {
			t.Fatalf("%q: untyped error %v", c.in, err)
		}
		if code != c.code || (code == 0 && (m.Sender.String() != c.sender || m.Null != c.null || m.SMTPUTF8 != c.utf8)) {
			t.Errorf("ParseMailFrom(%q) = %+v, %v; want %q null=%v utf8=%v code %d", c.in, m, err, c.sender, c.null, c.utf8, c.code)
		}
	}
}

func FuzzParseMailFrom(f *testing.F) {
	for _, s := range []string{"<a@b.example>", "<> SIZE=1", "a@b.example BODY=8BITMIME SMTPUTF8", "<@x:a@b> AUTH=<>"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseMailFrom(s)
		if err != nil {
			if _, ok := err.(*Error); !ok {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if m.Null != m.Sender.IsZero() {
			t.Fatalf("%q: null %v with sender %q", s, m.Null, m.Sender)
		}
	})
}
