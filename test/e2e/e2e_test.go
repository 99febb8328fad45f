// Package e2e builds the real mailgate binary and runs it the way an
// administrator would, on a copy of docker-mailserver's test configuration.
package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "mailgate-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "mailgate")
	args := []string{"build", "-o", binary}
	// The binary is built without the race detector unless
	// MAILGATE_E2E_RACE=1: the end-to-end tests start it over a thousand
	// times, and a race-instrumented start-up and file edit is ten times
	// slower. The packages themselves are tested with -race.
	if raceEnabled && os.Getenv("MAILGATE_E2E_RACE") == "1" {
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, "../../cmd/mailgate")...)
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building mailgate:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// configDir returns a fresh copy of the DMS fixture, with extra lines
// appended to the named files.
func configDir(t *testing.T, extra map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	src := "../../testdata/dms"
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, e.Name()), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for name, text := range extra {
		f, err := os.OpenFile(filepath.Join(dir, name), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteString(text); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	return dir
}

type result struct {
	code           int
	stdout, stderr string
}

// run runs mailgate with a clean environment (no MAILGATE_* or DMS variables
// from the caller) and a fixed host name.
func run(t *testing.T, dir string, env []string, args ...string) result {
	t.Helper()
	return runIn(t, dir, env, "", args...)
}

// runIn is run with standard input.
func runIn(t *testing.T, dir string, env []string, stdin string, args ...string) result {
	t.Helper()
	full := append([]string{"--config-dir", dir, "--data-dir", filepath.Join(dir, "data"), "--set", "hostname=mail.example.test"}, args...)
	cmd := exec.Command(binary, full...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Stdin = strings.NewReader(stdin)
	err := cmd.Run()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("running mailgate %v: %v", args, err)
		}
		code = ee.ExitCode()
	}
	if code > 2 || code < 0 {
		t.Errorf("mailgate %q exited %d (a crash?)\nstderr: %s", args, code, stderr.String())
	}
	if bytes.Contains(stderr.Bytes(), []byte("panic:")) || bytes.Contains(stderr.Bytes(), []byte("goroutine ")) {
		t.Errorf("mailgate %q panicked:\n%s", args, stderr.String())
	}
	return result{code, stdout.String(), stderr.String()}
}
