package pgstore

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/mailgate/mailgate/internal/conffile"
	"github.com/mailgate/mailgate/internal/directory"
	"github.com/mailgate/mailgate/internal/pcretable"
)

// kind is the shape of a table's lines.
type kind int

const (
	kindAccounts kind = iota // address|hash[|extra]
	kindList                 // key item[,item…] (or "name: item, item" for local aliases)
	kindRegexp               // a postfix-regexp.cf line, verbatim
	kindAccess               // address REJECT
)

// table maps a table to the file whose lines it holds.
type table struct {
	name    string // SQL table
	file    string // docker-mailserver file
	kind    kind
	keyCol  string // kindList: the key column
	listCol string // kindList: the text[] column
	local   bool   // kindList: postfix-aliases.cf syntax ("name: t1, t2")
}

// tables in the order of the files' documentation.
var tables = []*table{
	{name: "accounts", file: conffile.AccountsFile, kind: kindAccounts},
	{name: "aliases", file: conffile.VirtualFile, kind: kindList, keyCol: "alias_key", listCol: "targets"},
	{name: "regexp_aliases", file: conffile.RegexpFile, kind: kindRegexp},
	{name: "send_as", file: conffile.SendAsFile, kind: kindList, keyCol: "sender_key", listCol: "logins"},
	{name: "send_restrictions", file: conffile.SendAccessFile, kind: kindAccess},
	{name: "receive_restrictions", file: conffile.ReceiveAccessFile, kind: kindAccess},
	{name: "local_aliases", file: conffile.LocalAliasesFile, kind: kindList, keyCol: "name", listCol: "targets", local: true},
}

// tableOf returns the table of a file name.
func tableOf(file string) (*table, error) {
	for _, t := range tables {
		if t.file == file {
			return t, nil
		}
	}
	return nil, fmt.Errorf("postgres: no table holds %s", file)
}

// origin is the provenance of a row.
func (t *table) origin(id int64) conffile.Pos {
	return conffile.Pos{File: "postgres:" + t.name, Line: int(id)}
}

// row is a row of any table (the fields its kind uses).
type row struct {
	id    int64
	key   string   // the unique key (canonical); "" for kindRegexp
	list  []string // kindList: targets or logins
	text  string   // kindAccounts: the password hash; kindRegexp: the rule
	extra *string  // kindAccounts: the third field, when there is one
}

// columns are the table's columns but id, in the order of args.
func (t *table) columns() []string {
	switch t.kind {
	case kindAccounts:
		return []string{"address", "password_hash", "extra"}
	case kindList:
		return []string{t.keyCol, t.listCol}
	case kindRegexp:
		return []string{"rule"}
	}
	return []string{"address"}
}

// args are the values of columns for r.
func (t *table) args(r *row) []any {
	switch t.kind {
	case kindAccounts:
		return []any{r.key, r.text, r.extra}
	case kindList:
		return []any{r.key, r.list}
	case kindRegexp:
		return []any{r.text}
	}
	return []any{r.key}
}

func (t *table) selectSQL() string {
	return "SELECT id, " + strings.Join(t.columns(), ", ") + " FROM " + t.name + " ORDER BY id"
}

func (t *table) scan(rows pgx.Rows, r *row) error {
	switch t.kind {
	case kindAccounts:
		return rows.Scan(&r.id, &r.key, &r.text, &r.extra)
	case kindList:
		return rows.Scan(&r.id, &r.key, &r.list)
	case kindRegexp:
		return rows.Scan(&r.id, &r.text)
	}
	return rows.Scan(&r.id, &r.key)
}

// appendLine writes the line of r in the file's syntax, without a newline.
func (t *table) appendLine(b *strings.Builder, r *row) {
	switch t.kind {
	case kindAccounts:
		b.WriteString(r.key)
		b.WriteByte('|')
		b.WriteString(r.text)
		if r.extra != nil {
			b.WriteByte('|')
			b.WriteString(*r.extra)
		}
	case kindList:
		b.WriteString(r.key)
		sep := ","
		if t.local {
			b.WriteString(": ")
			sep = ", "
		} else {
			b.WriteByte(' ')
		}
		for i, it := range r.list {
			if i > 0 {
				b.WriteString(sep)
			}
			b.WriteString(it)
		}
	case kindRegexp:
		b.WriteString(r.text)
	case kindAccess:
		b.WriteString(r.key)
		b.WriteString(" REJECT")
	}
}

func (t *table) line(r *row) string {
	var b strings.Builder
	t.appendLine(&b, r)
	return b.String()
}

// read streams the rows of t in id order to fn.
func (t *table) read(ctx context.Context, tx pgx.Tx, fn func(*row)) error {
	rows, err := tx.Query(ctx, t.selectSQL())
	if err != nil {
		return err
	}
	defer rows.Close()
	var r row
	for rows.Next() {
		r = row{}
		if err := t.scan(rows, &r); err != nil {
			return fmt.Errorf("reading %s: %w", t.name, err)
		}
		fn(&r)
	}
	return rows.Err()
}

// render reads t as the text of its file, one row per line; keep, when not
// nil, is called with every row.
func (t *table) render(ctx context.Context, tx pgx.Tx, keep func(*row)) (directory.Rendered, error) {
	var b strings.Builder
	var origins []conffile.Pos
	var bad error
	err := t.read(ctx, tx, func(r *row) {
		start := b.Len()
		t.appendLine(&b, r)
		// A row written by hand in SQL must still be one line of its
		// file: a line break would shift every later row's position, a
		// leading blank would continue the line before, a '#' hide it.
		if line := b.String()[start:]; bad == nil {
			if strings.ContainsAny(line, "\r\n") {
				bad = fmt.Errorf("%s: the row holds a line break", t.origin(r.id))
			} else if line == "" || strings.IndexByte(" \t#", line[0]) >= 0 {
				bad = fmt.Errorf("%s: the row renders as %q, which is not a line of %s (blank, comment or continuation)", t.origin(r.id), line, t.file)
			}
		}
		b.WriteByte('\n')
		origins = append(origins, t.origin(r.id))
		if keep != nil {
			keep(r)
		}
	})
	if err == nil {
		err = bad
	}
	return directory.Rendered{Text: b.String(), Origins: origins}, err
}

// parseHostname qualifies bare targets while the text of a file is parsed
// into rows; rows keep bare targets bare, so it only decides which targets
// are duplicates.
const parseHostname = "localhost"

// parse parses the text of t's file into rows, in file order, with the
// file's parser: an error of the parser is returned as such. Lines with the
// same key are merged as the directory merges them (one row with the union
// of the targets); a duplicate account is an error.
func (t *table) parse(text, hostname string) ([]row, error) {
	if hostname == "" {
		hostname = parseHostname
	}
	switch t.kind {
	case kindAccounts:
		accs, diags := conffile.ParseAccounts(t.file, text)
		if err := diagErrors(diags); err != nil {
			return nil, err
		}
		out := make([]row, 0, len(accs))
		seen := make(map[string]int, len(accs))
		for _, a := range accs {
			k := a.Address.String()
			if line, ok := seen[k]; ok {
				return nil, fmt.Errorf("%s: account %s is already defined at line %d", a.Pos, k, line)
			}
			seen[k] = a.Pos.Line
			r := row{key: k, text: a.Hash}
			if a.HasExtra {
				extra := a.Extra
				r.extra = &extra
			}
			out = append(out, r)
		}
		return out, nil
	case kindRegexp:
		if _, err := pcretable.Parse(t.file, []byte(text)); err != nil {
			return nil, err
		}
		lines := regexpLines(text)
		out := make([]row, len(lines))
		for i, l := range lines {
			out[i] = row{text: l}
		}
		return out, nil
	case kindAccess:
		entries, diags := conffile.ParseAccess(t.file, text)
		if err := diagErrors(diags); err != nil {
			return nil, err
		}
		out := make([]row, 0, len(entries))
		seen := make(map[string]bool, len(entries))
		for _, e := range entries {
			k := e.Address.String()
			if !seen[k] {
				seen[k] = true
				out = append(out, row{key: k})
			}
		}
		return out, nil
	}
	return t.parseList(text, hostname)
}

// parseList parses a list file. Targets are stored canonical; a bare target
// (qualified with the host name when the directory is loaded) stays bare.
func (t *table) parseList(text, hostname string) ([]row, error) {
	m := newMerger()
	var diags []conffile.Diag
	switch {
	case t.file == conffile.SendAsFile:
		grants, d := conffile.ParseSendAs(t.file, text)
		diags = d
		for _, g := range grants {
			items := make([]string, len(g.Logins))
			for i, l := range g.Logins {
				items[i] = l.String()
			}
			m.add(g.Sender.String(), items, items)
		}
	case t.local:
		lines := lineTexts(t.file, text)
		locals, d := conffile.ParseLocalAliases(t.file, text, hostname)
		diags = d
		for _, l := range locals {
			_, rest, _ := strings.Cut(lines[l.Pos.Line], ":")
			items, qualified, err := targetItems(l.Pos, rest, l.Targets)
			if err != nil {
				return nil, err
			}
			m.add(l.Name, items, qualified)
		}
	default:
		lines := lineTexts(t.file, text)
		var err error
		diags = conffile.ParseVirtualFunc(t.file, text, hostname, func(a conffile.Alias) {
			if err != nil {
				return
			}
			l := strings.TrimLeft(lines[a.Pos.Line], " \t")
			rest := ""
			if i := strings.IndexAny(l, " \t"); i >= 0 {
				rest = l[i+1:]
			}
			var items, qualified []string
			items, qualified, err = targetItems(a.Pos, rest, a.Targets)
			if err == nil {
				m.add(a.Key.String(), items, qualified)
			}
		})
		if err != nil {
			return nil, err
		}
	}
	if err := diagErrors(diags); err != nil {
		return nil, err
	}
	return m.rows, nil
}

// targetItems pairs the targets written in rest with the parsed ones: a
// target with a domain is stored canonical, a bare one as its canonical
// local part. qualified are the parsed addresses, to find duplicates.
func targetItems(pos conffile.Pos, rest string, targets []conffile.Target) (items, qualified []string, err error) {
	written := strings.FieldsFunc(rest, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' })
	if len(written) != len(targets) {
		return nil, nil, fmt.Errorf("%s: cannot match the targets %q with their parsed form", pos, rest)
	}
	items = make([]string, len(targets))
	qualified = make([]string, len(targets))
	for i, tg := range targets {
		qualified[i] = tg.Address.String()
		if strings.Contains(written[i], "@") {
			items[i] = qualified[i]
		} else {
			items[i] = tg.Address.Local
		}
	}
	return items, qualified, nil
}

// merger collects list rows in order, merging those of one key.
type merger struct {
	rows  []row
	index map[string]int             // key → index in rows
	seen  map[string]map[string]bool // key → qualified targets
}

func newMerger() *merger {
	return &merger{index: map[string]int{}, seen: map[string]map[string]bool{}}
}

func (m *merger) add(key string, items, qualified []string) {
	i, ok := m.index[key]
	if !ok {
		i = len(m.rows)
		m.index[key] = i
		m.rows = append(m.rows, row{key: key, list: make([]string, 0, len(items))})
		m.seen[key] = make(map[string]bool, len(items))
	}
	seen := m.seen[key]
	for j, it := range items {
		if !seen[qualified[j]] {
			seen[qualified[j]] = true
			m.rows[i].list = append(m.rows[i].list, it)
		}
	}
}

// lineTexts maps the number of each logical line's first physical line to
// its text (continuation lines joined, as the parsers read them).
func lineTexts(file, text string) map[int]string {
	lines, _ := conffile.SplitLines(file, text, true)
	out := make(map[int]string, len(lines))
	for _, l := range lines {
		out[l.Num] = l.Text
	}
	return out
}

// regexpLines splits postfix-regexp.cf into logical lines as package
// pcretable reads it: blank and comment lines are skipped, a line that
// starts with white space continues the previous one (appended as it is,
// without the newline), trailing white space is removed.
func regexpLines(text string) []string {
	isSpace := func(c byte) bool {
		return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'
	}
	var out []string
	var cur strings.Builder
	have := false
	flush := func() {
		if have {
			out = append(out, strings.TrimRightFunc(cur.String(), func(r rune) bool { return r < 0x80 && isSpace(byte(r)) }))
		}
		cur.Reset()
		have = false
	}
	for phys := range strings.SplitSeq(text, "\n") {
		j := 0
		for j < len(phys) && isSpace(phys[j]) {
			j++
		}
		if j == len(phys) || phys[j] == '#' {
			continue
		}
		if j > 0 {
			if have {
				cur.WriteString(phys)
			}
			continue
		}
		flush()
		cur.WriteString(phys)
		have = true
	}
	flush()
	return out
}

// diagErrors joins the errors among diags (warnings do not stop a write).
func diagErrors(diags []conffile.Diag) error {
	var errs []error
	for _, d := range diags {
		if d.Severity == conffile.Error {
			errs = append(errs, d)
		}
	}
	return errors.Join(errs...)
}
