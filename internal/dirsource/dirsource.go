// Package dirsource opens the directory source that account_provisioner
// names, so that `mailgate serve` and every CLI command build their
// snapshot the same way:
//
//   - file: the DMS files of the configuration directory (the default);
//   - ldap: the same files (aliases, send-as grants, restrictions; not
//     postfix-accounts.cf), with LDAP asked per lookup (package ldapdir) for
//     accounts, aliases, groups, domains, senders and AUTH;
//   - postgres: the directory held in PostgreSQL (package pgstore), loaded
//     whole into the snapshot and reloaded on LISTEN/NOTIFY.
//
// Settings always come from mailgate.toml, the environment and flags.
package dirsource

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mailgate/mailgate/internal/directory"
	"github.com/mailgate/mailgate/internal/ldapdir"
	"github.com/mailgate/mailgate/internal/pgstore"
	"github.com/mailgate/mailgate/internal/settings"
)

// Source loads snapshots from the configured source. It keeps one LDAP
// connection pool or PostgreSQL pool open across loads, and replaces it when
// its settings change.
type Source struct {
	dir   string
	env   settings.Env
	flags map[string]string
	log   *slog.Logger

	mu      sync.Mutex
	ldap    *ldapdir.Source
	ldapCfg settings.LDAP
	retired []*ldapdir.Source // replaced LDAP sources, closed later
	pg      *pgstore.Store
	pgURL   string

	// Set by Watch (mailgate serve): the source it follows, fixed until a
	// restart, and whether its LISTEN connection is up. A reload is refused
	// while it is not: a node that cannot hear changes must not answer from
	// a directory that may be stale.
	watching  bool
	fixedURL  string
	listening atomic.Bool
}

// New returns a Source for a configuration directory, with the environment
// and the setting overrides of the command line.
func New(configDir string, env settings.Env, flags map[string]string, log *slog.Logger) *Source {
	if log == nil {
		log = slog.Default()
	}
	return &Source{dir: configDir, env: env, flags: flags, log: log}
}

// loadTimeout bounds one load from PostgreSQL. A load runs on the goroutine
// that also watches the LISTEN connection: a server that stops answering in
// the middle of a load is noticed after this long at most.
const loadTimeout = 10 * time.Second

// retireAfter is how long a replaced LDAP source stays open for the
// snapshots that still use it (a transaction keeps the snapshot it began
// with); far longer than any SMTP transaction can take.
const retireAfter = time.Hour

// Load reads the settings and builds a snapshot from the source they name.
// A source that cannot be reached gives an error wrapping a
// *directory.TempError.
func (s *Source) Load(ctx context.Context) (*directory.Snapshot, error) {
	st, err := settings.Load(s.dir, s.env, s.flags)
	if err != nil {
		return nil, err
	}
	switch st.AccountProvisioner {
	case "ldap":
		src, err := s.ldapSource(st.LDAP)
		if err != nil {
			return nil, err
		}
		snap, err := directory.Load(s.dir, st)
		if err != nil {
			return nil, err
		}
		snap.Ext = src
		return snap, nil
	case "postgres":
		if err := s.checkWatched(st); err != nil {
			return nil, err
		}
		store, err := s.store(ctx, st.DatabaseURL)
		if err != nil {
			return nil, err
		}
		ctx, cancel := context.WithTimeout(ctx, loadTimeout)
		defer cancel()
		return store.Load(ctx, st)
	default:
		return directory.Load(s.dir, st)
	}
}

// Unavailable is a snapshot that answers every question with a temporary
// failure: what serve runs on when the database is down at start. It needs
// only the settings.
func (s *Source) Unavailable(cause error) (*directory.Snapshot, error) {
	st, err := settings.Load(s.dir, s.env, s.flags)
	if err != nil {
		return nil, err
	}
	snap, err := directory.Build(nil, st)
	if err != nil {
		return nil, err
	}
	snap.Unavailable = cause
	return snap, nil
}

func (s *Source) ldapSource(cfg settings.LDAP) (*ldapdir.Source, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ldap != nil && s.ldapCfg == cfg {
		return s.ldap, nil
	}
	src, err := ldapdir.New(cfg, s.log.With("part", "ldap"))
	if err != nil {
		return nil, fmt.Errorf("LDAP source: %w", err)
	}
	if old := s.ldap; old != nil {
		// Snapshots in use may still ask the old pool for a while.
		s.retired = append(s.retired, old)
		time.AfterFunc(retireAfter, func() { old.Close() })
	}
	s.ldap, s.ldapCfg = src, cfg
	return src, nil
}

func (s *Source) store(ctx context.Context, url string) (*pgstore.Store, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pg != nil && s.pgURL == url {
		return s.pg, nil
	}
	store, err := pgstore.Open(ctx, url, s.log.With("part", "postgres"))
	if err != nil {
		return nil, err
	}
	if old := s.pg; old != nil {
		old.Close()
	}
	s.pg, s.pgURL = store, url
	return store, nil
}

// StoreAt returns the PostgreSQL store of url, opened on first use and kept
// for the loads (the CLI's import, export and edits use it).
func (s *Source) StoreAt(ctx context.Context, url string) (*pgstore.Store, error) {
	return s.store(ctx, url)
}

// Close closes the pools.
func (s *Source) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ldap != nil {
		s.ldap.Close()
		s.ldap = nil
	}
	for _, old := range s.retired {
		old.Close() // closing twice is harmless
	}
	s.retired = nil
	if s.pg != nil {
		s.pg.Close()
		s.pg = nil
	}
}

// checkWatched refuses a load while Watch follows the database and cannot
// hear its changes, and a change of the database under a running Watch.
func (s *Source) checkWatched(st *settings.Settings) error {
	s.mu.Lock()
	watching, fixed := s.watching, s.fixedURL
	s.mu.Unlock()
	if !watching {
		return nil
	}
	if st.DatabaseURL != fixed {
		return errors.New("database_url changed: restart mailgate serve to use the new database (the running one keeps following the old one)")
	}
	if !s.listening.Load() {
		return &directory.TempError{Source: "postgres", Err: errors.New("not listening for changes (LISTEN connection lost)")}
	}
	return nil
}

// Watch follows the PostgreSQL source until ctx ends: changed is called for
// every committed change (LISTEN/NOTIFY) and whenever the LISTEN connection
// is (re-)established, since changes may have been missed; down when it is
// lost. Until the LISTEN connection is up, Load refuses with a TempError.
// The database and the provisioner are those of the settings when Watch
// starts: changing them needs a restart. For the other sources it returns at
// once (the files are polled by package reload; LDAP is asked per lookup).
func (s *Source) Watch(ctx context.Context, changed func(), down func(error)) {
	st, err := settings.Load(s.dir, s.env, s.flags)
	if err != nil || st.AccountProvisioner != "postgres" {
		return
	}
	s.mu.Lock()
	s.watching, s.fixedURL = true, st.DatabaseURL
	s.mu.Unlock()
	var store *pgstore.Store
	for store == nil {
		if store, err = s.store(ctx, st.DatabaseURL); err != nil {
			down(err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(500 * time.Millisecond):
			}
		}
	}
	// The store reports Up at its first LISTEN: that load comes then.
	store.Watch(ctx, func(ev pgstore.Event) {
		switch ev.Kind {
		case pgstore.Down:
			s.listening.Store(false)
			down(&directory.TempError{Source: "postgres", Err: ev.Err})
		default: // Changed, Up
			s.listening.Store(true)
			changed()
		}
	})
}

// settings loads the effective settings.
func (s *Source) settings() (*settings.Settings, error) {
	return settings.Load(s.dir, s.env, s.flags)
}
