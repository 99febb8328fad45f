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
	pg      *pgstore.Store
	pgURL   string
}

// New returns a Source for a configuration directory, with the environment
// and the setting overrides of the command line.
func New(configDir string, env settings.Env, flags map[string]string, log *slog.Logger) *Source {
	if log == nil {
		log = slog.Default()
	}
	return &Source{dir: configDir, env: env, flags: flags, log: log}
}

// loadTimeout bounds one load from PostgreSQL.
const loadTimeout = 30 * time.Second

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
		time.AfterFunc(time.Minute, func() { old.Close() })
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

// Store returns the PostgreSQL store, opening it from the settings; an error
// when account_provisioner is not postgres.
func (s *Source) Store(ctx context.Context) (*pgstore.Store, error) {
	st, err := settings.Load(s.dir, s.env, s.flags)
	if err != nil {
		return nil, err
	}
	if st.AccountProvisioner != "postgres" {
		return nil, errors.New("account_provisioner is not postgres")
	}
	return s.store(ctx, st.DatabaseURL)
}

// Close closes the pools.
func (s *Source) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ldap != nil {
		s.ldap.Close()
		s.ldap = nil
	}
	if s.pg != nil {
		s.pg.Close()
		s.pg = nil
	}
}

// Watch follows the PostgreSQL source until ctx ends: changed is called for
// every committed change (LISTEN/NOTIFY) and when the database is back after
// an outage, down when it is lost. For the other sources it returns at once
// (the files are polled by package reload; LDAP is asked per lookup).
func (s *Source) Watch(ctx context.Context, changed func(), down func(error)) {
	st, err := settings.Load(s.dir, s.env, s.flags)
	if err != nil || st.AccountProvisioner != "postgres" {
		return
	}
	for ctx.Err() == nil {
		store, err := s.store(ctx, st.DatabaseURL)
		if err != nil {
			down(err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(500 * time.Millisecond):
			}
			continue
		}
		changed() // the store was just opened: load what it holds now
		store.Watch(ctx, func(ev pgstore.Event) {
			switch ev.Kind {
			case pgstore.Down:
				down(&directory.TempError{Source: "postgres", Err: ev.Err})
			default: // Changed, Up
				changed()
			}
		})
		return
	}
}

// settings loads the effective settings.
func (s *Source) settings() (*settings.Settings, error) {
	return settings.Load(s.dir, s.env, s.flags)
}
