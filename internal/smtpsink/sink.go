// Package smtpsink is a small in-memory SMTP server for tests and benchmarks
// of mailgate's SMTP client and servers.
//
// A Sink listens on a TCP address (127.0.0.1 on a free port by default),
// speaks ESMTP through github.com/emersion/go-smtp's server and keeps every
// accepted message in memory, in arrival order. It always offers PIPELINING,
// 8BITMIME, ENHANCEDSTATUSCODES, CHUNKING and SIZE (go-smtp's); STARTTLS
// when Options.TLSConfig is set, SMTPUTF8 when Options.SMTPUTF8 is true and
// DSN when Options.DSN is true.
//
// Message.Data is the message exactly as the client sent it after the
// transparency procedure is undone (RFC 5321 §4.5.2): line endings stay as
// received (CRLF), leading dots are removed, the terminating "." line is not
// part of it. A client sending a CRLF message therefore finds it byte for
// byte in Data.
//
// Replies can be scripted per recipient (Options.RcptReply) and per message
// (Options.DataReply); only accepted messages are recorded, with the
// recipients that were accepted.
//
// A Sink can be closed and a new one started on the same address
// (Options.Addr = old.Addr()), which is how tests simulate a server restart:
// Close closes the listener and every connection before it returns.
package smtpsink

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
)

// Message is one message accepted by the sink.
type Message struct {
	From     string    // reverse-path, "" for the null sender <>
	To       []string  // the accepted forward-paths, in RCPT order
	Data     []byte    // the message, byte-exact (CRLF as received, dot-unstuffed)
	Received time.Time // when the end of data was received

	Mail smtp.MailOptions // ESMTP parameters of MAIL FROM (BODY, SIZE, SMTPUTF8, RET, ENVID)
	Helo string           // the EHLO/HELO argument of the session
	TLS  bool             // the session was protected by STARTTLS
}

// Options configure a Sink. Zero values mean the defaults.
type Options struct {
	Addr      string      // default "127.0.0.1:0"
	TLSConfig *tls.Config // offers STARTTLS when set
	// RcptReply, when set, decides per recipient: nil accepts, else the
	// returned *smtp.SMTPError is the reply.
	RcptReply func(rcpt string) *smtp.SMTPError
	// DataReply, when set, decides at end of DATA: nil accepts (and the
	// message is recorded), else the returned error is the reply.
	DataReply func(m Message) *smtp.SMTPError
	SMTPUTF8  bool // advertise SMTPUTF8 (default false); 8BITMIME is always offered

	DSN     bool  // advertise DSN (RFC 3461), accepting RET and ENVID
	MaxSize int64 // advertise "SIZE n" and reject larger messages with 552 5.3.4; 0: "SIZE", no limit
}

// Sink is a running SMTP sink. Its methods are safe for concurrent use.
type Sink struct {
	opts   Options
	srv    *smtp.Server
	ln     net.Listener
	served chan struct{} // closed when Serve returned

	mu      sync.Mutex
	msgs    []Message
	conns   int
	open    map[net.Conn]struct{}
	closed  bool
	changed chan struct{} // closed and replaced whenever a message arrives
}

// Start listens on o.Addr and serves SMTP until Close.
func Start(o Options) (*Sink, error) {
	if o.Addr == "" {
		o.Addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", o.Addr)
	if err != nil {
		return nil, fmt.Errorf("smtpsink: listen on %s: %w", o.Addr, err)
	}
	s := &Sink{
		opts:    o,
		served:  make(chan struct{}),
		open:    make(map[net.Conn]struct{}),
		changed: make(chan struct{}),
	}
	s.ln = &countingListener{Listener: ln, s: s}

	srv := smtp.NewServer(backend{s})
	srv.Domain = "smtpsink.localhost"
	srv.TLSConfig = o.TLSConfig
	srv.EnableSMTPUTF8 = o.SMTPUTF8
	srv.EnableDSN = o.DSN
	srv.MaxMessageBytes = o.MaxSize
	srv.ReadTimeout = 5 * time.Minute
	srv.WriteTimeout = 5 * time.Minute
	srv.ErrorLog = log.New(io.Discard, "", 0)
	s.srv = srv

	go func() {
		defer close(s.served)
		_ = srv.Serve(s.ln) // returns nil after Close; any other error ends the sink too
	}()
	return s, nil
}

// Addr returns the address the sink listens on, "127.0.0.1:port".
func (s *Sink) Addr() string { return s.ln.Addr().String() }

// Messages returns a copy of the accepted messages, in arrival order.
func (s *Sink) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.copyLocked()
}

func (s *Sink) copyLocked() []Message {
	out := make([]Message, len(s.msgs))
	for i, m := range s.msgs {
		m.To = append([]string(nil), m.To...)
		m.Data = append([]byte(nil), m.Data...)
		out[i] = m
	}
	return out
}

// Count returns the number of accepted messages.
func (s *Sink) Count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.msgs)
}

// Wait waits until at least n messages were accepted and returns them (as
// Messages does), or returns ctx's error.
func (s *Sink) Wait(ctx context.Context, n int) ([]Message, error) {
	for {
		s.mu.Lock()
		if len(s.msgs) >= n {
			out := s.copyLocked()
			s.mu.Unlock()
			return out, nil
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, fmt.Errorf("smtpsink: waiting for %d messages (have %d): %w", n, s.Count(), ctx.Err())
		}
	}
}

// Conns returns the number of connections accepted so far.
func (s *Sink) Conns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns
}

// Close stops listening and closes every open connection; when it returns
// the address can be listened on again. The recorded messages stay readable.
// Closing a closed Sink does nothing.
func (s *Sink) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()

	err := s.srv.Close()
	// go-smtp closes only the listeners Serve has registered, which it may
	// not have done yet: close ours too.
	s.ln.Close()
	<-s.served
	// go-smtp registers a connection only once its goroutine runs; close
	// the ones it may not know of yet, so that none outlives Close.
	s.mu.Lock()
	for c := range s.open {
		c.Close()
	}
	s.mu.Unlock()
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("smtpsink: close: %w", err)
	}
	return nil
}

func (s *Sink) add(m Message) {
	s.mu.Lock()
	s.msgs = append(s.msgs, m)
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
}

// countingListener counts accepted connections and tracks the open ones.
type countingListener struct {
	net.Listener
	s *Sink
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, s: l.s}
	l.s.mu.Lock()
	l.s.conns++
	closed := l.s.closed
	if !closed {
		l.s.open[tc] = struct{}{}
	}
	l.s.mu.Unlock()
	if closed {
		c.Close()
	}
	return tc, nil
}

type trackedConn struct {
	net.Conn
	s    *Sink
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.s.mu.Lock()
		delete(c.s.open, c)
		c.s.mu.Unlock()
	})
	return c.Conn.Close()
}

type backend struct{ s *Sink }

func (b backend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	return &session{s: b.s, c: c}, nil
}

// session is one SMTP session; go-smtp calls it from the connection's
// goroutine only.
type session struct {
	s    *Sink
	c    *smtp.Conn
	from string
	mail smtp.MailOptions
	to   []string
}

func (ss *session) Reset() {
	ss.from, ss.mail, ss.to = "", smtp.MailOptions{}, nil
}

func (ss *session) Logout() error { return nil }

func (ss *session) Mail(from string, opts *smtp.MailOptions) error {
	ss.Reset()
	ss.from = from
	if opts != nil {
		ss.mail = *opts
	}
	return nil
}

func (ss *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	if f := ss.s.opts.RcptReply; f != nil {
		if e := f(to); e != nil {
			return e
		}
	}
	ss.to = append(ss.to, to)
	return nil
}

func (ss *session) Data(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err // go-smtp turns *smtp.SMTPError (552 too large) into the reply
	}
	_, isTLS := ss.c.TLSConnectionState()
	m := Message{
		From:     ss.from,
		To:       append([]string(nil), ss.to...),
		Data:     data,
		Received: time.Now(),
		Mail:     ss.mail,
		Helo:     ss.c.Hostname(),
		TLS:      isTLS,
	}
	if f := ss.s.opts.DataReply; f != nil {
		if e := f(m); e != nil {
			return e
		}
	}
	ss.s.add(m)
	return nil
}
