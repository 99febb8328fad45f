package cli

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func noEnv(string) (string, bool) { return "", false }

func TestParse(t *testing.T) {
	env := Env{Getenv: noEnv}
	c, err := parse([]string{"--config-dir=/x", "--set", "hostname=h.example", "check", "send", "--json", "a@b", "--", "-c@d"}, env)
	if err != nil {
		t.Fatal(err)
	}
	if c.cmd.path != "check send" || c.global.configDir != "/x" || c.global.set["hostname"] != "h.example" ||
		!c.json() || strings.Join(c.args, " ") != "a@b -c@d" || c.global.dataDir != "./data" {
		t.Errorf("parsed %+v", c)
	}
	env.Getenv = func(k string) (string, bool) {
		return map[string]string{"MAILGATE_CONFIG_DIR": "/etc/mg", "MAILGATE_DATA_DIR": "/var/mg"}[k], true
	}
	c, err = parse([]string{"domain", "list"}, env)
	if err != nil || c.global.configDir != "/etc/mg" || c.global.dataDir != "/var/mg" {
		t.Errorf("environment: %+v %v", c, err)
	}
}

// Every registered command has a summary and a usage naming its arguments.
func TestUsageTexts(t *testing.T) {
	for _, c := range commands {
		u := c.usage()
		if c.summary == "" || !strings.HasPrefix(u, "usage: mailgate "+c.path) {
			t.Errorf("%s: usage %q", c.path, u)
		}
		for _, a := range c.args {
			if !strings.Contains(u, a) {
				t.Errorf("%s: usage lacks %s", c.path, a)
			}
		}
		if !strings.Contains(topUsage(), c.path) {
			t.Errorf("top usage lacks %s", c.path)
		}
	}
}

func TestMainExitCodes(t *testing.T) {
	var out, errb bytes.Buffer
	code := Main([]string{"lol troll"}, Env{Stdout: &out, Stderr: &errb, Getenv: noEnv})
	if code != ExitUsage || !strings.Contains(errb.String(), `unknown command "lol troll"`) {
		t.Errorf("exit %d: %s", code, errb.String())
	}
	out.Reset()
	errb.Reset()
	code = Main([]string{"--config-dir", t.TempDir(), "--set", "hostname=h.example", "domain", "list"}, Env{Stdout: &out, Stderr: &errb, Getenv: noEnv})
	if code != ExitOK || out.String() != "" {
		t.Errorf("empty config: exit %d %q %q", code, out.String(), errb.String())
	}
}

// FuzzParse: any argument vector gives a command with the right number of
// arguments or a usage error with a message; never a panic.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"check\x00send\x00a@b\x00c@d", "--set\x00x", "check", "config\x00check\x00--json", "domain\x00list\x00--\x00-x", "--config-dir=\x00check\x00route\x00-h"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		args := strings.Split(s, "\x00")
		c, err := parse(args, Env{Getenv: noEnv})
		if err != nil {
			var ue *usageError
			if !errors.As(err, &ue) || ue.usage == "" {
				t.Fatalf("parse(%q): %v without usage", args, err)
			}
			return
		}
		if len(c.args) < len(c.cmd.args) || (!c.cmd.variadic && len(c.args) > len(c.cmd.args)+len(c.cmd.optArgs)) {
			t.Fatalf("parse(%q): %d arguments for %s", args, len(c.args), c.cmd.path)
		}
	})
}
