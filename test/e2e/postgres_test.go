package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/smtp"
	"net/textproto"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/internal/smtpsink"
)

// startPostgres starts a throwaway PostgreSQL cluster (test/pg/instance.sh:
// initdb under a temp dir, run as the postgres user on a loopback port) and
// returns it with the environment that points mailgate at it.
func startPostgres(t *testing.T) (*instance, []string) {
	t.Helper()
	pg := startInstance(t, "../pg/instance.sh", "PG_DIR", "pg_ctlcluster", "postgresql")
	return pg, []string{"MAILGATE_ACCOUNT_PROVISIONER=postgres", "MAILGATE_DATABASE_URL=" + pg.vars["DATABASE_URL"]}
}

// Issue 7: the engine fixture imported with `mailgate import` answers every
// `check send` and `check route` as the files do.
func TestPostgresImportAnswersAsFiles(t *testing.T) {
	_, env := startPostgres(t)
	files := configDir(t, nil)
	db := t.TempDir()
	if r := run(t, db, env, "import", "../../testdata/dms"); r.code != 0 {
		t.Fatalf("import: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	logins := []string{user1, user2, user3, added, "nobody@localhost.localdomain"}
	addrs := []string{user1, user2, user3, added, "alias1@localhost.localdomain", "alias1+test@localhost.localdomain",
		"alias2@localhost.localdomain", "wildcard@localdomain2.com", "test123@localhost.localdomain",
		"prefixtest@localhost.localdomain", "noreply@external.example", "user1+tag@localhost.localdomain",
		"postmaster@localhost.localdomain", "postmaster@gmail.com", "nouser@localhost.localdomain", "someone@gmail.com",
		"ALIAS1@LocalHost.LocalDomain", "<>"}
	// The verdicts, without the provenance (file:line against table:id).
	type sendVerdict struct {
		Allowed bool
		Rule    string
		Reply   any
		Grant   string
		Owners  []string
	}
	send := func(dir string, e []string, login, sender string) sendVerdict {
		r := run(t, dir, e, "check", "send", "--json", login, sender)
		var d struct {
			Allowed bool
			Rule    string
			Reply   any
			Grant   *struct{ Login string }
			Owners  []struct{ Login string }
		}
		if err := json.Unmarshal([]byte(r.stdout), &d); err != nil {
			t.Fatalf("check send --json %s %s: %v\n%s%s", login, sender, err, r.stdout, r.stderr)
		}
		v := sendVerdict{Allowed: d.Allowed, Rule: d.Rule, Reply: d.Reply}
		if d.Grant != nil {
			v.Grant = d.Grant.Login
		}
		for _, o := range d.Owners {
			v.Owners = append(v.Owners, o.Login)
		}
		return v
	}
	type routeVerdict struct {
		Status string
		Reply  any
		Dest   []string
	}
	route := func(dir string, e []string, a string) routeVerdict {
		r := run(t, dir, e, "check", "route", "--json", a)
		var d struct {
			Status        string
			Reply         any
			Destinations  []struct{ Kind, Address string }
			Undeliverable []struct{ Kind, Address string }
		}
		if err := json.Unmarshal([]byte(r.stdout), &d); err != nil {
			t.Fatalf("check route --json %s: %v\n%s%s", a, err, r.stdout, r.stderr)
		}
		v := routeVerdict{Status: d.Status, Reply: d.Reply}
		for _, x := range append(d.Destinations, d.Undeliverable...) {
			v.Dest = append(v.Dest, x.Kind+" "+x.Address)
		}
		return v
	}
	n := 0
	for _, l := range logins {
		for _, s := range addrs {
			f, p := send(files, nil, l, s), send(db, env, l, s)
			if !reflect.DeepEqual(f, p) {
				t.Errorf("check send %s %s: files %+v, postgres %+v", l, s, f, p)
			}
			n++
		}
	}
	for _, a := range addrs[:len(addrs)-1] {
		f, p := route(files, nil, a), route(db, env, a)
		if !reflect.DeepEqual(f, p) {
			t.Errorf("check route %s: files %+v, postgres %+v", a, f, p)
		}
		n++
	}
	t.Logf("%d answers compared", n)

	// Provenance names the table and row.
	r := run(t, db, env, "check", "send", user1, "alias1@localhost.localdomain")
	if r.code != 0 || !strings.Contains(r.stdout, "postgres:aliases:") {
		t.Errorf("provenance: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// rcptProbe opens an SMTP session and answers the reply to RCPT TO:<rcpt>
// ("" for a 250).
func rcptProbe(addr, rcpt string) string {
	c, err := smtp.Dial(addr)
	if err != nil {
		return "dial: " + err.Error()
	}
	defer c.Close()
	if err := c.Hello("probe.example"); err != nil {
		return err.Error()
	}
	if err := c.Mail("sender@remote.example"); err != nil {
		return err.Error()
	}
	if err := c.Rcpt(rcpt); err != nil {
		var te *textproto.Error
		if errors.As(err, &te) {
			return fmt.Sprintf("%d %s", te.Code, te.Msg)
		}
		return err.Error()
	}
	c.Reset()
	c.Quit()
	return ""
}

// waitRcpt polls rcptProbe until its answer satisfies ok, and returns how
// long that took.
func waitRcpt(t *testing.T, addr, rcpt string, within time.Duration, what string, ok func(string) bool) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		got := rcptProbe(addr, rcpt)
		if ok(got) {
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("%s: RCPT %s at %s answered %q after %v", what, rcpt, addr, got, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Issue 7: two `mailgate serve` nodes on one database. A change through
// node A's CLI is honoured by node B within 1 s (LISTEN/NOTIFY); PostgreSQL
// stopped → both answer temporary failures; restarted → both recover.
func TestPostgresTwoNodes(t *testing.T) {
	pg, env := startPostgres(t)
	sink, err := smtpsink.Start(smtpsink.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.Close() })
	cfgA, cfgB := t.TempDir(), t.TempDir()
	if r := run(t, cfgA, env, "import", "../../testdata/dms"); r.code != 0 {
		t.Fatalf("import: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	var envArgs []string
	for _, e := range env {
		envArgs = append(envArgs, "--env", e)
	}
	start := func(cfg string) *serveProc {
		return startServe(t, cfg, filepath.Join(t.TempDir(), "data"), nil, append([]string{"--relay-host", sink.Addr()}, envArgs...)...)
	}
	a, b := start(cfgA), start(cfgB)
	nodes := map[string]*serveProc{"A": a, "B": b}

	const fresh = "newalias@localhost.localdomain"
	for name, p := range nodes {
		if got := rcptProbe(p.addr("smtp"), fresh); !strings.HasPrefix(got, "550 5.1.1") {
			t.Fatalf("node %s before the change: %q", name, got)
		}
	}
	if r := run(t, cfgA, env, "alias", "add", fresh, user1); r.code != 0 {
		t.Fatalf("alias add on node A: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	took := waitRcpt(t, b.addr("smtp"), fresh, time.Second, "node B after alias add on node A", func(s string) bool { return s == "" })
	t.Logf("node B honoured the new alias %v after the CLI returned", took)
	if r := submit(t, b, "submission", user1, fixturePassword, fresh, "someone@remote.example"); r.code != 0 {
		t.Errorf("node B: user1 sending as the new alias:\n%s", r.out)
	}

	// PostgreSQL stopped: both nodes answer temporary failures.
	pg.pause()
	for name, p := range nodes {
		waitRcpt(t, p.addr("smtp"), fresh, 5*time.Second, "node "+name+" with PostgreSQL down", func(s string) bool { return strings.HasPrefix(s, "451 4.3.0") })
		if r := submit(t, p, "submission", user1, fixturePassword, user1, "someone@remote.example"); r.code == 0 || !strings.Contains(r.out, "454 4.7.0") {
			t.Errorf("node %s: AUTH with PostgreSQL down: want 454 4.7.0:\n%s", name, r.out)
		}
		select {
		case <-p.done:
			t.Fatalf("node %s exited with PostgreSQL down:\n%s", name, p.log.String())
		default:
		}
	}

	// Restarted: both recover, without a restart of mailgate.
	pg.resume()
	for name, p := range nodes {
		took := waitRcpt(t, p.addr("smtp"), fresh, 15*time.Second, "node "+name+" after PostgreSQL restarted", func(s string) bool { return s == "" })
		t.Logf("node %s recovered %v after PostgreSQL restarted", name, took)
		if r := submit(t, p, "submission", user1, fixturePassword, fresh, "someone@remote.example"); r.code != 0 {
			t.Errorf("node %s after recovery:\n%s", name, r.out)
		}
	}
	// A change after the outage is still seen by both.
	if r := run(t, cfgB, env, "alias", "del", fresh, user1); r.code != 0 {
		t.Fatalf("alias del on node B: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	for name, p := range nodes {
		waitRcpt(t, p.addr("smtp"), fresh, time.Second, fmt.Sprintf("node %s after alias del", name), func(s string) bool { return strings.HasPrefix(s, "550 5.1.1") })
	}
}
