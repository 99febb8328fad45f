package smtpclient

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/textproto"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailgate/mailgate/internal/queue"
	"github.com/mailgate/mailgate/internal/smtpsink"
)

// testLogger logs through t when -v is given, else discards.
func testLogger(t *testing.T) *slog.Logger {
	if !testing.Verbose() {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func newClient(t *testing.T, o Options) *Client {
	t.Helper()
	if o.Hostname == "" {
		o.Hostname = "mailgate.test"
	}
	if o.CommandTimeout == 0 {
		o.CommandTimeout = 10 * time.Second
	}
	if o.DataTimeout == 0 {
		o.DataTimeout = 10 * time.Second
	}
	if o.DialTimeout == 0 {
		o.DialTimeout = 5 * time.Second
	}
	if o.Logger == nil {
		o.Logger = testLogger(t)
	}
	c, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func startSink(t *testing.T, o smtpsink.Options) *smtpsink.Sink {
	t.Helper()
	s, err := smtpsink.Start(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// relayTo is the RelayHost for a sink: brackets, no MX lookup.
func relayTo(addr string) string {
	host, port, _ := net.SplitHostPort(addr)
	return "[" + host + "]:" + port
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// deliver calls Deliver and checks the invariant every caller relies on:
// one Result per recipient, Rcpt as passed, in order.
func deliver(t *testing.T, ctx context.Context, c *Client, from string, rcpts []string, body io.Reader) []queue.Result {
	t.Helper()
	res := c.Deliver(ctx, from, rcpts, body)
	checkResults(t, rcpts, res)
	return res
}

func checkResults(t *testing.T, rcpts []string, res []queue.Result) {
	t.Helper()
	if len(res) != len(rcpts) {
		t.Fatalf("%d results for %d recipients: %+v", len(res), len(rcpts), res)
	}
	for i := range rcpts {
		if res[i].Rcpt != rcpts[i] {
			t.Fatalf("result %d is for %q, want %q", i, res[i].Rcpt, rcpts[i])
		}
	}
}

func wantDelivered(t *testing.T, res []queue.Result) {
	t.Helper()
	for _, r := range res {
		if r.Code < 200 || r.Code > 299 {
			t.Errorf("%s: not delivered: %+v", r.Rcpt, r)
		}
	}
}

func waitSink(t *testing.T, s *smtpsink.Sink, n int) []smtpsink.Message {
	t.Helper()
	ms, err := s.Wait(ctxTimeout(t, 10*time.Second), n)
	if err != nil {
		t.Fatal(err)
	}
	return ms
}

// freePort returns a TCP port that was free on 127.0.0.1 a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}

// fakeResolver answers from maps keyed by the queried name (absolute names
// end with a dot). Unknown names are "not found".
type fakeResolver struct {
	mu    sync.Mutex
	mx    map[string][]*net.MX
	mxErr map[string]error
	ip    map[string][]string
	ipErr map[string]error
	calls []string
}

func notFound(name string) error {
	return &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

func (r *fakeResolver) LookupMX(_ context.Context, name string) ([]*net.MX, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, "MX "+name)
	if err := r.mxErr[name]; err != nil {
		return nil, err
	}
	if recs, ok := r.mx[name]; ok {
		return recs, nil
	}
	return nil, notFound(name)
}

func (r *fakeResolver) LookupIPAddr(_ context.Context, name string) ([]net.IPAddr, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, "IP "+name)
	if err := r.ipErr[name]; err != nil {
		return nil, err
	}
	ips, ok := r.ip[name]
	if !ok {
		return nil, notFound(name)
	}
	var out []net.IPAddr
	for _, s := range ips {
		out = append(out, net.IPAddr{IP: net.ParseIP(s)})
	}
	return out, nil
}

func (r *fakeResolver) Calls() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.calls...)
}

// scripted is a hand-written SMTP server for the cases the sink cannot
// play (odd greetings, broken TLS, hangs). handle runs per connection with
// its number, counting from 0.
type scripted struct {
	ln    net.Listener
	conns atomic.Int32
	wg    sync.WaitGroup
}

func startScripted(t *testing.T, addr string, handle func(n int, sc *srvConn)) *scripted {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s := &scripted{ln: ln}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			n := int(s.conns.Add(1)) - 1
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer nc.Close()
				nc.SetDeadline(time.Now().Add(30 * time.Second))
				handle(n, &srvConn{t: t, nc: nc, tp: textproto.NewConn(nc)})
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		s.wg.Wait()
	})
	return s
}

func (s *scripted) Addr() string { return s.ln.Addr().String() }

// srvConn is the server side of a scripted connection.
type srvConn struct {
	t  *testing.T
	nc net.Conn
	tp *textproto.Conn
}

func (c *srvConn) send(lines ...string) {
	for _, l := range lines {
		c.tp.PrintfLine("%s", l)
	}
}

// expect reads a command line and checks its prefix (case-insensitive);
// it returns the line, or "" when the connection ended.
func (c *srvConn) expect(prefix string) string {
	line, err := c.tp.ReadLine()
	if err != nil {
		c.t.Errorf("server: reading %q: %v", prefix, err)
		return ""
	}
	if !strings.HasPrefix(strings.ToUpper(line), strings.ToUpper(prefix)) {
		c.t.Errorf("server: got %q, want %q…", line, prefix)
	}
	return line
}

// data reads message data up to the "." line.
func (c *srvConn) data() string {
	var b strings.Builder
	for {
		line, err := c.tp.ReadLine()
		if err != nil {
			c.t.Errorf("server: reading data: %v", err)
			return b.String()
		}
		if line == "." {
			return b.String()
		}
		b.WriteString(line + "\n")
	}
}

func (c *srvConn) ehlo(ext ...string) {
	lines := append([]string{"scripted.test"}, ext...)
	for i, l := range lines {
		if i < len(lines)-1 {
			c.send("250-" + l)
		} else {
			c.send("250 " + l)
		}
	}
}

func (c *srvConn) transaction() {
	c.expect("MAIL FROM:")
	c.send("250 2.1.0 ok")
	c.expect("RCPT TO:")
	c.send("250 2.1.5 ok")
	c.expect("DATA")
	c.send("354 go ahead")
	c.data()
	c.send("250 2.0.0 queued")
}

// serverTLS returns a TLS config with a fresh self-signed certificate.
func serverTLS(t testing.TB) *tls.Config {
	t.Helper()
	c, err := smtpsink.SelfSignedTLS("sink.test")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// viaQueue enqueues env with body into a fresh queue whose Deliverer is c,
// runs one delivery round and returns the results c gave.
func viaQueue(t *testing.T, c *Client, env queue.Envelope, body string) []queue.Result {
	t.Helper()
	var mu sync.Mutex
	var got []queue.Result
	d := queue.DelivererFunc(func(ctx context.Context, from string, rcpts []string, r io.Reader) []queue.Result {
		if _, ok := r.(*io.SectionReader); !ok {
			t.Errorf("queue passed a %T, not an *io.SectionReader", r)
		}
		res := c.Deliver(ctx, from, rcpts, r)
		checkResults(t, rcpts, res)
		mu.Lock()
		got = append(got, res...)
		mu.Unlock()
		return res
	})
	q, err := queue.Open(t.TempDir(), queue.Options{Deliverer: d, Hostname: "mailgate.test", Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	// A message enqueued before this one makes the body's offset in the
	// segment file non-zero.
	if _, err := q.Enqueue(queue.Envelope{From: "x@example.org", To: []string{"x@example.org"}, Arrival: time.Now().Add(time.Hour)}, strings.NewReader("filler\r\n")); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Enqueue(env, strings.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	if n := q.RunOnce(ctxTimeout(t, 30*time.Second)); n != 1 {
		t.Fatalf("RunOnce worked on %d messages, want 1", n)
	}
	mu.Lock()
	defer mu.Unlock()
	return got
}

// postfixSink starts Postfix's smtp-sink on 127.0.0.1 with args, dumping
// messages into a directory it returns. It skips the test when the binary
// is missing, unless CI=true.
func postfixSink(t *testing.T, args ...string) (addr, dumpDir string) {
	t.Helper()
	const bin = "/usr/sbin/smtp-sink"
	if _, err := os.Stat(bin); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is required in CI: %v", bin, err)
		}
		t.Skipf("%s not installed", bin)
	}
	// smtp-sink writes as nobody, which cannot enter t.TempDir()'s parent.
	dumpDir, err := os.MkdirTemp("", "smtp-sink-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dumpDir) })
	if err := os.Chmod(dumpDir, 0o777); err != nil {
		t.Fatal(err)
	}
	for attempt := 0; ; attempt++ {
		addr = "127.0.0.1:" + freePort(t)
		all := append([]string{"-u", "nobody", "-4", "-d", dumpDir + "/%M."}, args...)
		all = append(all, addr, "100")
		p, err := os.StartProcess(bin, append([]string{bin}, all...), &os.ProcAttr{Files: []*os.File{nil, os.Stderr, os.Stderr}})
		if err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { p.Wait(); close(exited) }()
		t.Cleanup(func() {
			p.Kill()
			<-exited
		})
		for i := 0; i < 100; i++ {
			select {
			case <-exited:
				i = 100 // port taken meanwhile? try another
				continue
			default:
			}
			nc, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				// Read the greeting so that smtp-sink is not left with a
				// half-open session.
				bufio.NewReader(nc).ReadString('\n')
				nc.Close()
				return addr, dumpDir
			}
			time.Sleep(20 * time.Millisecond)
		}
		if attempt == 3 {
			t.Fatalf("smtp-sink did not start on %s", addr)
		}
	}
}
