package e2e

import (
	"strings"
	"testing"
)

// Hostile and wrong arguments to every command: exit 1 or 2 with a message,
// never a panic and never a silent "allowed".
func TestHostileArguments(t *testing.T) {
	dir := configDir(t, nil)
	hostile := []string{
		"",
		"@",
		"user1@localhost.localdomain\u2000",
		"user1@localhost.localdomain\u00a0",
		"\u200buser1@localhost.localdomain",
		"user1@localhost.localdomain\u202e",
		"user1\x01@localhost.localdomain", // (a NUL cannot be passed in argv; the parsers are unit-tested with it)
		"user1@localhost.localdomain\n",
		"user1@localhost.localdomain\r",
		" user1@localhost.localdomain",
		"user1@localhost.localdomain ",
		"@evil:user1@localhost.localdomain",
		"user1@[127.0.0.1]",
		"user1@localhost.localdomain.",
		"user1@localhost..localdomain",
		"user1@@localhost.localdomain",
		"user1@localhost.localdomain@evil.example",
		"\"user1@localhost.localdomain\"@evil.example",
		"\"user 1\"@localhost.localdomain",
		"us\xffer1@localhost.localdomain",
		"us\xc0\xafer1@localhost.localdomain",
		"\u0430lias1@localhost.localdomain", // Cyrillic a
		"alias1@l\u043ecalhost.localdomain", // Cyrillic o
		strings.Repeat("a", 65) + "@localhost.localdomain",
		"a@" + strings.Repeat("b", 64) + ".localdomain",
		strings.Repeat("a", 5000),
		"user1@localhost.localdomain,user2@otherdomain.tld",
		"user1@localhost.localdomain|x",
		"../../etc/passwd@localhost.localdomain",
	}
	for _, h := range hostile {
		for _, args := range [][]string{
			{"check", "send", user1, h},
			{"check", "send", h, user1},
			{"check", "route", h},
		} {
			r := run(t, dir, nil, args...)
			if r.code == 0 {
				// Only a remote route for a different (valid) address may succeed,
				// and it must never be a local delivery or an allowed send.
				if args[1] == "route" && strings.Contains(r.stdout, ": remote") {
					continue
				}
				t.Errorf("mailgate %q exited 0:\n%s", args, r.stdout)
				continue
			}
			if r.stderr == "" {
				t.Errorf("mailgate %q: exit %d without a message", args, r.code)
			}
		}
	}
}

func TestUsageErrors(t *testing.T) {
	dir := configDir(t, nil)
	cases := []struct {
		args []string
		msg  string // in stderr
		use  string // the usage shown
	}{
		{[]string{}, "missing command", "usage: mailgate [--config-dir DIR]"},
		{[]string{"lol troll"}, `unknown command "lol troll"`, "Commands:"},
		{[]string{"lol", "troll"}, `unknown command "lol"`, "Commands:"},
		{[]string{"check"}, "check: missing subcommand", "usage: mailgate check SUBCOMMAND"},
		{[]string{"check", "nothing"}, `unknown command "check nothing"`, "usage: mailgate check SUBCOMMAND"},
		{[]string{"check", "send"}, "check send: missing argument LOGIN", "usage: mailgate check send [--json] LOGIN SENDER"},
		{[]string{"check", "send", user1}, "check send: missing argument SENDER", "usage: mailgate check send"},
		{[]string{"check", "send", user1, user1, "extra"}, `check send: unexpected argument "extra"`, "usage: mailgate check send"},
		{[]string{"check", "route"}, "check route: missing argument ADDRESS", "usage: mailgate check route"},
		{[]string{"check", "route", "a@b", "c@d"}, `check route: unexpected argument "c@d"`, "usage: mailgate check route"},
		{[]string{"check", "route", "--bogus", "a@b"}, `check route: unknown option "--bogus"`, "usage: mailgate check route"},
		{[]string{"check", "route", "--json=yes", "a@b"}, "takes no value", "usage: mailgate check route"},
		{[]string{"domain", "list", "extra"}, `domain list: unexpected argument "extra"`, "usage: mailgate domain list"},
		{[]string{"config", "check", "extra"}, `config check: unexpected argument "extra"`, "usage: mailgate config check"},
		{[]string{"--bogus", "domain", "list"}, `unknown option "--bogus"`, "Commands:"},
		{[]string{"--set", "nonsense", "domain", "list"}, "expected NAME=VALUE", "Commands:"},
	}
	for _, c := range cases {
		r := run(t, dir, nil, c.args...)
		if r.code != 2 || !strings.Contains(r.stderr, c.msg) || !strings.Contains(r.stderr, c.use) {
			t.Errorf("mailgate %q: exit %d, want 2 with %q and %q:\n%s", c.args, r.code, c.msg, c.use, r.stderr)
		}
	}
	// Unknown settings are an error naming them.
	r := run(t, dir, nil, "--set", "colour=blue", "domain", "list")
	if r.code != 1 || !strings.Contains(r.stderr, `unknown setting "colour"`) {
		t.Errorf("unknown setting: %d %s", r.code, r.stderr)
	}
	// --help at every level exits 0 with the right usage on stdout.
	for _, args := range [][]string{{"--help"}, {"check", "--help"}, {"check", "send", "--help"}, {"config", "check", "-h"}} {
		r := run(t, dir, nil, args...)
		if r.code != 0 || !strings.Contains(r.stdout, "usage: mailgate") {
			t.Errorf("mailgate %q: %d %s", args, r.code, r.stdout)
		}
	}
	// An address that starts with "-" after "--".
	r = run(t, dir, nil, "check", "route", "--", "-dash@gmail.com")
	if r.code != 0 || !strings.Contains(r.stdout, "remote") {
		t.Errorf("-- then -dash@gmail.com: %d %s %s", r.code, r.stdout, r.stderr)
	}
}
