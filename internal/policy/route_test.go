package policy

import (
	"strings"
	"testing"

	"github.com/mailgate/mailgate/internal/conffile"
)

// dest renders destinations as "kind:address" for compact comparison.
func dest(ds []Destination) string {
	var out []string
	for _, d := range ds {
		out = append(out, string(d.Kind)+":"+d.Address)
	}
	return strings.Join(out, ",")
}

func TestRouteFixture(t *testing.T) {
	snap := load(t, nil, nil)
	cases := []struct {
		rcpt    string
		status  RouteStatus
		dests   string
		undeliv string
		pos     string // a file:line the first destination's chain names
	}{
		{"alias1@localhost.localdomain", Deliver, "mailbox:user1@localhost.localdomain", "", "postfix-virtual.cf:1"},
		{"alias1+test@localhost.localdomain", Deliver, "mailbox:user1+test@localhost.localdomain", "", "postfix-virtual.cf:1"},
		{"wildcard@localdomain2.com", Deliver, "mailbox:user1@localhost.localdomain", "", "postfix-virtual.cf:5"},
		{"test123@localhost.localdomain", Deliver, "mailbox:user1@localhost.localdomain", "", "postfix-regexp.cf:1"},
		{"nouser@localhost.localdomain", NotFound, "", "", ""},
		{"alias2@localhost.localdomain", NotFound, "", "unknown:external1@otherdomain.tld", ""},
		{"user2@otherdomain.tld", Deliver, "mailbox:user2@otherdomain.tld", "", "postfix-accounts.cf:2"},
		{"USER1@LOCALHOST.LOCALDOMAIN", Deliver, "mailbox:user1@localhost.localdomain", "", "postfix-accounts.cf:1"},
		{"user1+a+b@localhost.localdomain", Deliver, "mailbox:user1+a+b@localhost.localdomain", "", "postfix-accounts.cf:1"},
		{"someone@gmail.com", Remote, "forward:someone@gmail.com", "", ""},
		{"bounce-1@gmail.com", Remote, "forward:bounce-1@gmail.com", "", ""}, // regexp, but not managed
		{"postmaster@localhost.localdomain", Deliver, "mailbox:user1@localhost.localdomain", "", "postfix-regexp.cf:3"},
		{"prefixtest@localhost.localdomain", Deliver, "mailbox:user2@otherdomain.tld", "", "postfix-virtual.cf:6"},
		{"bounce@localhost.localdomain", NotFound, "", "unknown:external1@otherdomain.tld", ""},
	}
	for _, c := range cases {
		r := Route(snap, c.rcpt)
		if r.Status != c.status || dest(r.Destinations) != c.dests || dest(r.Undeliverable) != c.undeliv {
			t.Errorf("Route(%s) = %s [%s] undeliverable [%s]; want %s [%s] [%s]", c.rcpt, r.Status, dest(r.Destinations), dest(r.Undeliverable), c.status, c.dests, c.undeliv)
			continue
		}
		if c.status == NotFound {
			want := "550 5.1.1 <" + strings.ToLower(c.rcpt) + ">: Recipient address rejected: User unknown"
			if r.Reply == nil || r.Reply.String() != want {
				t.Errorf("Route(%s) reply %v, want %s", c.rcpt, r.Reply, want)
			}
		}
		if c.pos != "" {
			found := false
			for _, s := range r.Destinations[0].Chain {
				if s.Pos != nil && s.Pos.String() == c.pos {
					found = true
				}
			}
			if !found {
				t.Errorf("Route(%s) chain %v does not name %s", c.rcpt, r.Destinations[0].Chain, c.pos)
			}
		}
	}
}

func TestAccountBeatsCatchAll(t *testing.T) {
	snap := load(t, map[string]string{"postfix-virtual.cf": "@otherdomain.tld user1@localhost.localdomain\n"}, nil)
	if r := Route(snap, user2); r.Status != Deliver || dest(r.Destinations) != "mailbox:user2@otherdomain.tld" {
		t.Errorf("account must beat catch-all: %s %s", r.Status, dest(r.Destinations))
	}
	if r := Route(snap, "other@otherdomain.tld"); dest(r.Destinations) != "mailbox:user1@localhost.localdomain" {
		t.Errorf("catch-all: %s", dest(r.Destinations))
	}
	// The fixture's alias2 target external1@otherdomain.tld now reaches the catch-all.
	if r := Route(snap, "alias2@localhost.localdomain"); dest(r.Destinations) != "mailbox:user1@localhost.localdomain" {
		t.Errorf("alias2 through the catch-all: %s", dest(r.Destinations))
	}
}

func TestKeepACopyAndForward(t *testing.T) {
	snap := load(t, map[string]string{"postfix-virtual.cf": "user1@localhost.localdomain user1@localhost.localdomain,me@gmail.com\n"}, nil)
	r := Route(snap, user1)
	if r.Status != Deliver || dest(r.Destinations) != "mailbox:user1@localhost.localdomain,forward:me@gmail.com" {
		t.Fatalf("keep a copy: %s %s", r.Status, dest(r.Destinations))
	}
	// The alias still lets user1 send as itself, and gives no one else that right.
	if d := MaySend(snap, user1, user1); !d.Allowed {
		t.Errorf("user1 as itself: %+v", d)
	}
	// Extension carried into both targets.
	r = Route(snap, "user1+x@localhost.localdomain")
	if dest(r.Destinations) != "mailbox:user1+x@localhost.localdomain,forward:me+x@gmail.com" {
		t.Errorf("extension with keep-a-copy: %s", dest(r.Destinations))
	}
}

func TestLoopsAndLimits(t *testing.T) {
	snap := load(t, map[string]string{"postfix-virtual.cf": "a@localhost.localdomain b@localhost.localdomain\nb@localhost.localdomain c@localhost.localdomain\nc@localhost.localdomain a@localhost.localdomain\n"}, nil)
	r := Route(snap, "a@localhost.localdomain")
	if r.Status != TempFail || r.Reply.Code != 451 || r.Reply.Enhanced != "4.6.0" || !strings.Contains(r.Problem, "loop") {
		t.Fatalf("loop: %+v", r)
	}
	diags := Analyze(snap)
	loops := 0
	for _, d := range diags {
		if d.Severity == conffile.Error && strings.Contains(d.Msg, "alias loop") {
			loops++
		}
	}
	if loops != 3 {
		t.Errorf("Analyze found %d loops, want 3: %v", loops, diags)
	}
	// No one owns a looping alias.
	if d := MaySend(snap, user1, "a@localhost.localdomain"); d.Allowed {
		t.Errorf("loop alias owned: %+v", d)
	}

	// A chain of 25 aliases is deeper than 20 levels.
	var b strings.Builder
	for i := 0; i < 25; i++ {
		b.WriteString("d" + itoa(i) + "@localhost.localdomain d" + itoa(i+1) + "@localhost.localdomain\n")
	}
	b.WriteString("d25@localhost.localdomain user1@localhost.localdomain\n")
	snap = load(t, map[string]string{"postfix-virtual.cf": b.String()}, nil)
	if r := Route(snap, "d0@localhost.localdomain"); r.Status != TempFail || !strings.Contains(r.Problem, "deeper") {
		t.Errorf("depth: %+v", r)
	}
	if r := Route(snap, "d10@localhost.localdomain"); r.Status != Deliver {
		t.Errorf("d10 is 16 levels deep and fine: %+v", r)
	}

	// 40 × 40 fan-out exceeds 1000 addresses.
	b.Reset()
	for i := 0; i < 40; i++ {
		b.WriteString("fan@localhost.localdomain f" + itoa(i) + "@localhost.localdomain\n")
		for j := 0; j < 40; j++ {
			b.WriteString("f" + itoa(i) + "@localhost.localdomain g" + itoa(i) + "x" + itoa(j) + "@gmail.com\n")
		}
	}
	snap = load(t, map[string]string{"postfix-virtual.cf": b.String()}, nil)
	if r := Route(snap, "fan@localhost.localdomain"); r.Status != TempFail || !strings.Contains(r.Problem, "1000") {
		t.Errorf("fan-out: %s %s", r.Status, r.Problem)
	}
}

func itoa(i int) string {
	const digits = "0123456789"
	if i < 10 {
		return digits[i : i+1]
	}
	return itoa(i/10) + digits[i%10:i%10+1]
}

func TestAnalyzeFixture(t *testing.T) {
	snap := load(t, nil, nil)
	diags := Analyze(snap)
	var msgs []string
	for _, d := range diags {
		msgs = append(msgs, d.Error())
	}
	got := strings.Join(msgs, "\n")
	if !strings.Contains(got, "postfix-virtual.cf:4: alias2@localhost.localdomain: target external1@otherdomain.tld resolves to nothing") {
		t.Errorf("dangling target of alias2 not reported:\n%s", got)
	}
	for _, d := range diags {
		if d.Severity == conffile.Error {
			t.Errorf("unexpected error: %s", d.Error())
		}
	}
}

func TestLocalNames(t *testing.T) {
	snap := load(t, map[string]string{
		"postfix-aliases.cf": "abuse: user1@localhost.localdomain\n",
		"postfix-virtual.cf": "webmaster user3@localhost.localdomain\n",
	}, map[string]string{"postmaster_address": "user2@otherdomain.tld"})
	cases := map[string]string{
		"abuse@mail.example.test":     "mailbox:user1@localhost.localdomain",
		"webmaster@mail.example.test": "mailbox:user3@localhost.localdomain",
		"root@mail.example.test":      "mailbox:user2@otherdomain.tld",
		"postmaster@localhost":        "mailbox:user2@otherdomain.tld",
		"abuse+x@mail.example.test":   "mailbox:user1+x@localhost.localdomain",
	}
	for rcpt, want := range cases {
		if r := Route(snap, rcpt); dest(r.Destinations) != want {
			t.Errorf("Route(%s) = %s %s, want %s", rcpt, r.Status, dest(r.Destinations), want)
		}
	}
	if r := Route(snap, "nobody@mail.example.test"); r.Status != NotFound {
		t.Errorf("unknown local name: %+v", r)
	}
}

func TestExcludedDomains(t *testing.T) {
	snap := load(t, nil, map[string]string{"excluded_domains": "localdomain2.com, otherdomain.tld"})
	if snap.IsManaged("localdomain2.com") || snap.IsManaged("otherdomain.tld") {
		t.Fatal("excluded domains are managed")
	}
	if r := Route(snap, "wildcard@localdomain2.com"); r.Status != Remote {
		t.Errorf("excluded catch-all domain: %+v", r)
	}
	// user2's account still logs in and owns its address.
	if d := MaySend(snap, user2, user2); !d.Allowed {
		t.Errorf("account in an excluded domain: %+v", d)
	}
	// prefixtest's target user2@otherdomain.tld is now an external forward.
	if r := Route(snap, "prefixtest@localhost.localdomain"); dest(r.Destinations) != "forward:user2@otherdomain.tld" {
		t.Errorf("forward to excluded domain: %s", dest(r.Destinations))
	}
}

func TestInvalidInputs(t *testing.T) {
	snap := load(t, nil, nil)
	for _, s := range []string{"", "@", "a@b@c", "@a:u@b", "u@[127.0.0.1]", "alice@example.com\u2000", "x\x00@localhost.localdomain",
		"user1@localhost.localdomain.", strings.Repeat("a", 65) + "@localhost.localdomain", "\u202euser1@localhost.localdomain"} {
		if r := Route(snap, s); r.Status != Invalid || r.Reply == nil || r.Reply.Code != 501 {
			t.Errorf("Route(%q) = %+v", s, r)
		}
		if d := MaySend(snap, user1, s); d.Allowed && s != "" {
			t.Errorf("MaySend(user1, %q) allowed", s)
		}
		if d := MaySend(snap, s, user1); d.Allowed {
			t.Errorf("MaySend(%q, user1) allowed", s)
		}
	}
}

// Review findings: restrictions cover +tag, local names grant no sending,
// an alias loop is a temporary failure for MaySend too, bare regexp results
// get the host name, restrictions are not reported as broken aliases.
func TestRestrictionsAndEdgeCases(t *testing.T) {
	snap := load(t, map[string]string{
		"postfix-receive-access.cf": "user1@localhost.localdomain REJECT\n",
		"postfix-send-access.cf":    "alias1@localhost.localdomain REJECT\n",
		"postfix-virtual.cf":        "webmaster user1@localhost.localdomain\nloop1@localhost.localdomain loop2@localhost.localdomain\nloop2@localhost.localdomain loop1@localhost.localdomain,user1@localhost.localdomain\n",
		"postfix-regexp.cf":         "/^rx-(.*)@localhost\\.localdomain$/ postmaster\n",
	}, map[string]string{"postmaster_address": "user3@localhost.localdomain"})
	if r := Route(snap, "user1+x@localhost.localdomain"); r.Status != Rejected {
		t.Errorf("receive restriction with +tag: %s", r.Status)
	}
	if d := MaySend(snap, user1, "alias1+x@localhost.localdomain"); d.Allowed || d.Rule != RuleRestricted {
		t.Errorf("send restriction with +tag: %+v", d)
	}
	if d := MaySend(snap, user1, "webmaster@mail.example.test"); d.Allowed {
		t.Errorf("a local name granted sending: %+v", d)
	}
	if d := MaySend(snap, user1, "loop1@localhost.localdomain"); d.Allowed || d.Reply.Code != 451 || d.Reply.Enhanced != "4.6.0" {
		t.Errorf("looping alias: %+v", d.Reply)
	}
	if r := Route(snap, "rx-a@localhost.localdomain"); dest(r.Destinations) != "mailbox:user3@localhost.localdomain" {
		t.Errorf("bare regexp result: %s %s %v", r.Status, dest(r.Destinations), r.Undeliverable)
	}
	for _, d := range Analyze(snap) {
		if strings.Contains(d.Msg, "receive restriction") {
			t.Errorf("restriction reported as a broken alias: %s", d.Error())
		}
	}
}
