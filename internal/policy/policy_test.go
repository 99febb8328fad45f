package policy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/internal/address"
	"github.com/mailgate/mailgate/internal/directory"
	"github.com/mailgate/mailgate/internal/settings"
)

const fixtureDir = "../../testdata/dms"

// load builds a snapshot from the DMS fixture plus extra file contents
// (appended to the fixture's file of the same name).
func load(t testing.TB, extra map[string]string, set map[string]string) *directory.Snapshot {
	t.Helper()
	dir := t.TempDir()
	entries, err := os.ReadDir(fixtureDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(fixtureDir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, e.Name()), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for name, text := range extra {
		f, err := os.OpenFile(filepath.Join(dir, name), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteString(text); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	if set == nil {
		set = map[string]string{}
	}
	if _, ok := set["hostname"]; !ok {
		set["hostname"] = "mail.example.test"
	}
	s, err := settings.Load(dir, func(string) (string, bool) { return "", false }, set)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := directory.Load(dir, s)
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

const (
	user1 = "user1@localhost.localdomain"
	user2 = "user2@otherdomain.tld"
	user3 = "user3@localhost.localdomain"
	added = "added@localhost.localdomain"
)

// The acceptance table of the engine issue (SPEC §5).
func TestMaySendFixture(t *testing.T) {
	snap := load(t, nil, nil)
	cases := []struct {
		login, sender string
		allowed       bool
		rule          string // expected deciding rule
		pos           string // expected file:line in the provenance, if any
	}{
		{added, "user2@localhost.localdomain", false, RuleNotOwned, ""},
		{user1, "alias1@localhost.localdomain", true, RuleAlias, "postfix-virtual.cf:1"},
		{user1, "test123@localhost.localdomain", true, RuleRegexp, "postfix-regexp.cf:1"},
		{user1, user3, true, RuleSendAs, "postfix-send-as.cf:1"},
		{user3, user1, false, RuleNotOwned, ""},
		{user2, "prefixtest@localhost.localdomain", true, RuleAlias, "postfix-virtual.cf:6"},
		{user2, "noreply@external.example", true, RuleSendAs, "postfix-send-as.cf:2"},
		{user1, "noreply@external.example", false, RuleNotOwned, ""},
		{user1, "wildcard@localdomain2.com", false, RuleNotOwned, ""},
		{user1, "user1+tag@localhost.localdomain", true, RuleExtension, "postfix-accounts.cf:1"},
		{user1, "ALIAS1@LocalHost.LocalDomain", true, RuleAlias, "postfix-virtual.cf:1"},
		{user1, "postmaster@localhost.localdomain", true, RuleRegexp, "postfix-regexp.cf:3"},
		{user1, "postmaster@gmail.com", false, RuleNotOwned, ""},
		{user1, user1, true, RuleAccount, "postfix-accounts.cf:1"},
		{"USER1@localhost.localdomain", user1, true, RuleAccount, ""},
		{user2, "first.name@localhost.localdomain", true, RuleAlias, "postfix-virtual.cf:9"},
		{user1, "bounce-x@anything.example", false, RuleNotOwned, ""}, // regexp, but not a managed domain
	}
	// Nobody may send as alias2 (its target resolves to nothing).
	for _, l := range []string{user1, user2, user3, added} {
		cases = append(cases, struct {
			login, sender string
			allowed       bool
			rule          string
			pos           string
		}{l, "alias2@localhost.localdomain", false, RuleNotOwned, ""})
	}
	for _, c := range cases {
		d := MaySend(snap, c.login, c.sender)
		if d.Allowed != c.allowed || d.Rule != c.rule {
			t.Errorf("MaySend(%s, %s) = allowed %v rule %s (%s); want allowed %v rule %s", c.login, c.sender, d.Allowed, d.Rule, d.Reply, c.allowed, c.rule)
			continue
		}
		if c.pos != "" {
			var found bool
			for _, s := range d.Grant.Chain {
				if s.Pos != nil && s.Pos.String() == c.pos {
					found = true
				}
			}
			if !found {
				t.Errorf("MaySend(%s, %s): provenance %v does not name %s", c.login, c.sender, d.Grant.Chain, c.pos)
			}
		}
		if !c.allowed && c.rule == RuleNotOwned {
			want := "<" + strings.ToLower(c.sender) + ">: Sender address rejected: not owned by user " + strings.ToLower(c.login)
			if d.Reply.Code != 553 || d.Reply.Enhanced != "5.7.1" || d.Reply.Text != want {
				t.Errorf("MaySend(%s, %s) reply %q, want 553 5.7.1 %q", c.login, c.sender, d.Reply, want)
			}
		}
	}
}

func TestMaySendDenialListsOwners(t *testing.T) {
	snap := load(t, nil, nil)
	d := MaySend(snap, user3, user1)
	if d.Allowed || len(d.Owners) != 1 || d.Owners[0].Login != user1 {
		t.Fatalf("owners of user1 = %+v", d.Owners)
	}
	d = MaySend(snap, user1, user3)
	if !d.Allowed {
		t.Fatal("user1 should send as user3")
	}
	owners, err := Owners(snap, mustParse(t, user3))
	if err != nil {
		t.Fatal(err)
	}
	if len(owners) != 2 || owners[0].Login != user1 || owners[1].Login != user3 {
		t.Fatalf("owners of user3 = %+v", owners)
	}
}

func TestMaySendSettings(t *testing.T) {
	snap := load(t, nil, nil)
	if d := MaySend(snap, user1, "<>"); d.Allowed || d.Reply.String() != "553 5.7.1 null sender not allowed for authenticated submission" {
		t.Errorf("null sender: %+v", d)
	}
	snap = load(t, nil, map[string]string{"null_sender": "allow"})
	if d := MaySend(snap, user1, ""); !d.Allowed || d.Rule != RuleNullSender {
		t.Errorf("null sender allowed: %+v", d)
	}
	snap = load(t, nil, map[string]string{"spoof_protection": "0"})
	if d := MaySend(snap, added, "anyone@gmail.com"); !d.Allowed || d.Rule != RuleSpoofOff {
		t.Errorf("spoof protection off: %+v", d)
	}
	if d := MaySend(snap, added, "bad@@x"); d.Allowed {
		t.Errorf("spoof protection off must still check syntax: %+v", d)
	}
	if d := MaySend(snap, "nobody@localhost.localdomain", user1); d.Allowed {
		t.Errorf("unknown login allowed: %+v", d)
	}
}

func TestMaySendExtensionAndGrants(t *testing.T) {
	snap := load(t, map[string]string{
		"postfix-send-as.cf":  "bob+x@localhost.localdomain user2@otherdomain.tld\n@localdomain2.com user3@localhost.localdomain\n",
		"postfix-accounts.cf": "bob@localhost.localdomain|{SHA512-CRYPT}$6$x$y\n",
	}, nil)
	// An exact entry for bob+x wins over the base bob.
	if d := MaySend(snap, "bob@localhost.localdomain", "bob+x@localhost.localdomain"); d.Allowed {
		t.Errorf("bob may not use bob+x (exact grant to user2): %+v", d)
	}
	if d := MaySend(snap, user2, "bob+x@localhost.localdomain"); !d.Allowed || d.Rule != RuleSendAs {
		t.Errorf("user2 may use bob+x: %+v", d)
	}
	if d := MaySend(snap, "bob@localhost.localdomain", "bob+y@localhost.localdomain"); !d.Allowed || d.Rule != RuleExtension {
		t.Errorf("bob may use bob+y: %+v", d)
	}
	// An explicit @domain grant covers the catch-all domain.
	if d := MaySend(snap, user3, "wildcard@localdomain2.com"); !d.Allowed || d.Rule != RuleSendAsDomain {
		t.Errorf("user3 may use anything@localdomain2.com: %+v", d)
	}
	if d := MaySend(snap, user1, "wildcard@localdomain2.com"); d.Allowed {
		t.Errorf("the catch-all target user1 must not: %+v", d)
	}
	// Alias members reached through an extension of the alias.
	if d := MaySend(snap, user1, "alias1+news@localhost.localdomain"); !d.Allowed {
		t.Errorf("user1 may use alias1+news: %+v", d)
	}
}

func TestRestrictions(t *testing.T) {
	snap := load(t, map[string]string{
		"postfix-send-access.cf":    "user1@localhost.localdomain REJECT\n",
		"postfix-receive-access.cf": "user3@localhost.localdomain REJECT\n",
	}, nil)
	if d := MaySend(snap, user1, user1); d.Allowed || d.Reply.Code != 554 || d.Rule != RuleRestricted {
		t.Errorf("restricted sender: %+v", d)
	}
	if d := MaySend(snap, user1, "alias1@localhost.localdomain"); d.Allowed || d.Rule != RuleRestricted {
		t.Errorf("restricted login through an alias: %+v", d)
	}
	r := Route(snap, user3)
	if r.Status != Rejected || r.Reply.String() != "554 5.7.1 <user3@localhost.localdomain>: Recipient address rejected: Access denied" {
		t.Errorf("restricted recipient: %+v", r)
	}
}

func mustParse(t testing.TB, s string) address.Address {
	t.Helper()
	a, err := address.Parse(s, address.Options{UTF8Local: true})
	if err != nil {
		t.Fatal(err)
	}
	return a
}
