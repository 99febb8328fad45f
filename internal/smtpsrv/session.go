package smtpsrv

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/mailgate/mailgate/internal/address"
	"github.com/mailgate/mailgate/internal/delivery"
	"github.com/mailgate/mailgate/internal/directory"
	"github.com/mailgate/mailgate/internal/policy"
)

type backend struct {
	srv  *Server
	mode Mode
}

// NewSession is called at the first EHLO/HELO of a connection, and again
// after STARTTLS.
func (b *backend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	s := &session{srv: b.srv, mode: b.mode, conn: c, helo: c.Hostname()}
	nc := c.Conn()
	if tc, ok := nc.(*tls.Conn); ok {
		s.tls = true
		nc = tc.NetConn()
	}
	s.tc, _ = nc.(*trackedConn)
	if s.tc != nil {
		s.ip = s.tc.ip
	}
	if b.mode == Inbound {
		return s, nil
	}
	return &authSession{s}, nil
}

// session is one SMTP session (between EHLO and QUIT, or STARTTLS).
type session struct {
	srv   *Server
	mode  Mode
	conn  *smtp.Conn
	tc    *trackedConn
	ip    netip.Addr
	helo  string
	tls   bool
	login address.Address // authenticated account; zero before AUTH
	// loginName is the login as the client gave it: what policy is asked
	// about (it maps an LDAP uid to its account again) and what a
	// rejection names, as Postfix names the SASL login.
	loginName string

	// The mail transaction, between MAIL and the end of DATA or RSET.
	snap     *directory.Snapshot
	from     address.Address // zero for the null sender
	inTx     bool
	utf8     bool
	body     string
	rcpts    []delivery.Recipient
	rcptSeen map[address.Address]bool
}

// authSession adds AUTH to a submission session; inbound sessions do not
// implement smtp.AuthSession, so go-smtp never offers AUTH there.
type authSession struct{ *session }

// smtpErr converts a policy reply to the error go-smtp writes as the reply.
func smtpErr(r policy.Reply) *smtp.SMTPError {
	e := &smtp.SMTPError{Code: r.Code, Message: r.Text, EnhancedCode: smtp.NoEnhancedCode}
	parts := strings.Split(r.Enhanced, ".")
	if len(parts) == 3 {
		for i, p := range parts {
			n, err := strconv.Atoi(p)
			if err != nil {
				return e
			}
			e.EnhancedCode[i] = n
		}
	}
	return e
}

func reply(code int, enh string, text string) *smtp.SMTPError {
	return smtpErr(policy.Reply{Code: code, Enhanced: enh, Text: text})
}

func (s *session) AuthMechanisms() []string { return nil }

func (a *authSession) AuthMechanisms() []string { return []string{sasl.Plain, sasl.Login} }

func (a *authSession) Auth(mech string) (sasl.Server, error) {
	if a.inTx {
		return nil, reply(503, "5.5.1", "AUTH not permitted during a mail transaction") // RFC 4954 §4
	}
	switch mech {
	case sasl.Plain:
		return sasl.NewPlainServer(func(identity, username, password string) error {
			// RFC 4616 §2: an authorization identity other than the login
			// would be acting as someone else; mailgate grants no proxying.
			if identity != "" && !strings.EqualFold(identity, username) {
				return reply(535, "5.7.8", "Authentication credentials invalid")
			}
			return a.authenticate(username, password)
		}), nil
	case sasl.Login:
		return &loginServer{check: a.authenticate}, nil
	}
	return nil, reply(504, "5.5.4", "Unrecognized authentication type")
}

// authWait bounds how long one AUTH may wait for the per-network back-off
// (authn): a client that hung up must not hold its connection slot for
// longer, and a shutdown cancels the wait at once.
const authWait = 35 * time.Second

func (a *authSession) authenticate(login, password string) error {
	ctx, cancel := context.WithTimeout(a.srv.ctx, authWait)
	defer cancel()
	acct, err := a.srv.cfg.Auth.Authenticate(ctx, a.srv.cfg.Snapshot(), a.ip, login, password)
	if err != nil {
		var r policy.Reply
		if errors.As(err, &r) {
			a.srv.log.Info("authentication failed", "listener", a.mode.String(), "client", a.ip.String(), "login", strconv.Quote(login), "reply", r.String())
			return smtpErr(r)
		}
		a.srv.log.Warn("authentication error", "client", a.ip.String(), "err", err)
		return reply(454, "4.7.0", "Temporary authentication failure")
	}
	a.login, a.loginName = acct, login
	a.srv.log.Debug("authenticated", "client", a.ip.String(), "login", acct.String())
	return nil
}

// loginServer is the server side of the LOGIN mechanism
// (draft-murchison-sasl-login-00): "Username:", "Password:" challenges,
// with the username possibly sent as the initial response.
type loginServer struct {
	check    func(login, password string) error
	state    int
	username string
}

func (l *loginServer) Next(response []byte) (challenge []byte, done bool, err error) {
	switch l.state {
	case 0:
		l.state = 1
		if len(response) == 0 {
			return []byte("Username:"), false, nil
		}
		fallthrough
	case 1:
		l.username = string(response)
		l.state = 2
		return []byte("Password:"), false, nil
	case 2:
		l.state = 3
		return nil, true, l.check(l.username, string(response))
	}
	return nil, true, reply(503, "5.5.1", "unexpected LOGIN response")
}

func (s *session) Mail(from string, opts *smtp.MailOptions) error {
	if s.mode != Inbound && s.login.IsZero() {
		return reply(530, "5.7.0", "Authentication required") // RFC 4954 §6
	}
	// A MAIL command ends any transaction in progress, whatever its outcome.
	s.endTx()
	var sender address.Address
	if from != "" {
		// go-smtp has already taken the path apart (dropping a source route,
		// which RFC 5321 Appendix C lets a server ignore, and unquoting a
		// quoted local part); what it hands over is validated again.
		a, err := address.Parse(from, address.Options{UTF8Local: true})
		if err != nil {
			return reply(501, "5.1.7", "Bad sender address syntax") // RFC 3463 X.1.7
		}
		if !opts.UTF8 && !isASCII(a.Local) {
			return reply(553, "5.6.7", "Non-ASCII sender address requires SMTPUTF8") // RFC 6531 §3.4
		}
		sender = a
	}
	snap := s.srv.cfg.Snapshot()
	if s.mode != Inbound {
		d := policy.MaySend(snap, s.loginName, sender.String())
		if !d.Allowed {
			s.srv.log.Info("sender rejected", "listener", s.mode.String(), "client", s.ip.String(), "login", s.login.String(), "sender", sender.String(), "rule", d.Rule, "reply", d.Reply.String())
			return smtpErr(d.Reply)
		}
	}
	s.snap, s.from, s.utf8, s.body = snap, sender, opts.UTF8, string(opts.Body)
	s.inTx = true
	if s.tc != nil {
		s.tc.setBusy(true)
	}
	return nil
}

func (s *session) Rcpt(to string, opts *smtp.RcptOptions) error {
	if !s.inTx {
		return reply(503, "5.5.1", "Bad sequence of commands: MAIL first")
	}
	a, err := address.Parse(to, address.Options{UTF8Local: true})
	if err != nil {
		return reply(501, "5.1.3", "Bad recipient address syntax")
	}
	if !s.utf8 && !isASCII(a.Local) {
		return reply(553, "5.6.7", "Non-ASCII recipient address requires SMTPUTF8")
	}
	if s.rcptSeen[a] {
		return nil // a duplicate RCPT: accepted once (RFC 5321 §4.1.1.3 allows either)
	}
	res := policy.RouteAddress(s.snap, a)
	switch res.Status {
	case policy.Deliver:
	case policy.Remote:
		if s.mode == Inbound {
			s.srv.log.Info("relay denied", "client", s.ip.String(), "rcpt", a.String())
			return reply(554, "5.7.1", "<"+a.String()+">: Relay access denied")
		}
	default:
		if res.Reply == nil {
			return reply(451, "4.3.0", "Temporary routing failure")
		}
		s.srv.log.Info("recipient rejected", "listener", s.mode.String(), "client", s.ip.String(), "rcpt", a.String(), "status", string(res.Status), "reply", res.Reply.String())
		return smtpErr(*res.Reply)
	}
	if s.rcptSeen == nil {
		s.rcptSeen = map[address.Address]bool{}
	}
	s.rcptSeen[a] = true
	s.rcpts = append(s.rcpts, delivery.Recipient{Original: a.String(), Route: res})
	return nil
}

func (s *session) Reset() {
	s.endTx()
	if s.tc != nil && s.tc.lim.isDraining() {
		s.tc.setBusy(false) // closes the connection: the server is stopping
	}
}

// endTx ends the mail transaction, if any: its state is cleared and the
// connection is no longer busy.
func (s *session) endTx() {
	wasBusy := s.inTx
	s.snap, s.from, s.inTx, s.utf8, s.body = nil, address.Address{}, false, false, ""
	s.rcpts, s.rcptSeen = nil, nil
	if wasBusy && s.tc != nil {
		s.tc.setBusy(false)
	}
}

func (s *session) Logout() error {
	s.endTx()
	return nil
}

func (s *session) protocol() string {
	// RFC 3848 §2: ESMTP, with S for TLS and A for AUTH.
	p := "ESMTP"
	if s.tls {
		p += "S"
	}
	if !s.login.IsZero() {
		p += "A"
	}
	return p
}

func (s *session) newID() string {
	return strconv.FormatInt(s.srv.cfg.Now().UnixNano(), 36) + strconv.FormatUint(s.srv.seq.Add(1), 36)
}

func (s *session) setDataDeadline() {
	if s.conn != nil {
		_ = s.conn.Conn().SetReadDeadline(time.Now().Add(s.srv.cfg.DataTimeout))
	}
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

func (s *session) String() string {
	return fmt.Sprintf("%s session from %s", s.mode, s.ip)
}
