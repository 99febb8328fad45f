package milter

import (
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/mailgate/mailgate/internal/conffile"
	"github.com/mailgate/mailgate/internal/directory"
	"github.com/mailgate/mailgate/internal/header"
	"github.com/mailgate/mailgate/internal/policy"
	"github.com/mailgate/mailgate/internal/settings"
)

const (
	user1 = "user1@example.test"
	user2 = "user2@example.test"
	host  = "mail.example.test"
	// A syntactically valid SHA512-CRYPT hash; the milter never verifies it.
	hash = "{SHA512-CRYPT}$6$abcdefghijklmnop$0Tq8wJ4nVwSx2rXeFDyMk3vCzsvXzFx7s9c2x4LwLb4z9f3r0p6PpUyTm7ZDq8dZ1J8zjG9o2YcHq7Lh9b5J1."
)

func testSnapshot(t *testing.T) *directory.Snapshot {
	t.Helper()
	s, err := settings.Load(t.TempDir(), func(string) (string, bool) { return "", false }, map[string]string{"hostname": host})
	if err != nil {
		t.Fatal(err)
	}
	snap, err := directory.Build(map[string][]byte{
		conffile.AccountsFile: []byte(user1 + "|" + hash + "\n" + user2 + "|" + hash + "\n"),
	}, s)
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

type fixture struct {
	snap atomic.Pointer[directory.Snapshot]
	srv  *Server
	addr string
	done chan error
}

func start(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{done: make(chan error, 1)}
	f.snap.Store(testSnapshot(t))
	f.srv = &Server{Snapshot: f.snap.Load, Hostname: host, Logger: slog.New(slog.DiscardHandler)}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.addr = l.Addr().String()
	go func() { f.done <- f.srv.Serve(l) }()
	t.Cleanup(func() {
		_ = f.srv.Close()
		select {
		case err := <-f.done:
			if !errors.Is(err, ErrServerClosed) {
				t.Errorf("Serve returned %v, want ErrServerClosed", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return after Close")
		}
	})
	return f
}

func (f *fixture) session(t *testing.T) *gomilter.ClientSession {
	t.Helper()
	c := gomilter.NewClientWithOptions("tcp", f.addr, gomilter.ClientOptions{
		ActionMask:   gomilter.OptChangeHeader | gomilter.OptAddHeader,
		ProtocolMask: gomilter.OptNoConnect | gomilter.OptNoHelo | gomilter.OptNoRcptTo | gomilter.OptNoEOH,
		ReadTimeout:  10 * time.Second,
		WriteTimeout: 10 * time.Second,
	})
	s, err := c.Session()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

type msg struct {
	login  string // "" = no {auth_authen}
	sender string
	fields [][2]string // name, value as Postfix sends them
	body   []string    // body chunks
}

// send drives one message through the milter as Postfix does.
func send(t *testing.T, s *gomilter.ClientSession, m msg) ([]gomilter.ModifyAction, *gomilter.Action) {
	t.Helper()
	macros := []string{"i", "4711"}
	if m.login != "" {
		macros = append(macros, "{auth_type}", "PLAIN", "{auth_authen}", m.login)
	}
	if err := s.Macros(gomilter.CodeMail, macros...); err != nil {
		t.Fatal(err)
	}
	act, err := s.Mail(m.sender, []string{"SIZE=100"})
	if err != nil {
		t.Fatal(err)
	}
	if act.Code != gomilter.ActContinue {
		return nil, act
	}
	if _, err := s.Rcpt("someone@elsewhere.test", nil); err != nil {
		t.Fatal(err)
	}
	for _, f := range m.fields {
		act, err := s.HeaderField(f[0], f[1])
		if err != nil {
			t.Fatal(err)
		}
		if act.Code != gomilter.ActContinue {
			t.Fatalf("header %s: action %c, want continue", f[0], act.Code)
		}
	}
	if _, err := s.HeaderEnd(); err != nil {
		t.Fatal(err)
	}
	for _, c := range m.body {
		act, err := s.BodyChunk([]byte(c))
		if err != nil {
			t.Fatal(err)
		}
		if act.Code != gomilter.ActContinue {
			t.Fatalf("body chunk: action %c, want continue", act.Code)
		}
	}
	mods, act, err := s.End()
	if err != nil {
		t.Fatal(err)
	}
	return mods, act
}

// wantReply checks that act is SMFIR_REPLYCODE with exactly r.
func wantReply(t *testing.T, act *gomilter.Action, r policy.Reply) {
	t.Helper()
	if act.Code != gomilter.ActReplyCode {
		t.Fatalf("action %c, want reply code %s", act.Code, r)
	}
	if act.SMTPCode != r.Code || act.SMTPText != r.Enhanced+" "+r.Text {
		t.Fatalf("reply %d %s, want %d %s %s", act.SMTPCode, act.SMTPText, r.Code, r.Enhanced, r.Text)
	}
}

func TestAccepted(t *testing.T) {
	f := start(t)
	s := f.session(t)
	mods, act := send(t, s, msg{login: user1, sender: user1, fields: [][2]string{
		{"From", "User One <" + user1 + ">"},
		{"To", "someone@elsewhere.test"},
		{"Subject", "a folded\n\tsubject"},
	}, body: []string{"hello\r\n", "world\r\n"}})
	if act.Code != gomilter.ActAccept {
		t.Fatalf("action %c %d %s, want accept", act.Code, act.SMTPCode, act.SMTPText)
	}
	if len(mods) != 0 {
		t.Fatalf("modifications %+v, want none", mods)
	}
}

func TestSecondFromRejected(t *testing.T) {
	f := start(t)
	s := f.session(t)
	_, act := send(t, s, msg{login: user1, sender: user1, fields: [][2]string{
		{"From", user1},
		{"Subject", "x"},
		{"from", user2},
	}, body: []string{"x\r\n"}})
	raw := "From: " + user1 + "\r\nSubject: x\r\nfrom: " + user2 + "\r\n\r\n"
	want := policy.CheckSubmission(f.snap.Load(), user1, user1, []byte(raw))
	if want.Allowed || want.Reply.Code != 550 || want.Reply.Enhanced != "5.7.1" || !strings.Contains(want.Reply.Text, "From") {
		t.Fatalf("CheckSubmission gives %+v; the test expects a 550 5.7.1 naming From", want.Reply)
	}
	wantReply(t, act, want.Reply)
}

func TestFromNotOwned(t *testing.T) {
	f := start(t)
	s := f.session(t)
	_, act := send(t, s, msg{login: user1, sender: user1, fields: [][2]string{{"From", "<" + user2 + ">"}}})
	wantReply(t, act, policy.Reply{Code: 550, Enhanced: "5.7.1", Text: "message header From: <" + user2 + "> not owned by user " + user1})
}

func TestEnvelopeNotOwned(t *testing.T) {
	f := start(t)
	s := f.session(t)
	_, act := send(t, s, msg{login: user1, sender: user2, fields: [][2]string{{"From", user1}}})
	wantReply(t, act, policy.Reply{Code: 553, Enhanced: "5.7.1", Text: "<" + user2 + ">: Sender address rejected: not owned by user " + user1})
}

func TestUnauthenticatedAccepted(t *testing.T) {
	f := start(t)
	s := f.session(t)
	_, act := send(t, s, msg{sender: user2, fields: [][2]string{{"From", user2}, {"From", user1}}})
	if act.Code != gomilter.ActAccept {
		t.Fatalf("action %c, want accept at MAIL FROM", act.Code)
	}
	// The next message on the same connection is checked again.
	_, act = send(t, s, msg{login: user1, sender: user1, fields: [][2]string{{"From", user2}}})
	if act.Code != gomilter.ActReplyCode || act.SMTPCode != 550 {
		t.Fatalf("action %c %d, want a 550 for the authenticated message", act.Code, act.SMTPCode)
	}
}

func TestTempfailWithoutSnapshot(t *testing.T) {
	f := start(t)
	f.snap.Store(nil)
	s := f.session(t)
	_, act := send(t, s, msg{login: user1, sender: user1, fields: [][2]string{{"From", user1}}})
	wantReply(t, act, policy.Reply{Code: 451, Enhanced: "4.3.0", Text: "Temporary lookup failure"})
}

func TestLineEndings(t *testing.T) {
	f := start(t)
	s := f.session(t)
	ok := [][2]string{{"From", user1}}
	for _, tc := range []struct {
		name   string
		fields [][2]string
		body   []string
		want   *policy.Reply
	}{
		{"CRLF split over chunks", ok, []string{"a\r", "\nb\r\n"}, nil},
		{"bare CR in body", ok, []string{"a\rb\r\n"}, &replyBareCR},
		{"bare CR at chunk end", ok, []string{"a\r", "b\r\n"}, &replyBareCR},
		{"CR at the end of the message", ok, []string{"a\r"}, &replyBareCR},
		{"bare LF in body", ok, []string{"a\nb"}, &replyBareLF},
		{"NUL in body", ok, []string{"a\x00b\r\n"}, &replyNUL},
		{"bare CR in a header value", [][2]string{{"From", user1}, {"Subject", "a\rb"}}, nil, &replyBareCR},
		{"first problem wins", [][2]string{{"From", user1}}, []string{"a\x00\rb"}, &replyNUL},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, act := send(t, s, msg{login: user1, sender: user1, fields: tc.fields, body: tc.body})
			if tc.want == nil {
				if act.Code != gomilter.ActAccept {
					t.Fatalf("action %c %d %s, want accept", act.Code, act.SMTPCode, act.SMTPText)
				}
				return
			}
			wantReply(t, act, *tc.want)
		})
	}
}

func TestFoldingPreserved(t *testing.T) {
	f := start(t)
	s := f.session(t)
	// A folded From is fine; a whitespace-only continuation line is not
	// (SPEC §6). Both verdicts must equal CheckSubmission on the raw bytes
	// the client sent, which the milter rebuilds from Postfix's LF-separated
	// value.
	for _, tc := range []struct{ value, raw string }{
		{"User One\n <" + user1 + ">", "From: User One\r\n <" + user1 + ">\r\n\r\n"},
		{"<" + user1 + ">\n \n\t", "From: <" + user1 + ">\r\n \r\n\t\r\n\r\n"},
	} {
		want := policy.CheckSubmission(f.snap.Load(), user1, user1, []byte(tc.raw))
		_, act := send(t, s, msg{login: user1, sender: user1, fields: [][2]string{{"From", tc.value}}})
		if want.Allowed {
			if act.Code != gomilter.ActAccept {
				t.Fatalf("%q: action %c %d %s, want accept", tc.value, act.Code, act.SMTPCode, act.SMTPText)
			}
			continue
		}
		wantReply(t, act, want.Reply)
	}
}

func TestOversizedHeader(t *testing.T) {
	f := start(t)
	s := f.session(t)
	fields := [][2]string{{"From", user1}}
	var raw strings.Builder
	raw.WriteString("From: " + user1 + "\r\n")
	big := strings.Repeat("x", 900)
	for raw.Len() < 2*header.MaxBlock {
		fields = append(fields, [2]string{"X-Filler", big})
		raw.WriteString("X-Filler: " + big + "\r\n")
	}
	raw.WriteString("\r\n")
	want := policy.CheckSubmission(f.snap.Load(), user1, user1, []byte(raw.String()))
	if want.Allowed {
		t.Fatal("CheckSubmission accepts an oversized header block")
	}
	_, act := send(t, s, msg{login: user1, sender: user1, fields: fields})
	wantReply(t, act, want.Reply)
}

func TestTraceFieldsStripped(t *testing.T) {
	f := start(t)
	s := f.session(t)
	mods, act := send(t, s, msg{login: user1, sender: user1, fields: [][2]string{
		{"Authentication-Results", "other.example; spf=pass"},
		{"From", user1},
		{"authentication-results", host + "; dkim=pass"},
		{"Return-Path", "<x@y.test>"},
		{"Authentication-Results", " MAIL.example.test.; dmarc=pass"},
	}})
	if act.Code != gomilter.ActAccept {
		t.Fatalf("action %c %d %s, want accept", act.Code, act.SMTPCode, act.SMTPText)
	}
	type del struct {
		name  string
		index uint32
	}
	var got []del
	for _, m := range mods {
		if m.Code != gomilter.ActChangeHeader || m.HeaderValue != "" {
			t.Fatalf("unexpected modification %+v", m)
		}
		got = append(got, del{m.HeaderName, m.HeaderIndex})
	}
	want := []del{{"Authentication-Results", 3}, {"authentication-results", 2}, {"Return-Path", 1}}
	if len(got) != len(want) {
		t.Fatalf("deletions %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("deletions %v, want %v", got, want)
		}
	}
	// A rejected message gets no modification.
	mods, act = send(t, s, msg{login: user1, sender: user1, fields: [][2]string{
		{"Authentication-Results", host + "; dkim=pass"},
		{"From", user2},
	}})
	if act.Code != gomilter.ActReplyCode || len(mods) != 0 {
		t.Fatalf("action %c, modifications %+v; want a reply and none", act.Code, mods)
	}
}

func TestRebuildField(t *testing.T) {
	for _, tc := range []struct{ name, value, want string }{
		{"From", "a@b", "From: a@b\r\n"},
		{"Subject", "", "Subject:\r\n"},
		{"Subject", " two spaces", "Subject:  two spaces\r\n"},
		{"Subject", "x\n\ty\n z", "Subject: x\r\n\ty\r\n z\r\n"},
		{"Subject", "x\r\n y", "Subject: x\r\n y\r\n"},
		{"Subject", "\n\tfolded first", "Subject:\r\n\tfolded first\r\n"},
		{"Subject", "a\rb", "Subject: a\rb\r\n"},
	} {
		if got := string(rebuildField(tc.name, tc.value)); got != tc.want {
			t.Errorf("rebuildField(%q, %q) = %q, want %q", tc.name, tc.value, got, tc.want)
		}
	}
}

func TestReplyResponse(t *testing.T) {
	for _, tc := range []struct {
		r    policy.Reply
		want string
	}{
		{policy.Reply{Code: 550, Enhanced: "5.7.1", Text: "<a%b@x> not owned"}, "550 5.7.1 <a%%b@x> not owned\x00"},
		{policy.Reply{Code: 553, Enhanced: "5.7.1", Text: "line\r\nbreak"}, "553 5.7.1 line??break\x00"},
		{policy.Reply{Code: 250, Enhanced: "2.0.0", Text: "Ok"}, "451 4.3.0 Temporary lookup failure\x00"},
		{policy.Reply{Code: 550, Enhanced: "4.7.1", Text: "mismatch"}, "451 4.3.0 Temporary lookup failure\x00"},
	} {
		m := replyResponse(tc.r).Response()
		if m.Code != byte(gomilter.ActReplyCode) || string(m.Data) != tc.want {
			t.Errorf("replyResponse(%v) = %c %q, want y %q", tc.r, m.Code, m.Data, tc.want)
		}
	}
}

func TestCloseEndsConnections(t *testing.T) {
	f := start(t)
	s := f.session(t)
	if err := f.srv.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-f.done:
		f.done <- err // for the cleanup
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after Close")
	}
	if _, err := s.Mail(user1, nil); err == nil {
		t.Fatal("the milter connection is still open after Close")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := f.srv.Serve(l); !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve after Close = %v, want ErrServerClosed", err)
	}
}
