package e2e

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/internal/smtpsink"
)

// DMS's LDAP test senders filter: it ends in (userID=some.user.id), which
// makes some.user.id an owner of every address ("this login may send as
// anyone").
const dmsTestSendersFilter = `(| (& (|(mail=%s) (mailAlias=%s) (mailGroupMember=%s)) (&(objectClass=PostfixBookMailAccount)(mailEnabled=TRUE)) ) (&(mailAlias=%s)(objectClass=PostfixBookMailForward)) (userID=some.user.id))`

// serveLDAP starts mailgate serve on a throwaway slapd with DMS's LDAP test
// data, configured through DMS's own environment names.
func serveLDAP(t *testing.T, ld *instance, sink *smtpsink.Sink, cfg, data string, more ...string) *serveProc {
	t.Helper()
	args := []string{"--relay-host", sink.Addr(),
		"--env", "ACCOUNT_PROVISIONER=LDAP",
		"--env", "LDAP_SERVER_HOST=" + ld.vars["LDAP_SERVER_HOST"],
		"--env", "LDAP_SEARCH_BASE=" + ld.vars["LDAP_SEARCH_BASE"],
		"--env", "LDAP_BIND_DN=" + ld.vars["LDAP_BIND_DN"],
		"--env", "LDAP_BIND_PW=" + ld.vars["LDAP_BIND_PW"],
		"--env", "LDAP_START_TLS=no",
		// A short cache, so that the outage below is seen within 1 s.
		"--env", "MAILGATE_LDAP_CACHE_TTL=1s",
		"--env", "MAILGATE_LDAP_TIMEOUT=2s",
	}
	return startServe(t, cfg, data, nil, append(args, more...)...)
}

// Issue 7, LDAP acceptance: ownership is the union of users, aliases,
// groups and the senders filter; AUTH by bind with an address or a uid;
// inbound through an LDAP alias; slapd stopped → temporary failures,
// restarted → service resumes without a restart of mailgate.
func TestLDAPServe(t *testing.T) {
	ld := startInstance(t, "../ldap/instance.sh", "LDAP_DIR", "slapd", "slapd")
	sink, err := smtpsink.Start(smtpsink.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.Close() })
	// postfix-send-as.cf still applies beside LDAP.
	cfg := emptyConfig(t, map[string]string{"postfix-send-as.cf": "noreply@external.example some.user@localhost.localdomain\n"})
	data := filepath.Join(t.TempDir(), "data")
	p := serveLDAP(t, ld, sink, cfg, data)

	const d = "@localhost.localdomain"
	type sub struct {
		login, from string
		ok          bool
	}
	defaults := []sub{
		{"some.user" + d, "ldap" + d, false},
		{"some.user" + d, "postmaster" + d, true},       // alias
		{"some.user", "employees" + d, true},            // group, uid login
		{"some.user", "some.user+tag" + d, true},        // extension of the account
		{"some.user", "noreply@external.example", true}, // file grant
		{"some.user.id", "randomspoofedaddress" + d, false},
		{"some.user.id", "some.user.email" + d, true},
	}
	check := func(p *serveProc, cases []sub) {
		t.Helper()
		for _, listener := range []string{"submissions", "submission"} {
			for _, c := range cases {
				r := submit(t, p, listener, c.login, "secret", c.from, "someone@remote.example")
				switch {
				case c.ok && r.code != 0:
					t.Errorf("%s: %s as %s refused:\n%s", listener, c.login, c.from, r.out)
				// The reply names the login as given, a uid too (as
				// Postfix names the SASL login).
				case !c.ok && (r.code == 0 || !strings.Contains(r.out, "553 5.7.1 <"+c.from+">: Sender address rejected: not owned by user "+c.login)):
					t.Errorf("%s: %s as %s: want 553 not owned by user:\n%s", listener, c.login, c.from, r.out)
				}
			}
		}
	}
	check(p, defaults)

	// The CLI asks the same source: check send names the LDAP entry.
	env := []string{"ACCOUNT_PROVISIONER=LDAP", "LDAP_SERVER_HOST=" + ld.vars["LDAP_SERVER_HOST"], "LDAP_SEARCH_BASE=" + ld.vars["LDAP_SEARCH_BASE"],
		"LDAP_BIND_DN=" + ld.vars["LDAP_BIND_DN"], "LDAP_BIND_PW=" + ld.vars["LDAP_BIND_PW"]}
	if r := run(t, cfg, env, "check", "send", "some.user", "postmaster"+d); r.code != 0 || !strings.Contains(r.stdout, "uid=some.user,ou=users,dc=example,dc=test") {
		t.Errorf("check send with LDAP: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := run(t, cfg, env, "check", "route", "employees"+d); r.code != 0 || !strings.Contains(r.stdout, "mailbox some.user"+d) {
		t.Errorf("check route with LDAP: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := run(t, cfg, env, "email", "add", "new@localhost.localdomain", "pw123456"); r.code != 1 || !strings.Contains(r.stderr, "the accounts are in LDAP") {
		t.Errorf("email add with LDAP must refuse: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := run(t, cfg, env, "config", "check"); r.code != 0 {
		t.Errorf("config check with LDAP: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := submit(t, p, "submission", "some.user", "wrong", "some.user"+d, "someone@remote.example"); r.code == 0 || !strings.Contains(r.out, "535 5.7.8") {
		t.Errorf("wrong password: want 535 5.7.8:\n%s", r.out)
	}

	inbound := func(marker string) swaksResult {
		return swaks(t, "--server", p.addr("smtp"), "--from", "sender@remote.example", "--to", "postmaster"+d,
			"--header", "Subject: "+marker, "--body", marker)
	}
	if r := inbound("ldap-inbound-1"); r.code != 0 {
		t.Fatalf("inbound to postmaster%s:\n%s", d, r.out)
	}
	waitMaildir(t, data, "some.user"+d, "ldap-inbound-1", 10*time.Second)

	// slapd stopped: temporary failures, never an accept, never a crash.
	ld.pause()
	time.Sleep(1500 * time.Millisecond) // past the 1 s cache
	if r := inbound("ldap-down"); r.code == 0 || !strings.Contains(r.out, "451 4.3.0") {
		t.Errorf("inbound while slapd is down: want 451 4.3.0:\n%s", r.out)
	}
	if r := submit(t, p, "submission", "some.user", "secret", "postmaster"+d, "someone@remote.example"); r.code == 0 || !strings.Contains(r.out, "454 4.7.0") {
		t.Errorf("AUTH while slapd is down: want 454 4.7.0:\n%s", r.out)
	}
	select {
	case <-p.done:
		t.Fatalf("mailgate exited while slapd was down:\n%s", p.log.String())
	default:
	}
	if r := run(t, cfg, env, "check", "send", "some.user", "postmaster"+d); r.code == 0 || !strings.Contains(r.stderr+r.stdout, "451 4.3.0") {
		t.Errorf("check send while slapd is down: want 451 4.3.0: %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	// slapd back: service resumes.
	ld.resume()
	deadline := time.Now().Add(15 * time.Second)
	for {
		r := inbound("ldap-inbound-2")
		if r.code == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("inbound after slapd came back:\n%s", r.out)
		}
		time.Sleep(250 * time.Millisecond)
	}
	waitMaildir(t, data, "some.user"+d, "ldap-inbound-2", 10*time.Second)
	check(p, defaults[:2])

	// DMS's test senders filter: some.user.id may send as anyone; the other
	// answers are unchanged.
	p.stop()
	p2 := serveLDAP(t, ld, sink, cfg, data, "--env", "LDAP_QUERY_FILTER_SENDERS="+dmsTestSendersFilter)
	withSenders := append([]sub(nil), defaults...)
	for i := range withSenders {
		if withSenders[i].from == "randomspoofedaddress"+d {
			withSenders[i].ok = true
		}
	}
	check(p2, withSenders)
}
