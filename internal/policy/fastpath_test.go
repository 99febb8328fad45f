package policy

import (
	"reflect"
	"testing"

	"github.com/mailgate/mailgate/internal/directory"
	"github.com/mailgate/mailgate/internal/dirgen"
	"github.com/mailgate/mailgate/internal/settings"
)

// TestMaySendFastPath: MaySend's shortcut for a login sending as itself
// gives exactly the decision of the general path (owners(S), SPEC §5), on
// the DMS fixture, with accounts that are also alias keys, regexp keys and
// send-as senders, and on a generated directory.
func TestMaySendFastPath(t *testing.T) {
	fixture := load(t, nil, nil)
	tricky := load(t, map[string]string{
		"postfix-virtual.cf":     "user1@localhost.localdomain user2@otherdomain.tld\nuser2@otherdomain.tld user2@otherdomain.tld, user1@localhost.localdomain\n",
		"postfix-regexp.cf":      "/^user3@/ user1@localhost.localdomain\n",
		"postfix-send-as.cf":     "added@localhost.localdomain user1@localhost.localdomain\n@otherdomain.tld user3@localhost.localdomain\n",
		"postfix-send-access.cf": "user3@localhost.localdomain REJECT\n",
	}, nil)
	spoofOff := load(t, nil, map[string]string{"spoof_protection": "false"})

	dir := t.TempDir()
	size := dirgen.Size{Accounts: 300, Aliases: 300, Grants: 30, Regexps: 30, Domains: 7, CatchAlls: 3}
	if err := dirgen.Write(dir, size); err != nil {
		t.Fatal(err)
	}
	s, err := settings.Load(dir, func(string) (string, bool) { return "", false }, map[string]string{"hostname": "mail.example.test"})
	if err != nil {
		t.Fatal(err)
	}
	generated, err := directory.Load(dir, s)
	if err != nil {
		t.Fatal(err)
	}

	for name, snap := range map[string]*directory.Snapshot{"fixture": fixture, "tricky": tricky, "spoof-off": spoofOff, "generated": generated} {
		n := 0
		for a := range snap.Accounts {
			// As given, and in other spellings of the same address.
			for _, in := range []string{a.String(), a.Local + "@" + upper(a.Domain), "<>", ""} {
				for _, login := range []string{a.String(), upper(a.Local) + "@" + a.Domain} {
					fast := maySend(snap, login, in, true)
					general := maySend(snap, login, in, false)
					if !reflect.DeepEqual(fast, general) {
						t.Errorf("%s: MaySend(%q, %q):\nfast    %+v\ngeneral %+v", name, login, in, fast, general)
					}
					n++
				}
			}
		}
		if n == 0 {
			t.Fatalf("%s: no accounts", name)
		}
	}
}

func upper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'a' <= c && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}
