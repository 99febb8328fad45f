package pgstore

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// migrations are the schema changes, in order: migration i has version i+1.
// A migration is never changed once released; a new one is appended.
var migrations = []string{
	// 1: one table per docker-mailserver file, one row per line; ids give
	// the order of the lines.
	`
CREATE TABLE accounts (
	id            bigserial PRIMARY KEY,
	address       text NOT NULL UNIQUE,
	password_hash text NOT NULL,
	extra         text NULL
);
CREATE TABLE aliases (
	id        bigserial PRIMARY KEY,
	alias_key text NOT NULL UNIQUE,
	targets   text[] NOT NULL
);
CREATE TABLE regexp_aliases (
	id   bigserial PRIMARY KEY,
	rule text NOT NULL
);
CREATE TABLE send_as (
	id         bigserial PRIMARY KEY,
	sender_key text NOT NULL UNIQUE,
	logins     text[] NOT NULL
);
CREATE TABLE send_restrictions (
	id      bigserial PRIMARY KEY,
	address text NOT NULL UNIQUE
);
CREATE TABLE receive_restrictions (
	id      bigserial PRIMARY KEY,
	address text NOT NULL UNIQUE
);
CREATE TABLE local_aliases (
	id      bigserial PRIMARY KEY,
	name    text NOT NULL UNIQUE,
	targets text[] NOT NULL
);
CREATE TABLE excluded_domains (
	domain text PRIMARY KEY
);
`,
}

// migrate applies the migrations the database lacks, each in its own
// transaction under an advisory lock, so that nodes starting at once apply
// each migration exactly once.
func (s *Store) migrate(ctx context.Context) error {
	for i, sql := range migrations {
		version := i + 1
		applied := false
		err := s.inTx(ctx, pgx.TxOptions{}, fmt.Sprintf("schema migration %d", version), func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", migrationLockKey); err != nil {
				return s.wrap(err, "taking the migration lock")
			}
			if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS mailgate_schema_migrations (
	version    int PRIMARY KEY,
	applied_at timestamptz NOT NULL DEFAULT now()
)`); err != nil {
				return s.wrap(err, "creating mailgate_schema_migrations")
			}
			var n int
			if err := tx.QueryRow(ctx, "SELECT count(*) FROM mailgate_schema_migrations WHERE version = $1", version).Scan(&n); err != nil {
				return s.wrap(err, "reading the schema version")
			}
			if n > 0 {
				return nil
			}
			if _, err := tx.Exec(ctx, sql); err != nil {
				return s.wrap(err, "applying schema migration %d", version)
			}
			if _, err := tx.Exec(ctx, "INSERT INTO mailgate_schema_migrations (version, applied_at) VALUES ($1, now())", version); err != nil {
				return s.wrap(err, "recording schema migration %d", version)
			}
			applied = true
			return nil
		})
		if err != nil {
			return err
		}
		if applied {
			s.log.Info("postgres schema migrated", "database", s.dest, "version", version)
		}
	}
	var newest int
	if err := s.pool.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM mailgate_schema_migrations").Scan(&newest); err != nil {
		return s.wrap(err, "reading the schema version")
	}
	if newest > len(migrations) {
		s.log.Warn("postgres schema is newer than this mailgate", "database", s.dest, "schema_version", newest, "known", len(migrations))
	}
	return nil
}
