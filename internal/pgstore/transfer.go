package pgstore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/mailgate/mailgate/internal/confedit"
	"github.com/mailgate/mailgate/internal/conffile"
	"github.com/mailgate/mailgate/internal/directory"
	"github.com/mailgate/mailgate/internal/settings"
)

// TableCount is the number of rows of a table, and its file ("" for
// excluded_domains, which has none).
type TableCount struct {
	Table string `json:"table"`
	File  string `json:"file,omitempty"`
	Rows  int    `json:"rows"`
}

// Summary is what Import or Export did, table by table.
type Summary []TableCount

func (s Summary) String() string {
	var b strings.Builder
	for _, c := range s {
		if c.File == "" {
			fmt.Fprintf(&b, "%-21s %6d rows (no file)\n", c.Table, c.Rows)
			continue
		}
		fmt.Fprintf(&b, "%-21s %6d rows  %s\n", c.Table, c.Rows, c.File)
	}
	return b.String()
}

// Import replaces the content of every table with the files of a
// docker-mailserver configuration directory, in one transaction (a missing
// file empties its table; excluded_domains is left as it is). The directory
// is first loaded as mailgate loads it: one with errors is refused (the
// error is a *directory.LoadError). Rows keep the order of the lines; lines
// with the same key are merged as the directory merges them.
func (s *Store) Import(ctx context.Context, dir string, st *settings.Settings) (Summary, error) {
	texts := map[string][]byte{}
	for _, t := range tables {
		text, err := conffile.ReadString(filepath.Join(dir, t.file))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("import: reading %s: %w", t.file, err)
		}
		texts[t.file] = []byte(text)
	}
	// The same texts as are imported: the directory they make must load.
	if _, err := directory.Build(texts, st); err != nil {
		return nil, fmt.Errorf("import: %s: %w", dir, err)
	}
	parsed := make([][]row, len(tables))
	for i, t := range tables {
		rows, err := t.parse(string(texts[t.file]), st.Hostname)
		if err != nil {
			return nil, fmt.Errorf("import: %w", err)
		}
		parsed[i] = rows
	}
	var sum Summary
	err := s.inTx(ctx, pgx.TxOptions{}, "import", func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", writeLockKey); err != nil {
			return s.wrap(err, "taking the write lock")
		}
		for i, t := range tables {
			if _, err := tx.Exec(ctx, "DELETE FROM "+t.name); err != nil {
				return s.wrap(err, "emptying %s", t.name)
			}
			rows := parsed[i]
			n, err := tx.CopyFrom(ctx, pgx.Identifier{t.name}, t.columns(), pgx.CopyFromSlice(len(rows), func(j int) ([]any, error) {
				return t.args(&rows[j]), nil
			}))
			if err != nil {
				return s.wrap(err, "filling %s", t.name)
			}
			sum = append(sum, TableCount{Table: t.name, File: t.file, Rows: int(n)})
		}
		return s.wrap(notify(ctx, tx, "import"), "notifying the change")
	})
	if err != nil {
		return nil, err
	}
	s.log.Info("directory imported into postgres", "dir", dir, "database", s.dest)
	return sum, nil
}

// Export writes the tables as the files of a docker-mailserver
// configuration directory (created when missing), each replaced atomically;
// the file of an empty table is removed. postfix-accounts.cf gets mode 0600.
// excluded_domains has no file and is not exported.
func (s *Store) Export(ctx context.Context, dir string) error {
	_, err := s.ExportSummary(ctx, dir)
	return err
}

// ExportSummary is Export, and says what it wrote.
func (s *Store) ExportSummary(ctx context.Context, dir string) (Summary, error) {
	files, excluded, err := s.read(ctx)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	var sum Summary
	for _, t := range tables {
		path := filepath.Join(dir, t.file)
		r, ok := files[t.file]
		if !ok || len(r.Origins) == 0 {
			if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("export: removing %s: %w", path, err)
			}
			sum = append(sum, TableCount{Table: t.name, File: t.file})
			continue
		}
		perm := os.FileMode(0o644)
		if t.kind == kindAccounts {
			perm = 0o600
		}
		if err := confedit.WriteFile(path, []byte(r.Text), perm); err != nil {
			return nil, fmt.Errorf("export: %w", err)
		}
		if t.kind == kindAccounts {
			if err := os.Chmod(path, 0o600); err != nil {
				return nil, fmt.Errorf("export: %w", err)
			}
		}
		sum = append(sum, TableCount{Table: t.name, File: t.file, Rows: len(r.Origins)})
	}
	sum = append(sum, TableCount{Table: "excluded_domains", Rows: len(excluded)})
	if len(excluded) > 0 {
		s.log.Warn("excluded_domains has no docker-mailserver file and was not exported: set excluded_domains in the settings instead",
			"domains", strings.Join(excluded, ","))
	}
	return sum, nil
}
