package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// needTool finds a program that a test needs; under CI=true a missing one
// fails the test instead of skipping it.
func needTool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/bin"} {
			if _, e := os.Stat(filepath.Join(dir, name)); e == nil {
				return filepath.Join(dir, name)
			}
		}
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is not installed (Debian package %s); ./test.sh installs it", name, pkg)
		}
		t.Skipf("%s is not installed (Debian package %s)", name, pkg)
	}
	return p
}

// Every hash that `mailgate email add` writes is verified by a real
// Dovecot: doveadm pw -t, and an authentication through Dovecot's
// passwd-file driver, fed the way docker-mailserver feeds it from
// postfix-accounts.cf.
func TestDovecotVerifiesOurHashes(t *testing.T) {
	doveadm := needTool(t, "doveadm", "dovecot-core")
	dovecot := needTool(t, "dovecot", "dovecot-core")
	dir := t.TempDir()
	users := map[string]string{
		"user1@example.com":         "mypassword",
		"user2@example.com":         "pässwörd with spaces",
		"user3@b\u00fccher.example": "x:y|z#\"'",
	}
	for a, p := range users {
		mustRun(t, dir, "email", "add", a, p)
	}
	mustRun(t, dir, "email", "update", "user1@example.com", "changed password")
	users["user1@example.com"] = "changed password"

	// doveadm pw -t on each stored hash.
	type acct struct{ addr, hash string }
	var accts []acct
	for _, line := range strings.Split(strings.TrimSpace(readFile(t, filepath.Join(dir, "postfix-accounts.cf"))), "\n") {
		f := strings.SplitN(line, "|", 3)
		accts = append(accts, acct{f[0], f[1]})
	}
	if len(accts) != 3 {
		t.Fatalf("accounts: %v", accts)
	}
	for _, a := range accts {
		pw, ok := users[a.addr]
		if !ok {
			pw = users["user3@b\u00fccher.example"] // stored as its A-label
		}
		out, err := exec.Command(doveadm, "pw", "-t", a.hash, "-p", pw).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "verified") {
			t.Errorf("doveadm pw -t %s: %v %s", a.addr, err, out)
		}
		out, err = exec.Command(doveadm, "pw", "-t", a.hash, "-p", pw+"x").CombinedOutput()
		if err == nil {
			t.Errorf("doveadm pw -t accepted a wrong password for %s: %s", a.addr, out)
		}
	}

	// A throwaway Dovecot, auth only, passdb passwd-file in DMS's userdb format.
	// Its auth process runs as an unprivileged user, which must reach the files.
	run, err := os.MkdirTemp("", "mailgate-dovecot-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(run)
	if err := os.Chmod(run, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{run, filepath.Join(run, "run"), filepath.Join(run, "state")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var userdb bytes.Buffer
	for _, a := range accts {
		// docker-mailserver helpers/accounts.sh: LOGIN:PASS:5000:5000::HOME::
		fmt.Fprintf(&userdb, "%s:%s:5000:5000::%s/home::\n", a.addr, a.hash, run)
	}
	if err := os.WriteFile(filepath.Join(run, "userdb"), userdb.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf(`base_dir = %[1]s/run
state_dir = %[1]s/state
log_path = %[1]s/dovecot.log
protocols =
listen = 127.0.0.1
ssl = no
auth_mechanisms = plain login
auth_failure_delay = 0
passdb {
  driver = passwd-file
  args = scheme=SHA512-CRYPT username_format=%%u %[1]s/userdb
}
userdb {
  driver = passwd-file
  args = username_format=%%u %[1]s/userdb
  default_fields = uid=nobody gid=nogroup
}
`, run)
	confPath := filepath.Join(run, "dovecot.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(dovecot, "-F", "-c", confPath)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	sock := filepath.Join(run, "run", "auth-client")
	for i := 0; i < 100; i++ {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := os.Stat(sock); err != nil {
		t.Fatalf("dovecot did not start: %s\n%s", stderr.String(), readFile(t, filepath.Join(run, "dovecot.log")))
	}
	defer func() {
		if t.Failed() {
			t.Logf("dovecot.log:\n%s", readFile(t, filepath.Join(run, "dovecot.log")))
		}
	}()
	for _, a := range accts {
		pw, ok := users[a.addr]
		if !ok {
			pw = users["user3@b\u00fccher.example"]
		}
		out, err := exec.Command(doveadm, "-c", confPath, "auth", "test", "-a", sock, a.addr, pw).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "auth succeeded") {
			t.Errorf("doveadm auth test %s: %v\n%s", a.addr, err, out)
		}
		out, err = exec.Command(doveadm, "-c", confPath, "auth", "test", "-a", sock, a.addr, "wrong").CombinedOutput()
		if err == nil || strings.Contains(string(out), "auth succeeded") {
			t.Errorf("doveadm auth test %s with a wrong password succeeded:\n%s", a.addr, out)
		}
	}
}
