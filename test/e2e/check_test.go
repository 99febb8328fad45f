package e2e

import (
	"encoding/json"
	"strings"
	"testing"
)

const (
	user1 = "user1@localhost.localdomain"
	user2 = "user2@otherdomain.tld"
	user3 = "user3@localhost.localdomain"
	added = "added@localhost.localdomain"
)

// The engine issue's acceptance table, against the built binary.
func TestCheckSend(t *testing.T) {
	dir := configDir(t, nil)
	cases := []struct {
		login, sender string
		code          int
		out           []string // substrings of the output (stdout when allowed, stderr when denied)
	}{
		{added, "user2@localhost.localdomain", 1, []string{"553 5.7.1 <user2@localhost.localdomain>: Sender address rejected: not owned by user added@localhost.localdomain"}},
		{user1, "alias1@localhost.localdomain", 0, []string{"rule: alias", "postfix-virtual.cf:1"}},
		{user1, "test123@localhost.localdomain", 0, []string{"rule: regexp", "postfix-regexp.cf:1"}},
		{user1, user3, 0, []string{"rule: send-as", "postfix-send-as.cf:1"}},
		{user3, user1, 1, []string{"not owned by user " + user3, "owner " + user1}},
		{user2, "prefixtest@localhost.localdomain", 0, []string{"rule: alias", "postfix-virtual.cf:6"}},
		{user2, "noreply@external.example", 0, []string{"rule: send-as", "postfix-send-as.cf:2"}},
		{user1, "noreply@external.example", 1, []string{"not owned by user " + user1, "owner " + user2}},
		{user1, "wildcard@localdomain2.com", 1, []string{"not owned by user " + user1}},
		{user1, "user1+tag@localhost.localdomain", 0, []string{"rule: extension", "postfix-accounts.cf:1"}},
		{user1, "ALIAS1@LocalHost.LocalDomain", 0, []string{"may send as alias1@localhost.localdomain", "postfix-virtual.cf:1"}},
		{user1, "postmaster@localhost.localdomain", 0, []string{"rule: regexp", "postfix-regexp.cf:3"}},
		{user1, "postmaster@gmail.com", 1, []string{"not owned by user " + user1}},
		{user1, "alias2@localhost.localdomain", 1, []string{"no account owns alias2@localhost.localdomain"}},
		{user2, "alias2@localhost.localdomain", 1, []string{"not owned"}},
		{user3, "alias2@localhost.localdomain", 1, []string{"not owned"}},
		{added, "alias2@localhost.localdomain", 1, []string{"not owned"}},
	}
	for _, c := range cases {
		r := run(t, dir, nil, "check", "send", c.login, c.sender)
		out := r.stdout
		if c.code != 0 {
			out = r.stderr
		}
		if r.code != c.code {
			t.Errorf("check send %s %s: exit %d, want %d\nstdout: %s\nstderr: %s", c.login, c.sender, r.code, c.code, r.stdout, r.stderr)
			continue
		}
		for _, want := range c.out {
			if !strings.Contains(out, want) {
				t.Errorf("check send %s %s: output lacks %q:\n%s", c.login, c.sender, want, out)
			}
		}
	}
}

func TestCheckSendJSON(t *testing.T) {
	dir := configDir(t, nil)
	r := run(t, dir, nil, "check", "send", "--json", user1, "alias1@localhost.localdomain")
	var d struct {
		Allowed bool
		Rule    string
		Reply   struct{ Code int }
		Grant   struct {
			Login string
			Chain []struct {
				Rule string
				Pos  struct {
					File string
					Line int
				}
			}
		}
	}
	if err := json.Unmarshal([]byte(r.stdout), &d); err != nil || r.code != 0 {
		t.Fatalf("exit %d, %v: %s", r.code, err, r.stdout)
	}
	if !d.Allowed || d.Rule != "alias" || d.Reply.Code != 250 || d.Grant.Login != user1 ||
		d.Grant.Chain[0].Pos.File != "postfix-virtual.cf" || d.Grant.Chain[0].Pos.Line != 1 {
		t.Errorf("unexpected JSON: %+v", d)
	}
	r = run(t, dir, nil, "check", "send", user3, user1, "--json")
	if r.code != 1 || !strings.Contains(r.stdout, `"allowed": false`) || !strings.Contains(r.stderr, "553 5.7.1") {
		t.Errorf("denied JSON: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
}

func TestCheckRoute(t *testing.T) {
	dir := configDir(t, nil)
	cases := []struct {
		addr string
		code int
		out  []string
	}{
		{"alias1@localhost.localdomain", 0, []string{"deliver", "mailbox " + user1, "postfix-virtual.cf:1"}},
		{"alias1+test@localhost.localdomain", 0, []string{"mailbox user1+test@localhost.localdomain (mailbox " + user1 + ", extension +test)"}},
		{"wildcard@localdomain2.com", 0, []string{"mailbox " + user1, "catch-all @localdomain2.com at postfix-virtual.cf:5"}},
		{"test123@localhost.localdomain", 0, []string{"mailbox " + user1, "regexp test123@localhost.localdomain", "postfix-regexp.cf:1"}},
		{"nouser@localhost.localdomain", 1, []string{"550 5.1.1 <nouser@localhost.localdomain>: Recipient address rejected: User unknown"}},
		{"alias2@localhost.localdomain", 1, []string{"unknown external1@otherdomain.tld: unknown in managed domain otherdomain.tld", "550 5.1.1", "no deliverable destination"}},
		{"someone@gmail.com", 0, []string{"remote", "domain gmail.com is not managed"}},
	}
	for _, c := range cases {
		r := run(t, dir, nil, "check", "route", c.addr)
		out := r.stdout
		if c.code != 0 {
			out = r.stderr
		}
		if r.code != c.code {
			t.Errorf("check route %s: exit %d, want %d\n%s%s", c.addr, r.code, c.code, r.stdout, r.stderr)
			continue
		}
		for _, want := range c.out {
			if !strings.Contains(out, want) {
				t.Errorf("check route %s: output lacks %q:\n%s", c.addr, want, out)
			}
		}
	}

	// Account beats catch-all.
	dir = configDir(t, map[string]string{"postfix-virtual.cf": "@otherdomain.tld user1@localhost.localdomain\n"})
	r := run(t, dir, nil, "check", "route", user2)
	if r.code != 0 || !strings.Contains(r.stdout, "mailbox "+user2) || strings.Contains(r.stdout, "catch-all") {
		t.Errorf("account must beat catch-all: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

func TestDomainList(t *testing.T) {
	dir := configDir(t, nil)
	r := run(t, dir, nil, "domain", "list")
	want := "localdomain2.com\talias\nlocalhost.localdomain\tmailbox\notherdomain.tld\tmailbox\n"
	if r.code != 0 || r.stdout != want {
		t.Errorf("domain list: exit %d\n%q\nwant\n%q", r.code, r.stdout, want)
	}
	r = run(t, dir, nil, "domain", "list", "--json")
	var rows []struct{ Domain, Class string }
	if err := json.Unmarshal([]byte(r.stdout), &rows); err != nil || len(rows) != 3 || rows[0].Domain != "localdomain2.com" || rows[0].Class != "alias" {
		t.Errorf("domain list --json: %v %s", err, r.stdout)
	}
	r = run(t, dir, []string{"MAILGATE_EXCLUDED_DOMAINS=localdomain2.com"}, "domain", "list")
	if strings.Contains(r.stdout, "localdomain2.com") {
		t.Errorf("excluded domain listed: %s", r.stdout)
	}
}

func TestConfigCheck(t *testing.T) {
	dir := configDir(t, nil)
	r := run(t, dir, []string{"SPOOF_PROTECTION=1", "POSTMASTER_ADDRESS=user1@localhost.localdomain"}, "config", "check")
	for _, want := range []string{
		"postfix-virtual.cf:4: warning: alias2@localhost.localdomain: target external1@otherdomain.tld resolves to nothing",
		`spoof_protection     = "true"`, "(env SPOOF_PROTECTION)",
		`postmaster_address   = "user1@localhost.localdomain"`, "(env POSTMASTER_ADDRESS)",
		`hostname             = "mail.example.test"`, "(flag)",
		`recipient_delimiter  = "+"`, "(default)",
		"0 errors",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("config check lacks %q:\n%s", want, r.stdout)
		}
	}
	if r.code != 0 {
		t.Errorf("config check exit %d", r.code)
	}

	// A broken line is named with file:line; duplicates are merged with a warning.
	dir = configDir(t, map[string]string{
		"postfix-virtual.cf":  "alias1@localhost.localdomain user3@localhost.localdomain\nbroken@localhost.localdomain\n",
		"postfix-accounts.cf": "bad@@localhost|{SHA512-CRYPT}$6$x\n",
		"postfix-regexp.cf":   "/^(a)\\1@/ user1@localhost.localdomain\n",
	})
	r = run(t, dir, nil, "config", "check")
	for _, want := range []string{
		"postfix-virtual.cf:10: warning: duplicate alias key alias1@localhost.localdomain",
		"postfix-virtual.cf:11: error:",
		"postfix-accounts.cf:5: error:",
		"postfix-regexp.cf:4: error:",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("config check lacks %q:\n%s", want, r.stdout)
		}
	}
	if r.code != 1 {
		t.Errorf("config check with errors: exit %d", r.code)
	}
	// Other commands refuse to answer from a broken configuration.
	r = run(t, dir, nil, "check", "send", user1, user1)
	if r.code != 1 || !strings.Contains(r.stderr, "postfix-accounts.cf:5") {
		t.Errorf("check send on a broken config: %d %s", r.code, r.stderr)
	}

	r = run(t, configDir(t, nil), nil, "config", "check", "--json")
	var out struct {
		OK          bool
		Settings    []struct{ Name, Value, Origin string }
		Diagnostics []struct {
			File     string
			Line     int
			Severity string
		}
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil || !out.OK || len(out.Settings) < 10 || len(out.Diagnostics) != 1 || out.Diagnostics[0].Line != 4 {
		t.Errorf("config check --json: %v %+v", err, out)
	}
}

func TestSettingsFromEnvironmentAndFile(t *testing.T) {
	dir := configDir(t, map[string]string{"mailgate.toml": "spoof_protection = false\nrecipient_delimiter = \"+-\"\n"})
	r := run(t, dir, nil, "check", "send", added, "anyone@gmail.com")
	if r.code != 0 || !strings.Contains(r.stdout, "spoof-protection-off") {
		t.Errorf("spoof_protection = false in mailgate.toml: %d %s %s", r.code, r.stdout, r.stderr)
	}
	// The environment beats the file, the flag beats the environment.
	r = run(t, dir, []string{"SPOOF_PROTECTION=1"}, "check", "send", added, "anyone@gmail.com")
	if r.code != 1 {
		t.Errorf("SPOOF_PROTECTION=1 must override the file: %d", r.code)
	}
	r = run(t, dir, []string{"MAILGATE_SPOOF_PROTECTION=true"}, "--set", "spoof_protection=false", "check", "send", added, "anyone@gmail.com")
	if r.code != 0 {
		t.Errorf("--set must override the environment: %d %s", r.code, r.stderr)
	}
	r = run(t, dir, nil, "check", "route", "alias1-x@localhost.localdomain")
	if r.code != 0 || !strings.Contains(r.stdout, "extension -x") {
		t.Errorf("recipient_delimiter +-: %d %s %s", r.code, r.stdout, r.stderr)
	}
	r = run(t, dir, []string{"SPOOF_PROTECTION=maybe"}, "check", "send", user1, user1)
	if r.code != 1 || !strings.Contains(r.stderr, "spoof_protection") {
		t.Errorf("bad setting: %d %s", r.code, r.stderr)
	}
}
