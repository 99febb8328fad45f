package policy

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/mailgate/mailgate/internal/address"
	"github.com/mailgate/mailgate/internal/conffile"
	"github.com/mailgate/mailgate/internal/directory"
	"github.com/mailgate/mailgate/internal/settings"
)

// FuzzEngine builds a directory from fuzzed postfix-virtual.cf,
// postfix-regexp.cf and postfix-send-as.cf (beside the fixture's accounts)
// and asks Route and MaySend about fuzzed addresses. Whatever the input:
// no panic; a mailbox destination is always an account; an allowed send
// (spoof protection on) always has the login among the sender's owners; a
// denial never comes with a 2xx reply.
func FuzzEngine(f *testing.F) {
	accounts, err := os.ReadFile(filepath.Join(fixtureDir, conffile.AccountsFile))
	if err != nil {
		f.Fatal(err)
	}
	f.Add("alias1@localhost.localdomain user1@localhost.localdomain\n@localdomain2.com user1@localhost.localdomain\n",
		"/^test[0-9]+@localhost.localdomain/ user1@localhost.localdomain\n",
		"user3@localhost.localdomain user1@localhost.localdomain\n",
		"alias1+x@localhost.localdomain", "user1@localhost.localdomain")
	f.Add("a@localhost.localdomain b@localhost.localdomain\nb@localhost.localdomain a@localhost.localdomain\n", "", "", "a@localhost.localdomain", "user2@otherdomain.tld")
	f.Add("user1@localhost.localdomain user1@localhost.localdomain,me@gmail.com\n", "/^(.*)@x.example$/ $1@localhost.localdomain\n", "@x.example user2@otherdomain.tld\n", "user1+a+b@localhost.localdomain", "user3@localhost.localdomain")
	s, err := settings.Load(f.TempDir(), func(string) (string, bool) { return "", false }, map[string]string{"hostname": "mail.example.test", "recipient_delimiter": "+-"})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, virtual, regexp, sendAs, addr, login string) {
		snap, err := directory.Build(map[string][]byte{
			conffile.AccountsFile: accounts,
			conffile.VirtualFile:  []byte(virtual),
			conffile.RegexpFile:   []byte(regexp),
			conffile.SendAsFile:   []byte(sendAs),
		}, s)
		if err != nil {
			return
		}
		r := Route(snap, addr)
		for _, d := range r.Destinations {
			if d.Kind == Mailbox {
				if _, ok := snap.Accounts[mustAddr(t, d.Mailbox)]; !ok {
					t.Fatalf("Route(%q) delivers to %s, which is not an account", addr, d.Mailbox)
				}
			}
		}
		switch r.Status {
		case Deliver, Remote:
			if len(r.Destinations) == 0 || r.Reply != nil {
				t.Fatalf("Route(%q): status %s with %d destinations and reply %v", addr, r.Status, len(r.Destinations), r.Reply)
			}
		default:
			if r.Reply == nil || r.Reply.Code < 400 {
				t.Fatalf("Route(%q): status %s without an error reply", addr, r.Status)
			}
		}
		d := MaySend(snap, login, addr)
		if d.Allowed != (d.Reply.Code == 250) {
			t.Fatalf("MaySend(%q, %q): allowed %v with reply %s", login, addr, d.Allowed, d.Reply)
		}
		if d.Allowed && d.Rule != RuleNullSender {
			sender := mustAddr(t, d.Sender)
			found := false
			owners, err := Owners(snap, sender)
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range owners {
				found = found || o.Login == d.Login
			}
			if !found {
				t.Fatalf("MaySend(%q, %q) allowed, but %s is not among the owners", login, addr, d.Login)
			}
		}
	})
}

func mustAddr(t *testing.T, s string) address.Address {
	a, err := address.Parse(s, address.Options{UTF8Local: true})
	if err != nil {
		t.Fatalf("%q: %v", s, err)
	}
	return a
}
