package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func crlf(lines ...string) string { return strings.Join(lines, "\r\n") + "\r\n" }

func TestCheckMessage(t *testing.T) {
	dir := configDir(t, nil)
	ok := crlf("From: User One <user1@localhost.localdomain>", "To: friend@gmail.com", "Subject: hi", "", "body")
	cases := []struct {
		name     string
		args     []string
		msg      string
		code     int
		contains string
	}{
		{"own From", nil, ok, 0, "From user1@localhost.localdomain: allowed (rule account)"},
		{"alias From", []string{"--mail-from", "<alias1@localhost.localdomain>"}, crlf("From: <alias1@localhost.localdomain>", "", "x"), 0, "rule alias"},
		{"send-as From", []string{"--mail-from=user3@localhost.localdomain"}, crlf("From: <user3@localhost.localdomain>", "", "x"), 0, "rule send-as"},
		{"second From field", []string{"--mail-from", "<user1@localhost.localdomain>"}, crlf("From: <user1@localhost.localdomain>", "From: <user2@otherdomain.tld>", "", "x"), 1, "550 5.7.1 message header From: more than one From field"},
		{"From of someone else", []string{"--mail-from", "<user1@localhost.localdomain>"}, crlf("From: <user2@otherdomain.tld>", "", "x"), 1, "550 5.7.1 message header From:"},
		{"envelope not owned", []string{"--mail-from", "<user2@otherdomain.tld>"}, ok, 1, "553 5.7.1 <user2@otherdomain.tld>: Sender address rejected: not owned by user user1@localhost.localdomain"},
		{"null sender refused", []string{"--mail-from", "<>"}, ok, 1, "553 5.7.1 null sender not allowed for authenticated submission"},
		{"source route in MAIL FROM", []string{"--mail-from", "<@evil.example:user1@localhost.localdomain>"}, ok, 1, "source routes"},
		{"unknown MAIL FROM parameter", []string{"--mail-from", "<user1@localhost.localdomain> XFOO=1"}, ok, 1, "555 5.5.4"},
		{"MAIL FROM parameters", []string{"--mail-from", "<user1@localhost.localdomain> SIZE=100 BODY=8BITMIME AUTH=<>"}, ok, 0, "accepted"},
		{"bare LF", nil, "From: <user1@localhost.localdomain>\nSubject: x\n\nbody\n", 1, "550 5.7.1"},
		{"no From", nil, crlf("Subject: x", "", "body"), 1, "550 5.7.1 message header"},
		{"From :", nil, crlf("From : <user2@otherdomain.tld>", "From: <user1@localhost.localdomain>", "", "x"), 1, "550 5.7.1"},
	}
	for _, c := range cases {
		args := append([]string{"check", "message"}, c.args...)
		args = append(args, "user1@localhost.localdomain")
		r := runIn(t, dir, nil, c.msg, args...)
		out := r.stdout + r.stderr
		if r.code != c.code || !strings.Contains(out, c.contains) {
			t.Errorf("%s: exit %d, want %d with %q:\n%s", c.name, r.code, c.code, c.contains, out)
		}
	}

	// FILE argument, and - for standard input.
	file := filepath.Join(t.TempDir(), "msg.eml")
	if err := os.WriteFile(file, []byte(ok), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := run(t, dir, nil, "check", "message", "user1@localhost.localdomain", file); r.code != 0 {
		t.Errorf("FILE: %d %s", r.code, r.stderr)
	}
	if r := runIn(t, dir, nil, ok, "check", "message", "user1@localhost.localdomain", "-"); r.code != 0 {
		t.Errorf("-: %d %s", r.code, r.stderr)
	}
	if r := run(t, dir, nil, "check", "message", "user1@localhost.localdomain", "/nonexistent/msg"); r.code != 1 || r.stderr == "" {
		t.Errorf("missing file: %d %s", r.code, r.stderr)
	}
	// JSON.
	r := runIn(t, dir, nil, ok, "check", "message", "--json", "user1@localhost.localdomain")
	var s struct {
		Allowed bool
		Reply   struct{ Code int }
		Headers []struct{ Field, Address string }
	}
	if err := json.Unmarshal([]byte(r.stdout), &s); err != nil || !s.Allowed || s.Reply.Code != 250 || len(s.Headers) != 1 || s.Headers[0].Address != "user1@localhost.localdomain" {
		t.Errorf("json: %v %s", err, r.stdout)
	}
	// Size limit.
	big := ok + strings.Repeat("x", 2000) + "\r\n"
	if r := runIn(t, dir, nil, big, "--set", "message_size_limit=1000", "check", "message", "user1@localhost.localdomain"); r.code != 1 || !strings.Contains(r.stderr, "552 5.3.4") {
		t.Errorf("size limit: %d %s", r.code, r.stderr)
	}
	// header_from = envelope.
	if r := runIn(t, dir, nil, crlf("From: <alias1@localhost.localdomain>", "", "x"), "--set", "header_from=envelope", "check", "message", "--mail-from", "<user1@localhost.localdomain>", "user1@localhost.localdomain"); r.code != 1 {
		t.Errorf("header_from=envelope mismatch accepted: %s", r.stdout)
	}
}
