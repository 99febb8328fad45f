package directory

import (
	"errors"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/internal/address"
	"github.com/mailgate/mailgate/internal/conffile"
	"github.com/mailgate/mailgate/internal/settings"
)

func testSettings(t *testing.T, set map[string]string) *settings.Settings {
	t.Helper()
	if set == nil {
		set = map[string]string{}
	}
	set["hostname"] = "mail.example.test"
	s, err := settings.Load(t.TempDir(), func(string) (string, bool) { return "", false }, set)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func rendered(file string, ids []int, lines ...string) Rendered {
	r := Rendered{Text: strings.Join(lines, "\n") + "\n"}
	for _, id := range ids {
		r.Origins = append(r.Origins, conffile.Pos{File: "postgres:" + file, Line: id})
	}
	return r
}

// Every position of a snapshot built from rendered tables names the row,
// diagnostics included.
func TestBuildRenderedOrigins(t *testing.T) {
	files := map[string]Rendered{
		conffile.AccountsFile:      rendered("accounts", []int{7, 9}, "a@example.test|{SHA512-CRYPT}$6$x$y", "b@example.test|{SHA512-CRYPT}$6$x$y"),
		conffile.VirtualFile:       rendered("aliases", []int{3, 4}, "x@example.test a@example.test", "x@example.test b@example.test"),
		conffile.RegexpFile:        rendered("regexp_aliases", []int{12}, "/^r-/ a@example.test"),
		conffile.SendAsFile:        rendered("send_as", []int{5}, "@other.example a@example.test"),
		conffile.SendAccessFile:    rendered("send_restrictions", []int{2}, "b@example.test REJECT"),
		conffile.ReceiveAccessFile: rendered("receive_restrictions", []int{8}, "a@example.test REJECT"),
		conffile.LocalAliasesFile:  rendered("local_aliases", []int{6}, "root: a@example.test"),
	}
	snap, err := BuildRendered(files, testSettings(t, nil))
	if err != nil {
		t.Fatal(err)
	}
	a := address.Address{Local: "a", Domain: "example.test"}
	b := address.Address{Local: "b", Domain: "example.test"}
	check := func(what string, got conffile.Pos, want string) {
		t.Helper()
		if got.String() != want {
			t.Errorf("%s at %s, want %s", what, got, want)
		}
	}
	check("account a", snap.Accounts[a].Pos, "postgres:accounts:7")
	check("account b", snap.Accounts[b].Pos, "postgres:accounts:9")
	al := snap.Aliases[conffile.Key{Local: "x", Domain: "example.test"}]
	check("alias x", al.Lines[0], "postgres:aliases:3")
	check("alias x, merged", al.Lines[1], "postgres:aliases:4")
	check("regexp", snap.RegexpPos(1), "postgres:regexp_aliases:12")
	check("grant", snap.SendAs[conffile.Key{Domain: "other.example"}][0].Pos, "postgres:send_as:5")
	check("send restriction", snap.SendRestrict[b], "postgres:send_restrictions:2")
	check("receive restriction", snap.RecvRestrict[a], "postgres:receive_restrictions:8")
	check("local alias", snap.LocalAliases["root"].Lines[0], "postgres:local_aliases:6")
	found := false
	for _, d := range snap.Diags {
		// The merged duplicate key, and the first row in the message.
		found = found || d.Pos.String() == "postgres:aliases:4" && strings.Contains(d.Msg, "also at postgres:aliases:3")
	}
	if !found {
		t.Errorf("the duplicate-key warning does not name the rows: %v", snap.Diags)
	}

	// An error names the row too.
	files[conffile.AccountsFile] = rendered("accounts", []int{41}, "not an address|{SHA512-CRYPT}$6$x$y")
	_, err = BuildRendered(files, testSettings(t, nil))
	var le *LoadError
	if !errors.As(err, &le) || le.Diags[0].Pos.String() != "postgres:accounts:41" {
		t.Errorf("error: %v", err)
	}
}

type downExt struct{ External }

func (downExt) Account(address.Address) (ExtAccount, bool, error) {
	return ExtAccount{}, false, &TempError{Source: "ldap", Err: errors.New("down")}
}
func (downExt) Domain(string) (bool, error) {
	return false, &TempError{Source: "ldap", Err: errors.New("down")}
}

// The maps answer first; the External source is asked for the rest; an
// excluded domain is never asked about.
func TestLookups(t *testing.T) {
	snap, err := Build(map[string][]byte{conffile.AccountsFile: []byte("a@example.test|{SHA512-CRYPT}$6$x$y\n")},
		testSettings(t, map[string]string{"excluded_domains": "excluded.example"}))
	if err != nil {
		t.Fatal(err)
	}
	a := address.Address{Local: "a", Domain: "example.test"}
	if _, ok, err := snap.LookupAccount(a); !ok || err != nil {
		t.Errorf("file account: %v %v", ok, err)
	}
	snap.Ext = downExt{}
	if _, ok, err := snap.LookupAccount(a); !ok || err != nil {
		t.Errorf("file account with a source down: %v %v", ok, err)
	}
	if _, _, err := snap.LookupAccount(address.Address{Local: "z", Domain: "example.test"}); !IsTemp(err) {
		t.Errorf("other account with a source down: %v", err)
	}
	if ok, err := snap.LookupManaged("example.test"); !ok || err != nil {
		t.Errorf("file domain: %v %v", ok, err)
	}
	if ok, err := snap.LookupManaged("excluded.example"); ok || err != nil {
		t.Errorf("excluded domain: %v %v", ok, err)
	}
	if _, err := snap.LookupManaged("other.example"); !IsTemp(err) {
		t.Errorf("other domain with a source down: %v", err)
	}
}
