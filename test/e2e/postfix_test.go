package e2e

// Postfix integration (SPEC §9): a throwaway Postfix instance configured
// with the output of `mailgate postfix config`, and one scenario table run
// against it and against `mailgate serve`: every verdict must agree.

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/internal/smtpsink"
)

// postfixInstance is a running throwaway Postfix.
type postfixInstance struct {
	dir                           string // config_directory
	run                           string
	smtp, submission, submissions string // 127.0.0.1:port
	mailRoot                      string
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startPostfix creates and starts a Postfix instance under a temp dir
// (test/postfix/instance.sh) that uses mailgate's listeners (addrs from the
// running mailgate) and relays to relay. It needs root: Postfix's master
// starts as root.
func startPostfix(t *testing.T, mg *serveProc, relay string) *postfixInstance {
	t.Helper()
	needTool(t, "postfix", "postfix")
	needTool(t, "openssl", "openssl")
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("the Postfix integration test needs root (Postfix's master starts as root)")
		}
		t.Skip("the Postfix integration test needs root")
	}
	run, err := os.MkdirTemp("", "mailgate-postfix-")
	if err != nil {
		t.Fatal(err)
	}
	pf := &postfixInstance{dir: filepath.Join(run, "etc"), run: run, smtp: freePort(t), submission: freePort(t), submissions: freePort(t),
		mailRoot: filepath.Join(run, "mail")}
	gen := run2(t, binary, "--config-dir", mg.cfg, "--data-dir", mg.data, "postfix", "config",
		"--policy", mg.addr("policy"), "--socketmap", mg.addr("socketmap"), "--milter", mg.addr("milter"), "--sasl", mg.addr("sasl"),
		"--mail-root", pf.mailRoot, "--submission", pf.submission, "--submissions", pf.submissions)
	if gen.code != 0 {
		t.Fatalf("mailgate postfix config: %d\n%s", gen.code, gen.stderr)
	}
	cfgFile := filepath.Join(t.TempDir(), "postfix-config.txt")
	if err := os.WriteFile(cfgFile, []byte(gen.stdout), 0o644); err != nil {
		t.Fatal(err)
	}
	const script = "../postfix/instance.sh"
	t.Cleanup(func() {
		exec.Command("bash", script, "stop", run).Run()
		if t.Failed() {
			t.Logf("postfix maillog:\n%s", readFileOr(filepath.Join(run, "maillog")))
		}
		os.RemoveAll(run)
	})
	if out, err := exec.Command("bash", script, "start", run, relay, cfgFile, pf.smtp).CombinedOutput(); err != nil {
		t.Fatalf("starting Postfix: %v\n%s\n%s", err, out, readFileOr(filepath.Join(run, "maillog")))
	}
	for _, a := range []string{pf.smtp, pf.submission, pf.submissions} {
		deadline := time.Now().Add(15 * time.Second)
		for {
			c, err := net.DialTimeout("tcp", a, time.Second)
			if err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("postfix did not listen on %s:\n%s", a, readFileOr(filepath.Join(run, "maillog")))
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return pf
}

func readFileOr(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	return string(b)
}

// run2 runs a command and returns its result (without the e2e run's
// config-dir defaults).
func run2(t *testing.T, bin string, args ...string) result {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var so, se strings.Builder
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return result{code, so.String(), se.String()}
}

// verdict is what a scenario got: "accept", or the first failure reply's
// class and enhanced code ("5 5.7.1").
var replyRE = regexp.MustCompile(`(?m)^<[~*-]+ ([45])\d\d[ -]([245]\.\d{1,3}\.\d{1,3})`)

func verdictOf(r swaksResult) string {
	if r.code == 0 {
		return "accept"
	}
	if m := replyRE.FindStringSubmatch(r.out); m != nil {
		return m[1] + " " + m[2]
	}
	return fmt.Sprintf("exit %d", r.code)
}

type scenario struct {
	name     string
	listener string // smtp, submission, submissions
	login    string // "" for none
	password string
	from, to string
	data     string // "" for swaks' default message
}

func scenarios() []scenario {
	const d = "@localhost.localdomain"
	pw := fixturePassword
	hdr := func(from string) string {
		return "From: <" + from + ">\r\nTo: <x@y>\r\nSubject: scenario\r\n\r\nbody\r\n"
	}
	var out []scenario
	for _, l := range []string{"submissions", "submission"} {
		out = append(out,
			scenario{l + ": added as user2", l, "added" + d, pw, "user2" + d, "someone@remote.example", hdr("user2" + d)},
			scenario{l + ": user1 as alias1", l, "user1" + d, pw, "alias1" + d, "someone@remote.example", hdr("alias1" + d)},
			scenario{l + ": user1 as user3 (send-as)", l, "user1" + d, pw, "user3" + d, "someone@remote.example", hdr("user3" + d)},
			scenario{l + ": user3 as user1", l, "user3" + d, pw, "user1" + d, "someone@remote.example", hdr("user1" + d)},
			scenario{l + ": wrong password", l, "user1" + d, "wrong", "user1" + d, "someone@remote.example", hdr("user1" + d)},
			scenario{l + ": second From", l, "user1" + d, pw, "user1" + d, "someone@remote.example",
				"From: <user1" + d + ">\r\nFrom: <user2@otherdomain.tld>\r\nSubject: s\r\n\r\nb\r\n"},
			scenario{l + ": From not owned", l, "user1" + d, pw, "user1" + d, "someone@remote.example", hdr("user2" + d)},
			scenario{l + ": user1 to a local user", l, "user1" + d, pw, "user1" + d, "user2@otherdomain.tld", hdr("user1" + d)},
		)
	}
	for _, rcpt := range []string{"alias1" + d, "alias1+test" + d, "wildcard@localdomain2.com", "test123" + d, "nouser" + d, "someone@gmail.com"} {
		out = append(out, scenario{"inbound to " + rcpt, "smtp", "", "", "sender@remote.example", rcpt, ""})
	}
	return out
}

func runScenario(t *testing.T, addrs map[string]string, s scenario) swaksResult {
	args := []string{"--server", addrs[s.listener], "--from", s.from, "--to", s.to, "--helo", "client.example"}
	switch s.listener {
	case "submissions":
		args = append(args, "--tls-on-connect")
	case "submission":
		args = append(args, "--tls")
	}
	if s.login != "" {
		args = append(args, "--auth", "PLAIN", "--auth-user", s.login, "--auth-password", s.password)
	}
	if s.data != "" {
		args = append(args, "--data", s.data)
	}
	return swaks(t, args...)
}

func TestPostfixIntegration(t *testing.T) {
	sink, err := smtpsink.Start(smtpsink.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	cfg := configDir(t, nil)
	data := filepath.Join(t.TempDir(), "data")
	mgArgs := []string{"--relay-host", sink.Addr(), "--policy", "127.0.0.1:0", "--socketmap", "127.0.0.1:0", "--milter", "127.0.0.1:0", "--sasl", "127.0.0.1:0"}
	mg := startServe(t, cfg, data, nil, mgArgs...)
	// Postfix's virtual(8) reads DATA/postfix/vmailbox as the postfix user:
	// the directories above it must be searchable (docs/postfix.md).
	for d := data; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		os.Chmod(d, 0o711)
	}
	pf := startPostfix(t, mg, sink.Addr())
	mgAddrs := map[string]string{"smtp": mg.addr("smtp"), "submission": mg.addr("submission"), "submissions": mg.addr("submissions")}
	pfAddrs := map[string]string{"smtp": pf.smtp, "submission": pf.submission, "submissions": pf.submissions}

	for _, s := range scenarios() {
		a := verdictOf(runScenario(t, mgAddrs, s))
		rb := runScenario(t, pfAddrs, s)
		b := verdictOf(rb)
		if a != b {
			t.Errorf("%s: mailgate serve %q, Postfix+mailgate %q\n%s", s.name, a, b, rb.out)
		} else {
			t.Logf("%s: both %s", s.name, a)
		}
	}
	// Inbound delivery by Postfix's virtual(8) lands in the same layout.
	r := runScenario(t, pfAddrs, scenario{"", "smtp", "", "", "sender@remote.example", "alias1@localhost.localdomain",
		"From: <sender@remote.example>\r\nSubject: via-postfix\r\n\r\nbody\r\n"})
	if r.code != 0 {
		t.Fatalf("inbound via Postfix: %s", r.out)
	}
	msg := waitMaildir(t, pf.run, "user1@localhost.localdomain", "via-postfix", 15*time.Second) // pf.run/mail is the mail root
	if !strings.Contains(msg, "X-Original-To: alias1@localhost.localdomain") {
		t.Errorf("Postfix delivery lacks X-Original-To:\n%s", msg)
	}

	// mailgate down: Postfix answers temporary failures, never an accept.
	ports := map[string]string{}
	for _, n := range []string{"smtp", "submission", "submissions", "policy", "socketmap", "milter", "sasl"} {
		ports[n] = mg.addr(n)
	}
	mg.kill()
	for _, s := range []scenario{
		{"down: submission", "submission", "user1@localhost.localdomain", fixturePassword, "user1@localhost.localdomain", "someone@remote.example", ""},
		{"down: inbound", "smtp", "", "", "sender@remote.example", "alias1@localhost.localdomain", ""},
	} {
		v := verdictOf(runScenario(t, pfAddrs, s))
		if !strings.HasPrefix(v, "4 ") {
			t.Errorf("%s with mailgate down: want a 4xx, got %q", s.name, v)
		}
	}
	// Restarted on the same ports: service is back without touching Postfix.
	restart := []string{"--relay-host", sink.Addr(), "--policy", ports["policy"], "--socketmap", ports["socketmap"], "--milter", ports["milter"], "--sasl", ports["sasl"]}
	startServe(t, cfg, data, map[string]string{"smtp": ports["smtp"], "submission": ports["submission"], "submissions": ports["submissions"]}, restart...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		v := verdictOf(runScenario(t, pfAddrs, scenario{"", "submission", "user1@localhost.localdomain", fixturePassword, "user1@localhost.localdomain", "someone@remote.example", ""}))
		if v == "accept" {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("after mailgate restarted, Postfix still answers %q", v)
		}
		time.Sleep(500 * time.Millisecond)
	}
}
