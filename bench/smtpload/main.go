// Command smtpload is a bounded SMTP load generator for mailgate and for the
// docker-mailserver baseline stack, so that both are measured the same way.
//
//	smtpload --addr HOST:PORT --tls starttls|implicit|none [--tls-max 1.2|1.3]
//	         [--auth USER:PASS [--auth-mech plain|login]]
//	         --from ADDR --to ADDR[,ADDR…] --size BYTES --messages M --sessions N [--reuse]
//	         [--timeout 30s] [--max-time 10m] [--show-errors 5] [--json]
//
// N concurrent sessions share M messages. With --reuse each session keeps one
// connection and sends RSET between messages (go-smtp forgets the EHLO state
// on RSET, so EHLO is re-sent right after it, outside the timed span); without
// it every message gets its own connection: connect, TLS, EHLO, AUTH, one
// message, QUIT.
//
// Latency is per message, from sending MAIL FROM to the 250 reply after the
// final "." of DATA. Setup latency is per connection: TCP connect, greeting,
// EHLO, STARTTLS or implicit TLS handshake, EHLO, AUTH.
//
// The last line of stdout is
//
//	msgs=… ok=… fail=… rate=…/s p50=…ms p95=…ms p99=…ms elapsed=…s conns=… setup_p50=…ms setup_p99=…ms cpu=…s
//
// preceded by up to --show-errors distinct error texts with their counts; with
// --json a single JSON object carries the same figures. The exit status is 0
// when every message was accepted, 1 when any failed (or --max-time stopped
// the run early), 2 for invalid flags. See README.md.
package main

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// ehloName is what go-smtp sends in EHLO by default; we keep it so that the
// pre- and post-STARTTLS EHLO use the same name.
const ehloName = "localhost"

// maxSize bounds --size (each session holds one message in memory).
const maxSize = 1 << 30

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// config is the validated command line.
type config struct {
	addr       string
	host       string
	tlsMode    string // starttls, implicit, none
	tlsMax     uint16
	user, pass string
	authMech   string // plain, login; only with user != ""
	from       string
	to         []string
	size       int
	messages   int
	sessions   int
	reuse      bool
	timeout    time.Duration
	maxTime    time.Duration
	showErrors int
	json       bool
}

type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Sprintf(format, args...)}
}

func run(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		var ue *usageError
		if errors.As(err, &ue) {
			fmt.Fprintf(stderr, "smtpload: %s\nRun 'smtpload -h' for the flags.\n", ue.msg)
		}
		// errors from the flag package itself were already printed with the usage
		return 2
	}
	mb, err := newMsgBuilder(cfg.from, cfg.to, cfg.size)
	if err != nil {
		fmt.Fprintf(stderr, "smtpload: %v\nRun 'smtpload -h' for the flags.\n", err)
		return 2
	}
	res := newRunner(cfg, mb).run()
	if err := res.print(stdout, cfg.showErrors, cfg.json); err != nil {
		fmt.Fprintf(stderr, "smtpload: writing the result: %v\n", err)
		return 1
	}
	if res.NotAttempted > 0 {
		fmt.Fprintf(stderr, "smtpload: --max-time %s reached: %d of %d messages were not attempted\n",
			cfg.maxTime, res.NotAttempted, cfg.messages)
	}
	if res.Fail > 0 || res.NotAttempted > 0 {
		return 1
	}
	return 0
}

func parseFlags(args []string, stderr io.Writer) (*config, error) {
	fs := flag.NewFlagSet("smtpload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		addr     = fs.String("addr", "", "`HOST:PORT` of the SMTP service (required)")
		tlsMode  = fs.String("tls", "", "`MODE`: starttls, implicit or none (required)")
		tlsMax   = fs.String("tls-max", "1.3", "highest TLS `VERSION` offered: 1.2 or 1.3")
		auth     = fs.String("auth", "", "`USER:PASS` for AUTH; omit for no AUTH (inbound tests)")
		authMech = fs.String("auth-mech", "plain", "SASL `MECH`: plain or login")
		from     = fs.String("from", "", "envelope sender and From header `ADDR` (required)")
		to       = fs.String("to", "", "recipient `ADDR[,ADDR…]` (required)")
		size     = fs.Int("size", 0, "exact message size in `BYTES`, headers included (required)")
		messages = fs.Int("messages", 0, "total number of messages `M` (required)")
		sessions = fs.Int("sessions", 0, "number of concurrent sessions `N` sharing the messages (required)")
		reuse    = fs.Bool("reuse", false, "one connection per session, RSET between messages (default: a new connection per message)")
		timeout  = fs.Duration("timeout", 30*time.Second, "limit for connect and for each network operation (command, reply, DATA)")
		maxTime  = fs.Duration("max-time", 10*time.Minute, "no new message is started after this; in-flight ones get --timeout more")
		showErrs = fs.Int("show-errors", 5, "print at most this many distinct error texts")
		asJSON   = fs.Bool("json", false, "print the result as one JSON object")
	)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: smtpload --addr HOST:PORT --tls starttls|implicit|none [--auth USER:PASS] --from ADDR --to ADDR[,ADDR…] --size BYTES --messages M --sessions N [--reuse] [flags]\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, usagef("unexpected argument %q (all options are flags)", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var missing []string
	for _, name := range []string{"addr", "tls", "from", "to", "size", "messages", "sessions"} {
		if !set[name] {
			missing = append(missing, "--"+name)
		}
	}
	if len(missing) > 0 {
		return nil, usagef("missing required flag(s): %s", strings.Join(missing, ", "))
	}

	cfg := &config{
		addr: *addr, tlsMode: *tlsMode, size: *size, messages: *messages, sessions: *sessions,
		reuse: *reuse, timeout: *timeout, maxTime: *maxTime, showErrors: *showErrs, json: *asJSON,
	}
	host, port, err := net.SplitHostPort(cfg.addr)
	if err != nil || host == "" {
		return nil, usagef("--addr %q: want HOST:PORT, e.g. 127.0.0.1:587", cfg.addr)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return nil, usagef("--addr %q: port must be a number from 1 to 65535", cfg.addr)
	}
	cfg.host = host

	switch cfg.tlsMode {
	case "starttls", "implicit", "none":
	default:
		return nil, usagef("--tls %q: must be starttls, implicit or none", cfg.tlsMode)
	}
	switch *tlsMax {
	case "1.2":
		cfg.tlsMax = tls.VersionTLS12
	case "1.3":
		cfg.tlsMax = tls.VersionTLS13
	default:
		return nil, usagef("--tls-max %q: must be 1.2 or 1.3", *tlsMax)
	}
	if cfg.tlsMode == "none" && set["tls-max"] {
		return nil, usagef("--tls-max has no effect with --tls none")
	}

	if set["auth"] {
		user, pass, ok := strings.Cut(*auth, ":")
		if !ok || user == "" || pass == "" {
			return nil, usagef("--auth: want USER:PASS with a non-empty user and password")
		}
		if err := checkLine(user); err != nil {
			return nil, usagef("--auth user: %v", err)
		}
		cfg.user, cfg.pass = user, pass
	}
	switch *authMech {
	case "plain", "login":
		cfg.authMech = *authMech
	default:
		return nil, usagef("--auth-mech %q: must be plain or login", *authMech)
	}
	if set["auth-mech"] && cfg.user == "" {
		return nil, usagef("--auth-mech needs --auth")
	}

	if err := checkAddr(*from); err != nil {
		return nil, usagef("--from %q: %v", *from, err)
	}
	cfg.from = *from
	for _, a := range strings.Split(*to, ",") {
		a = strings.TrimSpace(a)
		if err := checkAddr(a); err != nil {
			return nil, usagef("--to: recipient %q: %v", a, err)
		}
		cfg.to = append(cfg.to, a)
	}

	if cfg.size < 1 || cfg.size > maxSize {
		return nil, usagef("--size %d: must be from 1 to %d bytes (and at least the headers' length)", cfg.size, maxSize)
	}
	if cfg.messages < 1 || cfg.messages > maxMessages {
		return nil, usagef("--messages %d: must be from 1 to %d", cfg.messages, maxMessages)
	}
	if cfg.sessions < 1 {
		return nil, usagef("--sessions %d: must be at least 1", cfg.sessions)
	}
	if cfg.timeout <= 0 {
		return nil, usagef("--timeout %s: must be positive", cfg.timeout)
	}
	if cfg.maxTime <= 0 {
		return nil, usagef("--max-time %s: must be positive", cfg.maxTime)
	}
	if cfg.showErrors < 0 {
		return nil, usagef("--show-errors %d: must not be negative", cfg.showErrors)
	}
	return cfg, nil
}

// checkAddr accepts what can go between <> in MAIL FROM / RCPT TO and in a
// header unquoted: local@domain without spaces, brackets or control characters.
func checkAddr(a string) error {
	if a == "" {
		return errors.New("empty address")
	}
	if err := checkLine(a); err != nil {
		return err
	}
	if strings.ContainsAny(a, " \t<>,") {
		return errors.New("must not contain spaces, '<', '>' or ','")
	}
	at := strings.LastIndexByte(a, '@')
	if at < 1 || at == len(a)-1 {
		return errors.New("want local@domain")
	}
	return nil
}

func checkLine(s string) error {
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return errors.New("contains a control character")
		}
	}
	return nil
}

// ---------------------------------------------------------------------------
// messages

// bodyLine is one 78-byte body line (76 characters + CRLF). It does not start
// with '.', so dot-stuffing never changes what goes on the wire.
const bodyLine = "smtpload body line: the quick brown fox jumps over the lazy dog 0123456789AB\r\n"

// msgBuilder produces messages of exactly size bytes. Every header has a fixed
// width (the sequence number is zero-padded, the Date format has fixed width),
// so the header length is the same for every message and the body is built once.
type msgBuilder struct {
	runID    string // random per builder: Message-IDs differ between runs
	from     string
	toHeader string
	pad      string // up to 2 extra Subject characters, so that the last body line is not empty
	body     []byte
	size     int
}

const (
	seqWidth    = 12
	maxMessages = 999_999_999_999 // fits seqWidth
	dateLayout  = "Mon, 02 Jan 2006 15:04:05 -0700"
)

func newMsgBuilder(from string, to []string, size int) (*msgBuilder, error) {
	var id [8]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, err
	}
	quoted := make([]string, len(to))
	for i, a := range to {
		quoted[i] = "<" + a + ">"
	}
	b := &msgBuilder{runID: hex.EncodeToString(id[:]), from: from, toHeader: strings.Join(quoted, ", "), size: size}
	hlen := len(b.header(nil, 0, time.Unix(0, 0).UTC()))
	// Date's zone offset has a fixed width too, so any time gives the same length.
	bodyLen := size - hlen
	if bodyLen < 0 {
		return nil, fmt.Errorf("--size %d is too small: the headers alone take %d bytes with these addresses", size, hlen)
	}
	if r := bodyLen % len(bodyLine); r == 1 || r == 2 {
		// the last body line would be empty or shorter than its CRLF: move those bytes to the Subject
		b.pad = strings.Repeat(".", r)
		bodyLen -= r
	}
	body := make([]byte, 0, bodyLen)
	for len(body)+len(bodyLine) <= bodyLen {
		body = append(body, bodyLine...)
	}
	if rest := bodyLen - len(body); rest > 0 { // 3 <= rest < 78: a shorter last line
		body = append(body, bodyLine[:rest-2]...)
		body = append(body, "\r\n"...)
	}
	b.body = body
	return b, nil
}

// header appends the header block, including the empty line that ends it.
func (b *msgBuilder) header(dst []byte, seq int64, now time.Time) []byte {
	seqs := fmt.Sprintf("%0*d", seqWidth, seq)
	dst = append(dst, "From: <"...)
	dst = append(dst, b.from...)
	dst = append(dst, ">\r\nTo: "...)
	dst = append(dst, b.toHeader...)
	dst = append(dst, "\r\nSubject: smtpload "...)
	dst = append(dst, seqs...)
	dst = append(dst, b.pad...)
	dst = append(dst, "\r\nDate: "...)
	dst = now.AppendFormat(dst, dateLayout)
	dst = append(dst, "\r\nMessage-ID: <"...)
	dst = append(dst, b.runID...)
	dst = append(dst, '.')
	dst = append(dst, seqs...)
	dst = append(dst, "@smtpload.invalid>\r\nMIME-Version: 1.0\r\n\r\n"...)
	return dst
}

// build appends message number seq (unique within the builder) to dst.
func (b *msgBuilder) build(dst []byte, seq int64, now time.Time) []byte {
	dst = b.header(dst, seq, now)
	return append(dst, b.body...)
}

// ---------------------------------------------------------------------------
// statistics

// percentile returns the nearest-rank p-th percentile (0 < p <= 100) of an
// ascending slice: the smallest value with at least p % of the values <= it.
func percentile(sorted []time.Duration, p int) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	rank := (n*p + 99) / 100 // ceil(n*p/100)
	rank = max(1, min(rank, n))
	return sorted[rank-1]
}

// sessionStats is owned by one session goroutine until the run ends.
type sessionStats struct {
	lat   []time.Duration // per accepted message
	setup []time.Duration // per established connection
	ok    int
	fail  int
	errs  map[string]int
}

// localAddr matches the "127.0.0.1:54321->" part of net.OpError texts, whose
// ephemeral port would make every I/O error text distinct.
var localAddr = regexp.MustCompile(`\S+:\d+->`)

func (s *sessionStats) failed(stage string, err error) {
	s.fail++
	text := stage + ": " + localAddr.ReplaceAllString(strings.TrimSpace(err.Error()), "")
	if s.errs == nil {
		s.errs = map[string]int{}
	}
	s.errs[text]++
}

// ---------------------------------------------------------------------------
// the run

type runner struct {
	cfg      *config
	mb       *msgBuilder
	tlsConf  *tls.Config
	start    time.Time
	stopNew  time.Time // --max-time: no message is claimed after this
	hardStop time.Time // no network operation runs past this
	next     atomic.Int64
}

func newRunner(cfg *config, mb *msgBuilder) *runner {
	r := &runner{cfg: cfg, mb: mb}
	if cfg.tlsMode != "none" {
		r.tlsConf = &tls.Config{
			InsecureSkipVerify: true, // test servers with self-signed certificates
			MaxVersion:         cfg.tlsMax,
			// no ClientSessionCache: every connection does a full handshake
		}
		if net.ParseIP(cfg.host) == nil {
			r.tlsConf.ServerName = cfg.host
		}
	}
	return r
}

// claim hands out the next message number (1…M), or false when all are taken
// or --max-time has passed.
func (r *runner) claim() (int64, bool) {
	if !time.Now().Before(r.stopNew) {
		return 0, false
	}
	n := r.next.Add(1)
	if n > int64(r.cfg.messages) {
		return 0, false
	}
	return n, true
}

// result is what gets printed; the JSON names are the line's keys plus units.
type result struct {
	Msgs         int          `json:"msgs"`
	OK           int          `json:"ok"`
	Fail         int          `json:"fail"`
	NotAttempted int          `json:"not_attempted"`
	Rate         float64      `json:"rate_per_s"`
	P50          float64      `json:"p50_ms"`
	P95          float64      `json:"p95_ms"`
	P99          float64      `json:"p99_ms"`
	Elapsed      float64      `json:"elapsed_s"`
	Conns        int          `json:"conns"`
	SetupP50     float64      `json:"setup_p50_ms"`
	SetupP99     float64      `json:"setup_p99_ms"`
	CPU          float64      `json:"cpu_s"`
	Errors       []errorCount `json:"errors"`      // most frequent first, at most --show-errors
	MoreErrors   int          `json:"more_errors"` // distinct error texts left out
}

type errorCount struct {
	Count int    `json:"count"`
	Text  string `json:"text"`
}

func (r *runner) run() *result {
	r.start = time.Now()
	r.stopNew = r.start.Add(r.cfg.maxTime)
	r.hardStop = r.stopNew.Add(r.cfg.timeout)
	stats := make([]sessionStats, r.cfg.sessions)
	var wg sync.WaitGroup
	for i := range stats {
		wg.Go(func() { r.session(&stats[i]) })
	}
	wg.Wait()
	elapsed := time.Since(r.start)

	res := &result{Elapsed: elapsed.Seconds(), CPU: ownCPU().Seconds()}
	var lat, setup []time.Duration
	errs := map[string]int{}
	for i := range stats {
		s := &stats[i]
		lat = append(lat, s.lat...)
		setup = append(setup, s.setup...)
		res.OK += s.ok
		res.Fail += s.fail
		for t, n := range s.errs {
			errs[t] += n
		}
	}
	res.Msgs = res.OK + res.Fail
	res.NotAttempted = r.cfg.messages - res.Msgs
	res.Rate = float64(res.OK) / elapsed.Seconds()
	slices.Sort(lat)
	slices.Sort(setup)
	res.P50, res.P95, res.P99 = ms(percentile(lat, 50)), ms(percentile(lat, 95)), ms(percentile(lat, 99))
	res.Conns = len(setup)
	res.SetupP50, res.SetupP99 = ms(percentile(setup, 50)), ms(percentile(setup, 99))
	res.Errors = []errorCount{}
	for t, n := range errs {
		res.Errors = append(res.Errors, errorCount{n, t})
	}
	sort.Slice(res.Errors, func(i, j int) bool {
		a, b := res.Errors[i], res.Errors[j]
		return a.Count > b.Count || a.Count == b.Count && a.Text < b.Text
	})
	return res
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func ownCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func (res *result) print(w io.Writer, showErrors int, asJSON bool) error {
	if asJSON {
		out := *res
		if len(out.Errors) > showErrors {
			out.MoreErrors = len(out.Errors) - showErrors
			out.Errors = out.Errors[:showErrors]
		}
		r1, r3 := func(x float64) float64 { return math.Round(x*10) / 10 }, func(x float64) float64 { return math.Round(x*1000) / 1000 }
		out.Rate = r1(out.Rate)
		out.P50, out.P95, out.P99, out.SetupP50, out.SetupP99 = r3(out.P50), r3(out.P95), r3(out.P99), r3(out.SetupP50), r3(out.SetupP99)
		out.Elapsed, out.CPU = r3(out.Elapsed), r3(out.CPU)
		return json.NewEncoder(w).Encode(&out)
	}
	var sb strings.Builder
	for i, e := range res.Errors {
		if i == showErrors {
			fmt.Fprintf(&sb, "error[...]: %d more distinct error texts\n", len(res.Errors)-i)
			break
		}
		fmt.Fprintf(&sb, "error[%d]: (x%d) %s\n", i+1, e.Count, e.Text)
	}
	fmt.Fprintf(&sb, "msgs=%d ok=%d fail=%d rate=%.1f/s p50=%.2fms p95=%.2fms p99=%.2fms elapsed=%.2fs conns=%d setup_p50=%.2fms setup_p99=%.2fms cpu=%.2fs\n",
		res.Msgs, res.OK, res.Fail, res.Rate, res.P50, res.P95, res.P99, res.Elapsed,
		res.Conns, res.SetupP50, res.SetupP99, res.CPU)
	_, err := io.WriteString(w, sb.String())
	return err
}

// session runs one concurrent session until no message is left to claim.
func (r *runner) session(st *sessionStats) {
	var c *smtp.Client
	sentOnConn := 0
	defer func() {
		if c != nil {
			closeClient(c)
		}
	}()
	buf := make([]byte, 0, r.cfg.size)
	for {
		seq, ok := r.claim()
		if !ok {
			return
		}
		buf = r.mb.build(buf[:0], seq, time.Now())

		if c != nil && sentOnConn > 0 {
			// --reuse: RSET, then the EHLO go-smtp would otherwise send before MAIL.
			if err := c.Reset(); err != nil {
				st.failed("RSET", err)
				c.Close()
				c = nil
				continue
			}
			if err := c.Hello(ehloName); err != nil {
				st.failed("EHLO after RSET", err)
				c.Close()
				c = nil
				continue
			}
		}
		if c == nil {
			t0 := time.Now()
			var stage string
			var err error
			c, stage, err = r.connect()
			if err != nil {
				st.failed(stage, err)
				c = nil
				if !isReply(err) {
					time.Sleep(10 * time.Millisecond) // don't spin on a server that is down
				}
				continue
			}
			st.setup = append(st.setup, time.Since(t0))
			sentOnConn = 0
		}

		t0 := time.Now()
		stage, err := r.send(c, buf)
		d := time.Since(t0)
		sentOnConn++
		if err != nil {
			st.failed(stage, err)
			var se *smtp.SMTPError
			if !errors.As(err, &se) || se.Code == 421 {
				// unknown connection state, or the server is closing it
				c.Close()
				c = nil
				continue
			}
		} else {
			st.ok++
			st.lat = append(st.lat, d)
		}
		if !r.cfg.reuse {
			closeClient(c)
			c = nil
		}
	}
}

func isReply(err error) bool {
	var se *smtp.SMTPError
	return errors.As(err, &se)
}

// closeClient sends QUIT (outside any timed span) and closes the connection.
func closeClient(c *smtp.Client) {
	if err := c.Quit(); err != nil {
		c.Close()
	}
}

// connect establishes a ready-to-send session: TCP, greeting, EHLO,
// STARTTLS or implicit TLS, EHLO, AUTH. On error it returns the failing stage.
func (r *runner) connect() (*smtp.Client, string, error) {
	d := net.Dialer{Timeout: r.cfg.timeout, Deadline: r.hardStop}
	raw, err := d.Dial("tcp", r.cfg.addr)
	if err != nil {
		return nil, "connect", err
	}
	conn := &boundedConn{Conn: raw, timeout: r.cfg.timeout, hardStop: r.hardStop}
	_ = conn.SetDeadline(time.Time{}) // i.e. now+timeout, until go-smtp sets its own
	var c *smtp.Client
	switch r.cfg.tlsMode {
	case "implicit":
		tc := tls.Client(conn, r.tlsConf)
		if err := tc.Handshake(); err != nil { // bounded by boundedConn's deadline
			tc.Close()
			return nil, "TLS handshake", err
		}
		c = smtp.NewClient(tc)
	case "starttls":
		// greeting, EHLO, STARTTLS; the handshake runs with the next EHLO
		c, err = smtp.NewClientStartTLS(conn, r.tlsConf)
		if err != nil {
			return nil, "greeting/EHLO/STARTTLS", err
		}
	default:
		c = smtp.NewClient(conn)
	}
	c.CommandTimeout = r.cfg.timeout
	c.SubmissionTimeout = r.cfg.timeout
	if err := c.Hello(ehloName); err != nil {
		c.Close()
		return nil, "greeting/EHLO", err
	}
	if r.cfg.user != "" {
		var a sasl.Client
		if r.cfg.authMech == "login" {
			a = sasl.NewLoginClient(r.cfg.user, r.cfg.pass)
		} else {
			a = sasl.NewPlainClient("", r.cfg.user, r.cfg.pass)
		}
		if err := c.Auth(a); err != nil {
			c.Close()
			return nil, "AUTH", err
		}
	}
	return c, "", nil
}

// send runs one transaction: MAIL, RCPT…, DATA, body, final dot. It is the
// timed span. On error it returns the failing stage.
func (r *runner) send(c *smtp.Client, msg []byte) (string, error) {
	if err := c.Mail(r.cfg.from, &smtp.MailOptions{Size: int64(len(msg))}); err != nil {
		return "MAIL", err
	}
	for _, rcpt := range r.cfg.to {
		if err := c.Rcpt(rcpt, nil); err != nil {
			return "RCPT", err
		}
	}
	w, err := c.Data()
	if err != nil {
		return "DATA", err
	}
	if _, err := w.Write(msg); err != nil {
		w.Close()
		return "DATA body", err
	}
	if err := w.Close(); err != nil {
		return "end of DATA", err
	}
	return "", nil
}

// boundedConn gives every network operation a deadline: go-smtp sets one per
// command (CommandTimeout) and clears it afterwards, which would leave the
// greeting of NewClientStartTLS (5 min default) and the DATA body write
// unbounded. Here a cleared or later deadline becomes now+timeout, and no
// deadline extends past hardStop (--max-time + --timeout).
type boundedConn struct {
	net.Conn
	timeout  time.Duration
	hardStop time.Time
}

func (b *boundedConn) bound(t time.Time) time.Time {
	limit := time.Now().Add(b.timeout)
	if b.hardStop.Before(limit) {
		limit = b.hardStop
	}
	if t.IsZero() || t.After(limit) {
		return limit
	}
	return t
}

func (b *boundedConn) SetDeadline(t time.Time) error      { return b.Conn.SetDeadline(b.bound(t)) }
func (b *boundedConn) SetReadDeadline(t time.Time) error  { return b.Conn.SetReadDeadline(b.bound(t)) }
func (b *boundedConn) SetWriteDeadline(t time.Time) error { return b.Conn.SetWriteDeadline(b.bound(t)) }
