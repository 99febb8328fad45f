package pgstore

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/mailgate/mailgate/internal/confedit"
	"github.com/mailgate/mailgate/internal/conffile"
)

// Edit is the write path of the management commands. In one transaction,
// serialized with every other writer by an advisory lock, it renders the
// tables of the named files as Docs, runs fn on them (the edit operations
// of package confedit, as on files), parses the edited text with the files'
// parsers, and applies the difference to the rows by key: a line removed is
// a DELETE, a line added an INSERT, a line changed an UPDATE (the row keeps
// its id). The other nodes are notified on commit. When fn or anything else
// fails, nothing is written.
//
// The changes returned name rows ("postgres:aliases:42") instead of lines.
func (s *Store) Edit(ctx context.Context, names []string, fn func(docs map[string]*confedit.Doc) ([]confedit.Change, error)) ([]confedit.Change, error) {
	type state struct {
		t       *table
		origins []conffile.Pos
		old     []row
	}
	states := make(map[string]*state, len(names))
	for _, n := range names {
		t, err := tableOf(n)
		if err != nil {
			return nil, err
		}
		states[n] = &state{t: t}
	}
	var changes []confedit.Change
	err := s.inTx(ctx, pgx.TxOptions{}, "edit", func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", writeLockKey); err != nil {
			return s.wrap(err, "taking the write lock")
		}
		docs := make(map[string]*confedit.Doc, len(names))
		for _, n := range names {
			st := states[n]
			st.old = st.old[:0]
			r, err := st.t.render(ctx, tx, func(r *row) {
				c := *r
				c.list = slices.Clone(r.list)
				st.old = append(st.old, c)
			})
			if err != nil {
				return s.wrap(err, "reading %s", st.t.name)
			}
			st.origins = r.Origins
			docs[n] = confedit.NewDoc(n, r.Text)
		}
		var err error
		changes, err = fn(docs)
		if err != nil {
			return err
		}
		var changed []string
		for _, n := range names {
			st := states[n]
			if !docs[n].Changed() {
				continue
			}
			rows, err := st.t.parse(string(docs[n].Bytes()), "")
			if err != nil {
				return fmt.Errorf("%s: %w", st.t.name, err)
			}
			k, err := s.apply(ctx, tx, st.t, st.old, rows)
			if err != nil {
				return err
			}
			if k > 0 {
				changed = append(changed, st.t.name)
			}
		}
		if len(changed) == 0 {
			return nil
		}
		return s.wrap(notify(ctx, tx, strings.Join(changed, ",")), "notifying the change")
	})
	if err != nil {
		return nil, err
	}
	// Report rows instead of the lines of the rendered text.
	for i := range changes {
		st, ok := states[changes[i].File]
		if !ok {
			continue
		}
		if l := changes[i].Line; l >= 1 && l <= len(st.origins) {
			changes[i].Line = st.origins[l-1].Line
		}
		changes[i].File = "postgres:" + st.t.name
	}
	return changes, nil
}

// apply turns the rows old of t into the rows new and returns the number of
// rows written.
func (s *Store) apply(ctx context.Context, tx pgx.Tx, t *table, old, new []row) (int, error) {
	insert := "INSERT INTO " + t.name + " (" + strings.Join(t.columns(), ", ") + ") VALUES (" + placeholders(1, len(t.columns())) + ")"
	if t.kind == kindRegexp {
		// No key: the rules are an ordered list, rewritten when it changes.
		same := len(old) == len(new)
		for i := 0; same && i < len(old); i++ {
			same = old[i].text == new[i].text
		}
		if same {
			return 0, nil
		}
		if _, err := tx.Exec(ctx, "DELETE FROM "+t.name); err != nil {
			return 0, s.wrap(err, "rewriting %s", t.name)
		}
		for i := range new {
			if _, err := tx.Exec(ctx, insert, t.args(&new[i])...); err != nil {
				return 0, s.wrap(err, "rewriting %s", t.name)
			}
		}
		return len(old) + len(new), nil
	}
	byKey := make(map[string]*row, len(old))
	for i := range old {
		byKey[old[i].key] = &old[i]
	}
	inNew := make(map[string]bool, len(new))
	for i := range new {
		inNew[new[i].key] = true
	}
	var gone []int64
	for i := range old {
		if !inNew[old[i].key] {
			gone = append(gone, old[i].id)
		}
	}
	n := 0
	if len(gone) > 0 {
		tag, err := tx.Exec(ctx, "DELETE FROM "+t.name+" WHERE id = ANY($1)", gone)
		if err != nil {
			return 0, s.wrap(err, "deleting from %s", t.name)
		}
		n += int(tag.RowsAffected())
	}
	cols := t.columns()
	sets := make([]string, len(cols))
	for i, c := range cols {
		sets[i] = fmt.Sprintf("%s = $%d", c, i+2)
	}
	update := "UPDATE " + t.name + " SET " + strings.Join(sets, ", ") + " WHERE id = $1"
	for i := range new {
		r := &new[i]
		if o, ok := byKey[r.key]; ok {
			if t.line(o) == t.line(r) {
				continue
			}
			if _, err := tx.Exec(ctx, update, append([]any{o.id}, t.args(r)...)...); err != nil {
				return 0, s.wrap(err, "updating %s %s", t.name, r.key)
			}
		} else if _, err := tx.Exec(ctx, insert, t.args(r)...); err != nil {
			return 0, s.wrap(err, "inserting into %s %s", t.name, r.key)
		}
		n++
	}
	return n, nil
}

// placeholders returns "$from, …, $(from+n-1)".
func placeholders(from, n int) string {
	p := make([]string, n)
	for i := range p {
		p[i] = fmt.Sprintf("$%d", from+i)
	}
	return strings.Join(p, ", ")
}
