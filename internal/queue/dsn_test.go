package queue

import (
	"bytes"
	"context"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/mail"
	"net/textproto"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/internal/header"
)

// dsnPart is one body part of a parsed DSN.
type dsnPart struct {
	ctype string
	hdr   textproto.MIMEHeader
	body  string
}

// parseDSN checks the DSN as a message (strict CRLF header parser of the
// project, net/mail, mime/multipart) and returns its top header and parts.
func parseDSN(t *testing.T, raw []byte) (mail.Header, []dsnPart) {
	t.Helper()
	if _, err := header.Parse(raw); err != nil {
		t.Fatalf("DSN rejected by the header parser: %v\n%s", err, raw)
	}
	if bytes.Contains(bytes.ReplaceAll(raw, []byte("\r\n"), nil), []byte("\n")) {
		t.Fatalf("bare LF in DSN:\n%q", raw)
	}
	msg, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/report" || params["report-type"] != "delivery-status" {
		t.Fatalf("Content-Type %q: %v", msg.Header.Get("Content-Type"), err)
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	var parts []dsnPart
	for {
		p, err := mr.NextRawPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(p)
		ct, _, _ := mime.ParseMediaType(p.Header.Get("Content-Type"))
		parts = append(parts, dsnPart{ct, p.Header, string(b)})
	}
	return msg.Header, parts
}

// statusGroups splits a message/delivery-status body into its field groups
// (RFC 3464 §2.1: per-message fields, then one group per recipient).
func statusGroups(t *testing.T, body string) []map[string]string {
	t.Helper()
	var out []map[string]string
	for g := range strings.SplitSeq(strings.TrimSpace(body), "\r\n\r\n") {
		m := map[string]string{}
		for l := range strings.SplitSeq(g, "\r\n") {
			k, v, ok := strings.Cut(l, ": ")
			if !ok {
				t.Fatalf("bad status line %q", l)
			}
			m[k] = v
		}
		out = append(out, m)
	}
	return out
}

func TestPermanentFailureDSN(t *testing.T) {
	clk := newClock()
	d := &fakeDeliverer{reply: func(rcpt string, try int) Result {
		switch rcpt {
		case "gone@remote.example":
			return Result{Code: 550, Enhanced: "5.1.1", Msg: "5.1.1 <gone@remote.example>: Recipient address rejected: User unknown\r\n", RemoteMTA: "mx.remote.example"}
		case "nomx@nowhere.example":
			return Result{Enhanced: "5.1.10", Msg: "domain has a null MX"}
		}
		return Result{Code: 250}
	}}
	b := &bouncer{}
	q := open(t, filepath.Join(t.TempDir(), "queue"), Options{Now: clk.Now, Deliverer: d, Bouncer: b})
	arrival := clk.Now()
	id := enqueue(t, q, Envelope{From: "alice@example.org", To: []string{"ok@remote.example", "gone@remote.example", "nomx@nowhere.example"}, EnvID: "QQ314159"},
		body1+"secret body text\r\n")
	clk.Advance(time.Minute)
	q.RunOnce(context.Background())
	if q.Len() != 0 {
		t.Fatalf("message not finished: %+v", q.List())
	}
	dsns := b.DSNs()
	if len(dsns) != 1 {
		t.Fatalf("%d DSNs", len(dsns))
	}
	dsn := dsns[0]
	if dsn.To != "alice@example.org" || dsn.QueueID != id || len(dsn.Failed) != 2 {
		t.Fatalf("DSN %+v", dsn)
	}
	h, parts := parseDSN(t, dsn.Message)
	if h.Get("To") != "alice@example.org" || h.Get("Auto-Submitted") != "auto-replied" ||
		!strings.HasPrefix(h.Get("From"), "MAILER-DAEMON@mx.example.org") || h.Get("Subject") == "" {
		t.Errorf("header %v", h)
	}
	if date, err := h.Date(); err != nil || !date.Equal(clk.Now()) {
		t.Errorf("Date %v %v", date, err)
	}
	if len(parts) != 3 || parts[0].ctype != "text/plain" || parts[1].ctype != "message/delivery-status" || parts[2].ctype != "text/rfc822-headers" {
		t.Fatalf("parts %+v", parts)
	}
	if !strings.Contains(parts[0].body, "gone@remote.example") || !strings.Contains(parts[0].body, "mx.remote.example") {
		t.Errorf("notification %q", parts[0].body)
	}
	g := statusGroups(t, parts[1].body)
	if len(g) != 3 {
		t.Fatalf("%d groups: %q", len(g), parts[1].body)
	}
	if g[0]["Reporting-MTA"] != "dns; mx.example.org" || g[0]["Original-Envelope-Id"] != "QQ314159" ||
		g[0]["Arrival-Date"] != arrival.Format(time.RFC1123Z) {
		t.Errorf("per-message fields %v", g[0])
	}
	want1 := map[string]string{
		"Final-Recipient":   "rfc822; gone@remote.example",
		"Action":            "failed",
		"Status":            "5.1.1",
		"Remote-MTA":        "dns; mx.remote.example",
		"Diagnostic-Code":   "smtp; 550 5.1.1 <gone@remote.example>: Recipient address rejected: User unknown",
		"Last-Attempt-Date": clk.Now().Format(time.RFC1123Z),
	}
	for k, v := range want1 {
		if g[1][k] != v {
			t.Errorf("%s: %q, want %q", k, g[1][k], v)
		}
	}
	if g[2]["Final-Recipient"] != "rfc822; nomx@nowhere.example" || g[2]["Status"] != "5.1.10" ||
		g[2]["Diagnostic-Code"] != "X-Mailgate; domain has a null MX" || g[2]["Remote-MTA"] != "" {
		t.Errorf("second recipient %v", g[2])
	}
	if strings.Contains(string(dsn.Message), "ok@remote.example") {
		t.Error("the delivered recipient is in the DSN")
	}
	if parts[2].body != strings.TrimSuffix(body1, "\r\nHi Bob.\r\n") || strings.Contains(string(dsn.Message), "secret body") {
		t.Errorf("headers part %q", parts[2].body)
	}
}

func TestExpiryDSN(t *testing.T) {
	clk := newClock()
	d := &fakeDeliverer{reply: func(string, int) Result {
		return Result{Code: 451, Enhanced: "4.4.1", Msg: "4.4.1 no answer", RemoteMTA: "mx.slow.example"}
	}}
	b := &bouncer{}
	q := open(t, filepath.Join(t.TempDir(), "queue"), Options{Now: clk.Now, Deliverer: d, Bouncer: b,
		BackoffBase: 10 * time.Minute, BackoffCap: 40 * time.Minute, Expiry: time.Hour})
	t0 := clk.Now()
	id := enqueue(t, q, Envelope{From: "alice@example.org", To: []string{"r@slow.example"}}, body1)
	var nexts []time.Duration
	for range 10 {
		q.RunOnce(context.Background())
		inf, ok := q.Lookup(id)
		if !ok {
			break
		}
		nexts = append(nexts, inf.Rcpts[0].Next.Sub(t0))
		clk.Advance(inf.Rcpts[0].Next.Sub(clk.Now()))
	}
	// 10, 10+20, 30+40 → capped at the expiry (60), then the last attempt fails.
	want := []time.Duration{10 * time.Minute, 30 * time.Minute, time.Hour}
	if len(nexts) != len(want) || nexts[0] != want[0] || nexts[1] != want[1] || nexts[2] != want[2] {
		t.Fatalf("next attempts %v, want %v", nexts, want)
	}
	if n := len(d.Calls()); n != 4 {
		t.Errorf("%d attempts", n)
	}
	if q.Len() != 0 {
		t.Fatal("expired message still queued")
	}
	dsns := b.DSNs()
	if len(dsns) != 1 || !dsns[0].Failed[0].Expired {
		t.Fatalf("DSNs %+v", dsns)
	}
	_, parts := parseDSN(t, dsns[0].Message)
	g := statusGroups(t, parts[1].body)
	if g[1]["Action"] != "failed" || g[1]["Status"] != "4.4.1" || g[1]["Remote-MTA"] != "dns; mx.slow.example" ||
		!strings.Contains(g[1]["Diagnostic-Code"], "expired") || !strings.Contains(g[1]["Diagnostic-Code"], "4.4.1 no answer") {
		t.Errorf("recipient fields %v", g[1])
	}
}

func TestExpiryWithoutReplyStatus(t *testing.T) {
	clk := newClock()
	d := &fakeDeliverer{reply: func(string, int) Result { return Result{Temporary: true, Msg: "connection refused"} }}
	b := &bouncer{}
	q := open(t, filepath.Join(t.TempDir(), "queue"), Options{Now: clk.Now, Deliverer: d, Bouncer: b, Expiry: time.Hour})
	enqueue(t, q, Envelope{From: "alice@example.org", To: []string{"r@down.example"}}, body1)
	clk.Advance(2 * time.Hour) // e.g. the server was down: the first attempt is already too late
	q.RunOnce(context.Background())
	dsns := b.DSNs()
	if len(dsns) != 1 || dsns[0].Failed[0].Status != "4.4.7" || dsns[0].Failed[0].Diagnostic != "X-Mailgate; message expired after 1h0m0s in the queue; last error: connection refused" {
		t.Fatalf("%+v", dsns)
	}
}

func TestNullSenderNoDSN(t *testing.T) {
	clk := newClock()
	d := &fakeDeliverer{reply: func(string, int) Result { return Result{Code: 550, Enhanced: "5.1.1", Msg: "unknown"} }}
	b := &bouncer{}
	q := open(t, filepath.Join(t.TempDir(), "queue"), Options{Now: clk.Now, Deliverer: d, Bouncer: b, Expiry: time.Hour})
	enqueue(t, q, Envelope{From: "", To: []string{"gone@remote.example"}}, body1)
	// and an expiring one
	d2 := enqueue(t, q, Envelope{From: "", To: []string{"slow@remote.example"}}, body1)
	d.reply = func(rcpt string, _ int) Result {
		if rcpt == "slow@remote.example" {
			return Result{Code: 421}
		}
		return Result{Code: 550, Enhanced: "5.1.1", Msg: "unknown"}
	}
	q.RunOnce(context.Background())
	if _, ok := q.Lookup(d2); !ok || q.Len() != 1 {
		t.Fatalf("Len %d", q.Len())
	}
	clk.Advance(2 * time.Hour)
	q.RunOnce(context.Background())
	if q.Len() != 0 {
		t.Fatalf("Len %d", q.Len())
	}
	if n := len(b.DSNs()); n != 0 {
		t.Fatalf("%d DSNs for null-sender messages", n)
	}
}

func TestBouncerFailureRetried(t *testing.T) {
	clk := newClock()
	d := &fakeDeliverer{reply: func(string, int) Result { return Result{Code: 554, Msg: "5.7.1 rejected"} }}
	b := &bouncer{fail: errors.New("disk full")}
	dir := filepath.Join(t.TempDir(), "queue")
	opts := Options{Now: clk.Now, Deliverer: d, Bouncer: b, BackoffBase: time.Minute}
	q := open(t, dir, opts)
	id := enqueue(t, q, Envelope{From: "alice@example.org", To: []string{"r@remote.example"}}, body1)
	q.RunOnce(context.Background())
	inf, ok := q.Lookup(id)
	if !ok || inf.Rcpts[0].Status != Failed || inf.Rcpts[0].Notified {
		t.Fatalf("%+v", inf)
	}
	if n := q.RunOnce(context.Background()); n != 0 {
		t.Fatalf("bounce retried at once (%d)", n)
	}
	// A restart keeps the failure and owes the DSN.
	q.Close()
	q = open(t, dir, opts)
	b.mu.Lock()
	b.fail = nil
	b.mu.Unlock()
	q.RunOnce(context.Background())
	if q.Len() != 0 || len(b.DSNs()) != 1 || len(d.Calls()) != 1 {
		t.Fatalf("Len %d, %d DSNs, %d deliveries", q.Len(), len(b.DSNs()), len(d.Calls()))
	}
	if st := b.DSNs()[0].Failed[0].Status; st != "5.7.1" && st != "5.0.0" {
		t.Errorf("status %s", st)
	}
}

func TestDSNReturnFullAndGlobal(t *testing.T) {
	clk := newClock()
	d := &fakeDeliverer{reply: func(string, int) Result { return Result{Code: 550, Enhanced: "5.1.1", Msg: "unknown"} }}
	b := &bouncer{}
	q := open(t, filepath.Join(t.TempDir(), "queue"), Options{Now: clk.Now, Deliverer: d, Bouncer: b})
	enqueue(t, q, Envelope{From: "alice@example.org", To: []string{"r@remote.example"}, Ret: "FULL"}, body1)
	enqueue(t, q, Envelope{From: "jörg@example.org", To: []string{"ü@bücher.example"}, SMTPUTF8: true}, "Subject: grüße\r\n\r\nbody\r\n")
	enqueue(t, q, Envelope{From: "lf@example.org", To: []string{"r@remote.example"}}, "Subject: unix\nX: y\n\nbody\n")
	q.RunOnce(context.Background())
	dsns := b.DSNs()
	if len(dsns) != 3 {
		t.Fatalf("%d DSNs", len(dsns))
	}
	for _, dsn := range dsns {
		_, parts := parseDSN(t, dsn.Message)
		switch dsn.To {
		case "alice@example.org":
			if parts[2].ctype != "message/rfc822" || parts[2].body != body1 {
				t.Errorf("RET=FULL part %s %q", parts[2].ctype, parts[2].body)
			}
		case "jörg@example.org":
			if parts[1].ctype != "message/global-delivery-status" || parts[2].ctype != "message/global-headers" {
				t.Errorf("SMTPUTF8 parts %s %s", parts[1].ctype, parts[2].ctype)
			}
			g := statusGroups(t, parts[1].body)
			if g[1]["Final-Recipient"] != "utf-8; ü@bücher.example" {
				t.Errorf("Final-Recipient %q", g[1]["Final-Recipient"])
			}
			if parts[2].body != "Subject: grüße\r\n" {
				t.Errorf("headers %q", parts[2].body)
			}
		case "lf@example.org":
			if parts[2].body != "Subject: unix\r\nX: y\r\n" {
				t.Errorf("headers %q", parts[2].body)
			}
		}
	}
}

func TestHeaderBlock(t *testing.T) {
	for _, c := range []struct{ in, out string }{
		{"A: b\r\n\r\nbody", "A: b\r\n"},
		{"A: b\r\n c\r\nD: e\r\n\r\n", "A: b\r\n c\r\nD: e\r\n"},
		{"A: b\n\nbody", "A: b\n"},
		{"A: b\r\nB: c", "A: b\r\n"},
		{"no newline", ""},
		{"\r\nbody", ""},
	} {
		if got := string(headerBlock([]byte(c.in))); got != c.out {
			t.Errorf("%q: %q, want %q", c.in, got, c.out)
		}
	}
}

func TestClassify(t *testing.T) {
	for _, c := range []struct {
		r    Result
		want outcome
	}{
		{Result{Code: 250}, oDelivered},
		{Result{Code: 451}, oTemporary},
		{Result{Code: 550}, oPermanent},
		{Result{Code: 550, Temporary: true}, oTemporary},
		{Result{}, oTemporary},
		{Result{Enhanced: "5.1.10"}, oPermanent},
		{Result{Enhanced: "4.4.1"}, oTemporary},
		{Result{Code: 354}, oTemporary},
	} {
		if got := classify(c.r); got != c.want {
			t.Errorf("%+v: %v, want %v", c.r, got, c.want)
		}
	}
}
