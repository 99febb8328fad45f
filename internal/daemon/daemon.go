// Package daemon wires the parts of `mailgate serve` together (SPEC §8): the
// settings and the hot-reloaded directory (package reload), the TLS
// certificate (certs), the credential checks (authn), the Maildir store
// (maildir), the durable queue (queue) with its SMTP client (smtpclient), the
// delivery agent (delivery) and the SMTP listeners (smtpsrv). Run returns
// when its context is canceled (SIGTERM, SIGINT), after a graceful shutdown.
//
// Data directory layout:
//
//	DATA/mail/<domain>/<local>/{tmp,new,cur}   Maildirs (the DMS layout)
//	DATA/queue/                                 the outbound queue
//	DATA/tls/{cert,key}.pem                     the self-signed certificate, when no --tls-cert is given
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/mailgate/mailgate/internal/authn"
	"github.com/mailgate/mailgate/internal/certs"
	"github.com/mailgate/mailgate/internal/conffile"
	"github.com/mailgate/mailgate/internal/delivery"
	"github.com/mailgate/mailgate/internal/directory"
	"github.com/mailgate/mailgate/internal/dirsource"
	"github.com/mailgate/mailgate/internal/dovecotauth"
	"github.com/mailgate/mailgate/internal/maildir"
	"github.com/mailgate/mailgate/internal/milter"
	"github.com/mailgate/mailgate/internal/postfixconf"
	"github.com/mailgate/mailgate/internal/postfixpolicy"
	"github.com/mailgate/mailgate/internal/queue"
	"github.com/mailgate/mailgate/internal/reload"
	"github.com/mailgate/mailgate/internal/settings"
	"github.com/mailgate/mailgate/internal/smtpclient"
	"github.com/mailgate/mailgate/internal/smtpsrv"
	"github.com/mailgate/mailgate/internal/socketmap"
)

// queueConcurrency is the number of deliveries the queue makes at once.
const queueConcurrency = 8

// Options are the inputs of Run.
type Options struct {
	ConfigDir string
	DataDir   string
	Getenv    settings.Env
	Set       map[string]string // setting overrides (--set, --hostname, --relay-host)

	SMTP        string // inbound listener address; "" disables it
	Submission  string
	Submissions string
	TLSCert     string
	TLSKey      string

	// The Postfix integration listeners (SPEC §9); "" disables each.
	Policy    string // SMTP access policy delegation
	Socketmap string // socketmap tables
	Milter    string // header checks for Postfix's submission
	SASL      string // Dovecot authentication protocol

	// ShutdownGrace bounds how long transactions in progress may take to
	// finish after the signal; default 30 s.
	ShutdownGrace time.Duration
	Logger        *slog.Logger
}

// Run starts the server and blocks until ctx is canceled and the server has
// shut down. A configuration or start-up problem is returned at once.
func Run(ctx context.Context, o Options) error {
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	if o.ShutdownGrace <= 0 {
		o.ShutdownGrace = 30 * time.Second
	}
	// The directory source named by account_provisioner (files, LDAP or
	// PostgreSQL); the settings always come from the configuration directory.
	src := dirsource.New(o.ConfigDir, o.Getenv, o.Set, log)
	defer src.Close()
	// Loads are bounded by the source, not by ctx: transactions finishing
	// after the signal still get reloads.
	loadAll := func() (*directory.Snapshot, error) { return src.Load(context.Background()) }
	// With the Postfix integration, virtual(8) reads the accounts from a
	// table file kept current on every reload (postfixconf.VMailboxFile).
	var onReload func(*directory.Snapshot)
	if o.Socketmap != "" {
		onReload = func(snap *directory.Snapshot) {
			if snap.Available() != nil {
				return // never replace the table with an empty one
			}
			if err := postfixconf.WriteVMailbox(o.DataDir, snap); err != nil {
				log.Error("cannot update the Postfix mailbox table", "err", err)
			}
		}
	}
	w, err := reload.New(o.ConfigDir, loadAll, reload.Options{Logger: log, OnReload: onReload, Unavailable: src.Unavailable})
	if err != nil {
		return describeLoadError(o.ConfigDir, err)
	}
	if onReload != nil {
		if err := os.MkdirAll(o.DataDir, 0o700); err != nil {
			return fmt.Errorf("data directory: %w", err)
		}
		// A database down at start: keep the table of the last run.
		if snap := w.Snapshot(); snap.Available() == nil {
			if err := postfixconf.WriteVMailbox(o.DataDir, snap); err != nil {
				return err
			}
		}
	}
	snap := w.Snapshot()
	st := snap.Settings
	for _, d := range snap.Diags {
		log.Warn("configuration warning", "at", d.Pos.String(), "msg", d.Msg)
	}
	if err := os.MkdirAll(o.DataDir, 0o700); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}

	tc, err := certs.Load(o.TLSCert, o.TLSKey, o.DataDir, st.Hostname, log)
	if err != nil {
		return fmt.Errorf("TLS: %w", err)
	}

	store, err := maildir.Open(filepath.Join(o.DataDir, "mail"), maildir.Options{Hostname: st.Hostname})
	if err != nil {
		return fmt.Errorf("mail store: %w", err)
	}
	defer store.Close()

	client, err := smtpclient.New(smtpclient.Options{
		Hostname:  st.Hostname,
		RelayHost: st.RelayHost,
		// As many idle connections per destination as the queue runs
		// deliveries at once: a busy relay host is never redialed.
		MaxIdle: queueConcurrency,
		Logger:  log.With("part", "smtpclient"),
	})
	if err != nil {
		return fmt.Errorf("outbound SMTP: %w", err)
	}
	defer client.Close()

	agent := &delivery.Agent{Mail: store, Logger: log.With("part", "delivery"), Snapshot: w.Snapshot}
	maxSize := st.MessageSizeLimit
	if maxSize <= 0 {
		maxSize = 1 << 40
	}
	q, err := queue.Open(filepath.Join(o.DataDir, "queue"), queue.Options{
		Deliverer:   client,
		Bouncer:     agent,
		Hostname:    st.Hostname,
		Expiry:      st.QueueLifetime,
		BackoffBase: st.QueueBackoffMin,
		BackoffCap:  st.QueueBackoffMax,
		// A message grows by the Received field (and Date/Message-ID)
		// after the size check of the SMTP server.
		MaxSize: maxSize + 64<<10,
		Logger:  log.With("part", "queue"),
	})
	if err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	agent.Queue = q

	auth := authn.New(authn.Options{Logger: log.With("part", "authn")})
	srv, err := smtpsrv.New(smtpsrv.Config{
		Hostname:        st.Hostname,
		TLS:             tc,
		Snapshot:        w.Snapshot,
		Auth:            auth,
		Deliver:         agent,
		MaxMessageBytes: st.MessageSizeLimit,
		MaxRecipients:   st.MaxRecipients,
		MaxConns:        st.MaxConnections,
		MaxConnsPerIP:   st.MaxConnectionsPerIP,
		CommandTimeout:  st.SMTPTimeout,
		DataTimeout:     st.DataTimeout,
		Logger:          log.With("part", "smtp"),
	})
	if err != nil {
		q.Close()
		return err
	}

	type lis struct {
		mode smtpsrv.Mode
		l    net.Listener
	}
	var listeners []lis
	closeListeners := func() {
		for _, x := range listeners {
			x.l.Close()
		}
	}
	for _, spec := range []struct {
		mode smtpsrv.Mode
		addr string
	}{{smtpsrv.Inbound, o.SMTP}, {smtpsrv.Submission, o.Submission}, {smtpsrv.Submissions, o.Submissions}} {
		if spec.addr == "" {
			continue
		}
		l, err := net.Listen("tcp", spec.addr)
		if err != nil {
			closeListeners()
			q.Close()
			return fmt.Errorf("listener %s: %w", spec.mode, err)
		}
		listeners = append(listeners, lis{spec.mode, l})
	}
	// The Postfix integration listeners.
	type plugin struct {
		name string
		srv  interface {
			Serve(net.Listener) error
			Close() error
		}
		l net.Listener
	}
	var plugins []plugin
	for _, spec := range []struct {
		name, addr string
		srv        interface {
			Serve(net.Listener) error
			Close() error
		}
	}{
		{"policy", o.Policy, &postfixpolicy.Server{Snapshot: w.Snapshot, Logger: log.With("part", "policy")}},
		{"socketmap", o.Socketmap, &socketmap.Server{Snapshot: w.Snapshot, Logger: log.With("part", "socketmap")}},
		{"milter", o.Milter, &milter.Server{Snapshot: w.Snapshot, Hostname: st.Hostname, Logger: log.With("part", "milter")}},
		{"sasl", o.SASL, &dovecotauth.Server{Snapshot: w.Snapshot, Auth: auth, Logger: log.With("part", "sasl")}},
	} {
		if spec.addr == "" {
			continue
		}
		l, err := net.Listen("tcp", spec.addr)
		if err != nil {
			closeListeners()
			for _, p := range plugins {
				p.l.Close()
			}
			q.Close()
			return fmt.Errorf("listener %s: %w", spec.name, err)
		}
		plugins = append(plugins, plugin{spec.name, spec.srv, l})
	}
	if len(listeners) == 0 && len(plugins) == 0 {
		q.Close()
		return errors.New("every listener is disabled")
	}

	runCtx, stopRun := context.WithCancel(context.Background())
	var bg sync.WaitGroup
	bg.Add(3)
	go func() { defer bg.Done(); w.Run(runCtx) }()
	// PostgreSQL: every committed change is announced (LISTEN/NOTIFY) and
	// reloaded at once; an outage makes every answer a temporary failure
	// until the database is back.
	go func() { defer bg.Done(); src.Watch(runCtx, w.Reload, w.MarkUnavailable) }()
	go func() {
		defer bg.Done()
		if err := q.Run(runCtx); err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, queue.ErrClosed) {
			log.Error("queue runner stopped", "err", err)
		}
	}()

	serveErr := make(chan error, len(listeners)+len(plugins))
	for _, x := range listeners {
		go func() { serveErr <- srv.Serve(x.l, x.mode) }()
	}
	for _, p := range plugins {
		log.Info("listening", "listener", p.name, "addr", p.l.Addr().String())
		go func() {
			if err := p.srv.Serve(p.l); err != nil {
				serveErr <- fmt.Errorf("%s: %w", p.name, err)
			}
		}()
	}
	log.Info("mailgate serve started", "hostname", st.Hostname, "config", o.ConfigDir, "data", o.DataDir,
		"accounts", len(snap.Accounts), "relay_host", st.RelayHost, "queued", q.Len())

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down: finishing transactions in progress", "open_connections", srv.Open())
	case err := <-serveErr:
		runErr = fmt.Errorf("listener failed: %w", err)
		log.Error("listener failed, shutting down", "err", err)
	}
	for _, p := range plugins {
		p.srv.Close()
	}
	sctx, cancel := context.WithTimeout(context.Background(), o.ShutdownGrace)
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("shutdown grace period over; remaining connections closed", "err", err)
	}
	cancel()
	stopRun()
	queued := q.Len()
	q.Close()
	bg.Wait()
	log.Info("mailgate serve stopped", "queued", queued)
	return runErr
}

// describeLoadError turns a directory load error into one error listing
// the problems with their file:line.
func describeLoadError(dir string, err error) error {
	var le *directory.LoadError
	if !errors.As(err, &le) {
		return err
	}
	var msgs []error
	for _, d := range le.Diags {
		if d.Severity == conffile.Error {
			msgs = append(msgs, errors.New(d.Error()))
		}
	}
	return fmt.Errorf("the configuration in %s has errors (run 'mailgate config check'):\n%w", dir, errors.Join(msgs...))
}
