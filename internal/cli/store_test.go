package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/internal/pgstore/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

type pgResult struct {
	code           int
	stdout, stderr string
}

// pgCLI runs mailgate commands on a PostgreSQL directory (a new database)
// with an empty configuration directory.
func pgCLI(t *testing.T) (run func(args ...string) pgResult, configDir, dataDir string) {
	t.Helper()
	url := pgtest.DB(t)
	configDir, dataDir = t.TempDir(), t.TempDir()
	run = func(args ...string) pgResult {
		t.Helper()
		var out, errb bytes.Buffer
		all := append([]string{"--config-dir", configDir, "--data-dir", dataDir,
			"--set", "hostname=mail.example.test", "--set", "account_provisioner=postgres", "--set", "database_url=" + url}, args...)
		code := Main(all, Env{Stdout: &out, Stderr: &errb, Getenv: noEnv, Stdin: strings.NewReader("")})
		return pgResult{code, out.String(), errb.String()}
	}
	return run, configDir, dataDir
}

func TestPostgresCommands(t *testing.T) {
	run, configDir, dataDir := pgCLI(t)
	want := func(r pgResult, code int, subs ...string) {
		t.Helper()
		if r.code != code {
			t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", r.code, code, r.stdout, r.stderr)
		}
		for _, s := range subs {
			if !strings.Contains(r.stdout+r.stderr, s) {
				t.Errorf("output lacks %q:\nstdout: %s\nstderr: %s", s, r.stdout, r.stderr)
			}
		}
	}
	want(run("import", "../../testdata/dms"), 0, "imported ../../testdata/dms into postgres", "accounts", "4 rows")
	want(run("check", "send", "user1@localhost.localdomain", "alias1@localhost.localdomain"), 0, "postgres:aliases:")
	want(run("check", "route", "nouser@localhost.localdomain"), 1, "550 5.1.1")

	want(run("alias", "add", "team@localhost.localdomain", "user1@localhost.localdomain,user2@otherdomain.tld"), 0, "postgres:aliases: added")
	want(run("alias", "list"), 0, "team@localhost.localdomain\tuser1@localhost.localdomain,user2@otherdomain.tld")
	want(run("alias", "add", "team@localhost.localdomain", "user1@localhost.localdomain"), 1, "already has")
	want(run("alias", "del", "team@localhost.localdomain", "user1@localhost.localdomain"), 0, "postgres:aliases:")
	want(run("email", "add", "new@localhost.localdomain", "a-long-password-1"), 0, "(account new@localhost.localdomain)")
	want(run("email", "list"), 0, "new@localhost.localdomain")
	want(run("sender", "add", "shared@localhost.localdomain", "new@localhost.localdomain"), 0, "postgres:send_as: added")
	want(run("check", "send", "new@localhost.localdomain", "shared@localhost.localdomain"), 0, "postgres:send_as:")
	want(run("email", "restrict", "add", "receive", "user3@localhost.localdomain"), 0, "postgres:receive_restrictions: added")
	want(run("check", "route", "user3@localhost.localdomain"), 1, "554 5.7.1")
	want(run("alias", "add", "team@localhost.localdomain", "new@localhost.localdomain"), 0)

	mbox := filepath.Join(dataDir, "mail", "localhost.localdomain", "new")
	if err := os.MkdirAll(mbox, 0o755); err != nil {
		t.Fatal(err)
	}
	r := run("email", "del", "-y", "new@localhost.localdomain")
	want(r, 0, "removed mailbox directory", "postgres:send_as:", "postgres:aliases:")
	if _, err := os.Stat(mbox); !os.IsNotExist(err) {
		t.Errorf("mailbox not removed: %v", err)
	}
	want(run("sender", "list"), 0)
	if r := run("sender", "list"); strings.Contains(r.stdout, "new@") {
		t.Errorf("grant left after email del: %s", r.stdout)
	}
	want(run("email", "del", "nobody@localhost.localdomain"), 1, "does not exist")
	if entries, _ := os.ReadDir(configDir); len(entries) != 0 {
		t.Errorf("the configuration directory was written: %v", entries)
	}

	out := filepath.Join(t.TempDir(), "out")
	want(run("export", out), 0, "exported postgres", "accounts", "4 rows")
	want(run("export", out), 1, "is not empty", "--force")
	want(run("export", "--force", out), 0, "4 rows")
	data, err := os.ReadFile(filepath.Join(out, "postfix-receive-access.cf"))
	if err != nil || string(data) != "user3@localhost.localdomain REJECT\n" {
		t.Errorf("exported access file: %q %v", data, err)
	}

	bad := t.TempDir()
	os.WriteFile(filepath.Join(bad, "postfix-virtual.cf"), []byte("lonely\n"), 0o644)
	want(run("import", bad), 1, "postfix-virtual.cf:1", "nothing was imported")
	want(run("alias", "list"), 0, "team@localhost.localdomain")
}

func TestImportNeedsDatabaseURL(t *testing.T) {
	var out, errb bytes.Buffer
	code := Main([]string{"--config-dir", t.TempDir(), "--set", "hostname=h.example", "import", "../../testdata/dms"},
		Env{Stdout: &out, Stderr: &errb, Getenv: noEnv})
	if code != ExitFail || !strings.Contains(errb.String(), "database_url") {
		t.Errorf("import without database_url: %d %s", code, errb.String())
	}
}
