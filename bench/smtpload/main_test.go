package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"io"
	"math/big"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

var msgIDRe = regexp.MustCompile(`(?m)^Message-ID: (<[^>\r\n]+>)\r$`)

// checkMessage verifies size, line endings, line lengths and the header block
// of one built message and returns its Message-ID.
func checkMessage(t *testing.T, msg []byte, size int) string {
	t.Helper()
	if len(msg) != size {
		t.Fatalf("size %d: message is %d bytes", size, len(msg))
	}
	if !bytes.HasSuffix(msg, []byte("\r\n")) {
		t.Fatalf("size %d: message does not end with CRLF: %q", size, msg[max(0, len(msg)-10):])
	}
	head, body, ok := bytes.Cut(msg, []byte("\r\n\r\n"))
	if !ok {
		t.Fatalf("size %d: no empty line after the headers", size)
	}
	lines := strings.Split(string(msg[:len(msg)-2]), "\r\n")
	for i, l := range lines {
		if strings.ContainsAny(l, "\r\n") {
			t.Fatalf("size %d: bare CR or LF in line %d: %q", size, i+1, l)
		}
	}
	for _, h := range []string{"From: ", "To: ", "Subject: ", "Date: ", "Message-ID: ", "MIME-Version: 1.0"} {
		if !bytes.Contains(head, []byte("\r\n"+h)) && !bytes.HasPrefix(head, []byte(h)) {
			t.Errorf("size %d: header %q missing", size, h)
		}
	}
	if date := regexp.MustCompile(`(?m)^Date: (.*)\r$`).FindSubmatch(head); date == nil {
		t.Errorf("size %d: no Date", size)
	} else if _, err := time.Parse(time.RFC1123Z, string(date[1])); err != nil {
		t.Errorf("size %d: Date: %v", size, err)
	}
	if len(body) > 0 {
		bl := strings.Split(string(body[:len(body)-2]), "\r\n")
		for i, l := range bl {
			if i < len(bl)-1 && len(l)+2 != 78 {
				t.Fatalf("size %d: body line %d is %d bytes, want 78", size, i+1, len(l)+2)
			}
			if len(l)+2 > 78 || l == "" || l[0] == '.' {
				t.Fatalf("size %d: bad body line %d: %q", size, i+1, l)
			}
		}
	}
	m := msgIDRe.FindSubmatch(head)
	if m == nil {
		t.Fatalf("size %d: no Message-ID in %q", size, head)
	}
	return string(m[1])
}

func TestMessageExactSize(t *testing.T) {
	from, to := "user1@localhost.localdomain", []string{"someone@remote.example", "b@x.example"}
	b, err := newMsgBuilder(from, to, 100000)
	if err != nil {
		t.Fatal(err)
	}
	minSize := len(b.header(nil, 1, time.Now())) - len(b.pad)
	if _, err := newMsgBuilder(from, to, minSize-1); err == nil {
		t.Fatalf("size %d (below the %d header bytes) accepted", minSize-1, minSize)
	}
	sizes := []int{2048, 100000, 1 << 20}
	for s := minSize; s < minSize+400; s++ {
		sizes = append(sizes, s)
	}
	now := time.Date(2026, 11, 25, 8, 9, 10, 0, time.FixedZone("", -(9*3600+30*60)))
	for _, size := range sizes {
		b, err := newMsgBuilder(from, to, size)
		if err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		var buf []byte
		for _, seq := range []int64{1, 42, maxMessages} {
			buf = b.build(buf[:0], seq, now)
			checkMessage(t, buf, size)
		}
	}
}

func TestMessageIDsUnique(t *testing.T) {
	seen := map[string]bool{}
	var buf []byte
	for run := 0; run < 2; run++ { // two runs (builders) must not collide either
		b, err := newMsgBuilder("a@b.example", []string{"c@d.example"}, 2048)
		if err != nil {
			t.Fatal(err)
		}
		for seq := int64(1); seq <= 5000; seq++ {
			buf = b.build(buf[:0], seq, time.Now())
			id := checkMessage(t, buf, 2048)
			if seen[id] {
				t.Fatalf("duplicate Message-ID %s", id)
			}
			seen[id] = true
		}
	}
}

func TestPercentile(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		d := make([]time.Duration, len(v))
		for i, x := range v {
			d[i] = time.Duration(x) * time.Millisecond
		}
		return d
	}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = i + 1 // 1..100 ms
	}
	for _, tc := range []struct {
		data []time.Duration
		p    int
		want int
	}{
		{nil, 50, 0},
		{ms(7), 50, 7},
		{ms(7), 99, 7},
		{ms(1, 2), 50, 1},
		{ms(1, 2), 51, 2},
		{ms(1, 2, 3, 4), 50, 2},
		{ms(1, 2, 3, 4), 95, 4},
		{ms(hundred...), 50, 50},
		{ms(hundred...), 95, 95},
		{ms(hundred...), 99, 99},
		{ms(hundred...), 100, 100},
		{ms(hundred...), 1, 1},
		{ms(append(hundred, 101)...), 50, 51}, // 101 values: rank ceil(50.5) = 51
		{ms(append(hundred, 101)...), 99, 100},
	} {
		got := percentile(tc.data, tc.p)
		if got != time.Duration(tc.want)*time.Millisecond {
			t.Errorf("percentile(%d values, p%d) = %v, want %dms", len(tc.data), tc.p, got, tc.want)
		}
	}
}

func TestFlagValidation(t *testing.T) {
	base := []string{"--addr", "127.0.0.1:587", "--tls", "starttls", "--from", "a@b.example",
		"--to", "c@d.example", "--size", "2048", "--messages", "10", "--sessions", "2"}
	if _, err := parseFlags(base, io.Discard); err != nil {
		t.Fatalf("valid flags rejected: %v", err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--tls", "none"}, "missing required flag(s): --addr, --from, --to, --size, --messages, --sessions"},
		{append(base, "--addr", "localhost"), "want HOST:PORT"},
		{append(base, "--addr", "h:0"), "port must be"},
		{append(base, "--tls", "ssl"), "must be starttls, implicit or none"},
		{append(base, "--tls-max", "1.1"), "must be 1.2 or 1.3"},
		{append(base, "--tls", "none", "--tls-max", "1.2"), "no effect with --tls none"},
		{append(base, "--auth", "user"), "USER:PASS"},
		{append(base, "--auth-mech", "login"), "needs --auth"},
		{append(base, "--auth", "u:p", "--auth-mech", "cram-md5"), "must be plain or login"},
		{append(base, "--from", "nobody"), "want local@domain"},
		{append(base, "--to", "c@d.example,,e@f.example"), "empty address"},
		{append(base, "--to", "<c@d.example>"), "must not contain"},
		{append(base, "--sessions", "0"), "at least 1"},
		{append(base, "--messages", "0"), "must be from 1"},
		{append(base, "--size", "0"), "--size 0"},
		{append(base, "--timeout", "0s"), "must be positive"},
		{append(base, "--show-errors", "-1"), "must not be negative"},
		{append(base, "extra"), "unexpected argument"},
	} {
		_, err := parseFlags(tc.args, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want it to contain %q", tc.args, err, tc.want)
		}
	}
	var stderr bytes.Buffer
	if code := run(append(base, "--size", "20"), io.Discard, &stderr); code != 2 || !strings.Contains(stderr.String(), "too small") {
		t.Errorf("--size 20: exit %d, stderr %q", code, stderr.String())
	}
}

// sink is an in-process go-smtp backend that records what it receives.
type sink struct {
	mu       sync.Mutex
	conns    map[string]bool // client addresses (go-smtp opens a new session after STARTTLS)
	authed   int
	tlsVers  map[uint16]int
	messages [][]byte
}

func (s *sink) NewSession(c *smtp.Conn) (smtp.Session, error) {
	s.mu.Lock()
	s.conns[c.Conn().RemoteAddr().String()] = true
	s.mu.Unlock()
	return &sinkSession{s: s, c: c}, nil
}

type sinkSession struct {
	s    *sink
	c    *smtp.Conn
	user string
}

func (ss *sinkSession) AuthMechanisms() []string { return []string{sasl.Plain, sasl.Login} }

func (ss *sinkSession) Auth(mech string) (sasl.Server, error) {
	check := func(user, pass string) error {
		if pass != "secret" {
			return errors.New("bad password")
		}
		ss.user = user
		ss.s.mu.Lock()
		ss.s.authed++
		if st, ok := ss.c.TLSConnectionState(); ok { // handshake done by now
			ss.s.tlsVers[st.Version]++
		}
		ss.s.mu.Unlock()
		return nil
	}
	if mech == sasl.Login {
		return &loginServer{check: check}, nil
	}
	return sasl.NewPlainServer(func(_, user, pass string) error { return check(user, pass) }), nil
}

// loginServer is the server side of AUTH LOGIN (go-sasl has only the client).
type loginServer struct {
	check func(user, pass string) error
	step  int
	user  string
}

func (l *loginServer) Next(resp []byte) ([]byte, bool, error) {
	l.step++
	switch l.step {
	case 1:
		if resp != nil { // initial response: the user name
			l.user = string(resp)
			l.step++
			return []byte("Password:"), false, nil
		}
		return []byte("Username:"), false, nil
	case 2:
		l.user = string(resp)
		return []byte("Password:"), false, nil
	default:
		return nil, true, l.check(l.user, string(resp))
	}
}

func (ss *sinkSession) Reset()        {}
func (ss *sinkSession) Logout() error { return nil }
func (ss *sinkSession) Mail(from string, _ *smtp.MailOptions) error {
	return nil
}
func (ss *sinkSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if strings.HasPrefix(to, "reject") {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
	}
	return nil
}
func (ss *sinkSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	ss.s.mu.Lock()
	ss.s.messages = append(ss.s.messages, b)
	ss.s.mu.Unlock()
	return nil
}

func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "smtpload.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// startSink serves the sink on a loopback port; implicit wraps the listener in TLS.
func startSink(t *testing.T, implicit bool) (*sink, string) {
	t.Helper()
	be := &sink{conns: map[string]bool{}, tlsVers: map[uint16]int{}}
	srv := smtp.NewServer(be)
	srv.Domain = "sink.test"
	srv.AllowInsecureAuth = true
	srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if implicit {
		l = tls.NewListener(l, srv.TLSConfig)
	}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return be, l.Addr().String()
}

// lastLine parses the key=value summary line.
func lastLine(t *testing.T, out string) map[string]string {
	t.Helper()
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	kv := map[string]string{}
	for _, f := range strings.Fields(lines[len(lines)-1]) {
		k, v, _ := strings.Cut(f, "=")
		kv[k] = v
	}
	for _, k := range []string{"msgs", "ok", "fail", "rate", "p50", "p95", "p99", "elapsed", "conns", "setup_p50", "setup_p99", "cpu"} {
		if _, ok := kv[k]; !ok {
			t.Fatalf("summary line lacks %s: %q", k, lines[len(lines)-1])
		}
	}
	return kv
}

func TestRunAgainstSink(t *testing.T) {
	for _, tc := range []struct {
		name, tlsMode string
		extra         []string
		wantConns     int
		wantTLS       uint16
	}{
		{"starttls reuse", "starttls", []string{"--reuse"}, 4, tls.VersionTLS13},
		{"starttls new conn", "starttls", nil, 40, tls.VersionTLS13},
		{"implicit tls1.2 login", "implicit", []string{"--reuse", "--tls-max", "1.2", "--auth-mech", "login"}, 4, tls.VersionTLS12},
		{"plaintext", "none", nil, 40, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			be, addr := startSink(t, tc.tlsMode == "implicit")
			args := append([]string{"--addr", addr, "--tls", tc.tlsMode, "--auth", "u@sink.test:secret",
				"--from", "u@sink.test", "--to", "a@x.example,b@x.example", "--size", "3000",
				"--messages", "40", "--sessions", "4", "--timeout", "10s"}, tc.extra...)
			var stdout, stderr bytes.Buffer
			if code := run(args, &stdout, &stderr); code != 0 {
				t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, stdout.String(), stderr.String())
			}
			kv := lastLine(t, stdout.String())
			if kv["msgs"] != "40" || kv["ok"] != "40" || kv["fail"] != "0" || kv["conns"] != strconv.Itoa(tc.wantConns) {
				t.Errorf("summary %v, want 40 ok, %d conns", kv, tc.wantConns)
			}
			be.mu.Lock()
			defer be.mu.Unlock()
			if len(be.conns) != tc.wantConns || be.authed != tc.wantConns || len(be.messages) != 40 {
				t.Errorf("server saw %d conns, %d AUTHs, %d messages", len(be.conns), be.authed, len(be.messages))
			}
			if tc.wantTLS != 0 && be.tlsVers[tc.wantTLS] != tc.wantConns || tc.wantTLS == 0 && len(be.tlsVers) != 0 {
				t.Errorf("TLS versions seen: %v, want %d× %x", be.tlsVers, tc.wantConns, tc.wantTLS)
			}
			ids := map[string]bool{}
			for _, m := range be.messages {
				ids[checkMessage(t, m, 3000)] = true
			}
			if len(ids) != len(be.messages) {
				t.Errorf("%d distinct Message-IDs in %d messages", len(ids), len(be.messages))
			}
		})
	}
}

func TestRunFailures(t *testing.T) {
	be, addr := startSink(t, false)
	base := []string{"--addr", addr, "--tls", "none", "--from", "u@sink.test", "--size", "2048", "--messages", "6", "--sessions", "2"}

	var stdout bytes.Buffer
	code := run(append(base, "--to", "reject@x.example", "--reuse"), &stdout, io.Discard)
	kv := lastLine(t, stdout.String())
	// At most one connection per session (2): a 5xx must not cost a
	// connection. One session may take every message before the other one
	// has connected (a loaded machine), so 1 is fine too.
	if code != 1 || kv["fail"] != "6" || kv["ok"] != "0" || (kv["conns"] != "1" && kv["conns"] != "2") {
		t.Errorf("rejected RCPT: exit %d, %v (a 5xx must keep the connection)", code, kv)
	}
	if !strings.Contains(stdout.String(), "error[1]: (x6) RCPT: SMTP error 550: no such user") {
		t.Errorf("error summary missing: %q", stdout.String())
	}

	stdout.Reset()
	code = run(append(base, "--to", "a@x.example", "--auth", "u@sink.test:wrong", "--json"), &stdout, io.Discard)
	var res result
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		t.Fatalf("--json output %q: %v", stdout.String(), err)
	}
	if code != 1 || res.Fail != 6 || res.Conns != 0 || len(res.Errors) != 1 || res.Errors[0].Count != 6 ||
		!strings.HasPrefix(res.Errors[0].Text, "AUTH: ") {
		t.Errorf("wrong password: exit %d, %+v", code, res)
	}
	be.mu.Lock()
	defer be.mu.Unlock()
	if len(be.messages) != 0 {
		t.Errorf("server received %d messages", len(be.messages))
	}
}
