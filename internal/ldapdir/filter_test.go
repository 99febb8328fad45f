package ldapdir

import (
	"fmt"
	"strings"
	"testing"
	"time"

	ber "github.com/go-asn1-ber/asn1-ber"
	"github.com/go-ldap/ldap/v3"

	"github.com/mailgate/mailgate/internal/settings"
)

// shape describes a compiled filter's structure (every node's class and
// tag, and its children), without the assertion values.
func shape(p *ber.Packet) string {
	var b strings.Builder
	var walk func(p *ber.Packet)
	walk = func(p *ber.Packet) {
		fmt.Fprintf(&b, "%d/%d/%d", p.ClassType, p.TagType, p.Tag)
		if len(p.Children) > 0 {
			b.WriteByte('[')
			for i, c := range p.Children {
				if i > 0 {
					b.WriteByte(' ')
				}
				walk(c)
			}
			b.WriteByte(']')
		}
	}
	walk(p)
	return b.String()
}

func compiled(t testing.TB, filter string) *ber.Packet {
	t.Helper()
	p, err := ldap.CompileFilter(filter)
	if err != nil {
		t.Fatalf("CompileFilter(%q): %v", filter, err)
	}
	return p
}

var allTemplates = []string{
	dmsTestUser, dmsTestGroup, dmsTestAlias, dmsTestDomain, dmsTestSenders,
	settings.DefaultLDAPFilterUser, settings.DefaultLDAPFilterAlias, settings.DefaultLDAPFilterGroup,
	settings.DefaultLDAPFilterDomain, settings.DefaultLDAPFilterLogin,
	"(&(uid=%u)(mail=*@%d))",
	"(mail=%u+*@%d)",
	"(description=100%% %s)",
	"(cn:caseExactMatch:=%s)",
	"(!(mail=%s))",
}

func TestNormalizeSpace(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"(a=b)", "(a=b)"},
		{" (a=b) ", "(a=b)"},
		{"(&(a=b) (c=d) )", "(&(a=b)(c=d))"},
		{"(& (a=b)\t(c=d))", "(&(a=b)(c=d))"},
		{"(| (a=b) (! (c=d)) )", "(|(a=b)(!(c=d)))"},
		{"(cn=a b )", "(cn=a b )"},                   // value spaces kept
		{"(&(cn= a (b)(c=d))", "(&(cn= a (b)(c=d))"}, // "(" inside a value
		{"(&(cn=x\\29 )(c=d))", "(&(cn=x\\29 )(c=d))"},
		{"(cn=&  (x)", "(cn=&  (x)"}, // & in a value
		{dmsTestUser, "(&(mail=%s)(&(objectClass=PostfixBookMailAccount)(mailEnabled=TRUE)))"},
		{dmsTestDomain, "(|(&(|(mail=*@%s)(mailAlias=*@%s)(mailGroupMember=*@%s))(&(objectClass=PostfixBookMailAccount)(mailEnabled=TRUE)))(&(mailAlias=*@%s)(objectClass=PostfixBookMailForward)))"},
	} {
		if got := normalizeSpace(tc.in); got != tc.want {
			t.Errorf("normalizeSpace(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestTemplatesCompile(t *testing.T) {
	for _, f := range allTemplates {
		tm, err := parseTemplate("ldap_query_filter_user", f)
		if err != nil {
			t.Errorf("parseTemplate(%q): %v", f, err)
			continue
		}
		got, ok := tm.expand("some.user@localhost.localdomain")
		if !ok {
			t.Errorf("%q: suppressed", f)
			continue
		}
		compiled(t, got)
	}
}

func TestExpand(t *testing.T) {
	for _, tc := range []struct {
		tmpl, key, want string
		suppressed      bool
	}{
		{"(mail=%s)", "a@b.test", "(mail=a@b.test)", false},
		{"(&(uid=%u)(dc=%d))", "a@b.test", "(&(uid=a)(dc=b.test))", false},
		{"(uid=%u)", "some.user", "(uid=some.user)", false}, // no @: %u is the whole key
		{"(dc=%d)", "some.user", "", true},                  // no domain: suppressed
		{"(uid=%u)", "@b.test", "", true},                   // catch-all: no local part
		{"(mailAlias=%s)", "@b.test", "(mailAlias=@b.test)", false},
		{"(mail=%s)", "", "", true},
		{"(description=100%%)", "x", "(description=100%)", false},
		{"(mail=%s)", "a*)(uid=*", `(mail=a\2a\29\28uid=\2a)`, false},
		{"(mail=%s)", `a\b`, `(mail=a\5cb)`, false},
		{"(mail=%s)", "a\x00b", `(mail=a\00b)`, false},
		{"(mail=%s)", "ü@x.test", `(mail=\c3\bc@x.test)`, false},
		{"(mail=*@%d)", "a@b@c.test", "(mail=*@c.test)", false},
		{"(&(mail=%s) (uid=%u))", "x y@z.test", "(&(mail=x y@z.test)(uid=x y))", false},
	} {
		tm, err := parseTemplate("test", tc.tmpl)
		if err != nil {
			t.Errorf("parseTemplate(%q): %v", tc.tmpl, err)
			continue
		}
		got, ok := tm.expand(tc.key)
		if ok == tc.suppressed || got != tc.want {
			t.Errorf("expand(%q, %q) = %q, %v; want %q, %v", tc.tmpl, tc.key, got, ok, tc.want, !tc.suppressed)
		}
	}
}

// TestInjection: a hostile key does not change any filter's structure.
func TestInjection(t *testing.T) {
	hostile := []string{
		"a*)(uid=*", "*", "*)(|(objectClass=*)", "some.user)(|(uid=*",
		`\2a`, "x@y)(mail=*", "(", ")", "x@(*)", "\x00", "a@b\x00)(c=*",
	}
	for _, f := range allTemplates {
		tm, err := parseTemplate("test", f)
		if err != nil {
			t.Fatal(err)
		}
		ref, _ := tm.expand(sampleKey)
		want := shape(compiled(t, ref))
		for _, key := range hostile {
			got, ok := tm.expand(key)
			if !ok {
				continue
			}
			if s := shape(compiled(t, got)); s != want {
				t.Errorf("template %q, key %q: filter %q changed structure:\n got %s\nwant %s", f, key, got, s, want)
			}
		}
	}
	// The value arrives at the server as given.
	tm, _ := parseTemplate("test", "(mail=%s)")
	for _, key := range hostile {
		f, _ := tm.expand(key)
		p := compiled(t, f)
		if got := ber.DecodeString(p.Children[1].Data.Bytes()); got != key {
			t.Errorf("key %q: the server would see %q", key, got)
		}
	}
}

func TestNewChecksFilters(t *testing.T) {
	base := settings.LDAP{
		ServerHost: "ldap://127.0.0.1:1", SearchBase: "dc=example,dc=test",
		FilterUser: settings.DefaultLDAPFilterUser, FilterLogin: settings.DefaultLDAPFilterLogin,
		Timeout: time.Second,
	}
	// The server is down (port 1): New does not connect.
	if s, err := New(base, nil); err != nil {
		t.Fatalf("New with the server down: %v", err)
	} else {
		s.Close()
	}
	for _, tc := range []struct {
		name    string
		change  func(*settings.LDAP)
		wantErr string
	}{
		{"unbalanced", func(c *settings.LDAP) { c.FilterUser = "(&(mail=%s)" }, "ldap_query_filter_user: "},
		{"placeholder", func(c *settings.LDAP) { c.FilterAlias = "(mailAlias=%x)" }, "ldap_query_filter_alias: "},
		{"lone percent", func(c *settings.LDAP) { c.FilterGroup = "(mail=%s%)" }, "ldap_query_filter_group: "},
		{"key as attribute", func(c *settings.LDAP) { c.FilterDomain = "(%s=x)" }, "ldap_query_filter_domain: "},
		{"bad escape", func(c *settings.LDAP) { c.FilterSenders = `(mail=\%s)` }, "ldap_query_filter_senders: "},
		{"garbage", func(c *settings.LDAP) { c.FilterLogin = "(uid=%s))(" }, "ldap_query_filter_login: "},
		{"no parens", func(c *settings.LDAP) { c.FilterUser = "mail=%s" }, "ldap_query_filter_user: "},
		{"scheme", func(c *settings.LDAP) { c.ServerHost = "http://x" }, "ldap_server_host: "},
		{"no server", func(c *settings.LDAP) { c.ServerHost = "" }, "ldap_server_host: "},
		{"no base", func(c *settings.LDAP) { c.SearchBase = "" }, "ldap_search_base: "},
		{"bad base", func(c *settings.LDAP) { c.SearchBase = "not a dn" }, "ldap_search_base: "},
		{"bind without password", func(c *settings.LDAP) { c.BindDN = "cn=admin,dc=example,dc=test" }, "ldap_bind_pw: "},
	} {
		cfg := base
		tc.change(&cfg)
		_, err := New(cfg, nil)
		if err == nil || !strings.HasPrefix(err.Error(), tc.wantErr) {
			t.Errorf("%s: err = %v, want prefix %q", tc.name, err, tc.wantErr)
		}
	}
	// Empty filters are fine: those lookups find nothing.
	cfg := base
	cfg.FilterAlias, cfg.FilterGroup, cfg.FilterSenders = "", "", ""
	if _, err := New(cfg, nil); err != nil {
		t.Errorf("empty filters: %v", err)
	}
	// Bare host names are ldap://.
	cfg.ServerHost = "localhost"
	if s, err := New(cfg, nil); err != nil || s.service.ep.hostport != "localhost:389" {
		t.Errorf("bare host: %v", err)
	}
}

// FuzzFilter: for any template New accepts and any key, the substituted
// filter compiles and has the structure it has with a sample key.
func FuzzFilter(f *testing.F) {
	for _, tm := range allTemplates {
		for _, key := range []string{"some.user@localhost.localdomain", "a*)(uid=*", "@x.test", "uid", "(", `\`} {
			f.Add(tm, key)
		}
	}
	f.Fuzz(func(t *testing.T, tmpl, key string) {
		tm, err := parseTemplate("fuzz", tmpl)
		if err != nil {
			return
		}
		ref, _ := tm.expand(sampleKey)
		refP, err := ldap.CompileFilter(ref)
		if err != nil {
			t.Fatalf("template %q accepted but %q does not compile: %v", tmpl, ref, err)
		}
		got, ok := tm.expand(key)
		if !ok {
			return
		}
		p, err := ldap.CompileFilter(got)
		if err != nil {
			t.Fatalf("template %q, key %q: %q does not compile: %v", tmpl, key, got, err)
		}
		if a, b := shape(p), shape(refP); a != b {
			t.Fatalf("template %q, key %q: %q changed structure:\n got %s\nwant %s", tmpl, key, got, a, b)
		}
	})
}
