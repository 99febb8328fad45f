package smtpsink

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/textproto"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// dialog is a raw SMTP client for the tests: it sends exactly what it is
// told to.
type dialog struct {
	t  *testing.T
	nc net.Conn
	tp *textproto.Conn
}

func dial(t *testing.T, addr string) *dialog {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	nc.SetDeadline(time.Now().Add(20 * time.Second))
	d := &dialog{t: t, nc: nc, tp: textproto.NewConn(nc)}
	t.Cleanup(func() { d.tp.Close() })
	d.expect(220)
	return d
}

// expect reads a reply and checks its code; it returns the text.
func (d *dialog) expect(code int) string {
	d.t.Helper()
	got, msg, err := d.tp.ReadResponse(0)
	if err != nil {
		d.t.Fatalf("reading reply (want %d): %v", code, err)
	}
	if got != code {
		d.t.Fatalf("reply %d %q, want %d", got, msg, code)
	}
	return msg
}

// cmd sends a command line and checks the reply code.
func (d *dialog) cmd(code int, line string) string {
	d.t.Helper()
	if err := d.tp.PrintfLine("%s", line); err != nil {
		d.t.Fatal(err)
	}
	return d.expect(code)
}

// raw writes bytes as they are.
func (d *dialog) raw(b string) {
	d.t.Helper()
	if _, err := d.nc.Write([]byte(b)); err != nil {
		d.t.Fatal(err)
	}
}

func start(t *testing.T, o Options) *Sink {
	t.Helper()
	s, err := Start(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func waitN(t *testing.T, s *Sink, n int) []Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ms, err := s.Wait(ctx, n)
	if err != nil {
		t.Fatal(err)
	}
	return ms
}

func TestByteExactDataAndEnvelope(t *testing.T) {
	s := start(t, Options{})
	if !strings.HasPrefix(s.Addr(), "127.0.0.1:") {
		t.Fatalf("Addr %q, want 127.0.0.1:port", s.Addr())
	}
	d := dial(t, s.Addr())
	ehlo := d.cmd(250, "EHLO client.example")
	for _, ext := range []string{"PIPELINING", "8BITMIME", "SIZE"} {
		if !strings.Contains(ehlo, ext) {
			t.Errorf("EHLO reply %q lacks %s", ehlo, ext)
		}
	}
	for _, ext := range []string{"SMTPUTF8", "STARTTLS", "DSN"} {
		if strings.Contains(ehlo, ext) {
			t.Errorf("EHLO reply %q offers %s, not asked for", ehlo, ext)
		}
	}
	d.cmd(250, "MAIL FROM:<sender@example.org> BODY=8BITMIME SIZE=120")
	d.cmd(250, "RCPT TO:<a@example.net>")
	d.cmd(250, "RCPT TO:<b@example.net>")
	d.cmd(354, "DATA")
	// On the wire: dot-stuffed lines, a bare CR inside a line, 8-bit
	// bytes, an empty line, no trailing whitespace games.
	d.raw("Subject: t\r\n\r\n..leading dot\r\n...two\r\nmid\rline \xe9t\xe9\r\n\r\n.\r\n")
	d.expect(250)
	d.cmd(221, "QUIT")

	ms := waitN(t, s, 1)
	m := ms[0]
	want := "Subject: t\r\n\r\n.leading dot\r\n..two\r\nmid\rline \xe9t\xe9\r\n\r\n"
	if string(m.Data) != want {
		t.Errorf("Data = %q\nwant   %q", m.Data, want)
	}
	if m.From != "sender@example.org" || strings.Join(m.To, ",") != "a@example.net,b@example.net" {
		t.Errorf("envelope %q → %q", m.From, m.To)
	}
	if m.Helo != "client.example" || m.TLS {
		t.Errorf("Helo %q TLS %v", m.Helo, m.TLS)
	}
	if m.Mail.Body != smtp.Body8BitMIME || m.Mail.Size != 120 {
		t.Errorf("MAIL parameters %+v", m.Mail)
	}
	if m.Received.IsZero() || time.Since(m.Received) > time.Minute {
		t.Errorf("Received %v", m.Received)
	}
	if s.Count() != 1 || s.Conns() != 1 {
		t.Errorf("Count %d Conns %d, want 1 1", s.Count(), s.Conns())
	}
}

func TestNullSenderAndEmptyMessage(t *testing.T) {
	s := start(t, Options{})
	d := dial(t, s.Addr())
	d.cmd(250, "EHLO c")
	d.cmd(250, "MAIL FROM:<>")
	d.cmd(250, "RCPT TO:<x@example.net>")
	d.cmd(354, "DATA")
	d.raw(".\r\n")
	d.expect(250)
	m := waitN(t, s, 1)[0]
	if m.From != "" || len(m.Data) != 0 {
		t.Errorf("From %q Data %q, want empty", m.From, m.Data)
	}
}

func TestScriptedReplies(t *testing.T) {
	s := start(t, Options{
		RcptReply: func(rcpt string) *smtp.SMTPError {
			switch {
			case strings.HasPrefix(rcpt, "unknown@"):
				return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
			case strings.HasPrefix(rcpt, "full@"):
				return &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 2, 2}, Message: "mailbox full"}
			}
			return nil
		},
		DataReply: func(m Message) *smtp.SMTPError {
			if bytes.Contains(m.Data, []byte("spam")) {
				return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "looks like spam"}
			}
			return nil
		},
	})
	d := dial(t, s.Addr())
	d.cmd(250, "EHLO c")
	d.cmd(250, "MAIL FROM:<s@example.org>")
	if msg := d.cmd(550, "RCPT TO:<unknown@example.net>"); !strings.Contains(msg, "5.1.1 no such user") {
		t.Errorf("550 text %q", msg)
	}
	if msg := d.cmd(452, "RCPT TO:<full@example.net>"); !strings.Contains(msg, "4.2.2 mailbox full") {
		t.Errorf("452 text %q", msg)
	}
	d.cmd(250, "RCPT TO:<ok@example.net>")
	d.cmd(354, "DATA")
	d.raw("Subject: spam\r\n\r\nbuy\r\n.\r\n")
	if msg := d.expect(554); !strings.Contains(msg, "5.7.1") {
		t.Errorf("554 text %q", msg)
	}
	// The session goes on: a second transaction is accepted.
	d.cmd(250, "MAIL FROM:<s@example.org>")
	d.cmd(250, "RCPT TO:<ok@example.net>")
	d.cmd(354, "DATA")
	d.raw("Subject: ham\r\n\r\nhello\r\n.\r\n")
	d.expect(250)

	ms := waitN(t, s, 1)
	if len(ms) != 1 || !bytes.Contains(ms[0].Data, []byte("ham")) || strings.Join(ms[0].To, ",") != "ok@example.net" {
		t.Fatalf("messages %+v: want only the ham one, to ok@ only", ms)
	}
	if s.Count() != 1 {
		t.Errorf("Count %d after a rejected message, want 1", s.Count())
	}
}

func TestExtensions(t *testing.T) {
	s := start(t, Options{SMTPUTF8: true, DSN: true, MaxSize: 100})
	d := dial(t, s.Addr())
	ehlo := d.cmd(250, "EHLO c")
	for _, ext := range []string{"SMTPUTF8", "DSN", "SIZE 100"} {
		if !strings.Contains(ehlo, ext) {
			t.Errorf("EHLO reply %q lacks %s", ehlo, ext)
		}
	}
	d.cmd(552, "MAIL FROM:<s@example.org> SIZE=101")
	d.cmd(250, "MAIL FROM:<s\u00e9@example.org> SMTPUTF8 RET=HDRS ENVID=q+2B1")
	d.cmd(250, "RCPT TO:<\u00fc@example.net>")
	d.cmd(354, "DATA")
	d.raw(strings.Repeat("x", 200) + "\r\n.\r\n")
	d.expect(552) // larger than MaxSize
	d.cmd(250, "MAIL FROM:<s\u00e9@example.org> SMTPUTF8 RET=HDRS ENVID=q+2B1")
	d.cmd(250, "RCPT TO:<\u00fc@example.net>")
	d.cmd(354, "DATA")
	d.raw("small\r\n.\r\n")
	d.expect(250)
	m := waitN(t, s, 1)[0]
	if !m.Mail.UTF8 || m.Mail.Return != smtp.DSNReturnHeaders || m.Mail.EnvelopeID != "q+1" {
		t.Errorf("MAIL parameters %+v", m.Mail)
	}
	if m.From != "s\u00e9@example.org" || m.To[0] != "\u00fc@example.net" {
		t.Errorf("envelope %q → %q", m.From, m.To)
	}
}

func TestSMTPUTF8RefusedWhenNotOffered(t *testing.T) {
	s := start(t, Options{})
	d := dial(t, s.Addr())
	d.cmd(250, "EHLO c")
	d.cmd(504, "MAIL FROM:<s@example.org> SMTPUTF8")
	d.cmd(504, "MAIL FROM:<s@example.org> RET=FULL") // DSN not offered
}

func TestWaitConcurrentAndCanceled(t *testing.T) {
	s := start(t, Options{})
	const n = 8
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := sendPlain(s.Addr(), "s@example.org", fmt.Sprintf("r%d@example.net", i), fmt.Sprintf("Subject: %d\r\n\r\nbody\r\n", i))
			if err != nil {
				t.Error(err)
			}
		}()
	}
	ms := waitN(t, s, n)
	wg.Wait()
	if len(ms) != n || s.Conns() != n {
		t.Fatalf("%d messages over %d connections, want %d and %d", len(ms), s.Conns(), n, n)
	}
	seen := map[string]bool{}
	for _, m := range ms {
		seen[m.To[0]] = true
	}
	if len(seen) != n {
		t.Errorf("recipients %v", seen)
	}
	// The returned slices are copies.
	ms[0].Data[0] = 'X'
	ms[0].To[0] = "changed"
	if again := s.Messages(); again[0].Data[0] == 'X' || again[0].To[0] == "changed" {
		t.Error("Messages shares memory with the sink")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := s.Wait(ctx, n+1); err == nil {
		t.Fatal("Wait for a message that never comes returned nil")
	}
}

func TestCloseAndRestartOnSameAddress(t *testing.T) {
	s1 := start(t, Options{})
	addr := s1.Addr()
	d := dial(t, addr)
	d.cmd(250, "EHLO c")
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}
	// Close closed the open connection too.
	d.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := d.tp.ReadLine(); err == nil {
		t.Error("connection still open after Close")
	}
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Error("still listening after Close")
	}
	if err := s1.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}

	s2 := start(t, Options{Addr: addr})
	if s2.Addr() != addr {
		t.Fatalf("restarted on %s, want %s", s2.Addr(), addr)
	}
	if err := sendPlain(addr, "s@example.org", "r@example.net", "Subject: x\r\n\r\ny\r\n"); err != nil {
		t.Fatal(err)
	}
	waitN(t, s2, 1)
	if s2.Conns() != 1 || s1.Conns() != 1 || s1.Count() != 0 {
		t.Errorf("conns %d/%d count %d, want 1/1 0", s1.Conns(), s2.Conns(), s1.Count())
	}
}

func TestStartBadAddress(t *testing.T) {
	s := start(t, Options{})
	if _, err := Start(Options{Addr: s.Addr()}); err == nil {
		t.Fatal("second sink on a busy address started")
	}
}

// TestCloseRightAfterStart closes before go-smtp's Serve has registered the
// listener: Close must not hang.
func TestCloseRightAfterStart(t *testing.T) {
	for range 50 {
		s, err := Start(Options{})
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- s.Close() }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Close right after Start hangs")
		}
	}
}

func TestSTARTTLS(t *testing.T) {
	s := start(t, Options{TLSConfig: serverTLS(t)})
	d := dial(t, s.Addr())
	if ehlo := d.cmd(250, "EHLO c"); !strings.Contains(ehlo, "STARTTLS") {
		t.Fatalf("EHLO %q lacks STARTTLS", ehlo)
	}
	d.tp.Close()

	c, err := smtp.DialStartTLS(s.Addr(), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SendMail("s@example.org", []string{"r@example.net"}, strings.NewReader("Subject: tls\r\n\r\nx\r\n")); err != nil {
		t.Fatal(err)
	}
	c.Quit()
	m := waitN(t, s, 1)[0]
	if !m.TLS {
		t.Error("message over STARTTLS not marked TLS")
	}
}

// sendPlain sends one message with go-smtp's client, without TLS.
func sendPlain(addr, from, to, msg string) error {
	c, err := smtp.Dial(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.SendMail(from, []string{to}, strings.NewReader(msg)); err != nil {
		return err
	}
	return c.Quit()
}

// serverTLS returns a TLS config with a fresh self-signed certificate.
func serverTLS(t testing.TB) *tls.Config {
	t.Helper()
	c, err := SelfSignedTLS("smtpsink.localhost")
	if err != nil {
		t.Fatal(err)
	}
	return c
}
