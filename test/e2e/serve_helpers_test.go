package e2e

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// lockedBuffer collects a server's log while tests read it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// serveProc is a running `mailgate serve`.
type serveProc struct {
	t        *testing.T
	cmd      *exec.Cmd
	cfg      string
	data     string
	log      *lockedBuffer
	addrs    map[string]string // listener name → 127.0.0.1:port
	done     chan struct{}
	exitCode int
}

var listeningRE = regexp.MustCompile(`msg=listening .*listener=(\w+) addr=(\S+)`)

// startServe starts `mailgate serve` on 127.0.0.1 ports (port 0 unless
// ports names them: listener name → address) and waits until every listener
// is open. The server is killed at the end of the test if still running.
func startServe(t *testing.T, cfg, data string, ports map[string]string, extra ...string) *serveProc {
	t.Helper()
	addr := func(name string) string {
		if a, ok := ports[name]; ok {
			return a
		}
		return "127.0.0.1:0"
	}
	args := []string{"--config-dir", cfg, "--data-dir", data, "--set", "hostname=mail.example.test"}
	// "--set NAME=VALUE" pairs are global options: they go before "serve".
	// "--env NAME=VALUE" pairs go to the server's environment.
	var rest, env []string
	for i := 0; i < len(extra); i++ {
		if extra[i] == "--set" && i+1 < len(extra) {
			args = append(args, extra[i], extra[i+1])
			i++
			continue
		}
		if extra[i] == "--env" && i+1 < len(extra) {
			env = append(env, extra[i+1])
			i++
			continue
		}
		rest = append(rest, extra[i])
	}
	args = append(args, "serve", "--smtp", addr("smtp"), "--submission", addr("submission"), "--submissions", addr("submissions"))
	args = append(args, rest...)
	cmd := exec.Command(binary, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, env...)
	pr, pw := io.Pipe()
	cmd.Stderr = pw
	cmd.Stdout = pw
	p := &serveProc{t: t, cmd: cmd, cfg: cfg, data: data, log: &lockedBuffer{}, addrs: map[string]string{}, done: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting mailgate serve: %v", err)
	}
	ready := make(chan struct{})
	var once sync.Once
	want := 0
	for _, name := range []string{"smtp", "submission", "submissions"} {
		if addr(name) != "" {
			want++
		}
	}
	for _, a := range extra {
		switch a {
		case "--policy", "--socketmap", "--milter", "--sasl":
			want++
		}
	}
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		n := 0
		for sc.Scan() {
			line := sc.Text()
			p.log.Write([]byte(line + "\n"))
			if m := listeningRE.FindStringSubmatch(line); m != nil {
				p.log.mu.Lock()
				p.addrs[m[1]] = m[2]
				p.log.mu.Unlock()
				if n++; n == want {
					once.Do(func() { close(ready) })
				}
			}
		}
		io.Copy(io.Discard, pr)
	}()
	go func() {
		err := cmd.Wait()
		pw.Close()
		p.exitCode = 0
		if ee, ok := err.(*exec.ExitError); ok {
			p.exitCode = ee.ExitCode()
		}
		close(p.done)
	}()
	select {
	case <-ready:
	case <-p.done:
		t.Fatalf("mailgate serve exited (%d) before listening:\n%s", p.exitCode, p.log.String())
	case <-time.After(20 * time.Second):
		p.kill()
		t.Fatalf("mailgate serve did not open its listeners in 20 s:\n%s", p.log.String())
	}
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("server log:\n%s", p.log.String())
		}
	})
	return p
}

func (p *serveProc) addr(name string) string {
	p.log.mu.Lock()
	defer p.log.mu.Unlock()
	return p.addrs[name]
}

// kill stops the server with SIGKILL (no shutdown at all).
func (p *serveProc) kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// stop sends SIGTERM and waits for the exit; it fails the test if the
// server does not exit cleanly in time.
func (p *serveProc) stop() {
	p.t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		if p.exitCode != 0 {
			p.t.Errorf("mailgate serve exited %d after SIGTERM", p.exitCode)
		}
	case <-time.After(40 * time.Second):
		p.kill()
		p.t.Errorf("mailgate serve did not stop within 40 s of SIGTERM")
	}
}

// waitLog waits until the server log matches re.
func (p *serveProc) waitLog(re string, d time.Duration) bool {
	rx := regexp.MustCompile(re)
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if rx.MatchString(p.log.String()) {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

// swaksResult is the outcome of one swaks run.
type swaksResult struct {
	code int
	out  string
}

// swaks runs swaks with the given arguments (a TLS-capable swaks is needed:
// Debian packages swaks, libnet-ssleay-perl, libio-socket-ssl-perl).
func swaks(t *testing.T, args ...string) swaksResult {
	t.Helper()
	bin := needTool(t, "swaks", "swaks")
	cmd := exec.Command(bin, append([]string{"--timeout", "20", "--hide-informational"}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("swaks: %v", err)
	}
	if strings.Contains(out.String(), "TLS not available") || strings.Contains(out.String(), "Net::SSLeay") {
		t.Fatalf("swaks has no TLS support (install libnet-ssleay-perl libio-socket-ssl-perl):\n%s", out.String())
	}
	return swaksResult{code, out.String()}
}

// maildirFiles returns the files in DATA/mail/<domain>/<local>/new.
func maildirFiles(t *testing.T, data, mailbox string) []string {
	t.Helper()
	local, domain, _ := strings.Cut(mailbox, "@")
	entries, err := os.ReadDir(filepath.Join(data, "mail", domain, local, "new"))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, filepath.Join(data, "mail", domain, local, "new", e.Name()))
	}
	return out
}

// waitMaildir waits until some file in mailbox's new/ contains marker and
// returns its content.
func waitMaildir(t *testing.T, data, mailbox, marker string, d time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		for _, f := range maildirFiles(t, data, mailbox) {
			b, err := os.ReadFile(f)
			if err == nil && strings.Contains(string(b), marker) {
				return string(b)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no message with %q in %s's Maildir after %v", marker, mailbox, d)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
