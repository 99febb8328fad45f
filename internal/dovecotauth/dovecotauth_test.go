package dovecotauth

import (
	"bufio"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailgate/mailgate/internal/authn"
	"github.com/mailgate/mailgate/internal/conffile"
	"github.com/mailgate/mailgate/internal/directory"
	"github.com/mailgate/mailgate/internal/passwd"
	"github.com/mailgate/mailgate/internal/settings"
)

const (
	user1 = "user1@example.test"
	pass1 = "secret one"
)

var hash1 = func() string {
	h, err := passwd.Hash(pass1)
	if err != nil {
		panic(err)
	}
	return h
}()

func testSnapshot(t *testing.T) *directory.Snapshot {
	t.Helper()
	s, err := settings.Load(t.TempDir(), func(string) (string, bool) { return "", false }, map[string]string{"hostname": "mail.example.test"})
	if err != nil {
		t.Fatal(err)
	}
	snap, err := directory.Build(map[string][]byte{conffile.AccountsFile: []byte(user1 + "|" + hash1 + "\n")}, s)
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

func start(t *testing.T, o authn.Options) *fixture {
	t.Helper()
	f := &fixture{done: make(chan error, 1)}
	f.snap.Store(testSnapshot(t))
	f.srv = &Server{Snapshot: f.snap.Load, Auth: authn.New(o), Logger: slog.New(slog.DiscardHandler)}
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
				t.Errorf("Serve = %v, want ErrServerClosed", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return after Close")
		}
	})
	return f
}

// client is the client side of the protocol, as Postfix's
// xsasl_dovecot_server.c speaks it.
type client struct {
	t         *testing.T
	c         net.Conn
	r         *bufio.Reader
	handshake [][]string
}

// dial connects, sends the client handshake and reads the server's up to DONE.
func (f *fixture) dial(t *testing.T) *client {
	t.Helper()
	nc, err := net.Dial("tcp", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	c := &client{t: t, c: nc, r: bufio.NewReader(nc)}
	c.send("VERSION\t1\t0\nCPID\t4242")
	for {
		l := c.read()
		c.handshake = append(c.handshake, l)
		if l[0] == "DONE" {
			return c
		}
	}
}

func (c *client) send(lines string) {
	c.t.Helper()
	if _, err := io.WriteString(c.c, lines+"\n"); err != nil {
		c.t.Fatal(err)
	}
}

func (c *client) read() []string {
	c.t.Helper()
	_ = c.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := c.r.ReadString('\n')
	if err != nil {
		c.t.Fatalf("read: %v (got %q)", err, line)
	}
	return strings.Split(strings.TrimSuffix(line, "\n"), "\t")
}

// expect reads one line and compares it with want (TAB-separated).
func (c *client) expect(want string) {
	c.t.Helper()
	if got := strings.Join(c.read(), "\t"); got != want {
		c.t.Fatalf("got %q, want %q", got, want)
	}
}

// closed checks that the server closes the connection without answering.
func (c *client) closed() {
	c.t.Helper()
	_ = c.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := c.r.ReadString('\n')
	if err == nil || line != "" {
		c.t.Fatalf("read %q, %v; want the connection closed", line, err)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		c.t.Fatal("connection still open")
	}
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func plain(authz, authc, pass string) string { return b64(authz + "\x00" + authc + "\x00" + pass) }

const invalid = "reason=Authentication credentials invalid"

func TestHandshake(t *testing.T) {
	f := start(t, authn.Options{})
	c1, c2 := f.dial(t), f.dial(t)
	want := []*regexp.Regexp{
		regexp.MustCompile(`^VERSION\t1\t2$`),
		regexp.MustCompile(`^MECH\tPLAIN\tplaintext$`),
		regexp.MustCompile(`^MECH\tLOGIN\tplaintext$`),
		regexp.MustCompile(`^SPID\t[0-9]+$`),
		regexp.MustCompile(`^CUID\t[0-9]+$`),
		regexp.MustCompile(`^COOKIE\t[0-9a-f]{32}$`),
		regexp.MustCompile(`^DONE$`),
	}
	for _, c := range []*client{c1, c2} {
		if len(c.handshake) != len(want) {
			t.Fatalf("handshake %q, want %d lines", c.handshake, len(want))
		}
		for i, re := range want {
			if l := strings.Join(c.handshake[i], "\t"); !re.MatchString(l) {
				t.Errorf("handshake line %d = %q, want %s", i, l, re)
			}
		}
	}
	if c1.handshake[4][1] == c2.handshake[4][1] {
		t.Errorf("two connections share CUID %s", c1.handshake[4][1])
	}
	if c1.handshake[5][1] != c2.handshake[5][1] {
		t.Errorf("COOKIE differs between connections of one server")
	}
}

func TestPlain(t *testing.T) {
	f := start(t, authn.Options{FreeFailures: 100})
	c := f.dial(t)
	// Postfix's request: service, nologin, lip, rip, secured, resp.
	c.send("AUTH\t1\tPLAIN\tservice=smtp\tnologin\tlip=127.0.0.1\trip=192.0.2.1\tsecured\tresp=" + plain("", "User1@Example.TEST", pass1))
	c.expect("OK\t1\tuser=" + user1)
	c.send("AUTH\t2\tPLAIN\tservice=smtp\trip=192.0.2.1\tresp=" + plain("", user1, "wrong"))
	c.expect("FAIL\t2\tuser=" + user1 + "\t" + invalid)
	c.send("AUTH\t3\tPLAIN\tservice=smtp\tresp=" + plain("", "nobody@example.test", pass1))
	c.expect("FAIL\t3\tuser=nobody@example.test\t" + invalid)
	// Without an initial response: an empty challenge, then CONT.
	c.send("AUTH\t4\tplain\tservice=smtp")
	c.expect("CONT\t4\t")
	c.send("CONT\t4\t" + plain(user1, user1, pass1))
	c.expect("OK\t4\tuser=" + user1)
	// Malformed responses.
	c.send("AUTH\t5\tPLAIN\tservice=smtp\tresp=!!!")
	c.expect("FAIL\t5\treason=Invalid base64 data in response")
	c.send("AUTH\t6\tPLAIN\tservice=smtp\tresp=" + b64(user1+"\x00"+pass1))
	c.expect("FAIL\t6\treason=Invalid PLAIN response")
	c.send("AUTH\t7\tPLAIN\tservice=smtp\tresp=")
	c.expect("FAIL\t7\treason=Invalid PLAIN response")
	c.send("AUTH\t8\tPLAIN\tservice=smtp\tresp=" + plain("other@example.test", user1, pass1))
	c.expect("FAIL\t8\tuser=" + user1 + "\treason=Proxy authorization is not supported")
	c.send("AUTH\t9\tCRAM-MD5\tservice=smtp")
	c.expect("FAIL\t9\treason=Unsupported authentication mechanism")
	// A login with a control character is not echoed.
	c.send("AUTH\t10\tPLAIN\tservice=smtp\tresp=" + plain("", "a\tb@example.test", pass1))
	c.expect("FAIL\t10\t" + invalid)
}

func TestLogin(t *testing.T) {
	f := start(t, authn.Options{FreeFailures: 100})
	c := f.dial(t)
	c.send("AUTH\t1\tLOGIN\tservice=smtp\trip=192.0.2.1")
	c.expect("CONT\t1\t" + b64("Username:"))
	c.send("CONT\t1\t" + b64(user1))
	c.expect("CONT\t1\t" + b64("Password:"))
	c.send("CONT\t1\t" + b64(pass1))
	c.expect("OK\t1\tuser=" + user1)
	// Initial response carries the user name.
	c.send("AUTH\t2\tLOGIN\tservice=smtp\tresp=" + b64(user1))
	c.expect("CONT\t2\t" + b64("Password:"))
	c.send("CONT\t2\t" + b64("bad"))
	c.expect("FAIL\t2\tuser=" + user1 + "\t" + invalid)
	// The request is finished: a further CONT is for an unknown id.
	c.send("CONT\t2\t" + b64(pass1))
	c.expect("FAIL\t2\treason=Unknown authentication request")
	c.send("AUTH\t3\tLOGIN\tservice=smtp")
	c.expect("CONT\t3\t" + b64("Username:"))
	c.send("CONT\t3\t*")
	c.expect("FAIL\t3\treason=Invalid base64 data in continued response")
}

func TestConcurrentRequests(t *testing.T) {
	f := start(t, authn.Options{FreeFailures: 100})
	c := f.dial(t)
	c.send("AUTH\t10\tLOGIN\tservice=smtp")
	c.expect("CONT\t10\t" + b64("Username:"))
	// Two checks pipelined in one write while request 10 waits.
	c.send("AUTH\t11\tPLAIN\tservice=smtp\tresp=" + plain("", user1, pass1) + "\nAUTH\t12\tPLAIN\tservice=smtp\tresp=" + plain("", user1, "bad"))
	got := map[string]string{}
	for range 2 {
		l := c.read()
		got[l[1]] = strings.Join(l, "\t")
	}
	if got["11"] != "OK\t11\tuser="+user1 || got["12"] != "FAIL\t12\tuser="+user1+"\t"+invalid {
		t.Fatalf("answers %q", got)
	}
	c.send("CONT\t10\t" + b64(user1))
	c.expect("CONT\t10\t" + b64("Password:"))
	c.send("CONT\t10\t" + b64(pass1))
	c.expect("OK\t10\tuser=" + user1)
}

func TestPendingEviction(t *testing.T) {
	f := start(t, authn.Options{})
	c := f.dial(t)
	for i := 1; i <= MaxPending; i++ {
		c.send("AUTH\t" + strconv.Itoa(i) + "\tLOGIN\tservice=smtp")
		c.expect("CONT\t" + strconv.Itoa(i) + "\t" + b64("Username:"))
	}
	c.send("AUTH\t100\tPLAIN\tservice=smtp")
	c.expect("FAIL\t1\treason=Too many unfinished authentication requests\ttemp")
	c.expect("CONT\t100\t")
	c.send("CONT\t1\t" + b64(user1))
	c.expect("FAIL\t1\treason=Unknown authentication request")
	c.send("CONT\t2\t" + b64(user1))
	c.expect("CONT\t2\t" + b64("Password:"))
}

func TestTemporaryFailures(t *testing.T) {
	old := authWait
	authWait = 300 * time.Millisecond
	t.Cleanup(func() { authWait = old })
	// One free failure per network, then a back-off far longer than authWait.
	f := start(t, authn.Options{FreeFailures: 1, BackoffBase: time.Hour, BackoffCap: time.Hour})
	c := f.dial(t)
	c.send("AUTH\t1\tPLAIN\tservice=smtp\trip=192.0.2.1\tresp=" + plain("", user1, "bad"))
	c.expect("FAIL\t1\tuser=" + user1 + "\t" + invalid)
	start := time.Now()
	c.send("AUTH\t2\tPLAIN\tservice=smtp\trip=192.0.2.1\tresp=" + plain("", user1, pass1))
	c.expect("FAIL\t2\tuser=" + user1 + "\treason=Temporary authentication failure\ttemp")
	if d := time.Since(start); d < authWait {
		t.Fatalf("temporary failure after %v, before authWait", d)
	}
	// Another network (rip=) is not slowed down; an IPv4-mapped address
	// counts as its IPv4 address (a wrong password: a right one would now
	// come from authn's cache, which skips the back-off).
	c.send("AUTH\t3\tPLAIN\tservice=smtp\trip=198.51.100.7\tresp=" + plain("", user1, pass1))
	c.expect("OK\t3\tuser=" + user1)
	c.send("AUTH\t4\tPLAIN\tservice=smtp\trip=::ffff:192.0.2.1\tresp=" + plain("", user1, "bad"))
	c.expect("FAIL\t4\tuser=" + user1 + "\treason=Temporary authentication failure\ttemp")
	// No directory: temporary failure, never OK.
	f.snap.Store(nil)
	c.send("AUTH\t5\tPLAIN\tservice=smtp\trip=203.0.113.9\tresp=" + plain("", user1, pass1))
	c.expect("FAIL\t5\tuser=" + user1 + "\treason=Temporary authentication failure\ttemp")
}

func TestInFlightLimit(t *testing.T) {
	old := authWait
	authWait = 2 * time.Second
	t.Cleanup(func() { authWait = old })
	// Every attempt waits an hour: checks stay in flight until authWait.
	f := start(t, authn.Options{FreeFailures: -1, BackoffBase: time.Hour, BackoffCap: time.Hour})
	c := f.dial(t)
	var b strings.Builder
	for i := 1; i <= MaxInFlight+1; i++ {
		b.WriteString("AUTH\t" + strconv.Itoa(i) + "\tPLAIN\tservice=smtp\trip=192.0.2.1\tresp=" + plain("", user1, pass1) + "\n")
	}
	c.send(strings.TrimSuffix(b.String(), "\n"))
	c.expect("FAIL\t" + strconv.Itoa(MaxInFlight+1) + "\tuser=" + user1 + "\treason=Too many concurrent authentication requests\ttemp")
	// A CONT for a request being checked closes the connection.
	c.send("CONT\t1\t" + b64("x"))
	c.closed()
}

func TestProtocolErrorsClose(t *testing.T) {
	f := start(t, authn.Options{})
	for _, tc := range []struct{ name, lines string }{
		{"unknown command", "REQUEST\t1\t2"},
		{"line too long", "AUTH\t1\tPLAIN\tservice=smtp\tresp=" + strings.Repeat("A", MaxLineLength)},
		{"empty line", ""},
		{"control character", "AUTH\t1\tPLAIN\tservice=smtp\x02"},
		{"CR", "AUTH\t1\tPLAIN\tservice=smtp\r"},
		{"bad id", "AUTH\tx1\tPLAIN\tservice=smtp"},
		{"id too large", "AUTH\t4294967296\tPLAIN\tservice=smtp"},
		{"no mechanism", "AUTH\t1"},
		{"no service", "AUTH\t1\tPLAIN\tresp=" + plain("", user1, pass1)},
		{"duplicate id", "AUTH\t1\tLOGIN\tservice=smtp\nAUTH\t1\tLOGIN\tservice=smtp"},
		{"bad CONT id", "CONT\t-1\tAAAA"},
		{"broken escape", "AUTH\t1\tPLAIN\tservice=smtp\x01"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := f.dial(t)
			c.send(tc.lines)
			if tc.name == "duplicate id" {
				c.expect("CONT\t1\t" + b64("Username:"))
			}
			c.closed()
		})
	}
	for _, tc := range []struct{ name, hs string }{
		{"no VERSION", "CPID\t1"},
		{"major version 2", "VERSION\t2\t0\nCPID\t1"},
		{"no CPID", "VERSION\t1\t0\nAUTH\t1\tPLAIN\tservice=smtp"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nc, err := net.Dial("tcp", f.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			c := &client{t: t, c: nc, r: bufio.NewReader(nc)}
			c.send(tc.hs)
			for l := c.read(); l[0] != "DONE"; l = c.read() {
			}
			c.closed()
		})
	}
}

func TestCloseEndsConnections(t *testing.T) {
	f := start(t, authn.Options{})
	c := f.dial(t)
	c.send("AUTH\t1\tLOGIN\tservice=smtp")
	c.expect("CONT\t1\t" + b64("Username:"))
	if err := f.srv.Close(); err != nil {
		t.Fatal(err)
	}
	c.closed()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := f.srv.Serve(l); !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve after Close = %v", err)
	}
}

func TestParseLine(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string // nil: error
	}{
		{"DONE", []string{"DONE"}},
		{"CONT\t1\t", []string{"CONT", "1", ""}},
		{"AUTH\t1\tPLAIN\tservice=smtp", []string{"AUTH", "1", "PLAIN", "service=smtp"}},
		{"X\ta\x01tb\x01nc\x01ld\x01re\x010f\x011g\x01xh", []string{"X", "a\tb\nc\nd\re\x00f\x01gxh"}},
		{"", nil},
		{"\tX", nil},
		{"X\x01", nil},
		{"X\ta\x01\tb", nil},
		{"X\x00", nil},
		{"X\r", nil},
		{"X\x7f", nil},
		{"X\x01\x02", nil},
		{"X\t" + strings.Repeat("a", MaxLineLength), nil},
	} {
		got, err := ParseLine([]byte(tc.in))
		if tc.want == nil {
			if err == nil {
				t.Errorf("ParseLine(%q) = %q, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || strings.Join(got, "|") != strings.Join(tc.want, "|") || len(got) != len(tc.want) {
			t.Errorf("ParseLine(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func FuzzParseLine(f *testing.F) {
	for _, s := range []string{
		"VERSION\t1\t2", "CPID\t123", "AUTH\t1\tPLAIN\tservice=smtp\tnologin\tlip=127.0.0.1\trip=::1\tsecured\tresp=AHVAdgBw",
		"CONT\t1\t", "X\ta\x01tb\x010", "X\x01", "\t", "",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		fields, err := ParseLine(line)
		if err != nil {
			return
		}
		if len(fields) == 0 || fields[0] == "" {
			t.Fatalf("ParseLine(%q) = %q: no command name", line, fields)
		}
		if len(fields) != strings.Count(string(line), "\t")-strings.Count(string(line), "\x01\t")+1 {
			t.Fatalf("ParseLine(%q) = %d fields", line, len(fields))
		}
		enc := AppendLine(nil, fields)
		if enc[len(enc)-1] != '\n' || strings.ContainsAny(string(enc[:len(enc)-1]), "\n\r\x00") {
			t.Fatalf("AppendLine(%q) = %q: not one clean line", fields, enc)
		}
		again, err := ParseLine(enc[:len(enc)-1])
		if err != nil || len(again) != len(fields) {
			t.Fatalf("round trip of %q: %q, %v", fields, again, err)
		}
		for i := range fields {
			if again[i] != fields[i] {
				t.Fatalf("round trip of %q: %q", fields, again)
			}
		}
	})
}
