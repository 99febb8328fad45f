package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func readFile(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return string(data)
}

func mustRun(t *testing.T, dir string, args ...string) result {
	t.Helper()
	r := run(t, dir, nil, args...)
	if r.code != 0 {
		t.Fatalf("mailgate %q: exit %d\n%s%s", args, r.code, r.stdout, r.stderr)
	}
	return r
}

// docker-mailserver's CLI test cases for aliases.
func TestAliasCommands(t *testing.T) {
	dir := t.TempDir()
	virtual := filepath.Join(dir, "postfix-virtual.cf")
	mustRun(t, dir, "alias", "add", "alias@example.com", "target1@forward.com")
	mustRun(t, dir, "alias", "add", "alias@example.com", "target2@forward.com")
	mustRun(t, dir, "alias", "add", "alias2@example.org", "target3@forward.com")
	if got := readFile(t, virtual); !strings.Contains(got, "alias@example.com target1@forward.com,target2@forward.com\n") {
		t.Fatalf("after adds:\n%s", got)
	}
	mustRun(t, dir, "alias", "del", "alias@example.com", "target1@forward.com")
	if got := readFile(t, virtual); !strings.Contains(got, "alias@example.com target2@forward.com\n") || strings.Contains(got, "target1") {
		t.Fatalf("after del:\n%s", got)
	}
	before := readFile(t, virtual)
	r := run(t, dir, nil, "alias", "del", "alias@example.org", "target2@forward.com")
	if r.code != 1 || r.stderr == "" || readFile(t, virtual) != before {
		t.Errorf("del of a missing alias: exit %d %q, file changed: %v", r.code, r.stderr, readFile(t, virtual) != before)
	}
	mustRun(t, dir, "alias", "del", "alias2@example.org", "target3@forward.com")
	if got := readFile(t, virtual); got != "alias@example.com target2@forward.com\n" {
		t.Errorf("final file %q", got)
	}
	// Adding an existing target is refused; a prefix is another key.
	if r := run(t, dir, nil, "alias", "add", "ALIAS@example.com", "target2@forward.com"); r.code != 1 {
		t.Errorf("duplicate target: exit %d", r.code)
	}
	mustRun(t, dir, "alias", "add", "alias@example.co", "target2@forward.com")
	r = mustRun(t, dir, "alias", "list")
	if r.stdout != "alias@example.co\ttarget2@forward.com\nalias@example.com\ttarget2@forward.com\n" {
		t.Errorf("alias list: %q", r.stdout)
	}
}

func TestEmailCommands(t *testing.T) {
	dir := t.TempDir()
	accounts := filepath.Join(dir, "postfix-accounts.cf")
	r := run(t, dir, nil, "email", "add", "user_without_domain", "mypassword")
	if r.code != 1 || !strings.Contains(r.stderr, "has no domain part") || readFile(t, accounts) != "" {
		t.Errorf("user_without_domain: %d %s", r.code, r.stderr)
	}
	for _, a := range []string{"user3@domain.tld", "auser3@domain.tld", "a.ser3@domain.tld"} {
		mustRun(t, dir, "email", "add", a, "mypassword")
		if err := os.MkdirAll(filepath.Join(dir, "data", "mail", "domain.tld", strings.Split(a, "@")[0], "new"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	r = mustRun(t, dir, "email", "add", "USeRx@domain.tld", "mypassword")
	if !strings.Contains(r.stdout, "USeRx@domain.tld normalized to userx@domain.tld") || !strings.Contains(readFile(t, accounts), "\nuserx@domain.tld|{SHA512-CRYPT}$6$") {
		t.Errorf("normalization: %s\n%s", r.stdout, readFile(t, accounts))
	}
	// An alias and a grant that name user3, to see them cleaned up.
	mustRun(t, dir, "alias", "add", "team@domain.tld", "user3@domain.tld,auser3@domain.tld")
	mustRun(t, dir, "sender", "add", "noreply@domain.tld", "user3@domain.tld")
	r = mustRun(t, dir, "email", "del", "-y", "user3@domain.tld")
	for _, want := range []string{"postfix-virtual.cf:1:", "postfix-send-as.cf:1: removed", "removed mailbox directory"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("email del output lacks %q:\n%s", want, r.stdout)
		}
	}
	got := readFile(t, accounts)
	if strings.Contains(got, "\nuser3@") || strings.HasPrefix(got, "user3@") || !strings.Contains(got, "auser3@domain.tld|") || !strings.Contains(got, "a.ser3@domain.tld|") {
		t.Errorf("email del removed the wrong lines:\n%s", got)
	}
	if v := readFile(t, filepath.Join(dir, "postfix-virtual.cf")); v != "team@domain.tld auser3@domain.tld\n" {
		t.Errorf("virtual after del: %q", v)
	}
	for _, l := range []string{"user3", "auser3", "a.ser3"} {
		_, err := os.Stat(filepath.Join(dir, "data", "mail", "domain.tld", l))
		if (l == "user3") != os.IsNotExist(err) {
			t.Errorf("mailbox %s: %v", l, err)
		}
	}
	if r := run(t, dir, nil, "email", "del", "user3@domain.tld"); r.code != 1 {
		t.Errorf("deleting a missing account: exit %d", r.code)
	}
	// email del of several, one missing: nothing changes.
	before := readFile(t, accounts)
	if r := run(t, dir, nil, "email", "del", "auser3@domain.tld", "nobody@domain.tld"); r.code != 1 || readFile(t, accounts) != before {
		t.Errorf("partial del: exit %d", r.code)
	}
	// Password from standard input, and update keeping the third field.
	if err := os.WriteFile(accounts, []byte(readFile(t, accounts)+"extra@domain.tld|{SHA512-CRYPT}$6$x$y|userdb_quota_rule=*:storage=1G\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := runIn(t, dir, nil, "s3cret pass\n", "email", "update", "extra@domain.tld"); r.code != 0 {
		t.Fatalf("update from stdin: %d %s", r.code, r.stderr)
	}
	if got := readFile(t, accounts); !strings.Contains(got, "|userdb_quota_rule=*:storage=1G\n") || strings.Contains(got, "$6$x$y") {
		t.Errorf("update lost the third field or kept the hash:\n%s", got)
	}
	if r := runIn(t, dir, nil, "a\nb\n", "email", "add", "two@domain.tld"); r.code != 1 || !strings.Contains(r.stderr, "more than one line") {
		t.Errorf("two lines on stdin: %d %s", r.code, r.stderr)
	}
	r = mustRun(t, dir, "email", "list")
	if !strings.Contains(r.stdout, "auser3@domain.tld\taliases: team@domain.tld") || strings.Contains(r.stdout, "\nuser3@") {
		t.Errorf("email list:\n%s", r.stdout)
	}
}

func TestRestrictCommands(t *testing.T) {
	dir := t.TempDir()
	mustRun(t, dir, "email", "restrict", "add", "send", "lorem@impsum.org")
	mustRun(t, dir, "email", "restrict", "add", "send", "other@impsum.org")
	if r := mustRun(t, dir, "email", "restrict", "list", "send"); r.stdout != "lorem@impsum.org\nother@impsum.org\n" {
		t.Errorf("list send: %q", r.stdout)
	}
	mustRun(t, dir, "email", "restrict", "del", "send", "lorem@impsum.org")
	if r := mustRun(t, dir, "email", "restrict", "list", "send"); r.stdout != "other@impsum.org\n" {
		t.Errorf("after del: %q", r.stdout)
	}
	if r := run(t, dir, nil, "email", "restrict", "del", "send", "lorem@impsum.org"); r.code != 1 {
		t.Errorf("del of a missing restriction: %d", r.code)
	}
	if r := run(t, dir, nil, "email", "restrict", "add", "sideways", "x@y.example"); r.code != 2 || !strings.Contains(r.stderr, "expected send or receive") {
		t.Errorf("bad kind: %d %s", r.code, r.stderr)
	}
	if r := mustRun(t, dir, "email", "restrict", "list", "receive"); r.stdout != "" {
		t.Errorf("list receive: %q", r.stdout)
	}
}

func TestAccountAndAliasAtOnce(t *testing.T) {
	dir := configDir(t, nil)
	mustRun(t, dir, "alias", "add", "user1@localhost.localdomain", "user1@localhost.localdomain,me@gmail.com")
	r := mustRun(t, dir, "check", "route", "user1@localhost.localdomain")
	if !strings.Contains(r.stdout, "mailbox user1@localhost.localdomain") || !strings.Contains(r.stdout, "forward me@gmail.com") {
		t.Errorf("keep a copy and forward:\n%s", r.stdout)
	}
}

func TestSenderCommands(t *testing.T) {
	dir := configDir(t, nil)
	mustRun(t, dir, "sender", "add", "@external.example", "user1@localhost.localdomain")
	r := mustRun(t, dir, "check", "send", "user1@localhost.localdomain", "anything@external.example")
	if !strings.Contains(r.stdout, "send-as-domain") {
		t.Errorf("domain grant: %s", r.stdout)
	}
	r = mustRun(t, dir, "sender", "list")
	if !strings.Contains(r.stdout, "@external.example\tuser1@localhost.localdomain\n") {
		t.Errorf("sender list: %s", r.stdout)
	}
	mustRun(t, dir, "sender", "del", "@external.example", "user1@localhost.localdomain")
	if r := run(t, dir, nil, "check", "send", "user1@localhost.localdomain", "anything@external.example"); r.code != 1 {
		t.Errorf("grant withdrawn: %d", r.code)
	}
	if r := run(t, dir, nil, "sender", "del", "@external.example", "user1@localhost.localdomain"); r.code != 1 {
		t.Errorf("withdrawing twice: %d", r.code)
	}
}

// Hostile arguments to the writing commands: exit 1 or 2, nothing written.
func TestHostileManagementArguments(t *testing.T) {
	dir := configDir(t, nil)
	snapshot := func() string {
		var b strings.Builder
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if e.Type().IsRegular() {
				fmt.Fprintf(&b, "%s\n%s\n", e.Name(), readFile(t, filepath.Join(dir, e.Name())))
			}
		}
		return b.String()
	}
	before := snapshot()
	long := strings.Repeat("a", 5000)
	bad := []string{
		"new\nline@localhost.localdomain", "pipe|x@localhost.localdomain", "comma,x@localhost.localdomain",
		long, long + "@localhost.localdomain", "x@" + long, "../x@localhost.localdomain", "a/../../b@localhost.localdomain",
		"x@localhost.localdomain\u2000", "\u202ex@localhost.localdomain", "x@[127.0.0.1]", "@a:x@localhost.localdomain", "",
	}
	for _, b := range bad {
		for _, args := range [][]string{
			{"email", "add", b, "mypassword"},
			{"email", "update", b, "mypassword"},
			{"email", "del", b},
			{"email", "del", "-y", b},
			{"email", "restrict", "add", "send", b},
			{"alias", "add", b, "user1@localhost.localdomain"},
			{"alias", "add", "alias9@localhost.localdomain", b},
			{"alias", "del", b, "user1@localhost.localdomain"},
			{"sender", "add", b, "user1@localhost.localdomain"},
			{"sender", "add", "x@external.example", b},
			{"sender", "del", b, "user1@localhost.localdomain"},
		} {
			r := run(t, dir, nil, args...)
			if r.code == 0 || r.stderr == "" {
				t.Errorf("mailgate %q: exit %d, stderr %q", args, r.code, r.stderr)
			}
		}
	}
	for _, p := range []string{"new\nline", long} {
		if r := run(t, dir, nil, "email", "add", "fine@localhost.localdomain", p); r.code == 0 && strings.Contains(p, "\n") {
			t.Errorf("password with a newline accepted")
		}
	}
	if r := run(t, dir, nil, "email", "add", "fine@localhost.localdomain", "a\x01b"); r.code == 0 {
		t.Errorf("password with a control character accepted")
	}
	if after := snapshot(); after != before {
		t.Errorf("hostile arguments changed the configuration")
	}
	// Usage errors name the argument and show the command's usage.
	for _, c := range []struct {
		args []string
		msg  string
	}{
		{[]string{"alias", "add", "a@b.example"}, "alias add: missing argument RECIPIENT[,RECIPIENT…]"},
		{[]string{"alias", "del", "a@b.example", "c@d.example", "e@f.example"}, `alias del: unexpected argument "e@f.example"`},
		{[]string{"email", "add"}, "email add: missing argument ADDRESS"},
		{[]string{"email", "add", "a@b.example", "pw", "extra"}, `email add: unexpected argument "extra"`},
		{[]string{"email", "restrict", "add", "send"}, "email restrict add: missing argument ADDRESS"},
		{[]string{"sender", "add", "a@b.example"}, "sender add: missing argument LOGIN[,LOGIN…]"},
		{[]string{"email", "del"}, "email del: missing argument ADDRESS"},
	} {
		r := run(t, dir, nil, c.args...)
		if r.code != 2 || !strings.Contains(r.stderr, c.msg) || !strings.Contains(r.stderr, "usage: mailgate "+strings.Join(c.args[:2], " ")) {
			t.Errorf("mailgate %q: %d %s", c.args, r.code, r.stderr)
		}
	}
}

// Two processes each adding 500 distinct aliases at the same time: exactly
// 1000 present afterwards, the file well-formed.
func TestConcurrentEdits(t *testing.T) {
	if testing.Short() {
		t.Skip("slow")
	}
	dir := t.TempDir()
	var wg sync.WaitGroup
	errs := make(chan string, 1000)
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < 500; i++ {
				cmd := exec.Command(binary, "--config-dir", dir, "--set", "hostname=mail.example.test",
					"alias", "add", fmt.Sprintf("a%d-%d@example.com", w, i), "t@forward.example")
				if out, err := cmd.CombinedOutput(); err != nil {
					errs <- fmt.Sprintf("%v: %s", err, out)
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	lines := strings.Split(strings.TrimSuffix(readFile(t, filepath.Join(dir, "postfix-virtual.cf")), "\n"), "\n")
	seen := map[string]bool{}
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) != 2 || f[1] != "t@forward.example" {
			t.Fatalf("malformed line %q", l)
		}
		seen[f[0]] = true
	}
	if len(lines) != 1000 || len(seen) != 1000 {
		t.Errorf("%d lines, %d distinct aliases; want 1000", len(lines), len(seen))
	}
	r := mustRun(t, dir, "config", "check")
	if !strings.Contains(r.stdout, "0 errors") {
		t.Errorf("config check: %s", r.stdout)
	}
}

// A process killed with SIGKILL while rewriting a 100k-line file leaves the
// old or the new content, never a mix.
func TestCrashSafety(t *testing.T) {
	if testing.Short() {
		t.Skip("slow")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "postfix-virtual.cf")
	var b strings.Builder
	for i := 0; i < 100000; i++ {
		fmt.Fprintf(&b, "alias%d@example.com user%d@example.com\n", i, i)
	}
	old := b.String()
	if err := os.WriteFile(path, []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	newContent := strings.Replace(old, "alias500@example.com user500@example.com\n", "alias500@example.com user500@example.com,extra@example.com\n", 1)
	edit := func() *exec.Cmd {
		return exec.Command(binary, "--config-dir", dir, "--set", "hostname=mail.example.test",
			"alias", "add", "alias500@example.com", "extra@example.com")
	}
	// How long one edit takes here: the kills are spread over that time.
	start := time.Now()
	if out, err := edit().CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	took := time.Since(start)
	if readFile(t, path) != newContent {
		t.Fatal("the edit did not produce the expected content")
	}
	if err := os.WriteFile(path, []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	const runs = 40
	killed, completed := 0, 0
	for i := 0; i < runs; i++ {
		cmd := edit()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(took * time.Duration(i) / (runs - 5))
		cmd.Process.Signal(syscall.SIGKILL)
		err := cmd.Wait()
		if ee, ok := err.(*exec.ExitError); ok && ee.ProcessState.Sys().(syscall.WaitStatus).Signaled() {
			killed++
		}
		got := readFile(t, path)
		switch got {
		case old:
		case newContent:
			completed++
			// The edit completed: start again from the old content.
			if err := os.WriteFile(path, []byte(old), 0o644); err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("after SIGKILL at run %d the file is neither old nor new (%d bytes)", i, len(got))
		}
	}
	if killed == 0 {
		t.Errorf("no run was killed before it finished")
	}
	t.Logf("one edit takes %v; %d of %d runs killed before finishing, %d left the new content", took, killed, runs, completed)
	// No temporary files are left where the configuration is read.
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Logf("leftover temporary file %s (harmless: ignored by the readers)", e.Name())
		}
	}
}

// Review findings: duplicate arguments, a hand-written account whose local
// part would be a path, a DMS size limit of 0, multi-word group help.
func TestManagementEdgeCases(t *testing.T) {
	dir := t.TempDir()
	mustRun(t, dir, "email", "add", "dup@domain.tld", "mypassword")
	if r := run(t, dir, nil, "email", "del", "dup@domain.tld", "DUP@domain.tld"); r.code != 0 {
		t.Errorf("email del with the same address twice: %d %s", r.code, r.stderr)
	}
	acc := filepath.Join(dir, "postfix-accounts.cf")
	if err := os.WriteFile(acc, []byte("user1/@domain.tld|{SHA512-CRYPT}$6$x$y\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := run(t, dir, nil, "config", "check"); r.code != 1 || !strings.Contains(r.stdout, "postfix-accounts.cf:1: error:") {
		t.Errorf("account with '/': %d %s", r.code, r.stdout)
	}
	if r := run(t, dir, nil, "email", "del", "-y", "user1/@domain.tld"); r.code != 1 || readFile(t, acc) == "" {
		t.Errorf("email del -y of a '/' account changed something: %d %s", r.code, r.stderr)
	}
	if r := run(t, t.TempDir(), []string{"POSTFIX_MESSAGE_SIZE_LIMIT=0"}, "domain", "list"); r.code != 0 {
		t.Errorf("POSTFIX_MESSAGE_SIZE_LIMIT=0 refused: %s", r.stderr)
	}
	if r := run(t, dir, nil, "email", "restrict", "--help"); r.code != 0 || !strings.Contains(r.stdout, "usage: mailgate email restrict SUBCOMMAND") {
		t.Errorf("email restrict --help: %d %s %s", r.code, r.stdout, r.stderr)
	}
	if r := run(t, dir, nil, "email", "restrict"); r.code != 2 || !strings.Contains(r.stderr, "email restrict: missing subcommand") {
		t.Errorf("email restrict: %d %s", r.code, r.stderr)
	}
}
