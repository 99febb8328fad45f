package conffile

import (
	"strconv"
	"strings"
	"testing"
)

func TestSplitLines(t *testing.T) {
	data := "a 1\r\n# comment\n   # indented comment\n\n \t\nb 2\n  c\n\td\nlast"
	lines, diags := SplitLines("f", []byte(data), true)
	if len(diags) != 0 {
		t.Fatal(diags)
	}
	got := []string{}
	for _, l := range lines {
		got = append(got, l.Text+"@"+strconv.Itoa(l.Num))
	}
	if strings.Join(got, "|") != "a 1@1|b 2 c d@6|last@9" {
		t.Errorf("lines: %q", got)
	}
	_, diags = SplitLines("f", []byte(" leading\n"), true)
	if len(diags) != 1 || diags[0].Error() != "f:1: line starts with white space (a continuation line with nothing to continue)" {
		t.Errorf("leading white space: %v", diags)
	}
	_, diags = SplitLines("f", []byte("a|b\n c\n"), false)
	if len(diags) != 1 || diags[0].Pos.Line != 2 {
		t.Errorf("no continuation: %v", diags)
	}
}

func TestParseAccounts(t *testing.T) {
	data := "User1@Example.COM|{SHA512-CRYPT}$6$s$h|userdb_mail=x|y\nuser2@example.com|{SHA256-CRYPT}$5$s$h\nbad line\nuser3@example.com|nobraces\nuser4@example.com|{ARGON2ID}x\nuser5@example.com\u2000|{SHA512-CRYPT}$6$x\n"
	accs, diags := ParseAccounts(AccountsFile, []byte(data))
	if len(accs) != 3 || accs[0].Address.String() != "user1@example.com" || accs[0].Extra != "userdb_mail=x|y" || !accs[0].HasExtra || accs[1].HasExtra {
		t.Errorf("accounts: %+v", accs)
	}
	var msgs []string
	for _, d := range diags {
		msgs = append(msgs, d.Severity.String()+" "+d.Error())
	}
	got := strings.Join(msgs, "\n")
	for _, want := range []string{"error postfix-accounts.cf:3: expected address|{SCHEME}hash", "error postfix-accounts.cf:4:", "warning postfix-accounts.cf:5:", "error postfix-accounts.cf:6:", "U+2000"} {
		if !strings.Contains(got, want) {
			t.Errorf("diags lack %q:\n%s", want, got)
		}
	}
}

func TestParseVirtual(t *testing.T) {
	data := "alias@Example.com a@x.example, b@y.example\tc@z.example\n@Example.org catch@x.example\nroot admin@x.example\nlocal local\nalias2@b\u00fccher.example a@x.example\nnotarget@example.com\nbad@@example.com a@x.example\nx@example.com a@x.example\u00a0\n"
	al, diags := ParseVirtual(VirtualFile, []byte(data), "mail.example.com")
	if len(al) != 5 {
		t.Fatalf("aliases: %+v %v", al, diags)
	}
	if al[0].Key.String() != "alias@example.com" || len(al[0].Targets) != 3 || al[0].Targets[2].Address.String() != "c@z.example" {
		t.Errorf("alias 0: %+v", al[0])
	}
	if !al[1].Key.IsCatchAll() || al[1].Key.String() != "@example.org" {
		t.Errorf("catch-all: %+v", al[1])
	}
	if !al[2].Key.IsBare() || al[2].Key.String() != "root" {
		t.Errorf("bare: %+v", al[2])
	}
	if al[3].Targets[0].Address.String() != "local@mail.example.com" {
		t.Errorf("bare target: %+v", al[3])
	}
	if al[4].Key.Domain != "xn--bcher-kva.example" {
		t.Errorf("IDN key: %+v", al[4])
	}
	if len(diags) != 3 || diags[0].Pos.Line != 6 || diags[1].Pos.Line != 7 || diags[2].Pos.Line != 8 || !strings.Contains(diags[2].Msg, "U+00A0") {
		t.Errorf("diags: %v", diags)
	}
}

func TestParseSendAsAccessAliases(t *testing.T) {
	g, diags := ParseSendAs(SendAsFile, []byte("noreply@ext.example u1@x.example,u2@x.example\n@dom.example u3@x.example\nbare u1@x.example\nx@y.example\n"))
	if len(g) != 2 || len(g[0].Logins) != 2 || !g[1].Sender.IsCatchAll() || len(diags) != 2 {
		t.Errorf("send-as: %+v %v", g, diags)
	}
	a, diags := ParseAccess(SendAccessFile, []byte("u@x.example REJECT\nv@x.example OK\nw@x.example\n"))
	if len(a) != 1 || len(diags) != 2 || !strings.Contains(diags[0].Msg, "only REJECT") {
		t.Errorf("access: %+v %v", a, diags)
	}
	l, diags := ParseLocalAliases(LocalAliasesFile, []byte("root: admin@x.example, ops\nbin: |/bin/true\nnocolon\n"), "h.example")
	if len(l) != 1 || l[0].Name != "root" || l[0].Targets[1].Address.String() != "ops@h.example" || len(diags) != 2 {
		t.Errorf("local aliases: %+v %v", l, diags)
	}
}
