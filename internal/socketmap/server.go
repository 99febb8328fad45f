package socketmap

import (
	"bufio"
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/mailgate/mailgate/internal/connserver"
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

	once sync.Once
	cs   connserver.Server
}

// conns returns the connection plumbing, set up on first use.
func (s *Server) conns() *connserver.Server {
	s.once.Do(func() {
		s.cs.Handle = s.handle
		s.cs.Closed = ErrServerClosed
		s.cs.Logger = s.log()
	})
	return &s.cs
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
func (s *Server) Serve(l net.Listener) error { return s.conns().Serve(l) }

// Close closes every listener and every connection, and waits until the
// connection handlers have returned. Serve then returns ErrServerClosed.
func (s *Server) Close() error { return s.conns().Close() }

// handle serves the lookups of one connection until EOF, an error, a
// malformed netstring or Close.
func (s *Server) handle(c net.Conn) {
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
			case s.conns().IsClosed():
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
