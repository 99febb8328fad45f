package policy

import (
	"errors"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/internal/address"
	"github.com/mailgate/mailgate/internal/conffile"
	"github.com/mailgate/mailgate/internal/directory"
	"github.com/mailgate/mailgate/internal/settings"
)

// fakeExt is an External source in memory with the shape of DMS's LDAP test
// data; down makes every call fail as a server that is not there.
type fakeExt struct {
	accounts map[string]string   // mail → uid
	aliases  map[string][]string // mailAlias / mailGroupMember → mail
	senders  []string            // owners of every address (a senders filter ending in (userID=…))
	logins   map[string]string   // more logins → addresses (found by the login filter only)
	down     bool
}

var errDown = &directory.TempError{Source: "fake", Err: errors.New("connection refused")}

func (f *fakeExt) pos(mail string) conffile.Pos {
	return conffile.Pos{File: "ldap uid=" + f.accounts[mail] + ",ou=users"}
}

func (f *fakeExt) Account(a address.Address) (directory.ExtAccount, bool, error) {
	if f.down {
		return directory.ExtAccount{}, false, errDown
	}
	_, ok := f.accounts[a.String()]
	return directory.ExtAccount{Pos: f.pos(a.String())}, ok, nil
}

func (f *fakeExt) Aliases(k conffile.Key) ([]directory.ExtTarget, error) {
	if f.down {
		return nil, errDown
	}
	var out []directory.ExtTarget
	for _, m := range f.aliases[k.String()] {
		out = append(out, directory.ExtTarget{Address: address.Address{Local: m[:strings.IndexByte(m, '@')], Domain: m[strings.IndexByte(m, '@')+1:]}, Pos: f.pos(m)})
	}
	return out, nil
}

func (f *fakeExt) Domain(d string) (bool, error) {
	if f.down {
		return false, errDown
	}
	for m := range f.accounts {
		if strings.HasSuffix(m, "@"+d) {
			return true, nil
		}
	}
	for k := range f.aliases {
		if strings.HasSuffix(k, "@"+d) {
			return true, nil
		}
	}
	return false, nil
}

func (f *fakeExt) Senders(address.Address) ([]directory.ExtTarget, error) {
	if f.down {
		return nil, errDown
	}
	var out []directory.ExtTarget
	for _, m := range f.senders {
		a, _ := address.Parse(m, address.Options{})
		out = append(out, directory.ExtTarget{Address: a, Pos: f.pos(m)})
	}
	return out, nil
}

func (f *fakeExt) Login(login string) (address.Address, conffile.Pos, bool, error) {
	if f.down {
		return address.Address{}, conffile.Pos{}, false, errDown
	}
	for m, uid := range f.accounts {
		if login == m || login == uid {
			a, _ := address.Parse(m, address.Options{})
			return a, f.pos(m), true, nil
		}
	}
	if m, ok := f.logins[login]; ok {
		a, _ := address.Parse(m, address.Options{})
		return a, conffile.Pos{File: "ldap uid=" + login}, true, nil
	}
	return address.Address{}, conffile.Pos{}, false, nil
}

func (f *fakeExt) Authenticate(login, password string) (address.Address, error) {
	a, _, ok, err := f.Login(login)
	if err != nil {
		return a, err
	}
	if !ok || password != "secret" {
		return address.Address{}, directory.ErrBadCredentials
	}
	return a, nil
}

// ldapSnap is a snapshot of files beside a fake LDAP source, as with
// account_provisioner = ldap.
func ldapSnap(t *testing.T, files map[string]string, ext *fakeExt) *directory.Snapshot {
	t.Helper()
	s, err := settings.Load(t.TempDir(), func(string) (string, bool) { return "", false },
		map[string]string{"hostname": "mail.example.test", "account_provisioner": "ldap",
			"ldap_server_host": "ldap://127.0.0.1:1", "ldap_search_base": "dc=example,dc=test"})
	if err != nil {
		t.Fatal(err)
	}
	b := map[string][]byte{}
	for k, v := range files {
		b[k] = []byte(v)
	}
	snap, err := directory.Build(b, s)
	if err != nil {
		t.Fatal(err)
	}
	snap.Ext = ext
	return snap
}

func dmsLDAP() *fakeExt {
	return &fakeExt{
		accounts: map[string]string{
			"some.user@localhost.localdomain":       "some.user",
			"some.other.user@localhost.otherdomain": "some.other.user",
			"some.user.email@localhost.localdomain": "some.user.id",
		},
		aliases: map[string][]string{
			"postmaster@localhost.localdomain": {"some.user@localhost.localdomain"},
			"employees@localhost.localdomain":  {"some.user@localhost.localdomain"},
			"postmaster@localhost.otherdomain": {"some.other.user@localhost.otherdomain"},
		},
	}
}

// TestExternalOwnership is issue 7's LDAP acceptance table on the engine:
// ownership is the union of users, aliases, groups, the senders filter and
// the file-based send-as grants.
func TestExternalOwnership(t *testing.T) {
	sendAs := map[string]string{conffile.SendAsFile: "noreply@external.example some.user@localhost.localdomain\n"}
	cases := []struct {
		senders       []string
		login, sender string
		want          int
	}{
		{nil, "some.user", "ldap@localhost.localdomain", 553},
		{nil, "some.user", "postmaster@localhost.localdomain", 250},
		{nil, "some.user@localhost.localdomain", "employees@localhost.localdomain", 250},
		{nil, "some.user", "some.user+tag@localhost.localdomain", 250},
		{nil, "some.user", "noreply@external.example", 250}, // postfix-send-as.cf beside LDAP
		{nil, "some.user.id", "randomspoofedaddress@localhost.localdomain", 553},
		{nil, "some.other.user", "postmaster@localhost.localdomain", 553},
		{nil, "nobody", "postmaster@localhost.localdomain", 535},
		// DMS's test senders filter makes some.user.id an owner of every address.
		{[]string{"some.user.email@localhost.localdomain"}, "some.user.id", "randomspoofedaddress@localhost.localdomain", 250},
		{[]string{"some.user.email@localhost.localdomain"}, "some.user", "ldap@localhost.localdomain", 553},
		{[]string{"some.user.email@localhost.localdomain"}, "some.user", "postmaster@localhost.localdomain", 250},
		{[]string{"some.user.email@localhost.localdomain"}, "some.user", "some.user+tag@localhost.localdomain", 250},
	}
	for _, c := range cases {
		ext := dmsLDAP()
		ext.senders = c.senders
		d := MaySend(ldapSnap(t, sendAs, ext), c.login, c.sender)
		if d.Reply.Code != c.want {
			t.Errorf("senders %v: MaySend(%s, %s) = %d %s (%s), want %d", c.senders, c.login, c.sender, d.Reply.Code, d.Reply.Text, d.Detail, c.want)
		}
		if c.want == 553 && !strings.Contains(d.Reply.Text, "not owned by user "+c.login) {
			t.Errorf("MaySend(%s, %s) text %q", c.login, c.sender, d.Reply.Text)
		}
	}
}

func TestExternalRoute(t *testing.T) {
	files := map[string]string{conffile.VirtualFile: "team@localhost.localdomain postmaster@localhost.localdomain\n"}
	snap := ldapSnap(t, files, dmsLDAP())
	for rcpt, want := range map[string]string{
		"postmaster@localhost.localdomain":      "some.user@localhost.localdomain",
		"employees@localhost.localdomain":       "some.user@localhost.localdomain",
		"some.user+x@localhost.localdomain":     "some.user@localhost.localdomain",
		"team@localhost.localdomain":            "some.user@localhost.localdomain", // file alias → LDAP alias
		"some.user.email@localhost.localdomain": "some.user.email@localhost.localdomain",
	} {
		res := Route(snap, rcpt)
		if res.Status != Deliver || len(res.Destinations) != 1 || res.Destinations[0].Mailbox != want {
			t.Errorf("Route(%s) = %s %+v, want mailbox %s", rcpt, res.Status, res.Destinations, want)
		}
	}
	if res := Route(snap, "nobody@localhost.localdomain"); res.Status != NotFound {
		t.Errorf("unknown: %s", res.Status)
	}
	if res := Route(snap, "someone@elsewhere.example"); res.Status != Remote {
		t.Errorf("remote: %s", res.Status)
	}
}

// TestExternalDown: a source that fails gives 451 4.3.0 everywhere, never a
// verdict; a snapshot marked unavailable does the same.
func TestExternalDown(t *testing.T) {
	ext := dmsLDAP()
	snap := ldapSnap(t, nil, ext)
	ext.down = true
	check := func(what string, r *Reply) {
		t.Helper()
		if r == nil || r.Code != 451 || r.Enhanced != "4.3.0" {
			t.Errorf("%s: reply %v, want 451 4.3.0", what, r)
		}
	}
	res := Route(snap, "postmaster@localhost.localdomain")
	check("Route", res.Reply)
	if res.Status != TempFail || len(res.Destinations) != 0 {
		t.Errorf("Route while down: %s %+v", res.Status, res.Destinations)
	}
	d := MaySend(snap, "some.user", "postmaster@localhost.localdomain")
	check("MaySend", &d.Reply)
	if d.Allowed {
		t.Error("allowed while down")
	}
	if _, err := Owners(snap, address.Address{Local: "a", Domain: "localhost.localdomain"}); !directory.IsTemp(err) {
		t.Errorf("Owners while down: %v", err)
	}
	sub := CheckSubmission(snap, "some.user", "some.user@localhost.localdomain", []byte("From: <postmaster@localhost.localdomain>\r\n\r\nhi\r\n"))
	check("CheckSubmission", &sub.Reply)

	ext.down = false
	if res := Route(snap, "postmaster@localhost.localdomain"); res.Status != Deliver {
		t.Errorf("after recovery: %s", res.Status)
	}
	files := load(t, nil, nil)
	c := *files
	c.Unavailable = errDown
	check("unavailable Route", Route(&c, "user1@localhost.localdomain").Reply)
	d = MaySend(&c, "user1@localhost.localdomain", "user1@localhost.localdomain")
	check("unavailable MaySend", &d.Reply)
}

// A login that the login filter finds but the user filter does not is no
// account: it owns nothing, not even its own address.
func TestExternalLoginMustBeAccount(t *testing.T) {
	ext := dmsLDAP()
	ext.logins = map[string]string{"disabled.user": "disabled@localhost.localdomain"}
	d := MaySend(ldapSnap(t, nil, ext), "disabled.user", "disabled@localhost.localdomain")
	if d.Allowed || d.Reply.Code != 535 || d.Rule != RuleUnknownLogin {
		t.Errorf("login outside the user filter: %+v", d)
	}
}
