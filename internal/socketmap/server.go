package socketmap

import (
	"bufio"
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/mailgate/mailgate/internal/directory"
)

// MaxNetstring is the largest netstring payload accepted in a request and
// sent in a reply: Postfix's socketmap client refuses replies over 100000
// octets (DICT_SOCKMAP_DEF_MAX_REPLY in dict_sockmap.c).
const MaxNetstring = 100000

// DefaultIdleTimeout is the IdleTimeout used when it is zero. Postfix closes
// idle socketmap connections itself after 10s and old ones after 100s.
const DefaultIdleTimeout = 5 * time.Minute

// ErrServerClosed is returned by Serve after Close.
var ErrServerClosed = errors.New("socketmap: server closed")

// Server is a socketmap server. Its fields must be set before
// Serve and not changed afterwards.
type Server struct {
	// Snapshot returns the directory in force; nil means the backend is
	// down, and every lookup gets a TEMP answer.
	Snapshot func() *directory.Snapshot
	// Logger receives the log; nil discards it.
	Logger *slog.Logger
	// IdleTimeout is how long a connection may wait for (and take to send)
	// a request; 0 means DefaultIdleTimeout.
	IdleTimeout time.Duration

	mu        sync.Mutex
	closed    bool
	listeners map[net.Listener]struct{}
	conns     map[net.Conn]struct{}
	wg        sync.WaitGroup
}

func (s *Server) log() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

func (s *Server) idle() time.Duration {
	if s.IdleTimeout <= 0 {
		return DefaultIdleTimeout
	}
	return s.IdleTimeout
}

// Serve accepts connections on l and handles each one concurrently until
// Close; it then returns ErrServerClosed. Any other error of l.Accept that
// is not temporary is returned. l is closed when Serve returns.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		l.Close()
		return ErrServerClosed
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
			if s.isClosed() {
				return ErrServerClosed
			}
			if isTemporary(err) {
				delay = backoff(delay)
				s.log().Warn("socketmap accept error; retrying", "err", err, "delay", delay)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		if !s.track(c) {
			c.Close()
			return ErrServerClosed
		}
		go s.handle(c)
	}
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

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

func (s *Server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	if s.conns == nil {
		s.conns = map[net.Conn]struct{}{}
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return true
}

func (s *Server) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.wg.Done()
}

// Close closes every listener and every connection, and waits until the
// connection handlers have returned. Serve then returns ErrServerClosed.
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

// handle serves the lookups of one connection until EOF, an error, a
// malformed netstring or Close.
func (s *Server) handle(c net.Conn) {
	defer s.untrack(c)
	defer c.Close()
	log := s.log().With("client", c.RemoteAddr().String())
	defer func() {
		if p := recover(); p != nil {
			log.Error("socketmap: internal error; connection closed", "panic", p)
		}
	}()
	br := bufio.NewReader(c)
	bw := bufio.NewWriter(c)
	reply := func(r string) error {
		c.SetWriteDeadline(time.Now().Add(s.idle()))
		writeNetstring(bw, r)
		return bw.Flush()
	}
	for {
		c.SetReadDeadline(time.Now().Add(s.idle()))
		req, err := readNetstring(br, MaxNetstring)
		if err != nil {
			switch {
			case errors.Is(err, errEOF):
				log.Debug("socketmap connection closed by client")
			case errors.Is(err, errMalformed):
				log.Warn("socketmap: malformed netstring; connection closed", "err", err)
				reply("PERM malformed netstring")
			case s.isClosed():
			default:
				log.Debug("socketmap connection ended", "err", err)
			}
			return
		}
		if err := reply(s.answer(req, log)); err != nil {
			log.Debug("socketmap: writing the reply", "err", err)
			return
		}
	}
}
