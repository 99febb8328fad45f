package smtpclient

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailgate/mailgate/internal/queue"
	"github.com/mailgate/mailgate/internal/smtpsink"
)

// testBody has what SMTP transparency and 8-bit transport must preserve.
const testBody = "From: a@example.org\r\nTo: b@example.net\r\nSubject: t\r\n\r\n" +
	".leading dot\r\n..two dots\r\n.\r\nmid\rline CR\r\n\xc3\xa9t\xc3\xa9 8-bit\r\n\r\n" +
	"trailing spaces   \r\n\ttab\r\n"

func TestNewValidates(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    Options
		want string
	}{
		{"no hostname", Options{}, "Hostname"},
		{"bad hostname", Options{Hostname: "bad host"}, "Hostname"},
		{"bad port", Options{Hostname: "h.test", Port: "x25"}, "Port"},
		{"port range", Options{Hostname: "h.test", Port: "70000"}, "Port"},
		{"relay no ]", Options{Hostname: "h.test", RelayHost: "[relay.test:25"}, "missing ']'"},
		{"relay junk after ]", Options{Hostname: "h.test", RelayHost: "[relay.test]25"}, "':port'"},
		{"relay bad port", Options{Hostname: "h.test", RelayHost: "relay.test:smtp"}, "port"},
		{"relay empty port", Options{Hostname: "h.test", RelayHost: "[relay.test]:"}, "empty port"},
		{"relay empty host", Options{Hostname: "h.test", RelayHost: "[]:25"}, "empty host"},
		{"relay bare ipv6", Options{Hostname: "h.test", RelayHost: "2001:db8::1:25"}, "brackets"},
		{"relay bad name", Options{Hostname: "h.test", RelayHost: "[re lay]:25"}, "not a host name"},
		{"relay bad ipv6 tag", Options{Hostname: "h.test", RelayHost: "[ipv6:192.0.2.1]:25"}, "not an IPv6"},
		{"negative timeout", Options{Hostname: "h.test", DialTimeout: -1}, "negative"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
}

func TestParseRelayHost(t *testing.T) {
	for in, want := range map[string]destination{
		"[relay.example.com]:587": {host: "relay.example.com", port: "587", noMX: true},
		"[relay.example.com]":     {host: "relay.example.com", port: "25", noMX: true},
		"relay.example.com:2525":  {host: "relay.example.com", port: "2525"},
		"relay.example.com":       {host: "relay.example.com", port: "25"},
		"relay":                   {host: "relay", port: "25"},
		"192.0.2.7:26":            {host: "192.0.2.7", port: "26", noMX: true},
		"[ipv6:2001:db8::1]:25":   {host: "2001:db8::1", port: "25", noMX: true},
		"[2001:DB8::1]:25":        {host: "2001:db8::1", port: "25", noMX: true},
		" [mail_relay]:25 ":       {host: "mail_relay", port: "25", noMX: true},
	} {
		got, err := parseRelayHost(in)
		if err != nil || got != want {
			t.Errorf("parseRelayHost(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
}

func TestRelayDeliveryByteExact(t *testing.T) {
	sink := startSink(t, smtpsink.Options{})
	c := newClient(t, Options{RelayHost: relayTo(sink.Addr())})
	ctx := ctxTimeout(t, 20*time.Second)

	// The body as the queue gives it: a section of a bigger file.
	file := "JUNK-BEFORE" + testBody + "JUNK-AFTER"
	sec := io.NewSectionReader(strings.NewReader(file), int64(len("JUNK-BEFORE")), int64(len(testBody)))
	rcpts := []string{"one@example.net", "two@example.com"}
	res := deliver(t, ctx, c, "sender@example.org", rcpts, sec)
	wantDelivered(t, res)
	for _, r := range res {
		if r.Code != 250 || r.Enhanced != "2.0.0" || r.Temporary || r.RemoteMTA != "127.0.0.1" {
			t.Errorf("result %+v", r)
		}
	}

	// A reader that is neither io.ReaderAt nor io.Seeker is buffered.
	res = deliver(t, ctx, c, "", []string{"three@example.net"}, iotest.OneByteReader(strings.NewReader(testBody)))
	wantDelivered(t, res)

	ms := waitSink(t, sink, 2)
	for i, m := range ms {
		if string(m.Data) != testBody {
			t.Errorf("message %d arrived as\n%q\nwant\n%q", i, m.Data, testBody)
		}
		if m.Helo != "mailgate.test" {
			t.Errorf("EHLO %q", m.Helo)
		}
	}
	if ms[0].From != "sender@example.org" || strings.Join(ms[0].To, " ") != strings.Join(rcpts, " ") {
		t.Errorf("envelope %q %q: one transaction for the relay host expected", ms[0].From, ms[0].To)
	}
	if ms[1].From != "" {
		t.Errorf("null sender arrived as %q", ms[1].From)
	}
}

func TestBareLFAndUnterminatedLastLine(t *testing.T) {
	sink := startSink(t, smtpsink.Options{})
	c := newClient(t, Options{RelayHost: relayTo(sink.Addr())})
	res := deliver(t, ctxTimeout(t, 20*time.Second), c, "s@example.org", []string{"r@example.net"},
		strings.NewReader("Subject: lf\n\n.dot\nno end"))
	wantDelivered(t, res)
	if got, want := string(waitSink(t, sink, 1)[0].Data), "Subject: lf\r\n\r\n.dot\r\nno end\r\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestDotWriter(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ".\r\n"},
		{"a\r\n", "a\r\n.\r\n"},
		{".\r\n", "..\r\n.\r\n"},
		{"a\r\n.b\r\n..\r\n", "a\r\n..b\r\n...\r\n.\r\n"},
		{"x.y\r\n", "x.y\r\n.\r\n"},
		{"a\nb", "a\r\nb\r\n.\r\n"},
		{"a\r", "a\r\n.\r\n"},
		{"a\rb\r\n", "a\rb\r\n.\r\n"},
	} {
		// Every split of the input into two writes gives the same output.
		for cut := 0; cut <= len(tc.in); cut++ {
			var buf bytes.Buffer
			bw := bufio.NewWriter(&buf)
			d := &dotWriter{w: bw, bol: true}
			d.Write([]byte(tc.in[:cut]))
			d.Write([]byte(tc.in[cut:]))
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			if buf.String() != tc.want {
				t.Errorf("%q cut at %d: %q, want %q", tc.in, cut, buf.String(), tc.want)
			}
		}
	}
}

func TestPerRecipientReplies(t *testing.T) {
	sink := startSink(t, smtpsink.Options{RcptReply: func(rcpt string) *smtp.SMTPError {
		switch {
		case strings.HasPrefix(rcpt, "unknown@"):
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "user unknown"}
		case strings.HasPrefix(rcpt, "busy@"):
			return &smtp.SMTPError{Code: 450, EnhancedCode: smtp.EnhancedCode{4, 2, 1}, Message: "try later"}
		case strings.HasPrefix(rcpt, "plain@"):
			return &smtp.SMTPError{Code: 551, EnhancedCode: smtp.NoEnhancedCode, Message: "not here"}
		}
		return nil
	}})
	c := newClient(t, Options{RelayHost: relayTo(sink.Addr())})
	rcpts := []string{"unknown@example.net", "ok@example.net", "busy@example.net", "plain@example.net"}
	res := deliver(t, ctxTimeout(t, 20*time.Second), c, "s@example.org", rcpts, strings.NewReader(testBody))

	want := []queue.Result{
		{Code: 550, Enhanced: "5.1.1", Msg: "user unknown"},
		{Code: 250, Enhanced: "2.0.0"},
		{Code: 450, Enhanced: "4.2.1", Msg: "try later", Temporary: true},
		{Code: 551, Enhanced: "", Msg: "not here"},
	}
	for i, w := range want {
		r := res[i]
		if r.Code != w.Code || r.Enhanced != w.Enhanced || r.Temporary != w.Temporary || r.RemoteMTA != "127.0.0.1" ||
			w.Msg != "" && r.Msg != w.Msg {
			t.Errorf("%s: got %+v, want %+v", rcpts[i], r, w)
		}
	}
	m := waitSink(t, sink, 1)[0]
	if strings.Join(m.To, ",") != "ok@example.net" {
		t.Errorf("delivered to %q, want ok@ only", m.To)
	}
}

func TestAllRecipientsRefusedThenReuse(t *testing.T) {
	sink := startSink(t, smtpsink.Options{RcptReply: func(rcpt string) *smtp.SMTPError {
		if strings.HasPrefix(rcpt, "no") {
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no"}
		}
		return nil
	}})
	c := newClient(t, Options{RelayHost: relayTo(sink.Addr())})
	ctx := ctxTimeout(t, 20*time.Second)
	res := deliver(t, ctx, c, "s@example.org", []string{"no1@example.net", "no2@example.net"}, strings.NewReader(testBody))
	for _, r := range res {
		if r.Code != 550 {
			t.Errorf("%+v", r)
		}
	}
	// The session, reset after the refused transaction, serves the next
	// message.
	wantDelivered(t, deliver(t, ctx, c, "s@example.org", []string{"yes@example.net"}, strings.NewReader(testBody)))
	if m := waitSink(t, sink, 1); len(m) != 1 || m[0].To[0] != "yes@example.net" || sink.Conns() != 1 {
		t.Errorf("messages %v over %d connections, want 1 over 1", len(m), sink.Conns())
	}
}

func TestDataReplies(t *testing.T) {
	for _, tc := range []struct {
		err  *smtp.SMTPError
		temp bool
	}{
		{&smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "spam"}, false},
		{&smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "disk full"}, true},
	} {
		t.Run(fmt.Sprint(tc.err.Code), func(t *testing.T) {
			sink := startSink(t, smtpsink.Options{
				RcptReply: func(rcpt string) *smtp.SMTPError {
					if strings.HasPrefix(rcpt, "unknown@") {
						return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "unknown"}
					}
					return nil
				},
				DataReply: func(smtpsink.Message) *smtp.SMTPError { return tc.err },
			})
			c := newClient(t, Options{RelayHost: relayTo(sink.Addr())})
			rcpts := []string{"a@example.net", "unknown@example.net", "b@example.net"}
			res := deliver(t, ctxTimeout(t, 20*time.Second), c, "s@example.org", rcpts, strings.NewReader(testBody))
			enh := fmt.Sprintf("%d.%d.%d", tc.err.EnhancedCode[0], tc.err.EnhancedCode[1], tc.err.EnhancedCode[2])
			for _, i := range []int{0, 2} {
				if r := res[i]; r.Code != tc.err.Code || r.Enhanced != enh || r.Msg != tc.err.Message || r.Temporary != tc.temp {
					t.Errorf("%s: %+v", rcpts[i], r)
				}
			}
			if res[1].Code != 550 {
				t.Errorf("refused recipient got %+v, want its RCPT reply", res[1])
			}
			if sink.Count() != 0 {
				t.Error("sink kept a refused message")
			}
		})
	}
}

func TestConnectionRefused(t *testing.T) {
	c := newClient(t, Options{RelayHost: "[127.0.0.1]:" + freePort(t)})
	res := deliver(t, ctxTimeout(t, 20*time.Second), c, "s@example.org", []string{"a@example.net", "b@example.net"}, strings.NewReader(testBody))
	for _, r := range res {
		if !r.Temporary || r.Code != 0 || r.Enhanced != "4.4.1" || !strings.Contains(r.Msg, "connection refused") {
			t.Errorf("%+v", r)
		}
	}
}

// mxSetup starts sinks on 127.0.0.2, .3, … with one port, the port the
// client uses with MX lookups.
func mxSetup(t *testing.T, hosts int) (port string, sinks []*smtpsink.Sink) {
	t.Helper()
	for attempt := 0; ; attempt++ {
		port = freePort(t)
		sinks = sinks[:0]
		ok := true
		for i := range hosts {
			s, err := smtpsink.Start(smtpsink.Options{Addr: fmt.Sprintf("127.0.0.%d:%s", i+2, port)})
			if err != nil {
				ok = false
				break
			}
			t.Cleanup(func() { s.Close() })
			sinks = append(sinks, s)
		}
		if ok {
			return port, sinks
		}
		if attempt == 5 {
			t.Fatal("no common free port on 127.0.0.2…")
		}
	}
}

func TestMXOrdering(t *testing.T) {
	port, sinks := mxSetup(t, 3)
	sinks[0].Close() // the best MX is down: connection refused
	res := &fakeResolver{
		mx: map[string][]*net.MX{"example.net.": {
			{Host: "mx30.example.net.", Pref: 30},
			{Host: "mx10.example.net.", Pref: 10},
			{Host: "mx20.example.net.", Pref: 20},
		}},
		ip: map[string][]string{
			"mx10.example.net.": {"127.0.0.2"},
			"mx20.example.net.": {"127.0.0.3"},
			"mx30.example.net.": {"127.0.0.4"},
		},
	}
	c := newClient(t, Options{Resolver: res, Port: port})
	out := deliver(t, ctxTimeout(t, 20*time.Second), c, "s@example.org", []string{"u@Example.NET"}, strings.NewReader(testBody))
	wantDelivered(t, out)
	if out[0].RemoteMTA != "mx20.example.net" {
		t.Errorf("RemoteMTA %q, want mx20.example.net", out[0].RemoteMTA)
	}
	if sinks[1].Count() != 1 || sinks[2].Count() != 0 {
		t.Errorf("mx20 got %d, mx30 got %d messages; want 1 and 0", sinks[1].Count(), sinks[2].Count())
	}
	calls := strings.Join(res.Calls(), ", ")
	if want := "MX example.net., IP mx10.example.net., IP mx20.example.net."; calls != want {
		t.Errorf("DNS queries %q, want %q", calls, want)
	}

	// The next message reuses the session to mx20 without trying mx10
	// again.
	wantDelivered(t, deliver(t, ctxTimeout(t, 20*time.Second), c, "s@example.org", []string{"v@example.net"}, strings.NewReader(testBody)))
	if sinks[1].Conns() != 1 || sinks[1].Count() != 2 {
		t.Errorf("mx20: %d connections, %d messages; want 1 and 2", sinks[1].Conns(), sinks[1].Count())
	}
}

func TestMXGreetingRefusedTriesNext(t *testing.T) {
	port, sinks := mxSetup(t, 2)
	sinks[0].Close()
	// mx10 greets with 421, then 554: both are skipped (RFC 5321 §5.1,
	// §3.1).
	bad := startScripted(t, "127.0.0.2:"+port, func(n int, sc *srvConn) {
		if n == 0 {
			sc.send("421 4.3.2 busy, come back later")
			return
		}
		sc.send("554 5.7.1 no service for you")
		sc.expect("QUIT")
		sc.send("221 bye")
	})
	res := &fakeResolver{
		mx: map[string][]*net.MX{"example.net.": {{Host: "mx10.example.net", Pref: 10}, {Host: "mx20.example.net", Pref: 20}}},
		ip: map[string][]string{"mx10.example.net.": {"127.0.0.2"}, "mx20.example.net.": {"127.0.0.3"}},
	}
	c := newClient(t, Options{Resolver: res, Port: port})
	for range 2 {
		wantDelivered(t, deliver(t, ctxTimeout(t, 20*time.Second), c, "s@example.org", []string{"u@example.net"}, strings.NewReader(testBody)))
		c.pool.drop("mx20.example.net:" + port) // force new sessions
	}
	if bad.conns.Load() != 2 || sinks[1].Count() != 2 {
		t.Errorf("bad mx10 saw %d connections, mx20 got %d messages; want 2 and 2", bad.conns.Load(), sinks[1].Count())
	}

	// When every host refuses, the failure is temporary and says why.
	c2 := newClient(t, Options{Resolver: &fakeResolver{
		mx: map[string][]*net.MX{"example.net.": {{Host: "mx10.example.net", Pref: 10}}},
		ip: map[string][]string{"mx10.example.net.": {"127.0.0.2"}},
	}, Port: port})
	out := deliver(t, ctxTimeout(t, 20*time.Second), c2, "s@example.org", []string{"u@example.net"}, strings.NewReader(testBody))
	if r := out[0]; !r.Temporary || r.Code != 554 || !strings.Contains(r.Msg, "refused to talk to me") || r.RemoteMTA != "mx10.example.net" {
		t.Errorf("%+v", r)
	}
}

func TestNullMX(t *testing.T) {
	res := &fakeResolver{mx: map[string][]*net.MX{"nomail.example.": {{Host: ".", Pref: 0}}}}
	c := newClient(t, Options{Resolver: res, Port: freePort(t)})
	out := deliver(t, ctxTimeout(t, 20*time.Second), c, "s@example.org", []string{"a@nomail.example", "b@NOMAIL.example"}, strings.NewReader(testBody))
	for _, r := range out {
		if r.Temporary || r.Code != 0 || r.Enhanced != "5.1.10" || !strings.Contains(r.Msg, "null MX") {
			t.Errorf("%+v", r)
		}
	}
	if calls := res.Calls(); len(calls) != 1 {
		t.Errorf("DNS queries %q: a null MX must not be followed by address lookups", calls)
	}
}

func TestDNSOutcomes(t *testing.T) {
	port, sinks := mxSetup(t, 1)
	res := &fakeResolver{
		mx:    map[string][]*net.MX{"badmx.example.": {{Host: "gone.example.", Pref: 10}}},
		mxErr: map[string]error{"servfail.example.": &net.DNSError{Err: "server misbehaving", Name: "servfail.example.", IsTemporary: true}},
		ip: map[string][]string{
			"implicit.example.": {"127.0.0.2"}, // no MX: the A record is the implicit MX
		},
		ipErr: map[string]error{"flaky.example.": errors.New("i/o timeout")},
	}
	res.mx["flakymx.example."] = []*net.MX{{Host: "flaky.example.", Pref: 1}}
	c := newClient(t, Options{Resolver: res, Port: port})
	rcpts := []string{
		"a@nxdomain.example", "b@servfail.example", "c@implicit.example", "d@badmx.example",
		"e@flakymx.example", "f@[127.0.0.2]", "g@[IPv6:::1]x", "nodomain", "h@b\u00fccher.example",
	}
	out := deliver(t, ctxTimeout(t, 20*time.Second), c, "s@example.org", rcpts, strings.NewReader(testBody))
	want := []struct {
		enh  string
		temp bool
	}{
		{"5.1.2", false}, // NXDOMAIN
		{"4.4.3", true},  // SERVFAIL
		{"2.0.0", false}, // implicit MX
		{"5.4.4", false}, // the only MX host does not exist
		{"4.4.3", true},  // the MX host's address lookup failed
		{"2.0.0", false}, // address literal
		{"5.1.2", false}, // bad address literal
		{"5.1.3", false}, // no domain
		{"5.1.2", false}, // IDNA domain, looked up as its A-label: not found
	}
	for i, w := range want {
		if r := out[i]; r.Enhanced != w.enh || r.Temporary != w.temp {
			t.Errorf("%s: %+v, want %s temporary=%v", rcpts[i], r, w.enh, w.temp)
		}
	}
	if n := sinks[0].Count(); n != 2 {
		t.Errorf("sink got %d messages, want 2", n)
	}
	if !strings.Contains(strings.Join(res.Calls(), " "), "MX xn--bcher-kva.example.") {
		t.Errorf("IDNA domain not looked up as A-label: %q", res.Calls())
	}
}

func TestGroupsByDomain(t *testing.T) {
	port, sinks := mxSetup(t, 2)
	res := &fakeResolver{
		mx: map[string][]*net.MX{
			"one.example.": {{Host: "mx.one.example.", Pref: 10}},
			"two.example.": {{Host: "mx.two.example.", Pref: 10}},
		},
		ip: map[string][]string{"mx.one.example.": {"127.0.0.2"}, "mx.two.example.": {"127.0.0.3"}},
	}
	c := newClient(t, Options{Resolver: res, Port: port})
	rcpts := []string{"a@one.example", "b@two.example", "C@ONE.EXAMPLE", "a@one.example"}
	out := deliver(t, ctxTimeout(t, 20*time.Second), c, "s@example.org", rcpts, strings.NewReader(testBody))
	wantDelivered(t, out)
	m1, m2 := waitSink(t, sinks[0], 1), waitSink(t, sinks[1], 1)
	if got := strings.Join(m1[0].To, ","); got != "a@one.example,C@ONE.EXAMPLE" || sinks[0].Count() != 1 {
		t.Errorf("one.example got %q in %d messages; want both recipients (the duplicate once) in one", got, sinks[0].Count())
	}
	if got := strings.Join(m2[0].To, ","); got != "b@two.example" {
		t.Errorf("two.example got %q", got)
	}
	if out[3].RemoteMTA != "mx.one.example" {
		t.Errorf("duplicate recipient result %+v", out[3])
	}
}

func TestManyRecipientsSplit(t *testing.T) {
	sink := startSink(t, smtpsink.Options{})
	c := newClient(t, Options{RelayHost: relayTo(sink.Addr())})
	var rcpts []string
	for i := range 120 {
		rcpts = append(rcpts, fmt.Sprintf("r%03d@example.net", i))
	}
	wantDelivered(t, deliver(t, ctxTimeout(t, 20*time.Second), c, "s@example.org", rcpts, strings.NewReader(testBody)))
	ms := waitSink(t, sink, 3)
	if len(ms) != 3 || len(ms[0].To) != 50 || len(ms[1].To) != 50 || len(ms[2].To) != 20 || sink.Conns() != 1 {
		t.Errorf("%d messages over %d connections", len(ms), sink.Conns())
	}
	for _, m := range ms {
		if string(m.Data) != testBody {
			t.Error("body changed in a later transaction")
		}
	}
}

func TestSMTPUTF8(t *testing.T) {
	plain := startSink(t, smtpsink.Options{})
	utf8 := startSink(t, smtpsink.Options{SMTPUTF8: true})
	utf8Header := "Subject: caf\xc3\xa9\r\n\r\nbody\r\n"
	asciiHeader := "Subject: cafe\r\n\r\nbody \xc3\xa9 in the body only\r\n"

	t.Run("header needs it, not offered", func(t *testing.T) {
		c := newClient(t, Options{RelayHost: relayTo(plain.Addr())})
		res := viaQueue(t, c, queue.Envelope{From: "s@example.org", To: []string{"r@example.net"}, SMTPUTF8: true}, utf8Header)
		if r := res[0]; r.Code != 553 || r.Enhanced != "5.6.7" || r.Temporary || !strings.Contains(r.Msg, "SMTPUTF8 is required") || r.RemoteMTA != "127.0.0.1" {
			t.Errorf("%+v", r)
		}
		// The session stayed usable: nothing was sent.
		wantDelivered(t, deliver(t, ctxTimeout(t, 10*time.Second), c, "s@example.org", []string{"r@example.net"}, strings.NewReader(asciiHeader)))
	})
	t.Run("address needs it, not offered", func(t *testing.T) {
		c := newClient(t, Options{RelayHost: relayTo(plain.Addr())})
		res := deliver(t, ctxTimeout(t, 10*time.Second), c, "s@example.org", []string{"j\u00fcrgen@example.net", "ascii@example.net"}, strings.NewReader(asciiHeader))
		for _, r := range res {
			if r.Code != 553 || r.Enhanced != "5.6.7" {
				t.Errorf("%+v", r)
			}
		}
	})
	t.Run("flagged but all ASCII", func(t *testing.T) {
		before := plain.Count()
		c := newClient(t, Options{RelayHost: relayTo(plain.Addr())})
		wantDelivered(t, viaQueue(t, c, queue.Envelope{From: "s@example.org", To: []string{"r@example.net"}, SMTPUTF8: true}, asciiHeader))
		ms := waitSink(t, plain, before+1)
		if m := ms[len(ms)-1]; m.Mail.UTF8 || string(m.Data) != asciiHeader {
			t.Errorf("MAIL %+v data %q", m.Mail, m.Data)
		}
	})
	t.Run("offered", func(t *testing.T) {
		c := newClient(t, Options{RelayHost: relayTo(utf8.Addr())})
		wantDelivered(t, viaQueue(t, c, queue.Envelope{From: "s\u00e9@example.org", To: []string{"j\u00fcrgen@example.net"}, SMTPUTF8: true}, utf8Header))
		m := waitSink(t, utf8, 1)[0]
		if !m.Mail.UTF8 || m.From != "s\u00e9@example.org" || m.To[0] != "j\u00fcrgen@example.net" || string(m.Data) != utf8Header {
			t.Errorf("%+v", m)
		}
	})
}

func TestEnvelopeParameters(t *testing.T) {
	env := queue.Envelope{From: "s@example.org", To: []string{"r@example.net"}, EnvID: "id+1=x", Ret: "HDRS", BodyType: "8BITMIME"}

	dsn := startSink(t, smtpsink.Options{DSN: true})
	wantDelivered(t, viaQueue(t, newClient(t, Options{RelayHost: relayTo(dsn.Addr())}), env, testBody))
	m := waitSink(t, dsn, 1)[0]
	if m.Mail.EnvelopeID != "id+1=x" || m.Mail.Return != smtp.DSNReturnHeaders || m.Mail.Body != smtp.Body8BitMIME || m.Mail.Size != int64(len(testBody)) {
		t.Errorf("MAIL parameters %+v", m.Mail)
	}
	if string(m.Data) != testBody {
		t.Errorf("body %q", m.Data)
	}

	// Without DSN offered, RET and ENVID are not sent (go-smtp's server
	// would refuse them with 504).
	noDSN := startSink(t, smtpsink.Options{})
	wantDelivered(t, viaQueue(t, newClient(t, Options{RelayHost: relayTo(noDSN.Addr())}), env, testBody))
	if m := waitSink(t, noDSN, 1)[0]; m.Mail.EnvelopeID != "" || m.Mail.Return != "" || m.Mail.Body != smtp.Body8BitMIME {
		t.Errorf("MAIL parameters %+v", m.Mail)
	}
}

func TestSizeLimit(t *testing.T) {
	sink := startSink(t, smtpsink.Options{MaxSize: 100})
	c := newClient(t, Options{RelayHost: relayTo(sink.Addr())})
	ctx := ctxTimeout(t, 20*time.Second)
	big := "Subject: big\r\n\r\n" + strings.Repeat("x", 200) + "\r\n"
	res := deliver(t, ctx, c, "s@example.org", []string{"r@example.net"}, strings.NewReader(big))
	// Our message, not the server's "Max message size exceeded": MAIL was
	// never sent.
	if r := res[0]; r.Code != 552 || r.Enhanced != "5.3.4" || r.Temporary || !strings.Contains(r.Msg, "exceeds size limit 100") {
		t.Errorf("%+v", res[0])
	}
	wantDelivered(t, deliver(t, ctx, c, "s@example.org", []string{"r@example.net"}, strings.NewReader("Subject: small\r\n\r\nx\r\n")))
	if sink.Count() != 1 || sink.Conns() != 1 {
		t.Errorf("count %d conns %d, want 1 1", sink.Count(), sink.Conns())
	}
}

func TestConnectionReuse(t *testing.T) {
	sink := startSink(t, smtpsink.Options{})
	c := newClient(t, Options{RelayHost: relayTo(sink.Addr())})
	ctx := ctxTimeout(t, 30*time.Second)
	for i := range 10 {
		wantDelivered(t, deliver(t, ctx, c, "s@example.org", []string{fmt.Sprintf("r%d@example.net", i)}, strings.NewReader(testBody)))
	}
	if n := sink.Conns(); n != 1 {
		t.Errorf("10 sequential messages used %d connections, want 1", n)
	}

	// MaxIdle < 0 disables reuse.
	sink2 := startSink(t, smtpsink.Options{})
	c2 := newClient(t, Options{RelayHost: relayTo(sink2.Addr()), MaxIdle: -1})
	for i := range 3 {
		wantDelivered(t, deliver(t, ctx, c2, "s@example.org", []string{fmt.Sprintf("r%d@example.net", i)}, strings.NewReader(testBody)))
	}
	if n := sink2.Conns(); n != 3 {
		t.Errorf("without reuse: %d connections for 3 messages", n)
	}
}

func TestReuseAfterServerRestart(t *testing.T) {
	sink := startSink(t, smtpsink.Options{})
	addr := sink.Addr()
	c := newClient(t, Options{RelayHost: relayTo(addr)})
	ctx := ctxTimeout(t, 30*time.Second)
	wantDelivered(t, deliver(t, ctx, c, "s@example.org", []string{"r@example.net"}, strings.NewReader(testBody)))
	sink.Close() // the idle session dies with it

	sink2 := startSink(t, smtpsink.Options{Addr: addr})
	res := deliver(t, ctx, c, "s@example.org", []string{"r2@example.net"}, strings.NewReader(testBody))
	wantDelivered(t, res)
	if sink2.Conns() != 1 || sink2.Count() != 1 {
		t.Errorf("after restart: %d connections, %d messages", sink2.Conns(), sink2.Count())
	}
}

func TestReused421IsRetriedOnce(t *testing.T) {
	srv := startScripted(t, "", func(n int, sc *srvConn) {
		sc.send("220 scripted ESMTP")
		sc.expect("EHLO")
		sc.ehlo("8BITMIME")
		sc.transaction()
		if n == 0 {
			// As Postfix after smtpd_timeout: 421 and close, before the
			// next command is read.
			sc.expect("MAIL")
			sc.send("421 4.4.2 scripted.test Error: timeout exceeded")
			return
		}
		sc.expect("QUIT")
		sc.send("221 bye")
	})
	c := newClient(t, Options{RelayHost: relayTo(srv.Addr())})
	ctx := ctxTimeout(t, 20*time.Second)
	wantDelivered(t, deliver(t, ctx, c, "s@example.org", []string{"a@example.net"}, strings.NewReader(testBody)))
	wantDelivered(t, deliver(t, ctx, c, "s@example.org", []string{"b@example.net"}, strings.NewReader(testBody)))
	c.Close()
	if srv.conns.Load() != 2 {
		t.Errorf("%d connections, want 2", srv.conns.Load())
	}
}

func TestIdleTimeout(t *testing.T) {
	sink := startSink(t, smtpsink.Options{})
	c := newClient(t, Options{RelayHost: relayTo(sink.Addr()), IdleTimeout: 100 * time.Millisecond})
	ctx := ctxTimeout(t, 20*time.Second)
	wantDelivered(t, deliver(t, ctx, c, "s@example.org", []string{"r@example.net"}, strings.NewReader(testBody)))
	deadline := time.Now().Add(5 * time.Second)
	for {
		c.pool.mu.Lock()
		idle := len(c.pool.idle)
		c.pool.mu.Unlock()
		if idle == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("idle session not closed after IdleTimeout")
		}
		time.Sleep(20 * time.Millisecond)
	}
	wantDelivered(t, deliver(t, ctx, c, "s@example.org", []string{"r@example.net"}, strings.NewReader(testBody)))
	if n := sink.Conns(); n != 2 {
		t.Errorf("%d connections, want 2 (the first one expired)", n)
	}
}

func TestConcurrentDeliveries(t *testing.T) {
	sink := startSink(t, smtpsink.Options{})
	const workers, each = 8, 25
	c := newClient(t, Options{RelayHost: relayTo(sink.Addr()), MaxIdle: workers})
	ctx := ctxTimeout(t, 60*time.Second)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				body := fmt.Sprintf("Subject: %d/%d\r\n\r\n%s", w, i, testBody)
				rcpt := fmt.Sprintf("w%d-%d@example.net", w, i)
				res := c.Deliver(ctx, "s@example.org", []string{rcpt}, strings.NewReader(body))
				if len(res) != 1 || res[0].Code != 250 || res[0].Rcpt != rcpt {
					t.Errorf("%s: %+v", rcpt, res)
				}
			}
		}()
	}
	wg.Wait()
	ms := waitSink(t, sink, workers*each)
	for _, m := range ms {
		var w, i int
		fmt.Sscanf(string(m.Data), "Subject: %d/%d", &w, &i)
		if want := fmt.Sprintf("Subject: %d/%d\r\n\r\n%s", w, i, testBody); string(m.Data) != want || m.To[0] != fmt.Sprintf("w%d-%d@example.net", w, i) {
			t.Fatalf("message to %v mixed up: %q", m.To, m.Data)
		}
	}
	// Never more sessions than deliveries at once, and none discarded
	// (MaxIdle = workers).
	if n := sink.Conns(); n > workers {
		t.Errorf("%d connections for %d concurrent workers", n, workers)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	res := c.Deliver(ctx, "s@example.org", []string{"late@example.net"}, strings.NewReader(testBody))
	if !res[0].Temporary {
		t.Errorf("Deliver after Close: %+v", res[0])
	}
}

func TestTLS(t *testing.T) {
	sink := startSink(t, smtpsink.Options{TLSConfig: serverTLS(t)})
	c := newClient(t, Options{RelayHost: relayTo(sink.Addr())})
	wantDelivered(t, deliver(t, ctxTimeout(t, 20*time.Second), c, "s@example.org", []string{"r@example.net"}, strings.NewReader(testBody)))
	m := waitSink(t, sink, 1)[0]
	if !m.TLS || string(m.Data) != testBody {
		t.Errorf("TLS %v, data %q", m.TLS, m.Data)
	}
}

func TestTLSHandshakeFailureTriesNextHost(t *testing.T) {
	port, sinks := mxSetup(t, 2)
	sinks[0].Close()
	broken := startScripted(t, "127.0.0.2:"+port, func(n int, sc *srvConn) {
		sc.send("220 scripted ESMTP")
		sc.expect("EHLO")
		sc.ehlo("STARTTLS")
		sc.expect("STARTTLS")
		sc.send("220 2.0.0 go ahead")
		// Answer the ClientHello with garbage.
		sc.nc.Read(make([]byte, 1))
		sc.nc.Write([]byte("this is not a TLS server hello\r\n\r\n\r\n\r\n\r\n\r\n\r\n"))
		io.Copy(io.Discard, sc.nc)
	})
	res := &fakeResolver{
		mx: map[string][]*net.MX{"example.net.": {{Host: "mx10.example.net", Pref: 10}, {Host: "mx20.example.net", Pref: 20}}},
		ip: map[string][]string{"mx10.example.net.": {"127.0.0.2"}, "mx20.example.net.": {"127.0.0.3"}},
	}
	c := newClient(t, Options{Resolver: res, Port: port})
	out := deliver(t, ctxTimeout(t, 20*time.Second), c, "s@example.org", []string{"u@example.net"}, strings.NewReader(testBody))
	wantDelivered(t, out)
	if broken.conns.Load() != 1 || sinks[1].Count() != 1 || out[0].RemoteMTA != "mx20.example.net" {
		t.Errorf("broken TLS host: %d connections; mx20: %d messages; %+v", broken.conns.Load(), sinks[1].Count(), out[0])
	}

	// Alone, the broken host is a temporary failure.
	c2 := newClient(t, Options{RelayHost: "[127.0.0.2]:" + port})
	out = deliver(t, ctxTimeout(t, 20*time.Second), c2, "s@example.org", []string{"u@example.net"}, strings.NewReader(testBody))
	if r := out[0]; !r.Temporary || r.Enhanced != "4.7.5" || !strings.Contains(r.Msg, "TLS handshake") {
		t.Errorf("%+v", r)
	}
}

func TestSTARTTLSResponseInjection(t *testing.T) {
	srv := startScripted(t, "", func(n int, sc *srvConn) {
		sc.send("220 scripted ESMTP")
		sc.expect("EHLO")
		sc.ehlo("STARTTLS")
		sc.expect("STARTTLS")
		// Plaintext after the 220, in the same segment: it would be read as
		// the first reply under TLS.
		sc.nc.Write([]byte("220 2.0.0 go ahead\r\n250 2.1.0 injected\r\n"))
		io.Copy(io.Discard, sc.nc)
	})
	c := newClient(t, Options{RelayHost: relayTo(srv.Addr())})
	out := deliver(t, ctxTimeout(t, 20*time.Second), c, "s@example.org", []string{"u@example.net"}, strings.NewReader(testBody))
	if r := out[0]; !r.Temporary || r.Enhanced != "4.7.5" || !strings.Contains(r.Msg, "after its STARTTLS reply") {
		t.Errorf("%+v", r)
	}
}

func TestSTARTTLSRefusedContinuesInPlaintext(t *testing.T) {
	srv := startScripted(t, "", func(n int, sc *srvConn) {
		sc.send("220 scripted ESMTP")
		sc.expect("EHLO")
		sc.ehlo("STARTTLS")
		sc.expect("STARTTLS")
		sc.send("454 4.7.0 TLS not available")
		sc.transaction() // no second EHLO: nothing changed
		sc.expect("QUIT")
		sc.send("221 bye")
	})
	c := newClient(t, Options{RelayHost: relayTo(srv.Addr())})
	wantDelivered(t, deliver(t, ctxTimeout(t, 20*time.Second), c, "s@example.org", []string{"u@example.net"}, strings.NewReader(testBody)))
}

func TestNoPipeliningAndHELOFallback(t *testing.T) {
	gotc := make(chan string, 1)
	srv := startScripted(t, "", func(n int, sc *srvConn) {
		sc.send("220 old.example SMTP")
		sc.expect("EHLO mailgate.test")
		sc.send("502 5.5.1 what?")
		sc.expect("HELO mailgate.test")
		sc.send("250 old.example")
		// Lock-step: each command only after the previous reply.
		sc.expect("MAIL FROM:<s@example.org>")
		sc.send("250 ok")
		sc.expect("RCPT TO:<a@example.net>")
		sc.send("250 ok")
		sc.expect("RCPT TO:<b@example.net>")
		sc.send("550 no")
		sc.expect("DATA")
		sc.send("354 go")
		gotc <- sc.data()
		sc.send("250 queued")
		sc.expect("QUIT")
		sc.send("221 bye")
	})
	c := newClient(t, Options{RelayHost: relayTo(srv.Addr())})
	out := deliver(t, ctxTimeout(t, 20*time.Second), c, "s@example.org", []string{"a@example.net", "b@example.net"}, strings.NewReader("Subject: x\r\n\r\n.dot\r\n"))
	if out[0].Code != 250 || out[1].Code != 550 || out[1].Enhanced != "" {
		t.Errorf("%+v", out)
	}
	if got := <-gotc; got != "Subject: x\n\n..dot\n" {
		t.Errorf("data on the wire %q", got)
	}
}

func TestContextCanceled(t *testing.T) {
	srv := startScripted(t, "", func(n int, sc *srvConn) {
		sc.send("220 scripted ESMTP")
		sc.expect("EHLO")
		sc.ehlo("PIPELINING")
		sc.expect("MAIL")
		// Hang: never answer.
		io.Copy(io.Discard, sc.nc)
	})
	c := newClient(t, Options{RelayHost: relayTo(srv.Addr())})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	out := deliver(t, ctx, c, "s@example.org", []string{"u@example.net"}, strings.NewReader(testBody))
	if time.Since(start) > 5*time.Second {
		t.Errorf("Deliver took %v after the context ended", time.Since(start))
	}
	if r := out[0]; !r.Temporary || !strings.Contains(r.Msg, "interrupted") {
		t.Errorf("%+v", r)
	}
}

func TestCommandTimeout(t *testing.T) {
	srv := startScripted(t, "", func(n int, sc *srvConn) {
		sc.send("220 scripted ESMTP")
		sc.expect("EHLO")
		sc.ehlo("PIPELINING")
		io.Copy(io.Discard, sc.nc)
	})
	c := newClient(t, Options{RelayHost: relayTo(srv.Addr()), CommandTimeout: 200 * time.Millisecond})
	out := deliver(t, ctxTimeout(t, 20*time.Second), c, "s@example.org", []string{"u@example.net"}, strings.NewReader(testBody))
	if r := out[0]; !r.Temporary || r.Enhanced != "4.4.2" || !strings.Contains(r.Msg, "timed out") {
		t.Errorf("%+v", r)
	}
}

func TestLostConnectionAfterData(t *testing.T) {
	srv := startScripted(t, "", func(n int, sc *srvConn) {
		sc.send("220 scripted ESMTP")
		sc.expect("EHLO")
		sc.ehlo()
		sc.expect("MAIL")
		sc.send("250 ok")
		sc.expect("RCPT")
		sc.send("250 ok")
		sc.expect("DATA")
		sc.send("354 go")
		sc.data()
		// Close without a reply to the end of data.
	})
	c := newClient(t, Options{RelayHost: relayTo(srv.Addr())})
	out := deliver(t, ctxTimeout(t, 20*time.Second), c, "s@example.org", []string{"u@example.net"}, strings.NewReader(testBody))
	if r := out[0]; !r.Temporary || r.Code != 0 || r.Enhanced != "4.4.2" || !strings.Contains(r.Msg, "end of data") {
		t.Errorf("%+v", r)
	}
}

func TestReplyParsing(t *testing.T) {
	srv := startScripted(t, "", func(n int, sc *srvConn) {
		sc.send("220 scripted ESMTP")
		sc.expect("EHLO")
		sc.ehlo("PIPELINING")
		sc.expect("MAIL")
		sc.expect("RCPT")
		sc.expect("RCPT")
		sc.expect("RCPT")
		sc.expect("DATA")
		sc.send("250 2.1.0 ok")
		sc.send("550-5.1.1 first line", "550-5.1.1 second line", "550 5.1.1 last line")
		sc.send("450 5.1.1 class mismatch: no enhanced code") // 4xx with 5.x.x
		sc.send("250 2.1.5 ok")
		sc.send("354 go")
		sc.data()
		sc.send("250 2.0.0 queued as 1234")
		sc.expect("QUIT")
		sc.send("221 bye")
	})
	c := newClient(t, Options{RelayHost: relayTo(srv.Addr())})
	rcpts := []string{"a@example.net", "b@example.net", "c@example.net"}
	out := deliver(t, ctxTimeout(t, 20*time.Second), c, "s@example.org", rcpts, strings.NewReader(testBody))
	if r := out[0]; r.Code != 550 || r.Enhanced != "5.1.1" || r.Msg != "first line second line last line" {
		t.Errorf("multiline: %+v", r)
	}
	if r := out[1]; r.Code != 450 || r.Enhanced != "" || !r.Temporary || r.Msg != "5.1.1 class mismatch: no enhanced code" {
		t.Errorf("mismatched class: %+v", r)
	}
	if r := out[2]; r.Code != 250 || r.Msg != "queued as 1234" {
		t.Errorf("accepted: %+v", r)
	}
}

func TestBodyReadError(t *testing.T) {
	sink := startSink(t, smtpsink.Options{})
	c := newClient(t, Options{RelayHost: relayTo(sink.Addr())})
	out := deliver(t, ctxTimeout(t, 20*time.Second), c, "s@example.org", []string{"u@example.net"}, iotest.ErrReader(os.ErrClosed))
	if r := out[0]; !r.Temporary || r.Enhanced != "4.3.0" || sink.Conns() != 0 {
		t.Errorf("%+v (conns %d)", r, sink.Conns())
	}
}

// TestRSETAfterAbortedTransaction: a transaction left open (MAIL accepted,
// every recipient refused) is ended with RSET before the session serves the
// next message, with and without pipelining.
func TestRSETAfterAbortedTransaction(t *testing.T) {
	for _, pipelining := range []bool{false, true} {
		t.Run(fmt.Sprintf("pipelining=%v", pipelining), func(t *testing.T) {
			srv := startScripted(t, "", func(n int, sc *srvConn) {
				sc.send("220 scripted ESMTP")
				sc.expect("EHLO")
				if pipelining {
					sc.ehlo("PIPELINING")
					sc.expect("MAIL")
					sc.expect("RCPT")
					sc.expect("DATA")
					sc.send("250 2.1.0 ok", "550 5.1.1 no such user", "554 5.5.1 no valid recipients")
				} else {
					sc.ehlo()
					sc.expect("MAIL")
					sc.send("250 2.1.0 ok")
					sc.expect("RCPT")
					sc.send("550 5.1.1 no such user")
				}
				sc.expect("RSET")
				sc.send("250 2.0.0 ok")
				if pipelining {
					sc.expect("MAIL")
					sc.expect("RCPT")
					sc.expect("DATA")
					sc.send("250 ok", "250 ok", "354 go")
					sc.data()
					sc.send("250 queued")
				} else {
					sc.transaction()
				}
				sc.expect("QUIT")
				sc.send("221 bye")
			})
			c := newClient(t, Options{RelayHost: relayTo(srv.Addr())})
			ctx := ctxTimeout(t, 20*time.Second)
			out := deliver(t, ctx, c, "s@example.org", []string{"nobody@example.net"}, strings.NewReader(testBody))
			if out[0].Code != 550 || out[0].Enhanced != "5.1.1" {
				t.Errorf("%+v", out[0])
			}
			wantDelivered(t, deliver(t, ctx, c, "s@example.org", []string{"u@example.net"}, strings.NewReader(testBody)))
			c.Close()
			if n := srv.conns.Load(); n != 1 {
				t.Errorf("%d connections, want 1", n)
			}
		})
	}
}

func TestAddressLimit(t *testing.T) {
	// Seven MX hosts on closed ports: at most maxAddrs connection attempts,
	// and no address lookups beyond them.
	res := &fakeResolver{mx: map[string][]*net.MX{}, ip: map[string][]string{}}
	for i := range 7 {
		h := fmt.Sprintf("mx%d.example.net.", i)
		res.mx["example.net."] = append(res.mx["example.net."], &net.MX{Host: h, Pref: uint16(i)})
		res.ip[h] = []string{"127.0.0.1"}
	}
	c := newClient(t, Options{Resolver: res, Port: freePort(t)})
	out := deliver(t, ctxTimeout(t, 20*time.Second), c, "s@example.org", []string{"u@example.net"}, strings.NewReader(testBody))
	if !out[0].Temporary || out[0].Enhanced != "4.4.1" {
		t.Errorf("%+v", out[0])
	}
	if calls := res.Calls(); len(calls) != 1+maxAddrs {
		t.Errorf("DNS queries %q, want the MX and %d address lookups", calls, maxAddrs)
	}
}

// BenchmarkRelay measures messages per second to one relay host over
// reused connections, as the queue's workers would send them.
func BenchmarkRelay(b *testing.B) {
	sink, err := smtpsink.Start(smtpsink.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer sink.Close()
	c, err := New(Options{Hostname: "bench.test", RelayHost: relayTo(sink.Addr()), MaxIdle: 16})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	body := []byte("Subject: bench\r\n\r\n" + strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd\r\n", 64))
	b.SetBytes(int64(len(body)))
	b.SetParallelism(2) // GOMAXPROCS×2 concurrent deliveries
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			res := c.Deliver(context.Background(), "s@example.org", []string{"r@example.net"}, bytes.NewReader(body))
			if res[0].Code != 250 {
				b.Errorf("%+v", res[0])
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}
