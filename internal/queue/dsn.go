package queue

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"
)

// DSN is a delivery status notification (RFC 3464) to send to the sender
// of a message that failed for some recipients. Its envelope sender must be
// the null sender <> (RFC 5321 §4.5.5), so that it can never bounce back.
type DSN struct {
	To        string       // envelope recipient: the original envelope sender
	QueueID   string       // ID of the failed message
	Message   []byte       // the complete RFC 5322 message, CRLF line endings
	Failed    []FailedRcpt // the recipients it reports
	Arrival   time.Time    // of the original message
	Generated time.Time
}

// FailedRcpt is one recipient reported in a DSN.
type FailedRcpt struct {
	Rcpt       string
	Status     string // RFC 3463 enhanced status, "5.1.1"
	Diagnostic string // Diagnostic-Code value, "smtp; 550 5.1.1 …"
	RemoteMTA  string
	Expired    bool
}

// Limits of what a DSN returns of the original message.
const (
	maxDSNHeaders = 64 << 10 // header block returned (RET=HDRS, the default)
	maxDSNFull    = 10 << 20 // whole message returned with RET=FULL up to this size
)

var enhancedRe = regexp.MustCompile(`^[245]\.[0-9]{1,3}\.[0-9]{1,3}$`)

// buildDSN builds the DSN for the recipients idx of m (all Failed).
func (q *Queue) buildDSN(m *message, idx []int, now time.Time) (*DSN, error) {
	q.mu.Lock()
	seg := q.segs[m.seg]
	q.mu.Unlock()
	global := m.env.SMTPUTF8 || !isASCII(m.env.From)
	for _, i := range idx {
		global = global || !isASCII(m.env.To[i])
	}
	full := strings.EqualFold(m.env.Ret, "FULL") && m.size <= maxDSNFull
	n := m.size
	if !full {
		n = min(n, maxDSNHeaders)
	}
	orig := make([]byte, n)
	if _, err := seg.f.ReadAt(orig, m.off); err != nil {
		return nil, fmt.Errorf("queue: reading message %s for its DSN: %w", m.id, err)
	}
	if !full {
		orig = headerBlock(orig)
	}
	orig = toCRLF(orig)

	d := &DSN{To: m.env.From, QueueID: m.id, Arrival: m.env.Arrival, Generated: now}
	for _, i := range idx {
		r := m.rcpts[i]
		f := FailedRcpt{Rcpt: m.env.To[i], Expired: r.expired}
		var last Result
		if r.last != nil {
			last = *r.last
		}
		f.RemoteMTA = last.RemoteMTA
		f.Status = last.Enhanced
		switch {
		case r.expired && !enhancedRe.MatchString(f.Status):
			f.Status = "4.4.7" // RFC 3463 §3.5: delivery time expired
		case !enhancedRe.MatchString(f.Status) || f.Status[0] == '2':
			f.Status = "5.0.0" // RFC 3463 §3.1: permanent failure, other undefined status
		}
		text := oneLine(last.Msg, global)
		if r.expired {
			text = strings.TrimSpace("message expired after " + q.opts.Expiry.String() + " in the queue; last error: " + text)
		}
		switch {
		case last.Code != 0 && !r.expired:
			// RFC 3464 §2.3.6: diagnostic-type "smtp" carries the reply.
			f.Diagnostic = fmt.Sprintf("smtp; %d %s", last.Code, text)
			if last.Enhanced != "" && !strings.HasPrefix(last.Msg, last.Enhanced) {
				f.Diagnostic = fmt.Sprintf("smtp; %d %s %s", last.Code, last.Enhanced, text)
			}
		default:
			f.Diagnostic = "X-Mailgate; " + text
		}
		d.Failed = append(d.Failed, f)
	}
	d.Message = q.renderDSN(d, m, orig, full, global)
	return d, nil
}

// renderDSN writes the multipart/report message (RFC 6522 §3, RFC 3464 §2).
func (q *Queue) renderDSN(d *DSN, m *message, orig []byte, full, global bool) []byte {
	host := q.opts.Hostname
	var rnd [12]byte
	rand.Read(rnd[:])
	boundary := m.id + "." + hex.EncodeToString(rnd[:])
	date := func(t time.Time) string { return t.Format(time.RFC1123Z) } // RFC 5322 §3.3 date-time

	var b bytes.Buffer
	line := func(format string, a ...any) {
		fmt.Fprintf(&b, format, a...)
		b.WriteString("\r\n")
	}
	// RFC 3464 §2 / RFC 6522 §3: the envelope sender is <>; RFC 3834 §5:
	// Auto-Submitted marks an automatic message.
	line("From: MAILER-DAEMON@%s (Mail Delivery System)", host)
	line("To: %s", d.To)
	line("Subject: Undelivered Mail Returned to Sender")
	line("Date: %s", date(d.Generated))
	line("Message-ID: <%s.%d.dsn@%s>", m.id, d.Generated.Unix(), host)
	line("Auto-Submitted: auto-replied")
	line("MIME-Version: 1.0")
	line("Content-Type: multipart/report; report-type=delivery-status;")
	line("\tboundary=\"%s\"", boundary)
	if global || !isASCII(string(orig)) {
		line("Content-Transfer-Encoding: 8bit")
	}
	line("")
	line("This is a MIME-encapsulated message.")
	line("")

	// 1. Human-readable part (RFC 6522 §3, first body part).
	line("--%s", boundary)
	line("Content-Description: Notification")
	line("Content-Type: text/plain; charset=utf-8")
	if global {
		line("Content-Transfer-Encoding: 8bit")
	}
	line("")
	line("This is the mail system at host %s.", host)
	line("")
	line("I'm sorry to have to inform you that your message could not")
	line("be delivered to one or more recipients. It's attached below.")
	line("")
	for _, f := range d.Failed {
		why := strings.TrimPrefix(strings.TrimPrefix(f.Diagnostic, "smtp; "), "X-Mailgate; ")
		if f.RemoteMTA != "" {
			line("<%s>: host %s said: %s", f.Rcpt, f.RemoteMTA, why)
		} else {
			line("<%s>: %s", f.Rcpt, why)
		}
	}
	line("")

	// 2. Machine-readable part (RFC 3464 §2.2 per-message fields, §2.3
	// per-recipient fields). SMTPUTF8 addresses use the global form with
	// address type utf-8 (RFC 6533 §3, §6.2).
	line("--%s", boundary)
	line("Content-Description: Delivery report")
	addrType := "rfc822"
	if global {
		line("Content-Type: message/global-delivery-status")
		line("Content-Transfer-Encoding: 8bit")
		addrType = "utf-8"
	} else {
		line("Content-Type: message/delivery-status")
	}
	line("")
	line("Reporting-MTA: dns; %s", host)
	line("X-Mailgate-Queue-ID: %s", m.id)
	if m.env.EnvID != "" {
		line("Original-Envelope-Id: %s", m.env.EnvID)
	}
	line("Arrival-Date: %s", date(d.Arrival))
	for _, f := range d.Failed {
		r := m.rcpts[indexOf(m.env.To, f.Rcpt)]
		line("")
		line("Final-Recipient: %s; %s", addrType, f.Rcpt)
		line("Action: failed")
		line("Status: %s", f.Status)
		if f.RemoteMTA != "" {
			line("Remote-MTA: dns; %s", oneLine(f.RemoteMTA, global))
		}
		line("Diagnostic-Code: %s", f.Diagnostic)
		if !r.at.IsZero() {
			line("Last-Attempt-Date: %s", date(r.at))
		}
	}
	line("")

	// 3. The original message or its header (RFC 3464 §2, RFC 6522 §3;
	// RFC 3461 §4.3 RET; RFC 6533 §6.3, §6.4 for the global types).
	line("--%s", boundary)
	switch {
	case full && global:
		line("Content-Description: Undelivered Message")
		line("Content-Type: message/global")
	case full:
		line("Content-Description: Undelivered Message")
		line("Content-Type: message/rfc822")
	case global:
		line("Content-Description: Undelivered Message Headers")
		line("Content-Type: message/global-headers")
	default:
		line("Content-Description: Undelivered Message Headers")
		line("Content-Type: text/rfc822-headers")
	}
	if !isASCII(string(orig)) {
		line("Content-Transfer-Encoding: 8bit")
	}
	line("")
	b.Write(orig)
	if len(orig) > 0 && !bytes.HasSuffix(orig, []byte("\r\n")) {
		b.WriteString("\r\n")
	}
	line("")
	line("--%s--", boundary)
	return b.Bytes()
}

func indexOf(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return 0
}

// headerBlock returns the header block of msg (up to, not including, the
// empty line), or, if msg holds no complete block, msg cut after its last
// complete line.
func headerBlock(msg []byte) []byte {
	for i := 0; i < len(msg); {
		j := bytes.IndexByte(msg[i:], '\n')
		if j < 0 {
			break
		}
		lineEnd := i + j + 1
		if l := msg[i:lineEnd]; string(l) == "\r\n" || string(l) == "\n" {
			return msg[:i]
		}
		i = lineEnd
	}
	if k := bytes.LastIndexByte(msg, '\n'); k >= 0 {
		return msg[:k+1]
	}
	return nil
}

// toCRLF turns bare LFs into CRLF.
func toCRLF(b []byte) []byte {
	if !bytes.Contains(b, []byte("\n")) {
		return b
	}
	out := make([]byte, 0, len(b)+len(b)/32)
	for i, c := range b {
		if c == '\n' && (i == 0 || b[i-1] != '\r') {
			out = append(out, '\r')
		}
		out = append(out, c)
	}
	return out
}

// oneLine makes s safe as the text of a header field: controls (CR, LF, …)
// become spaces, non-ASCII becomes '?' unless utf8ok, and it is cut to 900
// bytes (RFC 5322 §2.1.1: lines at most 998 octets).
func oneLine(s string, utf8ok bool) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r < 0x20 || r == 0x7f || r == utf8.RuneError:
			b.WriteByte(' ')
		case r >= 0x80 && !utf8ok:
			b.WriteByte('?')
		default:
			b.WriteRune(r)
		}
		if b.Len() > 900 {
			break
		}
	}
	return strings.Join(strings.Fields(b.String()), " ")
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
