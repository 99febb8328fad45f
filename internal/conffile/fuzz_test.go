package conffile

import (
	"bytes"
	"testing"

	"github.com/mailgate/mailgate/internal/address"
)

// checkDiags: every diagnostic names this file and a line that exists.
func checkDiags(t *testing.T, file string, data []byte, diags []Diag) {
	t.Helper()
	lines := bytes.Count(data, []byte{'\n'}) + 1
	for _, d := range diags {
		if d.Pos.File != file || d.Pos.Line < 1 || d.Pos.Line > lines {
			t.Fatalf("diagnostic %q names a line outside the file (%d lines)", d.Error(), lines)
		}
	}
}

// canonical: an address the parsers hand out parses to itself.
func canonical(t *testing.T, a address.Address) {
	t.Helper()
	b, err := address.Parse(a.String(), addrOpts)
	if err != nil || b != a {
		t.Fatalf("stored address %q is not canonical: %v %v", a, b, err)
	}
}

func seeds(f *testing.F, extra ...string) {
	for _, s := range append([]string{
		"", "\n", "# c\n", "a@b.example x@y.example\n", " cont\n", "a@b.example\r\n  x@y.example, z@w.example\n",
		"user1@localhost.localdomain|{SHA512-CRYPT}$6$x$y|extra\n", "@d.example u@e.example\n", "root: a@b.example\n",
		"u@d.example REJECT\n", "a@b.example\u2000 x@y.example\n", "\"q\"@b.example x@y.example\n",
	}, extra...) {
		f.Add([]byte(s))
	}
}

func FuzzParseAccounts(f *testing.F) {
	seeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		accs, diags := ParseAccounts(AccountsFile, data)
		checkDiags(t, AccountsFile, data, diags)
		for _, a := range accs {
			canonical(t, a.Address)
			if a.Scheme() == "" {
				t.Fatalf("account without a scheme accepted: %q", a.Hash)
			}
		}
	})
}

func FuzzParseVirtual(f *testing.F) {
	seeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		aliases, diags := ParseVirtual(VirtualFile, data, "mail.example.com")
		checkDiags(t, VirtualFile, data, diags)
		for _, a := range aliases {
			if len(a.Targets) == 0 {
				t.Fatalf("alias %s without targets", a.Key)
			}
			for _, tg := range a.Targets {
				canonical(t, tg.Address)
			}
			if k, err := ParseKey(a.Key.String(), true); err != nil || k != a.Key {
				t.Fatalf("key %q does not round-trip: %v %v", a.Key, k, err)
			}
		}
	})
}

func FuzzParseSendAs(f *testing.F) {
	seeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		grants, diags := ParseSendAs(SendAsFile, data)
		checkDiags(t, SendAsFile, data, diags)
		for _, g := range grants {
			if g.Sender.IsBare() || len(g.Logins) == 0 {
				t.Fatalf("bad grant accepted: %+v", g)
			}
			for _, l := range g.Logins {
				canonical(t, l)
			}
		}
	})
}

func FuzzParseAccess(f *testing.F) {
	seeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		entries, diags := ParseAccess(SendAccessFile, data)
		checkDiags(t, SendAccessFile, data, diags)
		for _, e := range entries {
			canonical(t, e.Address)
		}
	})
}

func FuzzParseLocalAliases(f *testing.F) {
	seeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		aliases, diags := ParseLocalAliases(LocalAliasesFile, data, "mail.example.com")
		checkDiags(t, LocalAliasesFile, data, diags)
		for _, a := range aliases {
			for _, tg := range a.Targets {
				canonical(t, tg.Address)
			}
		}
	})
}
