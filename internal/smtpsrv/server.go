// Package smtpsrv speaks SMTP for `mailgate serve` (SPEC §8): the inbound MX
// listener (no AUTH), submission with STARTTLS (RFC 6409, RFC 3207) and
// submissions with implicit TLS (RFC 8314). The protocol engine is
// github.com/emersion/go-smtp; every decision is made by package policy on
// the directory snapshot in force, exactly as the `mailgate check` commands
// make it:
//
//   - AUTH PLAIN/LOGIN (RFC 4954) through package authn: the login is the
//     account address in any case; 535 5.7.8 on failure, with per-client
//     back-off. Only after TLS on submission; never offered inbound.
//   - MAIL FROM: the address go-smtp hands over is re-validated with package
//     address (NUL, quoting, length, IDNA); a non-ASCII address needs the
//     SMTPUTF8 parameter (553 5.6.7, RFC 6531 §3.4). On submission MaySend
//     decides (SPEC §5: 553 5.7.1 "Sender address rejected: not owned by
//     user L", the send restriction, the null sender).
//   - RCPT TO: Route decides (SPEC §4): 550 5.1.1 for an unknown user in a
//     managed domain, the receive restriction, 451 4.6.0 for an alias loop;
//     inbound, a domain we do not manage is 554 5.7.1 Relay access denied.
//   - End of DATA: bare CR or LF anywhere is refused (RFC 5321 §2.3.8; the
//     "SMTP smuggling" defence), so is a header block over MaxHeader; on
//     submission CheckSubmission runs the SPEC §6 header checks, then a
//     missing Date or Message-ID is added (RFC 6409 §8.2, §8.3). A Received
//     field is prepended (RFC 5321 §4.4, with the RFC 3848 protocol names).
//     The message is handed to package delivery, and 250 is answered only
//     once every copy is on stable storage.
//
// Connections are limited per listener, overall and per client network (an
// IPv4 address or an IPv6 /64; 421 4.7.0 beyond),
// commands and the DATA transfer have timeouts, and Shutdown lets every
// transaction in progress finish while closing idle connections.
package smtpsrv

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailgate/mailgate/internal/authn"
	"github.com/mailgate/mailgate/internal/delivery"
	"github.com/mailgate/mailgate/internal/directory"
)

// Mode is the role of a listener.
type Mode int

// Listener roles.
const (
	Inbound     Mode = iota // MX, port 25: no AUTH, managed domains only
	Submission              // port 587: STARTTLS, then AUTH, then mail
	Submissions             // port 465: implicit TLS (RFC 8314 §3.3)
)

func (m Mode) String() string {
	switch m {
	case Inbound:
		return "smtp"
	case Submission:
		return "submission"
	case Submissions:
		return "submissions"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// MaxHeader is the largest header block accepted inbound. Submitted messages
// are held to the stricter header.MaxBlock by the SPEC §6 checks.
const MaxHeader = 1 << 20

// Acceptor stores an accepted message (package delivery).
type Acceptor interface {
	Accept(env delivery.Envelope, rcpts []delivery.Recipient, msg []byte) (delivery.Outcome, error)
}

// Config configures a Server.
type Config struct {
	Hostname string      // greeting, Received, Message-ID
	TLS      *tls.Config // STARTTLS and implicit TLS; required for Submission(s)
	// Snapshot returns the directory in force (package reload).
	Snapshot func() *directory.Snapshot
	Auth     *authn.Authenticator
	Deliver  Acceptor

	MaxMessageBytes int64 // 0: no limit
	MaxRecipients   int
	MaxConns        int
	MaxConnsPerIP   int
	CommandTimeout  time.Duration // waiting for a command line
	DataTimeout     time.Duration // the whole DATA transfer
	Logger          *slog.Logger
	Now             func() time.Time
}

// Server runs the SMTP listeners.
type Server struct {
	cfg     Config
	lim     *limiter
	log     *slog.Logger
	mu      sync.Mutex
	closed  bool // Shutdown or Close was called
	servers []*smtp.Server
	lns     []net.Listener
	seq     atomic.Uint64
	ctx     context.Context // canceled by Close: ends AUTH back-off waits
	cancel  context.CancelFunc
}

// New returns a Server; call Serve for each listener.
func New(cfg Config) (*Server, error) {
	if cfg.Snapshot == nil || cfg.Deliver == nil || cfg.Auth == nil {
		return nil, errors.New("smtpsrv: Snapshot, Deliver and Auth are required")
	}
	if cfg.Hostname == "" {
		return nil, errors.New("smtpsrv: Hostname is required")
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = 1000
	}
	if cfg.MaxConnsPerIP <= 0 {
		cfg.MaxConnsPerIP = 50
	}
	if cfg.MaxRecipients <= 0 {
		cfg.MaxRecipients = 1000
	}
	if cfg.CommandTimeout <= 0 {
		cfg.CommandTimeout = 5 * time.Minute
	}
	if cfg.DataTimeout <= 0 {
		cfg.DataTimeout = 10 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{cfg: cfg, lim: newLimiter(cfg.MaxConns, cfg.MaxConnsPerIP), log: cfg.Logger, ctx: ctx, cancel: cancel}, nil
}

// Serve accepts connections on l in the given role until Shutdown or Close.
// For Submissions, l is a plain TCP listener: Serve adds the TLS layer.
func (s *Server) Serve(l net.Listener, mode Mode) error {
	if mode != Inbound && s.cfg.TLS == nil {
		return fmt.Errorf("smtpsrv: %s needs a TLS certificate", mode)
	}
	ll := &limitListener{Listener: l, lim: s.lim, mode: mode, hostname: s.cfg.Hostname, plain: mode != Submissions,
		onRej: func(reason string, ip netip.Addr) {
			s.log.Warn("connection refused", "listener", mode.String(), "client", ip.String(), "reason", reason)
		}}
	var ln net.Listener = ll
	if mode == Submissions {
		ln = tls.NewListener(ll, s.cfg.TLS)
	}
	srv := smtp.NewServer(&backend{srv: s, mode: mode})
	srv.Domain = s.cfg.Hostname
	srv.TLSConfig = s.cfg.TLS
	srv.MaxMessageBytes = s.cfg.MaxMessageBytes
	srv.MaxRecipients = s.cfg.MaxRecipients
	srv.MaxLineLength = 2000 // RFC 5321 §4.5.3.1.4 (512, or more with extensions); Postfix line_length_limit is 2048
	srv.ReadTimeout = s.cfg.CommandTimeout
	srv.WriteTimeout = s.cfg.CommandTimeout
	srv.EnableSMTPUTF8 = true
	srv.AllowInsecureAuth = false
	srv.ErrorLog = slogLogger{s.log.With("listener", mode.String())}
	// Register the listener and the server together, and close the
	// listener here too on Shutdown and Close: go-smtp's own Close does not
	// reach a listener that its Serve has not registered yet.
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return nil
	}
	s.servers = append(s.servers, srv)
	s.lns = append(s.lns, ln)
	s.mu.Unlock()
	s.log.Info("listening", "listener", mode.String(), "addr", l.Addr().String())
	err := srv.Serve(ln)
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed || errors.Is(err, smtp.ErrServerClosed) {
		return nil // the listener was closed by Shutdown or Close
	}
	return err
}

// Open returns the number of open connections.
func (s *Server) Open() int { return s.lim.open() }

// Shutdown stops accepting connections, closes idle ones, and waits until
// every transaction in progress has been answered, or ctx ends; then it
// closes whatever is left. Nothing answered with 250 is affected: that was
// on stable storage before the answer.
func (s *Server) Shutdown(ctx context.Context) error {
	servers := s.stopListening()
	done := make(chan struct{})
	go func() {
		var wg sync.WaitGroup
		for _, srv := range servers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_ = srv.Shutdown(context.Background())
			}()
		}
		wg.Wait()
		close(done)
	}()
	s.cancel() // AUTH back-off waits end now
	s.lim.drain()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.lim.closeAll()
		<-done
		return ctx.Err()
	}
}

// Close closes every listener and connection at once.
func (s *Server) Close() error {
	s.cancel()
	servers := s.stopListening()
	for _, srv := range servers {
		_ = srv.Close()
	}
	s.lim.closeAll()
	return nil
}

// stopListening marks the server closed, closes every listener and returns
// the go-smtp servers to stop.
func (s *Server) stopListening() []*smtp.Server {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for _, l := range s.lns {
		l.Close()
	}
	return append([]*smtp.Server(nil), s.servers...)
}

type slogLogger struct{ l *slog.Logger }

// go-smtp logs accept errors, connection errors and recovered panics.
func (l slogLogger) Printf(format string, v ...any) { l.l.Warn(fmt.Sprintf(format, v...)) }
func (l slogLogger) Println(v ...any)               { l.l.Warn(fmt.Sprint(v...)) }
