package smtpsrv

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/mailgate/mailgate/internal/authn"
	"github.com/mailgate/mailgate/internal/delivery"
	"github.com/mailgate/mailgate/internal/directory"
	"github.com/mailgate/mailgate/internal/passwd"
	"github.com/mailgate/mailgate/internal/settings"
	"github.com/mailgate/mailgate/internal/smtpsink"
)

// memAcceptor records accepted messages; block, when set, holds Accept
// until it is closed (to test a shutdown in the middle of a transaction).
type memAcceptor struct {
	mu    sync.Mutex
	msgs  [][]byte
	rcpts [][]delivery.Recipient
	envs  []delivery.Envelope
	block chan struct{}
	fail  error
}

func (m *memAcceptor) Accept(env delivery.Envelope, rcpts []delivery.Recipient, msg []byte) (delivery.Outcome, error) {
	if m.block != nil {
		<-m.block
	}
	if m.fail != nil {
		return delivery.Outcome{}, m.fail
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.msgs = append(m.msgs, append([]byte(nil), msg...))
	m.rcpts = append(m.rcpts, rcpts)
	m.envs = append(m.envs, env)
	return delivery.Outcome{}, nil
}

func (m *memAcceptor) count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.msgs)
}

var (
	hashOnce sync.Once
	hash     string
)

func testSnapshot(t testing.TB) *directory.Snapshot {
	t.Helper()
	hashOnce.Do(func() {
		h, err := passwd.Hash("secret")
		if err != nil {
			panic(err)
		}
		hash = h
	})
	st, err := settings.Load(t.TempDir(), func(string) (string, bool) { return "", false }, map[string]string{"hostname": "mx.example.test"})
	if err != nil {
		t.Fatal(err)
	}
	snap, err := directory.Build(map[string][]byte{
		"postfix-accounts.cf": []byte("alice@example.test|" + hash + "\nbob@example.test|" + hash + "\n"),
		"postfix-virtual.cf":  []byte("info@example.test alice@example.test\n"),
	}, st)
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

func testTLS(t testing.TB) *tls.Config {
	t.Helper()
	c, err := smtpsink.SelfSignedTLS("mx.example.test")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

type testServer struct {
	srv   *Server
	acc   *memAcceptor
	addrs map[Mode]string
}

func startTestServer(t *testing.T, mod func(*Config)) *testServer {
	t.Helper()
	snap := testSnapshot(t)
	acc := &memAcceptor{}
	cfg := Config{
		Hostname: "mx.example.test",
		TLS:      testTLS(t),
		Snapshot: func() *directory.Snapshot { return snap },
		Auth:     authn.New(authn.Options{}),
		Deliver:  acc,
	}
	if mod != nil {
		mod(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{srv: srv, acc: acc, addrs: map[Mode]string{}}
	var wg sync.WaitGroup
	for _, m := range []Mode{Inbound, Submission, Submissions} {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ts.addrs[m] = l.Addr().String()
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Serve(l, m); err != nil {
				t.Errorf("Serve %s: %v", m, err)
			}
		}()
	}
	t.Cleanup(func() {
		srv.Close()
		wg.Wait()
	})
	return ts
}

func dialSubmission(t *testing.T, ts *testServer, user string) *smtp.Client {
	t.Helper()
	c, err := smtp.DialStartTLS(ts.addrs[Submission], &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Auth(sasl.NewPlainClient("", user, "secret")); err != nil {
		t.Fatalf("AUTH %s: %v", user, err)
	}
	return c
}

func smtpCode(err error) int {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

func TestSubmissionFlow(t *testing.T) {
	ts := startTestServer(t, nil)
	c := dialSubmission(t, ts, "Alice@Example.Test")
	if err := c.Mail("bob@example.test", nil); smtpCode(err) != 553 {
		t.Fatalf("alice as bob: want 553, got %v", err)
	}
	if err := c.Mail("info@example.test", nil); err != nil {
		t.Fatalf("alice as her alias: %v", err)
	}
	if err := c.Rcpt("nobody@example.test", nil); smtpCode(err) != 550 {
		t.Errorf("unknown local recipient: want 550, got %v", err)
	}
	if err := c.Rcpt("someone@remote.example", nil); err != nil {
		t.Fatalf("remote recipient on submission: %v", err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("From: <info@example.test>\r\nSubject: hi\r\n\r\nbody\r\n"))
	if err := w.Close(); err != nil {
		t.Fatalf("DATA: %v", err)
	}
	if ts.acc.count() != 1 {
		t.Fatalf("accepted %d messages, want 1", ts.acc.count())
	}
	msg := string(ts.acc.msgs[0])
	for _, want := range []string{"Received: from ", "with ESMTPSA id ", "for <someone@remote.example>", "\r\nDate: ", "\r\nMessage-ID: <", "From: <info@example.test>\r\nSubject: hi\r\n\r\nbody\r\n"} {
		if !strings.Contains(msg, want) {
			t.Errorf("stored message lacks %q:\n%s", want, msg)
		}
	}
	if ts.acc.envs[0].From != "info@example.test" {
		t.Errorf("envelope from = %q", ts.acc.envs[0].From)
	}
}

func TestSubmissionHeaderReject(t *testing.T) {
	ts := startTestServer(t, nil)
	c := dialSubmission(t, ts, "alice@example.test")
	if err := c.Mail("alice@example.test", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("someone@remote.example", nil); err != nil {
		t.Fatal(err)
	}
	w, _ := c.Data()
	w.Write([]byte("From: <bob@example.test>\r\n\r\nx\r\n"))
	err := w.Close()
	if smtpCode(err) != 550 || !strings.Contains(err.Error(), "message header From") {
		t.Errorf("foreign From: want 550 naming the header, got %v", err)
	}
	if ts.acc.count() != 0 {
		t.Errorf("a rejected message was stored")
	}
}

// rawDial talks SMTP by hand to send what a client library would not.
func rawDial(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	readReply(t, r)
	return c, r
}

func readReply(t *testing.T, r *bufio.Reader) string {
	t.Helper()
	var out string
	for {
		line, err := r.ReadString('\n')
		out += line
		if err != nil {
			return out + "<" + err.Error() + ">"
		}
		if len(line) < 4 || line[3] != '-' {
			return out
		}
	}
}

func TestInboundRules(t *testing.T) {
	ts := startTestServer(t, nil)
	c, r := rawDial(t, ts.addrs[Inbound])
	send := func(s string) string {
		c.Write([]byte(s))
		return readReply(t, r)
	}
	if got := send("EHLO client\r\n"); strings.Contains(got, "AUTH") {
		t.Errorf("inbound offers AUTH: %s", got)
	}
	for _, step := range []struct{ cmd, want string }{
		{"MAIL FROM:<x@remote.example>\r\n", "250"},
		{"RCPT TO:<someone@gmail.com>\r\n", "554 5.7.1 <someone@gmail.com>: Relay access denied"},
		{"RCPT TO:<nobody@example.test>\r\n", "550 5.1.1"},
		{"RCPT TO:<bad\x00@example.test>\r\n", "5"},
		{"RCPT TO:<info+tag@example.test>\r\n", "250"},
		{"DATA\r\n", "354"},
		{"Subject: bare LF\nx\r\n.\r\n", "550 5.6.0"},
		{"MAIL FROM:<\x00x@remote.example>\r\n", "5"},
		{"MAIL FROM:<x@remote.example>\r\n", "250"},
		{"RCPT TO:<alice@example.test>\r\n", "250"},
		{"DATA\r\n", "354"},
		{"Subject: ok\r\n\r\nbody\r\n.\r\n", "250 2.0.0 OK: queued as"},
	} {
		if got := send(step.cmd); !strings.HasPrefix(got, step.want) {
			t.Errorf("%q: got %q, want prefix %q", step.cmd, got, step.want)
		}
	}
	if ts.acc.count() != 1 {
		t.Fatalf("stored %d messages, want 1", ts.acc.count())
	}
	if got := ts.acc.rcpts[0][0].Original; got != "alice@example.test" {
		t.Errorf("recipient = %q", got)
	}
}

func TestCheckLines(t *testing.T) {
	for in, ok := range map[string]bool{
		"a\r\nb\r\n": true, "": true, "a\nb\r\n": false, "a\rb\r\n": false, "a\r": false, "a\x00\r\n": false, "\r\n\r\n": true,
	} {
		if got := checkLines([]byte(in)) == nil; got != ok {
			t.Errorf("checkLines(%q) ok = %v, want %v", in, got, ok)
		}
	}
}

func TestSanitizeHelo(t *testing.T) {
	for in, want := range map[string]string{
		"mail.example.com": "mail.example.com", "[192.0.2.1]": "[192.0.2.1]", "": "unknown",
		"evil)\r\nX-Injected: 1": "unknown", "a(b)": "unknown", strings.Repeat("a", 300): "unknown",
	} {
		if got := sanitizeHelo(in); got != want {
			t.Errorf("sanitizeHelo(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestConnectionLimits(t *testing.T) {
	ts := startTestServer(t, func(c *Config) { c.MaxConnsPerIP = 2 })
	rawDial(t, ts.addrs[Inbound])
	rawDial(t, ts.addrs[Inbound])
	// The limits are per listener: submission still serves this address.
	rawDial(t, ts.addrs[Submission])
	c, err := net.Dial("tcp", ts.addrs[Inbound])
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	got := readReply(t, bufio.NewReader(c))
	if !strings.HasPrefix(got, "421 4.7.0") {
		t.Errorf("third connection from one address: want 421 4.7.0, got %q", got)
	}
	// Another loopback address is a different client.
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
	c2, err := d.Dial("tcp", ts.addrs[Inbound])
	if err != nil {
		t.Skipf("cannot bind 127.0.0.2: %v", err)
	}
	defer c2.Close()
	c2.SetDeadline(time.Now().Add(5 * time.Second))
	if got := readReply(t, bufio.NewReader(c2)); !strings.HasPrefix(got, "220") {
		t.Errorf("connection from 127.0.0.2: want 220, got %q", got)
	}
}

func TestCommandTimeout(t *testing.T) {
	ts := startTestServer(t, func(c *Config) { c.CommandTimeout = 300 * time.Millisecond })
	_, r := rawDial(t, ts.addrs[Inbound])
	start := time.Now()
	got := readReply(t, r)
	if !strings.HasPrefix(got, "421") {
		t.Errorf("idle client: want 421, got %q", got)
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("idle client cut off after %v", time.Since(start))
	}
}

func TestDataTimeout(t *testing.T) {
	ts := startTestServer(t, func(c *Config) { c.DataTimeout = 300 * time.Millisecond })
	c, r := rawDial(t, ts.addrs[Inbound])
	for _, cmd := range []string{"EHLO c\r\n", "MAIL FROM:<x@remote.example>\r\n", "RCPT TO:<alice@example.test>\r\n", "DATA\r\n"} {
		c.Write([]byte(cmd))
		readReply(t, r)
	}
	c.Write([]byte("Subject: slow\r\n"))
	_ = readReply(t, r) // the server gives up: an error reply or a closed connection
	if ts.acc.count() != 0 {
		t.Errorf("an incomplete message was stored")
	}
	// The server still serves others.
	c2, r2 := rawDial(t, ts.addrs[Inbound])
	c2.Write([]byte("NOOP\r\n"))
	if got := readReply(t, r2); !strings.HasPrefix(got, "250") {
		t.Errorf("other client after a data timeout: %q", got)
	}
}

// TestShutdownFinishesTransaction: Shutdown closes idle connections at once
// but lets a transaction in its DATA phase finish and be answered.
func TestShutdownFinishesTransaction(t *testing.T) {
	ts := startTestServer(t, nil)
	ts.acc.block = make(chan struct{})
	busy, br := rawDial(t, ts.addrs[Inbound])
	idle, ir := rawDial(t, ts.addrs[Inbound])
	for _, cmd := range []string{"EHLO c\r\n", "MAIL FROM:<x@remote.example>\r\n", "RCPT TO:<alice@example.test>\r\n", "DATA\r\n"} {
		busy.Write([]byte(cmd))
		readReply(t, br)
	}
	busy.Write([]byte("Subject: s\r\n\r\nb\r\n.\r\n"))
	time.Sleep(100 * time.Millisecond) // the server is now inside Accept
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- ts.srv.Shutdown(ctx)
	}()
	idle.SetDeadline(time.Now().Add(3 * time.Second))
	if got := readReply(t, ir); !strings.Contains(got, "EOF") && !strings.Contains(got, "reset") {
		t.Errorf("idle connection during shutdown: want it closed, got %q", got)
	}
	close(ts.acc.block)
	if got := readReply(t, br); !strings.HasPrefix(got, "250") {
		t.Errorf("transaction in progress during shutdown: want 250, got %q", got)
	}
	if err := <-done; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if _, err := net.DialTimeout("tcp", ts.addrs[Inbound], time.Second); err == nil {
		t.Errorf("listener still accepting after Shutdown")
	}
}

func TestSMTPUTF8Required(t *testing.T) {
	ts := startTestServer(t, nil)
	c, r := rawDial(t, ts.addrs[Inbound])
	send := func(s string) string {
		c.Write([]byte(s))
		return readReply(t, r)
	}
	send("EHLO client\r\n")
	for _, step := range []struct{ cmd, want string }{
		{"MAIL FROM:<jörg@remote.example>\r\n", "553 5.6.7"},
		{"MAIL FROM:<jörg@remote.example> SMTPUTF8\r\n", "250"},
		{"RCPT TO:<alice@example.test>\r\n", "250"},
		{"RSET\r\n", "250"},
		{"MAIL FROM:<x@remote.example>\r\n", "250"},
		{"RCPT TO:<jörg@example.test>\r\n", "553 5.6.7"},
	} {
		if got := send(step.cmd); !strings.HasPrefix(got, step.want) {
			t.Errorf("%q: got %q, want prefix %q", step.cmd, got, step.want)
		}
	}
}

// TestReceivedNoInjection: a hostile HELO name cannot add header lines.
func TestReceivedNoInjection(t *testing.T) {
	ts := startTestServer(t, nil)
	c, r := rawDial(t, ts.addrs[Inbound])
	for _, cmd := range []string{"EHLO evil\tX-Injected:1\r\n", "MAIL FROM:<x@remote.example>\r\n", "RCPT TO:<alice@example.test>\r\n", "DATA\r\n", "Subject: s\r\n\r\nb\r\n.\r\n"} {
		c.Write([]byte(cmd))
		readReply(t, r)
	}
	if ts.acc.count() != 1 {
		t.Fatalf("stored %d messages", ts.acc.count())
	}
	msg := string(ts.acc.msgs[0])
	if strings.Contains(msg, "X-Injected") || !strings.HasPrefix(msg, "Received: from ") {
		t.Errorf("Received field: %q", msg)
	}
}

func TestStripTraceFields(t *testing.T) {
	in := "Return-Path: <ceo@example.test>\r\nAuthentication-Results: MX.example.test;\r\n dkim=pass\r\nAuthentication-Results: other.example; spf=pass\r\nSubject: hi\r\n\r\nReturn-Path: in the body stays\r\n"
	want := "Authentication-Results: other.example; spf=pass\r\nSubject: hi\r\n\r\nReturn-Path: in the body stays\r\n"
	raw := []byte(in)
	out, end := stripTraceFields(raw, headerEnd(raw), "mx.example.test")
	if string(out) != want {
		t.Errorf("got %q\nwant %q", out, want)
	}
	if end != strings.Index(want, "\r\n\r\n")+4 {
		t.Errorf("header end %d", end)
	}
	// Nothing to strip: unchanged.
	plain := []byte("Subject: x\r\n\r\nbody\r\n")
	if out, _ := stripTraceFields(append([]byte(nil), plain...), headerEnd(plain), "mx.example.test"); string(out) != string(plain) {
		t.Errorf("changed a clean message: %q", out)
	}
}

// TestBDATAfterReset: a chunked transaction aborted by RSET never answers
// for the next one (the go-smtp patch in third_party/go-smtp).
func TestBDATAfterReset(t *testing.T) {
	ts := startTestServer(t, nil)
	c, r := rawDial(t, ts.addrs[Inbound])
	c.Write([]byte("EHLO c\r\n"))
	readReply(t, r)
	const rounds = 100
	body := "Subject: chunked\r\n\r\nbody\r\n"
	for i := 0; i < rounds; i++ {
		fmt.Fprintf(c, "MAIL FROM:<x@remote.example>\r\nRCPT TO:<alice@example.test>\r\nBDAT 5\r\nabcdeRSET\r\nMAIL FROM:<x@remote.example>\r\nRCPT TO:<alice@example.test>\r\nBDAT %d LAST\r\n%s", len(body), body)
		want := []string{"250", "250", "250", "250", "250", "250", "250 2.0.0 OK: queued"}
		for j, w := range want {
			if got := readReply(t, r); !strings.HasPrefix(got, w) {
				t.Fatalf("round %d reply %d: got %q, want %s", i, j, got, w)
			}
		}
	}
	if n := ts.acc.count(); n != rounds {
		t.Errorf("stored %d messages, want %d", n, rounds)
	}
}

// TestBDATDataTimeout: chunks trickling in cannot keep a transaction open
// beyond data_timeout.
func TestBDATDataTimeout(t *testing.T) {
	ts := startTestServer(t, func(c *Config) { c.DataTimeout = 400 * time.Millisecond })
	c, r := rawDial(t, ts.addrs[Inbound])
	for _, cmd := range []string{"EHLO c\r\n", "MAIL FROM:<x@remote.example>\r\n", "RCPT TO:<alice@example.test>\r\n"} {
		c.Write([]byte(cmd))
		readReply(t, r)
	}
	start := time.Now()
	for i := 0; i < 20; i++ {
		if _, err := c.Write([]byte("BDAT 1\r\nx")); err != nil {
			break
		}
		if got := readReply(t, r); !strings.HasPrefix(got, "250") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if d := time.Since(start); d > 1500*time.Millisecond {
		t.Errorf("trickled BDAT kept the transaction open for %v", d)
	}
	if ts.acc.count() != 0 {
		t.Errorf("an incomplete message was stored")
	}
}

// TestCloseBeforeServe: a Close that comes before Serve has registered its
// listener still ends that Serve.
func TestCloseBeforeServe(t *testing.T) {
	snap := testSnapshot(t)
	srv, err := New(Config{Hostname: "mx.example.test", TLS: testTLS(t), Snapshot: func() *directory.Snapshot { return snap },
		Auth: authn.New(authn.Options{}), Deliver: &memAcceptor{}})
	if err != nil {
		t.Fatal(err)
	}
	srv.Close()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l, Submissions) }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve after Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve after Close did not return")
	}
}
