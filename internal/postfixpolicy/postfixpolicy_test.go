package postfixpolicy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailgate/mailgate/internal/directory"
	"github.com/mailgate/mailgate/internal/policy"
	"github.com/mailgate/mailgate/internal/settings"
)

// fixtureSnapshot builds the snapshot of docker-mailserver's test
// configuration (testdata/dms), with flags overriding settings.
func fixtureSnapshot(t testing.TB, flags map[string]string) *directory.Snapshot {
	t.Helper()
	st, err := settings.Load(t.TempDir(), func(string) (string, bool) { return "", false }, flags)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := directory.Load(filepath.Join("..", "..", "testdata", "dms"), st)
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type testServer struct {
	srv  *Server
	addr string
	done chan error
	snap atomic.Pointer[directory.Snapshot]
	logs *syncBuffer
}

func startServer(t testing.TB, snap *directory.Snapshot, idle time.Duration) *testServer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{addr: l.Addr().String(), done: make(chan error, 1), logs: &syncBuffer{}}
	ts.snap.Store(snap)
	ts.srv = &Server{
		Snapshot:    ts.snap.Load,
		Logger:      slog.New(slog.NewTextHandler(ts.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		IdleTimeout: idle,
	}
	go func() { ts.done <- ts.srv.Serve(l) }()
	t.Cleanup(func() {
		ts.srv.Close()
		select {
		case err := <-ts.done:
			if !errors.Is(err, ErrServerClosed) {
				t.Errorf("Serve returned %v, want ErrServerClosed", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return after Close")
		}
	})
	return ts
}

type client struct {
	c  net.Conn
	br *bufio.Reader
}

func dial(t testing.TB, addr string) *client {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	return &client{c: c, br: bufio.NewReader(c)}
}

// request formats a request as Postfix does: the attributes Postfix 3.x
// sends, in its order, overridden or removed (value "-") by attrs.
func request(attrs ...string) string {
	base := [][2]string{
		{"request", "smtpd_access_policy"}, {"protocol_state", "RCPT"}, {"protocol_name", "ESMTP"},
		{"client_address", "192.0.2.1"}, {"client_name", "client.example"}, {"reverse_client_name", "client.example"},
		{"helo_name", "client.example"}, {"sender", ""}, {"recipient", "someone@gmail.com"},
		{"recipient_count", "0"}, {"queue_id", ""}, {"instance", "123.456.7"}, {"size", "0"},
		{"etrn_domain", ""}, {"stress", ""}, {"sasl_method", "plain"}, {"sasl_username", ""},
		{"sasl_sender", ""}, {"ccert_subject", ""}, {"ccert_issuer", ""}, {"ccert_fingerprint", ""},
		{"ccert_pubkey_fingerprint", ""}, {"encryption_protocol", "TLSv1.3"}, {"encryption_cipher", "TLS_AES_256_GCM_SHA384"},
		{"encryption_keysize", "256"}, {"policy_context", ""}, {"server_address", "127.0.0.1"}, {"server_port", "587"},
		{"compatibility_level", "3.6"}, {"mail_version", "3.7.11"},
	}
	over := map[string]string{}
	for i := 0; i+1 < len(attrs); i += 2 {
		over[attrs[i]] = attrs[i+1]
	}
	var b strings.Builder
	for _, kv := range base {
		v := kv[1]
		if o, ok := over[kv[0]]; ok {
			v = o
		}
		if v == "-" {
			continue
		}
		fmt.Fprintf(&b, "%s=%s\n", kv[0], v)
	}
	b.WriteString("\n")
	return b.String()
}

func (c *client) send(t testing.TB, raw string) {
	t.Helper()
	if _, err := io.WriteString(c.c, raw); err != nil {
		t.Fatal(err)
	}
}

// answer reads one answer and returns the action.
func (c *client) answer(t testing.TB) string {
	t.Helper()
	line, err := c.br.ReadString('\n')
	if err != nil {
		t.Fatalf("reading answer: %v", err)
	}
	empty, err := c.br.ReadString('\n')
	if err != nil || empty != "\n" {
		t.Fatalf("answer not ended by an empty line: %q %v", empty, err)
	}
	action, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), "action=")
	if !ok {
		t.Fatalf("answer %q", line)
	}
	return action
}

func (c *client) ask(t testing.TB, attrs ...string) string {
	t.Helper()
	c.send(t, request(attrs...))
	return c.answer(t)
}

func (c *client) expectClosed(t testing.TB) {
	t.Helper()
	if b, err := c.br.ReadByte(); err == nil {
		t.Fatalf("connection still open: read %q", b)
	}
}

const l = "localhost.localdomain"

func TestDecisions(t *testing.T) {
	snap := fixtureSnapshot(t, nil)
	ts := startServer(t, snap, 0)
	c := dial(t, ts.addr)
	cases := []struct {
		name  string
		attrs []string
		want  string
	}{
		{"own address", []string{"sasl_username", "user1@" + l, "sender", "user1@" + l}, "DUNNO"},
		{"own address, other case", []string{"sasl_username", "User1@" + l, "sender", "USER1@Localhost.LocalDomain"}, "DUNNO"},
		{"alias member", []string{"sasl_username", "user1@" + l, "sender", "alias1@" + l}, "DUNNO"},
		{"extension", []string{"sasl_username", "user1@" + l, "sender", "user1+list@" + l}, "DUNNO"},
		{"regexp alias", []string{"sasl_username", "user1@" + l, "sender", "test42@" + l}, "DUNNO"},
		{"send-as grant", []string{"sasl_username", "user2@otherdomain.tld", "sender", "noreply@external.example"}, "DUNNO"},
		{"not owned", []string{"sasl_username", "user2@otherdomain.tld", "sender", "user1@" + l},
			"553 5.7.1 <user1@" + l + ">: Sender address rejected: not owned by user user2@otherdomain.tld"},
		{"catch-all grants nothing", []string{"sasl_username", "user1@" + l, "sender", "x@localdomain2.com"},
			"553 5.7.1 <x@localdomain2.com>: Sender address rejected: not owned by user user1@" + l},
		{"external address", []string{"sasl_username", "user1@" + l, "sender", "someone@gmail.com"},
			"553 5.7.1 <someone@gmail.com>: Sender address rejected: not owned by user user1@" + l},
		{"null sender refused", []string{"sasl_username", "user1@" + l, "sender", ""},
			"553 5.7.1 null sender not allowed for authenticated submission"},
		{"missing sender is the null sender", []string{"sasl_username", "user1@" + l, "sender", "-"},
			"553 5.7.1 null sender not allowed for authenticated submission"},
		{"unknown login", []string{"sasl_username", "nobody@" + l, "sender", "nobody@" + l},
			"535 5.7.8 login nobody@" + l + " is not an account"},
		{"end of message state", []string{"protocol_state", "END-OF-MESSAGE", "sasl_username", "user2@otherdomain.tld", "sender", "user1@" + l},
			"553 5.7.1 <user1@" + l + ">: Sender address rejected: not owned by user user2@otherdomain.tld"},
		{"unknown state fails closed", []string{"protocol_state", "FUTURE", "sasl_username", "user2@otherdomain.tld", "sender", "user1@" + l},
			"553 5.7.1 <user1@" + l + ">: Sender address rejected: not owned by user user2@otherdomain.tld"},
		{"unauthenticated", []string{"sender", "user1@" + l}, "DUNNO"},
		{"unauthenticated, no sasl attribute", []string{"sasl_username", "-", "sender", "user1@" + l}, "DUNNO"},
		{"VRFY", []string{"protocol_state", "VRFY", "sasl_username", "user1@" + l}, "DUNNO"},
		{"ETRN", []string{"protocol_state", "ETRN", "sasl_username", "user1@" + l}, "DUNNO"},
		{"unknown request type", []string{"request", "something_else", "sasl_username", "user2@otherdomain.tld", "sender", "user1@" + l}, "DUNNO"},
	}
	for _, tc := range cases {
		got := c.ask(t, tc.attrs...)
		if got != tc.want {
			t.Errorf("%s: action=%q, want %q", tc.name, got, tc.want)
		}
	}
	// Every rejection is the reply of MaySend, as `mailgate serve` gives it.
	for _, s := range []string{"user1@" + l, "alias1@" + l, "bad address", "user1@" + l + "\u202e", "x@[127.0.0.1]", "someone@gmail.com"} {
		d := policy.MaySend(snap, "user2@otherdomain.tld", s)
		want := "DUNNO"
		if !d.Allowed {
			want = oneLine(d.Reply.String())
		}
		if got := c.ask(t, "sasl_username", "user2@otherdomain.tld", "sender", s); got != want {
			t.Errorf("sender %q: action=%q, want %q", s, got, want)
		}
	}
	logs := ts.logs.String()
	if !strings.Contains(logs, "level=INFO msg=\"policy: sender rejected\"") || !strings.Contains(logs, "level=DEBUG msg=\"policy decision\"") {
		t.Errorf("decisions not logged:\n%s", logs)
	}
}

func TestNullSenderAllowed(t *testing.T) {
	ts := startServer(t, fixtureSnapshot(t, map[string]string{"null_sender": "allow"}), 0)
	c := dial(t, ts.addr)
	if got := c.ask(t, "sasl_username", "user1@"+l, "sender", ""); got != "DUNNO" {
		t.Errorf("null sender with null_sender = allow: %q", got)
	}
}

func TestSpoofProtectionOff(t *testing.T) {
	ts := startServer(t, fixtureSnapshot(t, map[string]string{"spoof_protection": "false"}), 0)
	c := dial(t, ts.addr)
	if got := c.ask(t, "sasl_username", "user2@otherdomain.tld", "sender", "user1@"+l); got != "DUNNO" {
		t.Errorf("spoof_protection = false: %q", got)
	}
}

func TestSnapshotUnavailable(t *testing.T) {
	ts := startServer(t, fixtureSnapshot(t, nil), 0)
	c := dial(t, ts.addr)
	ts.snap.Store(nil)
	if got := c.ask(t, "sasl_username", "user1@"+l, "sender", "user1@"+l); got != "451 4.3.0 Temporary lookup failure" {
		t.Errorf("backend down: %q", got)
	}
	if got := c.ask(t, "sender", "user1@"+l); got != "DUNNO" {
		t.Errorf("backend down, unauthenticated: %q", got)
	}
	// A snapshot whose source is down (PostgreSQL lost, issue 7).
	down := *fixtureSnapshot(t, nil)
	down.Unavailable = &directory.TempError{Source: "postgres", Err: errors.New("connection refused")}
	ts.snap.Store(&down)
	if got := c.ask(t, "sasl_username", "user1@"+l, "sender", "user1@"+l); !strings.HasPrefix(got, "451 4.3.0 ") {
		t.Errorf("source down: %q, want 451 4.3.0", got)
	}
	ts.snap.Store(fixtureSnapshot(t, nil))
	if got := c.ask(t, "sasl_username", "user1@"+l, "sender", "user1@"+l); got != "DUNNO" {
		t.Errorf("backend back: %q", got)
	}
	srv := &Server{} // no Snapshot function at all
	if got := srv.decide(map[string]string{"request": "smtpd_access_policy", "sasl_username": "u@d"}, slog.New(slog.DiscardHandler)); got != actionTempFail {
		t.Errorf("nil Snapshot func: %q", got)
	}
}

func TestMalformedRequests(t *testing.T) {
	ts := startServer(t, fixtureSnapshot(t, nil), 0)
	many := ""
	for i := range MaxAttributes + 1 {
		many += fmt.Sprintf("a%d=b\n", i)
	}
	cases := map[string]string{
		"long line":          "request=smtpd_access_policy\nx=" + strings.Repeat("a", MaxLineLength) + "\n\n",
		"line without =":     "request=smtpd_access_policy\nsender\n\n",
		"empty name":         "request=smtpd_access_policy\n=x\n\n",
		"bad name":           "request=smtpd_access_policy\nsend er=x\n\n",
		"non-ASCII name":     "request=smtpd_access_policy\nsénder=x\n\n",
		"duplicate sender":   "request=smtpd_access_policy\nsender=a@b.c\nsender=d@e.f\n\n",
		"duplicate login":    "request=smtpd_access_policy\nsasl_username=a@b.c\nsasl_username=d@e.f\n\n",
		"CRLF":               "request=smtpd_access_policy\r\nsender=a@b.c\r\n\r\n",
		"CR in value":        "request=smtpd_access_policy\nsender=a@b.c\rx\n\n",
		"NUL in value":       "request=smtpd_access_policy\nsender=a@b.c\x00\n\n",
		"empty request":      "\n",
		"no request":         "sender=a@b.c\n\n",
		"too many":           "request=smtpd_access_policy\n" + many + "\n",
		"too large":          "request=smtpd_access_policy\n" + bigRequest(),
		"eof inside request": "request=smtpd_access_policy\nsender=a@b.c\n",
		"binary garbage":     "\xff\xfe\x00\x01\n\n",
	}
	for name, raw := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := readRequest(bufio.NewReaderSize(strings.NewReader(raw), MaxLineLength)); !errors.Is(err, errMalformed) {
				t.Errorf("readRequest: %v, want errMalformed", err)
			}
			c := dial(t, ts.addr)
			go func() {
				io.WriteString(c.c, raw)
				c.c.(*net.TCPConn).CloseWrite()
			}()
			if b, err := c.br.ReadByte(); err == nil {
				t.Fatalf("got an answer (%q…) to a malformed request", b)
			}
		})
	}
	if !strings.Contains(ts.logs.String(), "malformed request") {
		t.Error("malformed requests were not logged")
	}
	// A valid request after a malformed one on another connection still works,
	// and the limits themselves are accepted.
	c := dial(t, ts.addr)
	long := "x=" + strings.Repeat("a", MaxLineLength-3) + "\n"
	c.send(t, "request=smtpd_access_policy\n"+long+"sasl_username=user1@"+l+"\nsender=user1@"+l+"\n\n")
	if got := c.answer(t); got != "DUNNO" {
		t.Errorf("line of exactly MaxLineLength octets: %q", got)
	}
	var b strings.Builder
	b.WriteString("request=smtpd_access_policy\n")
	for i := range MaxAttributes - 1 {
		fmt.Fprintf(&b, "a%d=b\n", i)
	}
	b.WriteString("\n")
	c.send(t, b.String())
	if got := c.answer(t); got != "DUNNO" {
		t.Errorf("MaxAttributes attributes: %q", got)
	}
}

// bigRequest is a request over MaxRequestSize made of short lines.
func bigRequest() string {
	var b strings.Builder
	for i := 0; b.Len() <= MaxRequestSize; i++ {
		fmt.Fprintf(&b, "attr%d=%s\n", i, strings.Repeat("v", 200))
	}
	b.WriteString("\n")
	return b.String()
}

func TestManyRequestsPerConnection(t *testing.T) {
	ts := startServer(t, fixtureSnapshot(t, nil), 0)
	c := dial(t, ts.addr)
	const n = 1000
	var buf bytes.Buffer
	for i := range n {
		if i%2 == 0 {
			buf.WriteString(request("sasl_username", "user1@"+l, "sender", fmt.Sprintf("test%d@%s", i, l)))
		} else {
			buf.WriteString(request("sasl_username", "user2@otherdomain.tld", "sender", "alias1@"+l))
		}
	}
	go io.Copy(c.c, &buf) // pipelined
	for i := range n {
		want := "DUNNO"
		if i%2 == 1 {
			want = "553 5.7.1 <alias1@" + l + ">: Sender address rejected: not owned by user user2@otherdomain.tld"
		}
		if got := c.answer(t); got != want {
			t.Fatalf("answer %d: %q, want %q", i, got, want)
		}
	}
}

func TestConcurrentClients(t *testing.T) {
	ts := startServer(t, fixtureSnapshot(t, nil), 0)
	var wg sync.WaitGroup
	errs := make(chan string, 100)
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", ts.addr)
			if err != nil {
				errs <- err.Error()
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(30 * time.Second))
			br := bufio.NewReader(c)
			for i := range 100 {
				sender, want := "user1@"+l, "action=DUNNO\n"
				if (g+i)%2 == 1 {
					sender, want = "user2@otherdomain.tld", "action=553 5.7.1 <user2@otherdomain.tld>: Sender address rejected: not owned by user user1@"+l+"\n"
				}
				if _, err := io.WriteString(c, request("sasl_username", "user1@"+l, "sender", sender)); err != nil {
					errs <- err.Error()
					return
				}
				line, err := br.ReadString('\n')
				empty, err2 := br.ReadString('\n')
				if err != nil || err2 != nil || line != want || empty != "\n" {
					errs <- fmt.Sprintf("client %d request %d: %q %q %v %v", g, i, line, empty, err, err2)
					return
				}
			}
		}()
	}
	snap := fixtureSnapshot(t, nil)
	for range 50 {
		ts.snap.Store(snap)
		time.Sleep(time.Millisecond)
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

func TestIdleTimeout(t *testing.T) {
	ts := startServer(t, fixtureSnapshot(t, nil), 100*time.Millisecond)
	c := dial(t, ts.addr)
	if got := c.ask(t, "sasl_username", "user1@"+l, "sender", "user1@"+l); got != "DUNNO" {
		t.Fatal(got)
	}
	c.expectClosed(t)
	c = dial(t, ts.addr)
	c.send(t, "request=smtpd_access_policy\nsender=") // stalls
	c.expectClosed(t)
}

func TestCloseEndsConnections(t *testing.T) {
	ts := startServer(t, fixtureSnapshot(t, nil), 0)
	c := dial(t, ts.addr)
	if got := c.ask(t, "sasl_username", "user1@"+l, "sender", "user1@"+l); got != "DUNNO" {
		t.Fatal(got)
	}
	if err := ts.srv.Close(); err != nil {
		t.Fatal(err)
	}
	c.expectClosed(t)
	select {
	case err := <-ts.done:
		if !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
		ts.done <- err
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return")
	}
	if _, err := net.DialTimeout("tcp", ts.addr, time.Second); err == nil {
		t.Error("listener still accepting after Close")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := ts.srv.Serve(l); !errors.Is(err, ErrServerClosed) {
		t.Errorf("Serve after Close: %v", err)
	}
}

// TestUnixSocket: Postfix often reaches policy servers over a unix socket.
func TestUnixSocket(t *testing.T) {
	dir, err := os.MkdirTemp("", "pp")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ln, err := net.Listen("unix", filepath.Join(dir, "policy"))
	if err != nil {
		t.Fatal(err)
	}
	snap := fixtureSnapshot(t, nil)
	srv := &Server{Snapshot: func() *directory.Snapshot { return snap }}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	conn, err := net.Dial("unix", filepath.Join(dir, "policy"))
	if err != nil {
		t.Fatal(err)
	}
	cl := &client{c: conn, br: bufio.NewReader(conn)}
	if got := cl.ask(t, "sasl_username", "user1@"+l, "sender", "user2@otherdomain.tld"); !strings.HasPrefix(got, "553 5.7.1 ") {
		t.Errorf("unix socket: %q", got)
	}
	conn.Close()
	srv.Close()
	if err := <-done; !errors.Is(err, ErrServerClosed) {
		t.Errorf("Serve: %v", err)
	}
}
