package smtpclient

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/internal/queue"
)

// Interoperability with Postfix's smtp-sink(1), a real (if minimal) SMTP
// server implementation: it offers PIPELINING, 8BITMIME and DSN, and its
// options script refusals and disconnects.

// postfixBody avoids bare CRs, which smtp-sink's dump drops.
const postfixBody = "From: a@example.org\r\nSubject: interop\r\n\r\n" +
	".leading dot\r\n..two\r\n.\r\n\xc3\xa9t\xc3\xa9\r\n\r\nend\r\n"

// dump is one message captured by smtp-sink -d.
type dump struct {
	headers map[string][]string // the X-* records smtp-sink adds
	body    string              // the message, LF line ends
}

// readDumps waits for n dump files in dir and parses them.
func readDumps(t *testing.T, dir string, n int) []dump {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		files, _ := filepath.Glob(filepath.Join(dir, "*"))
		var out []dump
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			// Complete once the message's own last line and the empty
			// line smtp-sink appends are there.
			if !strings.HasSuffix(string(b), "\n\n") {
				continue
			}
			out = append(out, parseDump(t, string(b)))
		}
		if len(out) >= n {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d complete dumps in %s, want %d", len(out), dir, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func parseDump(t *testing.T, s string) dump {
	d := dump{headers: map[string][]string{}}
	lines := strings.SplitAfter(s, "\n")
	for i := 0; i < len(lines); i++ {
		l := strings.TrimSuffix(lines[i], "\n")
		if strings.HasPrefix(l, "Received: ") {
			// Three lines: "Received: from …", "\tby …", "\tdate".
			d.body = strings.Join(lines[i+3:], "")
			d.body = strings.TrimSuffix(d.body, "\n") // the empty line smtp-sink appends
			return d
		}
		k, v, _ := strings.Cut(l, ": ")
		d.headers[k] = append(d.headers[k], v)
	}
	t.Fatalf("no Received line in dump %q", s)
	return d
}

func lf(s string) string { return strings.ReplaceAll(s, "\r\n", "\n") }

func TestPostfixSinkRelayWithEnvelope(t *testing.T) {
	addr, dir := postfixSink(t)
	c := newClient(t, Options{RelayHost: relayTo(addr)})
	env := queue.Envelope{From: "s@example.org", To: []string{"a@example.net", "b@example.com"}, EnvID: "q+1", Ret: "FULL", BodyType: "8BITMIME"}
	wantDelivered(t, viaQueue(t, c, env, postfixBody))
	d := readDumps(t, dir, 1)[0]
	if d.body != lf(postfixBody) {
		t.Errorf("smtp-sink received\n%q\nwant\n%q", d.body, lf(postfixBody))
	}
	// smtp-sink offers DSN and 8BITMIME, not SIZE.
	if got, want := d.headers["X-Mail-Args"], []string{"<s@example.org> BODY=8BITMIME RET=FULL ENVID=q+2B1"}; !slices.Equal(got, want) {
		t.Errorf("MAIL arguments %q, want %q", got, want)
	}
	if got, want := d.headers["X-Rcpt-Args"], []string{"<a@example.net>", "<b@example.com>"}; !slices.Equal(got, want) {
		t.Errorf("RCPT arguments %q, want %q", got, want)
	}
	if got := d.headers["X-Helo-Args"]; !slices.Equal(got, []string{"mailgate.test"}) {
		t.Errorf("EHLO %q", got)
	}
}

func TestPostfixSinkManyMessagesOneClient(t *testing.T) {
	addr, dir := postfixSink(t)
	c := newClient(t, Options{RelayHost: relayTo(addr)})
	ctx := ctxTimeout(t, 30*time.Second)
	const n = 20
	for i := range n {
		body := fmt.Sprintf("Subject: %d\r\n\r\n%s", i, postfixBody)
		wantDelivered(t, deliver(t, ctx, c, "s@example.org", []string{fmt.Sprintf("r%d@example.net", i)}, strings.NewReader(body)))
	}
	ds := readDumps(t, dir, n)
	seen := map[string]bool{}
	for _, d := range ds {
		var i int
		fmt.Sscanf(d.body, "Subject: %d", &i)
		if want := lf(fmt.Sprintf("Subject: %d\r\n\r\n%s", i, postfixBody)); d.body != want {
			t.Errorf("message %d: %q", i, d.body)
		}
		seen[d.headers["X-Rcpt-Args"][0]] = true
	}
	if len(seen) != n {
		t.Errorf("%d distinct recipients, want %d", len(seen), n)
	}
}

func TestPostfixSinkRefusals(t *testing.T) {
	ctx := ctxTimeout(t, 60*time.Second)
	rcpts := []string{"a@example.net", "b@example.net"}
	for _, tc := range []struct {
		name  string
		args  []string
		check func(t *testing.T, r queue.Result)
	}{
		{"soft RCPT", []string{"-r", "RCPT"}, func(t *testing.T, r queue.Result) {
			if r.Code != 450 || r.Enhanced != "4.3.0" || !r.Temporary || r.Msg != "Error: command failed" || r.RemoteMTA != "127.0.0.1" {
				t.Errorf("%+v", r)
			}
		}},
		{"hard RCPT", []string{"-f", "RCPT"}, func(t *testing.T, r queue.Result) {
			if r.Code != 500 || r.Enhanced != "5.3.0" || r.Temporary {
				t.Errorf("%+v", r)
			}
		}},
		{"hard end of data", []string{"-f", "."}, func(t *testing.T, r queue.Result) {
			if r.Code != 500 || r.Enhanced != "5.3.0" || r.Temporary {
				t.Errorf("%+v", r)
			}
		}},
		{"soft MAIL", []string{"-r", "MAIL"}, func(t *testing.T, r queue.Result) {
			if r.Code != 450 || !r.Temporary {
				t.Errorf("%+v", r)
			}
		}},
		{"421 on DATA", []string{"-Q", "DATA"}, func(t *testing.T, r queue.Result) {
			if r.Code != 421 || !r.Temporary {
				t.Errorf("%+v", r)
			}
		}},
		{"disconnect on RCPT", []string{"-q", "RCPT"}, func(t *testing.T, r queue.Result) {
			if r.Code != 0 || r.Enhanced != "4.4.2" || !r.Temporary || !strings.Contains(r.Msg, "lost connection") {
				t.Errorf("%+v", r)
			}
		}},
		{"disconnect after end of data", []string{"-q", "."}, func(t *testing.T, r queue.Result) {
			if r.Code != 0 || !r.Temporary || !strings.Contains(r.Msg, "end of data") {
				t.Errorf("%+v", r)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, _ := postfixSink(t, tc.args...)
			c := newClient(t, Options{RelayHost: relayTo(addr)})
			res := deliver(t, ctx, c, "s@example.org", rcpts, strings.NewReader(postfixBody))
			for _, r := range res {
				tc.check(t, r)
			}
		})
	}
}

func TestPostfixSinkNoESMTP(t *testing.T) {
	addr, dir := postfixSink(t, "-e")
	c := newClient(t, Options{RelayHost: relayTo(addr)})
	env := queue.Envelope{From: "s@example.org", To: []string{"a@example.net"}, EnvID: "x", Ret: "HDRS", BodyType: "8BITMIME"}
	wantDelivered(t, viaQueue(t, c, env, postfixBody))
	d := readDumps(t, dir, 1)[0]
	// HELO, and no ESMTP parameter at all.
	if proto := d.headers["X-Client-Proto"]; !slices.Equal(proto, []string{"SMTP"}) {
		t.Errorf("protocol %q, want SMTP (HELO)", proto)
	}
	if got := d.headers["X-Mail-Args"]; !slices.Equal(got, []string{"<s@example.org>"}) {
		t.Errorf("MAIL arguments %q", got)
	}
	if d.body != lf(postfixBody) {
		t.Errorf("body %q", d.body)
	}
}
