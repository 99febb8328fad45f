package pgstore

import (
	"context"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/mailgate/mailgate/internal/address"
	"github.com/mailgate/mailgate/internal/conffile"
	"github.com/mailgate/mailgate/internal/directory"
	"github.com/mailgate/mailgate/internal/settings"
)

// snapshotTx is a consistent read of the whole directory.
var snapshotTx = pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}

// Load reads every table in one repeatable-read transaction and builds the
// Snapshot as from files. The domains of the excluded_domains table are
// added to those of st (st itself is not changed). A server that cannot be
// reached is a *directory.TempError; a table whose content does not parse
// is a *directory.LoadError with "postgres:<table>:<id>" positions.
func (s *Store) Load(ctx context.Context, st *settings.Settings) (*directory.Snapshot, error) {
	files, excluded, err := s.read(ctx)
	if err != nil {
		return nil, err
	}
	stc := *st
	var diags []conffile.Diag
	stc.ExcludedDomains = slices.Clip(st.ExcludedDomains)
	for _, d := range excluded {
		c, err := address.ParseDomain(d)
		if err != nil {
			diags = append(diags, conffile.Diag{Pos: conffile.Pos{File: "postgres:excluded_domains"}, Severity: conffile.Warning,
				Msg: fmt.Sprintf("excluded domain %q ignored: %v", d, err)})
			continue
		}
		if !stc.IsExcluded(c) {
			stc.ExcludedDomains = append(stc.ExcludedDomains, c)
		}
	}
	snap, err := directory.BuildRendered(files, &stc)
	if err != nil {
		return nil, fmt.Errorf("postgres %s: %w", s.dest, err)
	}
	snap.Diags = append(snap.Diags, diags...)
	return snap, nil
}

// read renders every table in one snapshot transaction. An empty
// regexp_aliases is no postfix-regexp.cf (as a missing file).
func (s *Store) read(ctx context.Context) (map[string]directory.Rendered, []string, error) {
	files := make(map[string]directory.Rendered, len(tables))
	var excluded []string
	err := s.inTx(ctx, snapshotTx, "reading the directory", func(tx pgx.Tx) error {
		for _, t := range tables {
			r, err := t.render(ctx, tx, nil)
			if err != nil {
				return s.wrap(err, "reading %s", t.name)
			}
			if t.kind == kindRegexp && len(r.Origins) == 0 {
				continue
			}
			files[t.file] = r
		}
		rows, err := tx.Query(ctx, "SELECT domain FROM excluded_domains ORDER BY domain")
		if err != nil {
			return s.wrap(err, "reading excluded_domains")
		}
		excluded, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return s.wrap(err, "reading excluded_domains")
	})
	return files, excluded, err
}
