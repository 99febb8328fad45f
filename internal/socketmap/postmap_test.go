package socketmap

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/internal/address"
	"github.com/mailgate/mailgate/internal/policy"
)

// postmapBin finds Postfix's postmap; without it the test is skipped, unless
// CI=true, where it fails.
func postmapBin(t *testing.T) string {
	t.Helper()
	for _, cand := range []string{"postmap", "/usr/sbin/postmap", "/usr/local/sbin/postmap"} {
		if p, err := exec.LookPath(cand); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("CI=true but postmap is not installed (install postfix)")
	}
	t.Skip("postmap not found (install postfix)")
	return ""
}

// postmapQuery runs "postmap -q KEY socketmap:inet:ADDR:TABLE" with an empty
// configuration directory; found is false for exit status 1 (not found).
func postmapQuery(t *testing.T, bin, conf, addr, table, key string) (value string, found bool) {
	t.Helper()
	cmd := exec.Command(bin, "-c", conf, "-q", key, "socketmap:inet:"+addr+":"+table)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok && ee.ExitCode() == 1 && errb.Len() == 0 {
		return "", false
	}
	if err != nil {
		t.Fatalf("postmap -q %q %s: %v: %s", key, table, err, errb.String())
	}
	return strings.TrimSuffix(out.String(), "\n"), true
}

// TestPostmapClient uses Postfix's own socketmap client (postmap -q) and
// compares its answers with policy.Route and policy.Owners — the functions
// behind `mailgate check route` and `check send` — for a corpus of
// addresses of the docker-mailserver fixture.
func TestPostmapClient(t *testing.T) {
	bin := postmapBin(t)
	conf := t.TempDir()
	if err := os.WriteFile(filepath.Join(conf, "main.cf"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	snap := fixtureSnapshot(t)
	ts := startServer(t, snap, 0)
	// postmap must find the socketmap type: probe once.
	if _, found := postmapQuery(t, bin, conf, ts.addr, "domains", "localhost.localdomain"); !found {
		t.Fatalf("postmap probe: not found")
	}
	_, port, _ := net.SplitHostPort(ts.addr)
	addr := "127.0.0.1:" + port

	corpus := []string{
		"alias1@localhost.localdomain", "alias1+test@localhost.localdomain", "ALIAS1@LOCALHOST.LOCALDOMAIN",
		"alias2@localhost.localdomain", "wildcard@localdomain2.com", "anything+x@localdomain2.com",
		"test123@localhost.localdomain", "test@localhost.localdomain", "prefixtest@localhost.localdomain",
		"first.name@localhost.localdomain", "first-name@localhost.localdomain", "bounce-me@localhost.localdomain",
		"postmaster@localhost.localdomain", "user1@localhost.localdomain", "user1+test@localhost.localdomain",
		"user2@otherdomain.tld", "user3@localhost.localdomain", "added@localhost.localdomain",
		"nouser@localhost.localdomain", "someone@gmail.com", "noreply@external.example",
		"info@bücher.example", "info@xn--bcher-kva.example", "copy@loop.example", "team@loop.example",
		"closed@loop.example", "external1@otherdomain.tld",
	}
	for _, key := range corpus {
		a, err := address.Parse(key, address.Options{UTF8Local: true})
		if err != nil {
			t.Fatalf("corpus %q: %v", key, err)
		}
		// aliases: OK with the destinations of Route for deliver, else not found.
		route := policy.RouteAddress(snap, a)
		got, found := postmapQuery(t, bin, conf, addr, "aliases", key)
		var want []string
		if route.Status == policy.Deliver {
			for _, d := range route.Destinations {
				want = append(want, d.Address)
			}
		}
		if found != (len(want) > 0) || got != strings.Join(want, ",") {
			t.Errorf("aliases %q: postmap = %q (found %v), Route = %s %v", key, got, found, route.Status, want)
		}
		// Every destination is a fixed point for Postfix's recursion: it maps
		// to a list containing itself, or is not found.
		for _, d := range want {
			v, f := postmapQuery(t, bin, conf, addr, "aliases", d)
			if f && !slices.Contains(strings.Split(v, ","), d) {
				t.Errorf("aliases %q: destination %q maps on to %q", key, d, v)
			}
		}
		// senders: the logins of Owners.
		var logins []string
		owners, err := policy.Owners(snap, a)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range owners {
			logins = append(logins, o.Login)
		}
		got, found = postmapQuery(t, bin, conf, addr, "senders", key)
		if found != (len(logins) > 0) || got != strings.Join(logins, ",") {
			t.Errorf("senders %q: postmap = %q (found %v), Owners = %v", key, got, found, logins)
		}
		// mailboxes: the Maildir of the mailbox Route delivers to, when the
		// address itself is a mailbox destination.
		got, found = postmapQuery(t, bin, conf, addr, "mailboxes", key)
		for _, d := range route.Destinations {
			if d.Kind == policy.Mailbox && d.Address == a.String() {
				m, _ := address.Parse(d.Mailbox, address.Options{UTF8Local: true})
				if w := m.Domain + "/" + m.Local + "/"; !found || got != w {
					t.Errorf("mailboxes %q: postmap = %q (found %v), want %q", key, got, found, w)
				}
			}
		}
		// domains
		got, found = postmapQuery(t, bin, conf, addr, "domains", a.Domain)
		if found != snap.IsManaged(a.Domain) || found && got != a.Domain {
			t.Errorf("domains %q: postmap = %q (found %v)", a.Domain, got, found)
		}
	}

	// Backend down: postmap reports a lookup error, never a value.
	ts.snap.Store(nil)
	cmd := exec.Command(bin, "-c", conf, "-q", "alias1@localhost.localdomain", "socketmap:inet:"+addr+":aliases")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "temporary") {
		t.Errorf("backend down: postmap %v: %s", err, out)
	}
}
