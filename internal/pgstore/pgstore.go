// Package pgstore keeps mailgate's directory in PostgreSQL, shared by
// several mailgate nodes (account_provisioner = postgres).
//
// Each table holds the lines of one docker-mailserver file, one row per line
// (ids give the order). Reading renders every table as the text of its file
// and builds the Snapshot with the files' own parsers (directory.BuildRendered),
// so both sources mean exactly the same; the provenance of an entry is
// "postgres:<table>:<row id>". Writing (Edit) renders the tables as
// confedit.Docs, runs the same edit operations as on files, and applies the
// difference to the rows in one transaction, serialized across nodes by an
// advisory lock. Every commit that changes the directory sends a
// notification on the channel "mailgate_directory"; Watch listens to it.
package pgstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/mailgate/mailgate/internal/directory"
)

// Channel is the LISTEN/NOTIFY channel of directory changes.
const Channel = "mailgate_directory"

// Advisory lock keys (pg_advisory_xact_lock): one serializes the writers of
// the directory, the other the schema migrations.
const (
	writeLockKey     int64 = 0x6d61696c67617465 // "mailgate"
	migrationLockKey int64 = 0x6d61696c67617466
)

// ConnectTimeout bounds the establishment of a connection.
const ConnectTimeout = 5 * time.Second

// Store is a PostgreSQL directory: a connection pool on one database.
type Store struct {
	pool *pgxpool.Pool
	cfg  *pgxpool.Config
	log  *slog.Logger
	dest string // host:port/database, for messages (never the password)
}

// Open connects to the database at url (a postgres:// URL or key=value
// pairs) and brings its schema up to date. A server that cannot be reached
// is a *directory.TempError.
func Open(ctx context.Context, url string, log *slog.Logger) (*Store, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// The message of a parse error may quote the connection string: do not
		// repeat it (it may hold a password).
		return nil, errors.New("postgres: invalid database_url (expected postgres://USER@HOST:PORT/DATABASE or key=value pairs)")
	}
	if cfg.ConnConfig.ConnectTimeout == 0 || cfg.ConnConfig.ConnectTimeout > ConnectTimeout {
		cfg.ConnConfig.ConnectTimeout = ConnectTimeout
	}
	if _, ok := cfg.ConnConfig.RuntimeParams["application_name"]; !ok {
		cfg.ConnConfig.RuntimeParams["application_name"] = "mailgate"
	}
	cfg.MaxConns = 8
	cfg.MinConns = 0
	cfg.MaxConnLifetime = time.Hour
	cfg.MaxConnIdleTime = 5 * time.Minute
	cfg.HealthCheckPeriod = 30 * time.Second
	s := &Store{cfg: cfg, log: log,
		dest: fmt.Sprintf("%s:%d/%s", cfg.ConnConfig.Host, cfg.ConnConfig.Port, cfg.ConnConfig.Database)}
	s.pool, err = pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, s.wrap(err, "creating the connection pool")
	}
	if err := s.pool.Ping(ctx); err != nil {
		s.pool.Close()
		return nil, s.wrap(err, "connecting")
	}
	if err := s.migrate(ctx); err != nil {
		s.pool.Close()
		return nil, err
	}
	return s, nil
}

// Close closes the connections.
func (s *Store) Close() {
	s.pool.Close()
}

// String names the database (without credentials).
func (s *Store) String() string { return "postgres " + s.dest }

// wrap adds context to err, and makes it a *directory.TempError when the
// server is down or unreachable (a retry may succeed).
func (s *Store) wrap(err error, what string, args ...any) error {
	if err == nil {
		return nil
	}
	e := fmt.Errorf("postgres %s: %s: %w", s.dest, fmt.Sprintf(what, args...), err)
	if isTemporary(err) {
		return &directory.TempError{Source: "postgres", Err: e}
	}
	return e
}

// isTemporary reports whether err means that the server could not be
// reached or went away, rather than that it refused the request.
func isTemporary(err error) bool {
	if directory.IsTemp(err) {
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case strings.HasPrefix(pgErr.Code, "08"), // connection exception
			strings.HasPrefix(pgErr.Code, "53"),          // insufficient resources (too many connections)
			strings.HasPrefix(pgErr.Code, "57P"),         // shutdown, cannot connect now
			pgErr.Code == "40001", pgErr.Code == "40P01": // serialization failure, deadlock
			return true
		}
		return false
	}
	var ce *pgconn.ConnectError
	var ne net.Error
	switch {
	case errors.As(err, &ce), errors.As(err, &ne), pgconn.Timeout(err), pgconn.SafeToRetry(err),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return true
	}
	// A connection closed under a query ("conn closed"), as pgx reports it.
	return strings.Contains(err.Error(), "conn closed") || strings.Contains(err.Error(), "closed network connection")
}

// inTx runs fn in a transaction that is committed when fn succeeds and
// rolled back otherwise.
func (s *Store) inTx(ctx context.Context, opts pgx.TxOptions, what string, fn func(tx pgx.Tx) error) error {
	tx, err := s.pool.BeginTx(ctx, opts)
	if err != nil {
		return s.wrap(err, "%s: beginning a transaction", what)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) // a no-op after Commit
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return s.wrap(err, "%s: commit", what)
	}
	return nil
}

// notify queues a change notification, delivered when tx commits.
func notify(ctx context.Context, tx pgx.Tx, payload string) error {
	_, err := tx.Exec(ctx, "SELECT pg_notify($1, $2)", Channel, payload)
	return err
}
