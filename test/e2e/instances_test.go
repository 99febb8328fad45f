package e2e

import (
	"bufio"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// instance is a throwaway server started by one of the scripts under test/
// (test/ldap/instance.sh, test/pg/instance.sh): start prints shell
// assignments; pause and resume stop and restart it on the same port and
// data; stop removes it.
type instance struct {
	t      *testing.T
	script string
	vars   map[string]string
	dirVar string
}

// startInstance runs SCRIPT start. The program it needs must be installed:
// under CI=true a missing one fails the test (needTool).
func startInstance(t *testing.T, script, dirVar, tool, pkg string) *instance {
	t.Helper()
	needTool(t, tool, pkg)
	out, err := exec.Command("bash", script, "start").Output()
	if err != nil {
		msg := ""
		if ee, ok := err.(*exec.ExitError); ok {
			msg = string(ee.Stderr)
		}
		t.Fatalf("%s start: %v\n%s%s", script, err, out, msg)
	}
	in := &instance{t: t, script: script, vars: parseAssignments(string(out)), dirVar: dirVar}
	if in.vars[dirVar] == "" {
		t.Fatalf("%s start printed no %s:\n%s", script, dirVar, out)
	}
	t.Cleanup(func() { exec.Command("bash", script, "stop", in.vars[dirVar]).Run() })
	return in
}

func (in *instance) run(op string) {
	in.t.Helper()
	if out, err := exec.Command("bash", in.script, op, in.vars[in.dirVar]).CombinedOutput(); err != nil {
		in.t.Fatalf("%s %s: %v\n%s", in.script, op, err, out)
	}
}

func (in *instance) pause()  { in.run("pause") }
func (in *instance) resume() { in.run("resume") }

// parseAssignments reads NAME='value' lines (values without quotes inside).
func parseAssignments(s string) map[string]string {
	m := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		name, val, ok := strings.Cut(strings.TrimSpace(sc.Text()), "=")
		if !ok || name == "" || strings.ContainsAny(name, " \t") {
			continue
		}
		val = strings.TrimPrefix(strings.TrimSuffix(val, "'"), "'")
		val = strings.TrimPrefix(strings.TrimSuffix(val, `"`), `"`)
		m[name] = val
	}
	return m
}

// emptyConfig is a configuration directory with the given files only.
func emptyConfig(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, text := range files {
		if err := os.WriteFile(dir+"/"+name, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}
