package socketmap

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
	"github.com/mailgate/mailgate/internal/settings"
)

// fixtureSnapshot builds the snapshot of docker-mailserver's test
// configuration (testdata/dms) with a few files added for the cases the
// fixture lacks (IDN domain, receive restriction, alias loop, keep-a-copy).
func fixtureSnapshot(t testing.TB) *directory.Snapshot {
	t.Helper()
	dir := "../../testdata/dms"
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		files[e.Name()] = b
	}
	hash := "{SHA512-CRYPT}$6$xhk2X0AAfBxG3KDc$rq9ul79FovObaVCGkZD8Acvv76FIYVxhOS999buqpC38mlU4sNnWGH8k1wCc0ejoQ6pmHKtbvAfbmkOfRwJQ/1"
	files["postfix-accounts.cf"] = append(files["postfix-accounts.cf"],
		[]byte("info@bücher.example|"+hash+"\nclosed@loop.example|"+hash+"\ncopy@loop.example|"+hash+"\n")...)
	files["postfix-virtual.cf"] = append(files["postfix-virtual.cf"],
		[]byte("loop1@loop.example loop2@loop.example\nloop2@loop.example loop1@loop.example\n"+
			"copy@loop.example copy@loop.example,keep@gmail.com\nteam@loop.example alias1@localhost.localdomain,copy@loop.example\n")...)
	files["postfix-receive-access.cf"] = []byte("closed@loop.example REJECT\n")
	st, err := settings.Load(t.TempDir(), func(string) (string, bool) { return "", false }, map[string]string{"hostname": "mail.example.test"})
	if err != nil {
		t.Fatal(err)
	}
	snap, err := directory.Build(files, st)
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

type testServer struct {
	srv  *Server
	addr string
	done chan error
	snap atomic.Pointer[directory.Snapshot]
	logs *syncBuffer
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

func netstring(s string) string { return fmt.Sprintf("%d:%s,", len(s), s) }

func (c *client) send(t testing.TB, raw string) {
	t.Helper()
	if _, err := io.WriteString(c.c, raw); err != nil {
		t.Fatal(err)
	}
}

func (c *client) reply(t testing.TB) string {
	t.Helper()
	b, err := readNetstring(c.br, MaxNetstring)
	if err != nil {
		t.Fatalf("reading reply: %v", err)
	}
	return string(b)
}

func (c *client) query(t testing.TB, table, key string) string {
	t.Helper()
	c.send(t, netstring(table+" "+key))
	return c.reply(t)
}

// expectClosed checks that the server closed the connection.
func (c *client) expectClosed(t testing.TB) {
	t.Helper()
	b, err := c.br.ReadByte()
	if err == nil {
		t.Fatalf("connection still open: read %q", b)
	}
}

func TestTables(t *testing.T) {
	ts := startServer(t, fixtureSnapshot(t), 0)
	c := dial(t, ts.addr)
	const l = "localhost.localdomain"
	cases := []struct{ table, key, want string }{
		{"domains", l, "OK " + l},
		{"domains", "LocalHost.LOCALDOMAIN", "OK " + l},
		{"domains", "localdomain2.com", "OK localdomain2.com"}, // alias domain
		{"domains", "otherdomain.tld", "OK otherdomain.tld"},
		{"domains", "bücher.example", "OK xn--bcher-kva.example"},
		{"domains", "xn--bcher-kva.example", "OK xn--bcher-kva.example"},
		{"domains", "gmail.com", "NOTFOUND "},
		{"domains", "external.example", "NOTFOUND "}, // send-as only: not managed
		{"domains", l + ".", "NOTFOUND "},
		{"domains", "[127.0.0.1]", "NOTFOUND "},
		{"domains", "", "NOTFOUND "},

		{"mailboxes", "user1@" + l, "OK " + l + "/user1/"},
		{"mailboxes", "USER1@LOCALHOST.localdomain", "OK " + l + "/user1/"},
		{"mailboxes", "user1+test@" + l, "OK " + l + "/user1/"},
		{"mailboxes", "user2@otherdomain.tld", "OK otherdomain.tld/user2/"},
		{"mailboxes", "info@bücher.example", "OK xn--bcher-kva.example/info/"},
		{"mailboxes", "alias1@" + l, "NOTFOUND "},
		{"mailboxes", "nouser@" + l, "NOTFOUND "},
		{"mailboxes", "+user1@" + l, "NOTFOUND "},
		{"mailboxes", "someone@gmail.com", "NOTFOUND "},
		{"mailboxes", "user1@" + l + "\u200b", "NOTFOUND "},
		{"mailboxes", "not an address", "NOTFOUND "},

		{"aliases", "alias1@" + l, "OK user1@" + l},
		{"aliases", "Alias1@Localhost.Localdomain", "OK user1@" + l},
		{"aliases", "alias1+test@" + l, "OK user1+test@" + l},
		{"aliases", "wildcard@localdomain2.com", "OK user1@" + l},
		{"aliases", "test123@" + l, "OK user1@" + l},
		{"aliases", "postmaster@" + l, "OK user1@" + l},
		{"aliases", "user1@" + l, "OK user1@" + l}, // self-mapping: Postfix stops there
		{"aliases", "user1+test@" + l, "OK user1+test@" + l},
		{"aliases", "prefixtest@" + l, "OK user2@otherdomain.tld"},
		{"aliases", "bounce-x@" + l, "NOTFOUND "}, // external1@otherdomain.tld is unknown in a managed domain
		{"aliases", "copy@loop.example", "OK copy@loop.example,keep@gmail.com"},
		{"aliases", "team@loop.example", "OK user1@" + l + ",copy@loop.example,keep@gmail.com"},
		{"aliases", "nouser@" + l, "NOTFOUND "},
		{"aliases", "someone@gmail.com", "NOTFOUND "},
		{"aliases", "closed@loop.example", "NOTFOUND "}, // receive restriction: recipient_access
		{"aliases", "loop1@loop.example", "TEMP 451 4.6.0 <loop1@loop.example>: Recipient address rejected: alias loop: loop1@loop.example → loop2@loop.example → loop1@loop.example"},
		{"aliases", "garbage", "NOTFOUND "},

		{"recipient_access", "closed@loop.example", "OK 554 5.7.1 <closed@loop.example>: Recipient address rejected: Access denied"},
		{"recipient_access", "nouser@" + l, "OK 550 5.1.1 <nouser@" + l + ">: Recipient address rejected: User unknown"},
		{"recipient_access", "NoUser@" + l, "OK 550 5.1.1 <nouser@" + l + ">: Recipient address rejected: User unknown"},
		{"recipient_access", "user1@" + l, "NOTFOUND "},
		{"recipient_access", "someone@gmail.com", "NOTFOUND "},
		{"recipient_access", l, "NOTFOUND "},

		{"senders", "user1@" + l, "OK user1@" + l},
		{"senders", "alias1@" + l, "OK user1@" + l},
		{"senders", "alias1+x@" + l, "OK user1@" + l},
		{"senders", "user3@" + l, "OK user1@" + l + ",user3@" + l},
		{"senders", "noreply@external.example", "OK user2@otherdomain.tld"},
		{"senders", "wildcard@localdomain2.com", "NOTFOUND "}, // catch-alls grant nothing
		{"senders", "someone@gmail.com", "NOTFOUND "},
		{"senders", "nouser@" + l, "NOTFOUND "},
		{"senders", "<user1@" + l + ">", "NOTFOUND "},

		{"nosuchtable", "x", `PERM unknown table "nosuchtable"`},
		{"", "user1@" + l, `PERM unknown table ""`},
	}
	for _, tc := range cases {
		if got := c.query(t, tc.table, tc.key); got != tc.want {
			t.Errorf("%s %q = %q, want %q", tc.table, tc.key, got, tc.want)
		}
	}
	// A well-formed netstring without a space: PERM, and the connection
	// stays usable.
	c.send(t, netstring("domains"))
	if got := c.reply(t); !strings.HasPrefix(got, "PERM ") {
		t.Errorf("request without space = %q, want PERM", got)
	}
	if got := c.query(t, "domains", l); got != "OK "+l {
		t.Errorf("after PERM: %q", got)
	}
}

func TestSnapshotUnavailable(t *testing.T) {
	ts := startServer(t, fixtureSnapshot(t), 0)
	c := dial(t, ts.addr)
	if got := c.query(t, "aliases", "alias1@localhost.localdomain"); got != "OK user1@localhost.localdomain" {
		t.Fatalf("got %q", got)
	}
	ts.snap.Store(nil)
	for _, table := range []string{"domains", "mailboxes", "aliases", "senders", "recipient_access"} {
		if got := c.query(t, table, "user1@localhost.localdomain"); got != "TEMP directory unavailable" {
			t.Errorf("%s without directory = %q, want TEMP", table, got)
		}
	}
	if got := c.query(t, "bogus", "x"); !strings.HasPrefix(got, "PERM ") {
		t.Errorf("unknown table without directory = %q, want PERM", got)
	}
	// A snapshot whose source is down (PostgreSQL lost, issue 7): TEMP too.
	down := *fixtureSnapshot(t)
	down.Unavailable = &directory.TempError{Source: "postgres", Err: errors.New("connection refused")}
	ts.snap.Store(&down)
	for _, table := range []string{"domains", "mailboxes", "aliases", "senders", "recipient_access"} {
		key := "user1@localhost.localdomain"
		if table == "domains" {
			key = "localhost.localdomain"
		}
		got := c.query(t, table, key)
		if table == "recipient_access" {
			if !strings.HasPrefix(got, "OK 451 4.3.0") {
				t.Errorf("%s with the source down = %q, want OK 451 4.3.0", table, got)
			}
			continue
		}
		if !strings.HasPrefix(got, "TEMP ") {
			t.Errorf("%s with the source down = %q, want TEMP", table, got)
		}
	}
	// A server without a Snapshot function at all.
	srv := &Server{}
	if got := srv.answer([]byte("domains x"), slog.New(slog.DiscardHandler)); got != "TEMP directory unavailable" {
		t.Errorf("nil Snapshot func: %q", got)
	}
}

func TestMalformedNetstrings(t *testing.T) {
	ts := startServer(t, fixtureSnapshot(t), 0)
	cases := map[string]string{
		"not a digit":       "abc",
		"negative":          "-1:x,",
		"space":             " 5:hello,",
		"leading zero":      "01:a,",
		"double zero":       "00:,",
		"no colon":          "5;hello,",
		"wrong terminator":  "5:hello;",
		"short payload":     "10:short,",
		"empty length":      ":,",
		"over the limit":    fmt.Sprintf("%d:", MaxNetstring+1),
		"too many digits":   "99999999999999999999:",
		"plus sign":         "+5:hello,",
		"hex":               "0x5:hello,",
		"newline":           "5:hello\n",
		"second is garbage": netstring("domains x") + "garbage",
	}
	for name, raw := range cases {
		t.Run(name, func(t *testing.T) {
			c := dial(t, ts.addr)
			c.send(t, raw)
			if name == "short payload" || strings.HasSuffix(raw, ":") {
				c.c.(*net.TCPConn).CloseWrite()
			}
			if name == "second is garbage" {
				if got := c.reply(t); got != "NOTFOUND " {
					t.Fatalf("first reply %q", got)
				}
			}
			if got := c.reply(t); got != "PERM malformed netstring" {
				t.Fatalf("reply %q, want PERM malformed netstring", got)
			}
			c.expectClosed(t)
		})
	}
	if !strings.Contains(ts.logs.String(), "malformed netstring") {
		t.Error("malformed netstrings were not logged")
	}
}

func TestSizeLimit(t *testing.T) {
	ts := startServer(t, fixtureSnapshot(t), 0)
	c := dial(t, ts.addr)
	// Exactly MaxNetstring octets: accepted (an invalid key: NOTFOUND).
	req := "domains " + strings.Repeat("a", MaxNetstring-len("domains "))
	c.send(t, netstring(req))
	if got := c.reply(t); got != "NOTFOUND " {
		t.Fatalf("maximal request: %q", got)
	}
	// One more: PERM and close, without reading the payload.
	c.send(t, fmt.Sprintf("%d:", MaxNetstring+1))
	if got := c.reply(t); got != "PERM malformed netstring" {
		t.Fatalf("oversized request: %q", got)
	}
	c.expectClosed(t)
}

func TestManyRequestsPerConnection(t *testing.T) {
	ts := startServer(t, fixtureSnapshot(t), 0)
	c := dial(t, ts.addr)
	// Pipelined: all requests first, then all replies, in order.
	const n = 2000
	var buf bytes.Buffer
	for i := range n {
		buf.WriteString(netstring(fmt.Sprintf("aliases test%d@localhost.localdomain", i)))
	}
	go io.Copy(c.c, &buf)
	for i := range n {
		if got := c.reply(t); got != "OK user1@localhost.localdomain" {
			t.Fatalf("reply %d: %q", i, got)
		}
	}
}

func TestConcurrentClients(t *testing.T) {
	ts := startServer(t, fixtureSnapshot(t), 0)
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
			for i := range 200 {
				key, want := "user1@localhost.localdomain", "OK localhost.localdomain/user1/"
				if (g+i)%2 == 1 {
					key, want = "nobody@gmail.com", "NOTFOUND "
				}
				if _, err := io.WriteString(c, netstring("mailboxes "+key)); err != nil {
					errs <- err.Error()
					return
				}
				got, err := readNetstring(br, MaxNetstring)
				if err != nil || string(got) != want {
					errs <- fmt.Sprintf("client %d request %d: %q %v", g, i, got, err)
					return
				}
			}
		}()
	}
	// Snapshot swaps while the clients run, as reload does.
	snap := fixtureSnapshot(t)
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
	ts := startServer(t, fixtureSnapshot(t), 100*time.Millisecond)
	c := dial(t, ts.addr)
	if got := c.query(t, "domains", "localhost.localdomain"); got != "OK localhost.localdomain" {
		t.Fatal(got)
	}
	start := time.Now()
	c.expectClosed(t)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("closed after %v", d)
	}
	// A client that sends half a request and stalls is closed as well.
	c = dial(t, ts.addr)
	c.send(t, "20:domains loc")
	c.expectClosed(t)
}

func TestCloseEndsConnections(t *testing.T) {
	ts := startServer(t, fixtureSnapshot(t), 0)
	c := dial(t, ts.addr)
	if got := c.query(t, "domains", "localhost.localdomain"); got != "OK localhost.localdomain" {
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
		ts.done <- err // for the cleanup
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

func TestReadNetstring(t *testing.T) {
	good := map[string]string{"0:,": "", "5:hello,": "hello", "1:,,": ",", "3:a b,": "a b", "2:\x00\n,": "\x00\n"}
	for in, want := range good {
		got, err := readNetstring(bufio.NewReader(strings.NewReader(in)), MaxNetstring)
		if err != nil || string(got) != want {
			t.Errorf("readNetstring(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := readNetstring(bufio.NewReader(strings.NewReader("")), 10); !errors.Is(err, errEOF) {
		t.Errorf("empty input: %v, want errEOF", err)
	}
	if _, err := readNetstring(bufio.NewReader(strings.NewReader("11:hello world,")), 10); !errors.Is(err, errMalformed) {
		t.Errorf("over max: %v", err)
	}
	if _, err := readNetstring(bufio.NewReader(strings.NewReader("10:helloworld,")), 10); err != nil {
		t.Errorf("at max: %v", err)
	}
	var b bytes.Buffer
	w := bufio.NewWriter(&b)
	writeNetstring(w, "NOTFOUND ")
	w.Flush()
	if b.String() != "9:NOTFOUND ," {
		t.Errorf("writeNetstring: %q", b.String())
	}
}

// An OK reply larger than Postfix accepts becomes TEMP.
func TestReplyTooLarge(t *testing.T) {
	var targets []string
	for i := range 600 {
		targets = append(targets, fmt.Sprintf("%s%d@%s.%s.example", strings.Repeat("x", 60), i, strings.Repeat("y", 60), strings.Repeat("z", 60)))
	}
	st, err := settings.Load(t.TempDir(), func(string) (string, bool) { return "", false }, nil)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := directory.Build(map[string][]byte{"postfix-virtual.cf": []byte("big@big.example " + strings.Join(targets, ",") + "\n")}, st)
	if err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, snap, 0)
	c := dial(t, ts.addr)
	got := c.query(t, "aliases", "big@big.example")
	if !strings.HasPrefix(got, "TEMP reply of ") {
		t.Fatalf("got %.100q", got)
	}
}
