package e2e

// Acceptance tests of `mailgate serve` (SPEC §8), driven with swaks and raw
// SMTP against the real binary on 127.0.0.1, relaying to an in-process sink.

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailgate/mailgate/internal/smtpsink"
)

const fixturePassword = "mypassword"

// serveFixture starts a sink and mailgate serve on the DMS fixture,
// relaying to the sink; extra are more serve arguments.
func serveFixture(t *testing.T, sinkOpts smtpsink.Options, extra ...string) (*serveProc, *smtpsink.Sink) {
	t.Helper()
	sink, err := smtpsink.Start(sinkOpts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.Close() })
	cfg := configDir(t, nil)
	data := filepath.Join(t.TempDir(), "data")
	args := append([]string{"--relay-host", sink.Addr(), "--set", "queue_backoff_min=1s", "--set", "queue_backoff_max=2s"}, extra...)
	return startServe(t, cfg, data, nil, args...), sink
}

// submit runs swaks against a submission listener: implicit TLS on
// "submissions", STARTTLS on "submission".
func submit(t *testing.T, p *serveProc, listener, login, password, from, to string, more ...string) swaksResult {
	t.Helper()
	args := []string{"--server", p.addr(listener), "--auth", "PLAIN", "--auth-user", login, "--auth-password", password,
		"--from", from, "--to", to}
	if listener == "submissions" {
		args = append(args, "--tls-on-connect")
	} else {
		args = append(args, "--tls")
	}
	return swaks(t, append(args, more...)...)
}

func TestServeSubmissionOwnership(t *testing.T) {
	p, sink := serveFixture(t, smtpsink.Options{})
	const d = "@localhost.localdomain"
	for _, listener := range []string{"submissions", "submission"} {
		t.Run(listener, func(t *testing.T) {
			r := submit(t, p, listener, "added"+d, fixturePassword, "user2"+d, "someone@remote.example")
			if r.code == 0 || !strings.Contains(r.out, "Sender address rejected: not owned by user") {
				t.Errorf("added as user2: want rejection 'not owned by user', got exit %d:\n%s", r.code, r.out)
			}
			for _, c := range []struct{ login, from string }{
				{"user1" + d, "alias1" + d}, // an alias of user1
				{"user1" + d, "user3" + d},  // send-as grant (user3 is an alias key to user1)
				{"USER1" + d, "user1" + d},  // login in any case
			} {
				r := submit(t, p, listener, c.login, fixturePassword, c.from, "someone@remote.example")
				if r.code != 0 || !strings.Contains(r.out, "250 2.0.0 OK: queued as") {
					t.Errorf("%s as %s: want 250 after DATA, got exit %d:\n%s", c.login, c.from, r.code, r.out)
				}
			}
			r = submit(t, p, listener, "user3"+d, fixturePassword, "user1"+d, "someone@remote.example")
			if r.code == 0 || !strings.Contains(r.out, "553 5.7.1") {
				t.Errorf("user3 as user1: want 553 5.7.1, got exit %d:\n%s", r.code, r.out)
			}
			r = submit(t, p, listener, "user1"+d, "wrong", "user1"+d, "someone@remote.example")
			if r.code == 0 || !strings.Contains(r.out, "535 5.7.8") {
				t.Errorf("wrong password: want 535 5.7.8, got exit %d:\n%s", r.code, r.out)
			}
		})
	}
	// The accepted messages reached the relay host.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := sink.Wait(ctx, 6); err != nil {
		t.Errorf("sink: %v (got %d)", err, sink.Count())
	}
}

// rawSession is a minimal line-based SMTP client for what swaks cannot show
// (the capabilities offered before and after STARTTLS).
type rawSession struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawSession {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	s := &rawSession{t: t, conn: c, r: bufio.NewReader(c)}
	if got := s.read(); !strings.HasPrefix(got, "220 ") {
		t.Fatalf("greeting: %q", got)
	}
	return s
}

// read returns a whole (possibly multi-line) reply.
func (s *rawSession) read() string {
	s.t.Helper()
	var all []string
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			return strings.Join(append(all, line), "") + "<" + err.Error() + ">"
		}
		all = append(all, line)
		if len(line) < 4 || line[3] != '-' {
			return strings.Join(all, "")
		}
	}
}

func (s *rawSession) cmd(line string) string {
	s.t.Helper()
	if _, err := s.conn.Write([]byte(line + "\r\n")); err != nil {
		return "<write: " + err.Error() + ">"
	}
	return s.read()
}

func (s *rawSession) startTLS() {
	s.t.Helper()
	if got := s.cmd("STARTTLS"); !strings.HasPrefix(got, "220") {
		s.t.Fatalf("STARTTLS: %q", got)
	}
	tc := tls.Client(s.conn, &tls.Config{InsecureSkipVerify: true})
	if err := tc.Handshake(); err != nil {
		s.t.Fatal(err)
	}
	s.conn, s.r = tc, bufio.NewReader(tc)
}

func TestServeAuthOffers(t *testing.T) {
	p, _ := serveFixture(t, smtpsink.Options{})
	// Submission: no AUTH before STARTTLS, and AUTH refused; offered after.
	s := dialRaw(t, p.addr("submission"))
	if ehlo := s.cmd("EHLO client.example"); strings.Contains(ehlo, "AUTH") || !strings.Contains(ehlo, "STARTTLS") {
		t.Errorf("submission EHLO before STARTTLS: want STARTTLS and no AUTH:\n%s", ehlo)
	}
	if got := s.cmd("AUTH PLAIN AHVzZXIxQGxvY2FsaG9zdC5sb2NhbGRvbWFpbgBteXBhc3N3b3Jk"); !strings.HasPrefix(got, "5") {
		t.Errorf("AUTH before STARTTLS: want a 5xx refusal, got %q", got)
	}
	if got := s.cmd("MAIL FROM:<user1@localhost.localdomain>"); !strings.HasPrefix(got, "530 5.7.0") {
		t.Errorf("MAIL before AUTH: want 530 5.7.0, got %q", got)
	}
	s.startTLS()
	if ehlo := s.cmd("EHLO client.example"); !strings.Contains(ehlo, "AUTH PLAIN LOGIN") {
		t.Errorf("submission EHLO after STARTTLS: want AUTH PLAIN LOGIN:\n%s", ehlo)
	}
	// LOGIN mechanism, step by step.
	if got := s.cmd("AUTH LOGIN"); !strings.HasPrefix(got, "334 ") {
		t.Fatalf("AUTH LOGIN: %q", got)
	}
	if got := s.cmd("dXNlcjFAbG9jYWxob3N0LmxvY2FsZG9tYWlu"); !strings.HasPrefix(got, "334 ") {
		t.Fatalf("AUTH LOGIN user: %q", got)
	}
	if got := s.cmd("bXlwYXNzd29yZA=="); !strings.HasPrefix(got, "235") {
		t.Fatalf("AUTH LOGIN password: %q", got)
	}

	// Inbound: no AUTH, before or after STARTTLS.
	in := dialRaw(t, p.addr("smtp"))
	if ehlo := in.cmd("EHLO client.example"); strings.Contains(ehlo, "AUTH") {
		t.Errorf("inbound EHLO offers AUTH:\n%s", ehlo)
	}
	if got := in.cmd("AUTH PLAIN AHVzZXIxQGxvY2FsaG9zdC5sb2NhbGRvbWFpbgBteXBhc3N3b3Jk"); !strings.HasPrefix(got, "5") {
		t.Errorf("inbound AUTH: want 5xx, got %q", got)
	}
	in.startTLS()
	if ehlo := in.cmd("EHLO client.example"); strings.Contains(ehlo, "AUTH") {
		t.Errorf("inbound EHLO after STARTTLS offers AUTH:\n%s", ehlo)
	}
}

func TestServeHeaderChecks(t *testing.T) {
	p, _ := serveFixture(t, smtpsink.Options{})
	const u1 = "user1@localhost.localdomain"
	for name, c := range map[string]struct{ data, field string }{
		"second From":    {"From: <" + u1 + ">\r\nFrom: <user2@otherdomain.tld>\r\nTo: <someone@remote.example>\r\nSubject: two\r\n\r\nbody\r\n", "From"},
		"foreign From":   {"From: <user2@localhost.localdomain>\r\nTo: <someone@remote.example>\r\nSubject: spoof\r\n\r\nbody\r\n", "From"},
		"foreign Sender": {"From: <" + u1 + ">\r\nSender: <added@localhost.localdomain>\r\nSubject: s\r\n\r\nbody\r\n", "Sender"},
	} {
		t.Run(name, func(t *testing.T) {
			r := submit(t, p, "submissions", u1, fixturePassword, u1, "someone@remote.example", "--data", c.data)
			if r.code == 0 || !strings.Contains(r.out, "550 5.7.1") || !strings.Contains(r.out, "message header "+c.field) {
				t.Errorf("want 550 5.7.1 naming header %s, got exit %d:\n%s", c.field, r.code, r.out)
			}
		})
	}
}

func TestServeInboundDelivery(t *testing.T) {
	p, sink := serveFixture(t, smtpsink.Options{})
	const d = "@localhost.localdomain"
	for _, c := range []struct{ rcpt, mailbox string }{
		{"alias1" + d, "user1" + d},
		{"alias1+test" + d, "user1" + d},
		{"wildcard@localdomain2.com", "user1" + d},
		{"test123" + d, "user1" + d},
		{"user1" + d, "user1" + d},
		{"user2@otherdomain.tld", "user2@otherdomain.tld"},
	} {
		marker := fmt.Sprintf("marker-%s-%d", c.rcpt, time.Now().UnixNano())
		r := swaks(t, "--server", p.addr("smtp"), "--from", "sender@remote.example", "--to", c.rcpt,
			"--header", "Subject: "+marker)
		if r.code != 0 {
			t.Errorf("inbound to %s: exit %d:\n%s", c.rcpt, r.code, r.out)
			continue
		}
		msg := waitMaildir(t, p.data, c.mailbox, marker, 5*time.Second)
		for _, want := range []string{"Return-Path: <sender@remote.example>\n", "X-Original-To: " + strings.ToLower(c.rcpt) + "\n",
			"Delivered-To: " + strings.ToLower(c.mailbox) + "\n", "Received: from "} {
			if !strings.Contains(msg, want) {
				t.Errorf("inbound to %s: message lacks %q:\n%s", c.rcpt, want, msg)
			}
		}
	}
	for _, c := range []struct{ rcpt, want string }{
		{"nouser" + d, "550 5.1.1"},
		{"someone@gmail.com", "554 5.7.1"},
	} {
		r := swaks(t, "--server", p.addr("smtp"), "--from", "sender@remote.example", "--to", c.rcpt)
		if r.code == 0 || !strings.Contains(r.out, c.want) {
			t.Errorf("inbound to %s: want %s, got exit %d:\n%s", c.rcpt, c.want, r.code, r.out)
		}
	}
	if r := swaks(t, "--server", p.addr("smtp"), "--from", "sender@remote.example", "--to", "someone@gmail.com"); !strings.Contains(r.out, "Relay access denied") {
		t.Errorf("relay attempt: want 'Relay access denied':\n%s", r.out)
	}
	if sink.Count() != 0 {
		t.Errorf("the relay host got %d messages from inbound tests; want 0", sink.Count())
	}
}

func TestServeRelay(t *testing.T) {
	p, sink := serveFixture(t, smtpsink.Options{})
	const u1 = "user1@localhost.localdomain"
	body := "From: <" + u1 + ">\r\nTo: <someone@remote.example>\r\nSubject: relay\r\nDate: Wed, 25 Nov 2026 12:00:00 +0000\r\nMessage-ID: <relay-1@example.test>\r\n\r\nline one\r\n.leading dot\r\n\xc3\xa9t\xc3\xa9 8-bit\r\n"
	r := submit(t, p, "submission", u1, fixturePassword, u1, "someone@remote.example", "--data", body)
	if r.code != 0 {
		t.Fatalf("submission: exit %d:\n%s", r.code, r.out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	msgs, err := sink.Wait(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	m := msgs[0]
	if m.From != u1 || len(m.To) != 1 || m.To[0] != "someone@remote.example" {
		t.Errorf("envelope at the relay host: from %q to %q", m.From, m.To)
	}
	// The message is the submitted one with our Received field on top.
	// (swaks ends the data with one more CRLF than given.)
	want := body + "\r\n"
	if !strings.HasPrefix(string(m.Data), "Received: ") || !strings.HasSuffix(string(m.Data), want) {
		t.Errorf("relayed message is not the submitted one plus Received:\n%q\nwant suffix\n%q", m.Data, want)
	}
}

// TestServeRelayRetry: with the relay host down, the message stays queued
// and arrives once it is up.
func TestServeRelayRetry(t *testing.T) {
	// Reserve a port for the sink, and keep it closed for now.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sinkAddr := l.Addr().String()
	l.Close()
	cfg := configDir(t, nil)
	data := filepath.Join(t.TempDir(), "data")
	p := startServe(t, cfg, data, nil, "--relay-host", sinkAddr, "--set", "queue_backoff_min=1s", "--set", "queue_backoff_max=2s")
	const u1 = "user1@localhost.localdomain"
	r := submit(t, p, "submission", u1, fixturePassword, u1, "someone@remote.example", "--header", "Subject: retry-me")
	if r.code != 0 {
		t.Fatalf("submission: exit %d:\n%s", r.code, r.out)
	}
	if !p.waitLog(`(?i)deferred|temporary|connection refused`, 10*time.Second) {
		t.Errorf("no failed delivery attempt logged while the relay host was down")
	}
	if files, _ := filepath.Glob(filepath.Join(data, "queue", "*.seg")); len(files) == 0 {
		t.Errorf("no queue segment in %s", filepath.Join(data, "queue"))
	}
	sink, err := smtpsink.Start(smtpsink.Options{Addr: sinkAddr})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	msgs, err := sink.Wait(ctx, 1)
	if err != nil {
		t.Fatalf("the queued message did not arrive after the relay host started: %v", err)
	}
	if !strings.Contains(string(msgs[0].Data), "Subject: retry-me") {
		t.Errorf("unexpected message: %q", msgs[0].Data)
	}
}

// TestServeBounce: a relay host that answers 550 makes a DSN for the sender.
func TestServeBounce(t *testing.T) {
	p, _ := serveFixture(t, smtpsink.Options{
		RcptReply: func(rcpt string) *smtp.SMTPError {
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user here"}
		},
	})
	const u1 = "user1@localhost.localdomain"
	r := submit(t, p, "submission", u1, fixturePassword, u1, "nobody@remote.example", "--header", "Subject: will-bounce")
	if r.code != 0 {
		t.Fatalf("submission: exit %d:\n%s", r.code, r.out)
	}
	dsn := waitMaildir(t, p.data, u1, "nobody@remote.example", 20*time.Second)
	for _, want := range []string{"Return-Path: <>", "multipart/report", "report-type=delivery-status", "Action: failed", "Status: 5.1.1", "no such user here", "will-bounce"} {
		if !strings.Contains(dsn, want) {
			t.Errorf("DSN lacks %q:\n%s", want, dsn)
		}
	}
}

// TestServeReload: a change to a configuration file is in force within 2 s
// without a restart, and a broken file keeps the last good configuration.
func TestServeReload(t *testing.T) {
	p, _ := serveFixture(t, smtpsink.Options{})
	const u1 = "user1@localhost.localdomain"
	// Open a connection before the change: it must survive the reloads.
	s := dialRaw(t, p.addr("smtp"))
	if got := s.cmd("EHLO client.example"); !strings.HasPrefix(got, "250") {
		t.Fatalf("EHLO: %q", got)
	}
	if r := swaks(t, "--server", p.addr("smtp"), "--from", "a@remote.example", "--to", "fresh@localhost.localdomain"); !strings.Contains(r.out, "550 5.1.1") {
		t.Fatalf("before the change: want 550 5.1.1:\n%s", r.out)
	}
	f, err := os.OpenFile(filepath.Join(p.cfg, "postfix-virtual.cf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("fresh@localhost.localdomain " + u1 + "\n")
	f.Close()
	start := time.Now()
	for {
		r := swaks(t, "--server", p.addr("smtp"), "--from", "a@remote.example", "--to", "fresh@localhost.localdomain", "--quit-after", "RCPT")
		if r.code == 0 {
			break
		}
		if time.Since(start) > 2*time.Second {
			t.Fatalf("the new alias was not in force 2 s after the change:\n%s", r.out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Break the file: the last good configuration stays, and the error is
	// logged with file:line.
	f, _ = os.OpenFile(filepath.Join(p.cfg, "postfix-virtual.cf"), os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString("broken@localhost.localdomain bad target@@x\n")
	f.Close()
	if !p.waitLog(`keeping the last good configuration.*postfix-virtual\.cf:\d+`, 3*time.Second) {
		t.Errorf("no file:line error logged for the broken file")
	}
	if r := swaks(t, "--server", p.addr("smtp"), "--from", "a@remote.example", "--to", "fresh@localhost.localdomain", "--quit-after", "RCPT"); r.code != 0 {
		t.Errorf("after a broken change, the last good configuration should still accept fresh@:\n%s", r.out)
	}
	// The connection opened before is still served.
	if got := s.cmd("NOOP"); !strings.HasPrefix(got, "250") {
		t.Errorf("connection opened before the reloads: NOOP got %q", got)
	}
}

// TestServeAliasForward: an alias that points outside the managed domains
// is forwarded through the queue, keeping the envelope sender; the local
// member gets its copy at the same time.
func TestServeAliasForward(t *testing.T) {
	sink, err := smtpsink.Start(smtpsink.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	cfg := configDir(t, map[string]string{"postfix-virtual.cf": "team@localhost.localdomain user1@localhost.localdomain,friend@remote.example\n"})
	data := filepath.Join(t.TempDir(), "data")
	p := startServe(t, cfg, data, nil, "--relay-host", sink.Addr())
	r := swaks(t, "--server", p.addr("smtp"), "--from", "sender@remote.example", "--to", "team@localhost.localdomain", "--header", "Subject: to-the-team")
	if r.code != 0 {
		t.Fatalf("inbound to the alias: exit %d:\n%s", r.code, r.out)
	}
	local := waitMaildir(t, data, "user1@localhost.localdomain", "to-the-team", 5*time.Second)
	if !strings.Contains(local, "X-Original-To: team@localhost.localdomain\n") {
		t.Errorf("local copy lacks X-Original-To:\n%s", local)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	msgs, err := sink.Wait(ctx, 1)
	if err != nil {
		t.Fatalf("the forward did not reach the relay host: %v", err)
	}
	if msgs[0].From != "sender@remote.example" || len(msgs[0].To) != 1 || msgs[0].To[0] != "friend@remote.example" || !strings.Contains(string(msgs[0].Data), "to-the-team") {
		t.Errorf("forward: from %q to %q", msgs[0].From, msgs[0].To)
	}
	// Submission to a local account is delivered locally, not relayed.
	const u1 = "user1@localhost.localdomain"
	// A message without Date and Message-ID gets both (RFC 6409 §8).
	if r := submit(t, p, "submission", u1, fixturePassword, u1, "user2@otherdomain.tld", "--data", "From: <"+u1+">\r\nSubject: local-submission\r\n\r\nbody\r\n"); r.code != 0 {
		t.Fatalf("submission to a local user: exit %d:\n%s", r.code, r.out)
	}
	msg := waitMaildir(t, data, "user2@otherdomain.tld", "local-submission", 5*time.Second)
	for _, want := range []string{"Return-Path: <" + u1 + ">", "with ESMTPSA", "\nMessage-ID: <", "\nDate: "} {
		if !strings.Contains(msg, want) {
			t.Errorf("submitted local message lacks %q:\n%s", want, msg)
		}
	}
	if sink.Count() != 1 {
		t.Errorf("relay host got %d messages, want only the forward", sink.Count())
	}
}

// TestServeRestrictionsAndSize: the send and receive restrictions of
// `email restrict`, and the size limit, enforced by the server.
func TestServeRestrictionsAndSize(t *testing.T) {
	sink, err := smtpsink.Start(smtpsink.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	cfg := configDir(t, map[string]string{
		"postfix-send-access.cf":    "user3@localhost.localdomain REJECT\n",
		"postfix-receive-access.cf": "added@localhost.localdomain REJECT\n",
	})
	data := filepath.Join(t.TempDir(), "data")
	p := startServe(t, cfg, data, nil, "--relay-host", sink.Addr(), "--set", "message_size_limit=100K")
	const d = "@localhost.localdomain"
	if r := submit(t, p, "submission", "user3"+d, fixturePassword, "user3"+d, "someone@remote.example"); r.code == 0 || !strings.Contains(r.out, "MAIL FROM") || !strings.Contains(r.out, "<~* 5") {
		t.Errorf("send-restricted user3: want a 5xx to MAIL FROM, got exit %d:\n%s", r.code, r.out)
	}
	if r := swaks(t, "--server", p.addr("smtp"), "--from", "a@remote.example", "--to", "added"+d); r.code == 0 || !strings.Contains(r.out, "RCPT TO") || !strings.Contains(r.out, "<** 5") {
		t.Errorf("receive-restricted added@: want a 5xx to RCPT TO, got exit %d:\n%s", r.code, r.out)
	}
	s := dialRaw(t, p.addr("smtp"))
	if ehlo := s.cmd("EHLO client.example"); !strings.Contains(ehlo, "SIZE 102400") {
		t.Errorf("EHLO does not announce SIZE 102400:\n%s", ehlo)
	}
	if got := s.cmd("MAIL FROM:<a@remote.example> SIZE=200000"); !strings.HasPrefix(got, "552") {
		t.Errorf("MAIL with SIZE over the limit: want 552, got %q", got)
	}
	big := strings.Repeat("x", 990) + "\r\n"
	r := swaks(t, "--server", p.addr("smtp"), "--from", "a@remote.example", "--to", "user1"+d, "--body", strings.Repeat(big, 110))
	if r.code == 0 || !strings.Contains(r.out, "552 5.3.4") {
		t.Errorf("a message over message_size_limit: want 552 5.3.4, got exit %d:\n%s", r.code, r.out)
	}
}
