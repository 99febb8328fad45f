package address

import "testing"

func TestParseReversePath(t *testing.T) {
	cases := []struct {
		in   string
		want string
		null bool
		ok   bool
	}{
		{"<>", "", true, true},
		{"<User@Example.COM>", "user@example.com", false, true},
		{"user@example.com", "user@example.com", false, true},
		{"<\"user\"@example.com>", "user@example.com", false, true},
		{"", "", false, false},
		{"<", "", false, false},
		{"<user@example.com", "", false, false},
		{"user@example.com>", "", false, false},
		{"<@relay.example:user@example.com>", "", false, false},
		{"<@a,@b:user@example.com>", "", false, false},
		{"<<user@example.com>>", "", false, false},
		{"<user@example.com\x00>", "", false, false},
		{"< user@example.com>", "", false, false},
		{"<user@example.com> ", "", false, false},
		{"<user@[127.0.0.1]>", "", false, false},
		{"<< >>", "", false, false},
	}
	for _, c := range cases {
		a, null, err := ParseReversePath(c.in, Options{})
		if (err == nil) != c.ok || null != c.null || (c.ok && a.String() != c.want) {
			t.Errorf("ParseReversePath(%q) = %q, %v, %v; want %q, %v, ok=%v", c.in, a, null, err, c.want, c.null, c.ok)
		}
	}
}

func FuzzParseReversePath(f *testing.F) {
	for _, s := range []string{"<>", "<a@b.example>", "a@b.example", "<@x:a@b.example>", "<\"a b\"@c>"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, null, err := ParseReversePath(s, Options{UTF8Local: true})
		if err != nil {
			return
		}
		if null {
			if s != "<>" || !a.IsZero() {
				t.Fatalf("%q: null sender from something else", s)
			}
			return
		}
		b, err := Parse(a.String(), Options{UTF8Local: true})
		if err != nil || b != a {
			t.Fatalf("%q: result %q is not canonical", s, a)
		}
	})
}
