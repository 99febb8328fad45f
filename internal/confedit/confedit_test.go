package confedit

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/internal/address"
	"github.com/mailgate/mailgate/internal/conffile"
)

func addr(t *testing.T, s string) address.Address {
	t.Helper()
	a, err := address.Parse(s, addrOpts)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func key(t *testing.T, s string) conffile.Key {
	t.Helper()
	k, err := conffile.ParseKey(s, true)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func doc(t *testing.T, content string) (*Doc, string) {
	t.Helper()
	dir := t.TempDir()
	if content != "" {
		if err := os.WriteFile(filepath.Join(dir, "f.cf"), []byte(content), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	d, err := ReadDoc(dir, "f.cf", 0o644)
	if err != nil {
		t.Fatal(err)
	}
	return d, filepath.Join(dir, "f.cf")
}

func saved(t *testing.T, d *Doc, path string) string {
	t.Helper()
	if err := d.Save(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// The docker-mailserver CLI test cases for aliases.
func TestAliasEdits(t *testing.T) {
	d, path := doc(t, "")
	for _, step := range []struct{ k, v string }{
		{"alias@example.com", "target1@forward.com"},
		{"alias@example.com", "target2@forward.com"},
		{"alias2@example.org", "target3@forward.com"},
	} {
		if _, err := AddToList(d, key(t, step.k), []address.Address{addr(t, step.v)}, true); err != nil {
			t.Fatal(err)
		}
	}
	if got := saved(t, d, path); got != "alias@example.com target1@forward.com,target2@forward.com\nalias2@example.org target3@forward.com\n" {
		t.Fatalf("after adds:\n%s", got)
	}
	if _, err := AddToList(d, key(t, "ALIAS@example.com"), []address.Address{addr(t, "Target2@forward.com")}, true); err == nil {
		t.Error("duplicate target accepted")
	}
	if _, err := RemoveFromList(d, key(t, "alias@example.com"), addr(t, "target1@forward.com"), true); err != nil {
		t.Fatal(err)
	}
	if _, err := RemoveFromList(d, key(t, "alias@example.org"), addr(t, "target2@forward.com"), true); err == nil {
		t.Error("removing from a missing alias succeeded")
	}
	if _, err := RemoveFromList(d, key(t, "alias2@example.org"), addr(t, "target3@forward.com"), true); err != nil {
		t.Fatal(err)
	}
	if got := saved(t, d, path); got != "alias@example.com target2@forward.com\n" {
		t.Fatalf("after removes:\n%s", got)
	}
	// A prefix is not a match: alias@example.co is another key.
	if _, err := AddToList(d, key(t, "alias@example.co"), []address.Address{addr(t, "target2@forward.com")}, true); err != nil {
		t.Fatal(err)
	}
	if got := saved(t, d, path); got != "alias@example.com target2@forward.com\nalias@example.co target2@forward.com\n" {
		t.Fatalf("prefix:\n%s", got)
	}
}

func TestPreservesCommentsOrderAndCRLF(t *testing.T) {
	d, path := doc(t, "# head\r\nb@x.example t@y.example\r\n\r\n  # indented\r\na@x.example t@y.example,\r\n  u@y.example\r\nc@x.example t@y.example\r\n")
	if _, err := RemoveFromList(d, key(t, "a@x.example"), addr(t, "u@y.example"), true); err != nil {
		t.Fatal(err)
	}
	want := "# head\r\nb@x.example t@y.example\r\n\r\n  # indented\r\na@x.example t@y.example\r\nc@x.example t@y.example\r\n"
	if got := saved(t, d, path); got != want {
		t.Fatalf("got %q\nwant %q", got, want)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o640 {
		t.Errorf("permissions changed to %v", fi.Mode().Perm())
	}
}

func TestRemoveEverywhereAndAccounts(t *testing.T) {
	d, path := doc(t, "a@x.example gone@x.example,keep@x.example\nb@x.example GONE@x.example\n")
	ch := RemoveItemEverywhere(d, addr(t, "gone@x.example"), true)
	if len(ch) != 2 || ch[0].Line != 1 || ch[1].Line != 2 || ch[1].New != "" {
		t.Errorf("changes %v", ch)
	}
	if got := saved(t, d, path); got != "a@x.example keep@x.example\n" {
		t.Errorf("got %q", got)
	}

	acc, path := doc(t, "user@x.example|{SHA512-CRYPT}$6$a$b|userdb_x=1\n")
	if _, err := AddAccount(acc, addr(t, "USER@x.example"), "{SHA512-CRYPT}$6$c$d"); err == nil {
		t.Error("duplicate account accepted")
	}
	if _, err := UpdateAccount(acc, addr(t, "user@x.example"), "{SHA512-CRYPT}$6$new$hash"); err != nil {
		t.Fatal(err)
	}
	if _, err := AddAccount(acc, addr(t, "other@x.example"), "{SHA512-CRYPT}$6$c$d"); err != nil {
		t.Fatal(err)
	}
	if got := saved(t, acc, path); got != "user@x.example|{SHA512-CRYPT}$6$new$hash|userdb_x=1\nother@x.example|{SHA512-CRYPT}$6$c$d\n" {
		t.Errorf("accounts: %q", got)
	}
	if _, err := DeleteAccount(acc, addr(t, "nobody@x.example")); err == nil {
		t.Error("deleting a missing account succeeded")
	}
	if _, err := DeleteAccount(acc, addr(t, "user@x.example")); err != nil {
		t.Fatal(err)
	}
	if got := saved(t, acc, path); !strings.HasPrefix(got, "other@") {
		t.Errorf("after delete: %q", got)
	}
}

func TestRestrictions(t *testing.T) {
	d, path := doc(t, "")
	if _, err := AddRestriction(d, addr(t, "lorem@impsum.org")); err != nil {
		t.Fatal(err)
	}
	if _, err := AddRestriction(d, addr(t, "lorem@impsum.org")); err == nil {
		t.Error("duplicate restriction accepted")
	}
	if _, err := AddRestriction(d, addr(t, "lorem2@impsum.org")); err != nil {
		t.Fatal(err)
	}
	if _, err := DeleteRestriction(d, addr(t, "lorem@impsum.org")); err != nil {
		t.Fatal(err)
	}
	if got := saved(t, d, path); got != "lorem2@impsum.org REJECT\n" {
		t.Errorf("got %q", got)
	}
}

// Several edits of one Doc before a single Save are all written.
func TestSeveralEditsOneSave(t *testing.T) {
	d, path := doc(t, "# c\nkeep@x.example REJECT\ngone@x.example REJECT\n")
	for _, a := range []string{"a@x.example", "b@x.example"} {
		if _, err := AddRestriction(d, addr(t, a)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := DeleteRestriction(d, addr(t, "gone@x.example")); err != nil {
		t.Fatal(err)
	}
	if _, err := AddRestriction(d, addr(t, "a@x.example")); err == nil {
		t.Error("duplicate of an unsaved line accepted")
	}
	if got := saved(t, d, path); got != "# c\nkeep@x.example REJECT\na@x.example REJECT\nb@x.example REJECT\n" {
		t.Errorf("got %q", got)
	}
	// A file without a final newline gets one before an appended line.
	d, path = doc(t, "x@x.example REJECT")
	if _, err := AddRestriction(d, addr(t, "y@x.example")); err != nil {
		t.Fatal(err)
	}
	if got := saved(t, d, path); got != "x@x.example REJECT\ny@x.example REJECT\n" {
		t.Errorf("no final newline: %q", got)
	}
}
