// Package connserver is the connection plumbing shared by mailgate's small
// line protocols for Postfix (the policy service and the socketmap): an
// accept loop with back-off on temporary errors, one goroutine per
// connection, and a Close that closes every listener and connection and
// waits for the handlers.
package connserver

import (
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"
)

// Server serves connections with Handle. Set Handle before Serve.
type Server struct {
	// Handle serves one connection; the connection is closed when it
	// returns (and when Close is called).
	Handle func(net.Conn)
	// Closed is what Serve returns after Close.
	Closed error
	// Logger receives accept errors; nil discards them.
	Logger *slog.Logger
	// MaxConns bounds the connections served at once; a connection beyond
	// it is closed at once (and logged). 0 means no bound.
	MaxConns int

	mu        sync.Mutex
	closed    bool
	listeners map[net.Listener]struct{}
	conns     map[net.Conn]struct{}
	wg        sync.WaitGroup
}

// Serve accepts connections on l and handles each one concurrently until
// Close; it then returns s.Closed. Any other error of l.Accept that is not
// temporary is returned. l is closed when Serve returns.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		l.Close()
		return s.Closed
	}
	if s.listeners == nil {
		s.listeners = map[net.Listener]struct{}{}
	}
	s.listeners[l] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
		l.Close()
	}()
	var delay time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			if s.IsClosed() {
				return s.Closed
			}
			if isTemporary(err) {
				delay = backoff(delay)
				if s.Logger != nil {
					s.Logger.Warn("accept error; retrying", "err", err, "delay", delay)
				}
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		switch s.track(c) {
		case closed:
			c.Close()
			return s.Closed
		case full:
			if s.Logger != nil {
				s.Logger.Warn("too many connections; closing a new one", "limit", s.MaxConns, "remote", c.RemoteAddr().String())
			}
			c.Close()
			continue
		}
		go func() {
			defer s.untrack(c)
			defer c.Close()
			s.Handle(c)
		}()
	}
}

// IsClosed reports whether Close was called.
func (s *Server) IsClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Close closes every listener and every connection, and waits until the
// connection handlers have returned.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	var err error
	for l := range s.listeners {
		if e := l.Close(); e != nil && !errors.Is(e, net.ErrClosed) && err == nil {
			err = e
		}
	}
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

type trackResult int

const (
	tracked trackResult = iota
	closed
	full
)

func (s *Server) track(c net.Conn) trackResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return closed
	}
	if s.MaxConns > 0 && len(s.conns) >= s.MaxConns {
		return full
	}
	if s.conns == nil {
		s.conns = map[net.Conn]struct{}{}
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return tracked
}

func (s *Server) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.wg.Done()
}

// isTemporary reports whether an Accept error is worth retrying (EMFILE,
// ECONNABORTED, a timeout): the error says so itself, as net/http checks.
func isTemporary(err error) bool {
	var t interface {
		Temporary() bool
		Timeout() bool
	}
	return errors.As(err, &t) && (t.Temporary() || t.Timeout())
}

func backoff(d time.Duration) time.Duration {
	if d == 0 {
		return 5 * time.Millisecond
	}
	if d *= 2; d > time.Second {
		d = time.Second
	}
	return d
}
