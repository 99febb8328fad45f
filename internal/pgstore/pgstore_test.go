package pgstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mailgate/mailgate/internal/address"
	"github.com/mailgate/mailgate/internal/confedit"
	"github.com/mailgate/mailgate/internal/conffile"
	"github.com/mailgate/mailgate/internal/directory"
	"github.com/mailgate/mailgate/internal/pgstore/pgtest"
	"github.com/mailgate/mailgate/internal/policy"
	"github.com/mailgate/mailgate/internal/settings"
)

const fixture = "../../testdata/dms"

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func testSettings(t testing.TB) *settings.Settings {
	t.Helper()
	st, err := settings.Load(t.TempDir(), func(string) (string, bool) { return "", false },
		map[string]string{"hostname": "mail.example.test"})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func testLog(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func open(t testing.TB, url string) *Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := Open(ctx, url, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// imported is a Store on a new database holding the fixture.
func imported(t testing.TB) (*Store, string) {
	t.Helper()
	url := pgtest.DB(t)
	s := open(t, url)
	if _, err := s.Import(context.Background(), fixture, testSettings(t)); err != nil {
		t.Fatal(err)
	}
	return s, url
}

func TestMigrations(t *testing.T) {
	t.Parallel()
	url := pgtest.DB(t)
	open(t, url)
	s := open(t, url) // again: nothing to do
	var n int
	if err := s.pool.QueryRow(context.Background(), "SELECT count(*) FROM mailgate_schema_migrations").Scan(&n); err != nil || n != len(migrations) {
		t.Fatalf("migrations recorded: %d, %v; want %d", n, err, len(migrations))
	}

	// Nodes starting at once on an empty database.
	url = pgtest.DB(t)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() {
			s, err := Open(context.Background(), url, testLog(t))
			if err == nil {
				s.Close()
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Errorf("concurrent Open: %v", err)
		}
	}
	s = open(t, url)
	if err := s.pool.QueryRow(context.Background(), "SELECT count(*) FROM mailgate_schema_migrations").Scan(&n); err != nil || n != len(migrations) {
		t.Fatalf("after concurrent Opens, migrations recorded: %d, %v", n, err)
	}
}

func TestOpenDown(t *testing.T) {
	t.Parallel()
	start := time.Now()
	_, err := Open(context.Background(), "postgres://mailgate@127.0.0.1:1/mailgate?sslmode=disable", nil)
	if !directory.IsTemp(err) {
		t.Fatalf("Open of a closed port: %v, want a TempError", err)
	}
	if d := time.Since(start); d > 6*time.Second {
		t.Errorf("Open took %v", d)
	}
	t.Log(err)
	if _, err := Open(context.Background(), "mysql://x", nil); err == nil || directory.IsTemp(err) {
		t.Errorf("bad URL: %v", err)
	}
}

// The cases of the check tests (test/e2e/check_test.go) and more.
var (
	sendCases = [][2]string{
		{"added@localhost.localdomain", "user2@localhost.localdomain"},
		{"user1@localhost.localdomain", "alias1@localhost.localdomain"},
		{"user1@localhost.localdomain", "test123@localhost.localdomain"},
		{"user1@localhost.localdomain", "user3@localhost.localdomain"},
		{"user3@localhost.localdomain", "user1@localhost.localdomain"},
		{"user2@otherdomain.tld", "prefixtest@localhost.localdomain"},
		{"user2@otherdomain.tld", "noreply@external.example"},
		{"user1@localhost.localdomain", "noreply@external.example"},
		{"user1@localhost.localdomain", "wildcard@localdomain2.com"},
		{"user1@localhost.localdomain", "user1+tag@localhost.localdomain"},
		{"user1@localhost.localdomain", "ALIAS1@LocalHost.LocalDomain"},
		{"user1@localhost.localdomain", "postmaster@localhost.localdomain"},
		{"user1@localhost.localdomain", "postmaster@gmail.com"},
		{"user1@localhost.localdomain", "alias2@localhost.localdomain"},
		{"user2@otherdomain.tld", "alias2@localhost.localdomain"},
		{"user3@localhost.localdomain", "alias2@localhost.localdomain"},
		{"added@localhost.localdomain", "alias2@localhost.localdomain"},
		{"user1@localhost.localdomain", "user1@localhost.localdomain"},
		{"user2@otherdomain.tld", "first.name@localhost.localdomain"},
		{"user1@localhost.localdomain", ""},
		{"nobody@localhost.localdomain", "user1@localhost.localdomain"},
	}
	routeCases = []string{
		"alias1@localhost.localdomain", "alias1+test@localhost.localdomain", "wildcard@localdomain2.com",
		"test123@localhost.localdomain", "nouser@localhost.localdomain", "alias2@localhost.localdomain",
		"someone@gmail.com", "user1@localhost.localdomain", "user2@otherdomain.tld", "user3@localhost.localdomain",
		"postmaster@localhost.localdomain", "bounce-x@localhost.localdomain", "first-name@localhost.localdomain",
		"noreply@external.example", "not an address", "root@mail.example.test",
	}
	posRE = regexp.MustCompile(`(postgres:[a-z_]+|postfix-[a-z-]+\.cf)(:\d+)?`)
)

// normal is the JSON of v without provenance positions.
func normal(t testing.TB, v any) string {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var x any
	if err := json.Unmarshal(data, &x); err != nil {
		t.Fatal(err)
	}
	var strip func(any) any
	strip = func(x any) any {
		switch v := x.(type) {
		case map[string]any:
			delete(v, "pos")
			for k, e := range v {
				v[k] = strip(e)
			}
		case []any:
			for i, e := range v {
				v[i] = strip(e)
			}
		case string:
			return posRE.ReplaceAllString(v, "POS")
		}
		return x
	}
	out, _ := json.Marshal(strip(x))
	return string(out)
}

// sameDecisions checks that two snapshots decide alike.
func sameDecisions(t *testing.T, want, got *directory.Snapshot) {
	t.Helper()
	for _, c := range sendCases {
		w, g := policy.MaySend(want, c[0], c[1]), policy.MaySend(got, c[0], c[1])
		if w.Allowed != g.Allowed || w.Reply != g.Reply || normal(t, w) != normal(t, g) {
			t.Errorf("MaySend %s %s:\nfiles:    %s\npostgres: %s", c[0], c[1], normal(t, w), normal(t, g))
		}
	}
	for _, r := range routeCases {
		w, g := policy.Route(want, r), policy.Route(got, r)
		if w.Status != g.Status || normal(t, w.Reply) != normal(t, g.Reply) || normal(t, w) != normal(t, g) {
			t.Errorf("Route %s:\nfiles:    %s\npostgres: %s", r, normal(t, w), normal(t, g))
		}
	}
}

// content is a snapshot's directory without positions, for comparisons.
func content(snap *directory.Snapshot) string {
	var lines []string
	for a, acc := range snap.Accounts {
		lines = append(lines, fmt.Sprintf("account %s %s %q %v", a, acc.Hash, acc.Extra, acc.HasExtra))
	}
	for k, al := range snap.Aliases {
		var ts []string
		for _, tg := range al.Targets {
			ts = append(ts, tg.Address.String())
		}
		lines = append(lines, fmt.Sprintf("alias %s %s", k, strings.Join(ts, ",")))
	}
	for k, al := range snap.LocalAliases {
		var ts []string
		for _, tg := range al.Targets {
			ts = append(ts, tg.Address.String())
		}
		lines = append(lines, fmt.Sprintf("local %s %s", k, strings.Join(ts, ",")))
	}
	for k, gs := range snap.SendAs {
		for _, g := range gs {
			lines = append(lines, fmt.Sprintf("send-as %s %s", k, g.Login))
		}
	}
	for a := range snap.SendRestrict {
		lines = append(lines, "send-restrict "+a.String())
	}
	for a := range snap.RecvRestrict {
		lines = append(lines, "receive-restrict "+a.String())
	}
	for d, c := range snap.Domains {
		lines = append(lines, fmt.Sprintf("domain %s %s", d, c))
	}
	if snap.Regexp != nil {
		for _, r := range snap.Regexp.Rules() {
			lines = append(lines, fmt.Sprintf("regexp %s %s %v", r.Rule, r.Result, r.Negated))
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func TestImportMatchesFiles(t *testing.T) {
	t.Parallel()
	url := pgtest.DB(t)
	s := open(t, url)
	st := testSettings(t)
	sum, err := s.Import(context.Background(), fixture, st)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("import:\n%s", sum)
	counts := map[string]int{}
	for _, c := range sum {
		counts[c.Table] = c.Rows
	}
	if counts["accounts"] != 4 || counts["aliases"] != 7 || counts["regexp_aliases"] != 3 || counts["send_as"] != 2 || counts["send_restrictions"] != 0 {
		t.Errorf("import counts: %v", counts)
	}
	want, got := sameDirectory(t, s, fixture, st)
	sameDecisions(t, want, got)
	// Provenance names rows.
	d := policy.MaySend(got, "user1@localhost.localdomain", "alias1@localhost.localdomain")
	if !strings.Contains(normalPos(d), `"file":"postgres:aliases","line":1`) {
		t.Errorf("provenance: %+v", d.Grant)
	}
	r := policy.Route(got, "test123@localhost.localdomain")
	if b, _ := json.Marshal(r); !strings.Contains(string(b), `"file":"postgres:regexp_aliases"`) {
		t.Errorf("regexp provenance: %s", b)
	}

	// A directory with errors is refused, and nothing changes.
	bad := t.TempDir()
	os.WriteFile(filepath.Join(bad, conffile.AccountsFile), []byte("nonsense\n"), 0o600)
	_, err = s.Import(context.Background(), bad, st)
	var le *directory.LoadError
	if !errors.As(err, &le) {
		t.Fatalf("import of a broken directory: %v", err)
	}
	if again, err := s.Load(context.Background(), st); err != nil || content(again) != content(got) {
		t.Errorf("a refused import changed the tables: %v", err)
	}

	// Excluded domains are added to the settings' ones.
	if _, err := s.pool.Exec(context.Background(), "INSERT INTO excluded_domains VALUES ('LocalDomain2.com')"); err != nil {
		t.Fatal(err)
	}
	ex, err := s.Load(context.Background(), st)
	if err != nil {
		t.Fatal(err)
	}
	if ex.IsManaged("localdomain2.com") || len(st.ExcludedDomains) != 0 || !slices.Contains(ex.Settings.ExcludedDomains, "localdomain2.com") {
		t.Errorf("excluded_domains: managed %v, settings %v / %v", ex.IsManaged("localdomain2.com"), st.ExcludedDomains, ex.Settings.ExcludedDomains)
	}
}

func normalPos(d policy.Decision) string {
	b, _ := json.Marshal(d)
	return string(b)
}

func TestImportMerge(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	files := map[string]string{
		conffile.VirtualFile:      "a@x.example b@y.example\n# comment\nA@X.example c@y.example,b@y.example\nbare u1, u2\n\n",
		conffile.RegexpFile:       "# rules\n/^r1@/ b@y.example\n/^r2@/\n  b@y.example\n",
		conffile.SendAccessFile:   "b@y.example REJECT\nB@y.example reject\n",
		conffile.LocalAliasesFile: "postmaster: root, b@y.example\nroot: b@y.example\n",
		conffile.AccountsFile:     "b@y.example|{SHA512-CRYPT}$6$x$y|extra|more\n",
	}
	for n, text := range files {
		os.WriteFile(filepath.Join(dir, n), []byte(text), 0o600)
	}
	s := open(t, pgtest.DB(t))
	st := testSettings(t)
	if _, err := s.Import(context.Background(), dir, st); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	if err := s.Export(context.Background(), out); err != nil {
		t.Fatal(err)
	}
	wantFiles := map[string]string{
		conffile.VirtualFile:      "a@x.example b@y.example,c@y.example\nbare u1,u2\n",
		conffile.RegexpFile:       "/^r1@/ b@y.example\n/^r2@/  b@y.example\n",
		conffile.SendAccessFile:   "b@y.example REJECT\n",
		conffile.LocalAliasesFile: "postmaster: root, b@y.example\nroot: b@y.example\n",
		conffile.AccountsFile:     "b@y.example|{SHA512-CRYPT}$6$x$y|extra|more\n",
	}
	for n, want := range wantFiles {
		got, err := os.ReadFile(filepath.Join(out, n))
		if err != nil || string(got) != want {
			t.Errorf("%s: %q, %v; want %q", n, got, err, want)
		}
	}
	sameDirectory(t, s, dir, st)
}

func TestExportRoundTrip(t *testing.T) {
	t.Parallel()
	s, _ := imported(t)
	ctx := context.Background()
	st := testSettings(t)
	// Every table non-empty.
	if _, err := s.Edit(ctx, []string{conffile.SendAccessFile, conffile.ReceiveAccessFile, conffile.LocalAliasesFile}, func(d map[string]*confedit.Doc) ([]confedit.Change, error) {
		d[conffile.SendAccessFile].Append("user3@localhost.localdomain REJECT")
		d[conffile.ReceiveAccessFile].Append("alias2@localhost.localdomain REJECT")
		d[conffile.LocalAliasesFile].Append("postmaster: root, user1@localhost.localdomain")
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "export")
	sum, err := s.ExportSummary(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("export:\n%s", sum)
	fi, err := os.Stat(filepath.Join(dir, conffile.AccountsFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("accounts file: %v %v", fi, err)
	}
	want, err := s.Load(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	got, err := directory.Load(dir, st)
	if err != nil {
		t.Fatal(err)
	}
	if content(want) != content(got) {
		t.Errorf("export differs:\npostgres:\n%s\nfiles:\n%s", content(want), content(got))
	}
	sameDecisions(t, want, got)
	// The export imports as it was.
	s2 := open(t, pgtest.DB(t))
	if _, err := s2.Import(ctx, dir, st); err != nil {
		t.Fatal(err)
	}
	again, err := s2.Load(ctx, st)
	if err != nil || content(again) != content(want) {
		t.Errorf("re-import differs: %v", err)
	}
}

// rows returns the lines of a table with their ids.
func rows(t *testing.T, s *Store, name string) map[string]int64 {
	t.Helper()
	tb := tables[slices.IndexFunc(tables, func(x *table) bool { return x.name == name })]
	out := map[string]int64{}
	err := s.inTx(context.Background(), snapshotTx, "test", func(tx pgx.Tx) error {
		return tb.read(context.Background(), tx, func(r *row) { out[tb.line(r)] = r.id })
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func addr(s string) address.Address {
	a, err := address.Parse(s, address.Options{UTF8Local: true})
	if err != nil {
		panic(err)
	}
	return a
}

func key(s string) conffile.Key {
	k, err := conffile.ParseKey(s, false)
	if err != nil {
		panic(err)
	}
	return k
}

func TestEdit(t *testing.T) {
	t.Parallel()
	s, _ := imported(t)
	ctx := context.Background()
	st := testSettings(t)
	edit := func(names []string, fn func(d map[string]*confedit.Doc) ([]confedit.Change, error)) []confedit.Change {
		t.Helper()
		ch, err := s.Edit(ctx, names, fn)
		if err != nil {
			t.Fatal(err)
		}
		return ch
	}
	before := rows(t, s, "aliases")
	id1 := before["alias1@localhost.localdomain user1@localhost.localdomain"]

	// alias add to an existing key: an UPDATE, the id stays.
	ch := edit([]string{conffile.VirtualFile}, func(d map[string]*confedit.Doc) ([]confedit.Change, error) {
		return confedit.AddToList(d[conffile.VirtualFile], key("alias1@localhost.localdomain"), []address.Address{addr("user2@otherdomain.tld")}, true)
	})
	if len(ch) != 1 || ch[0].File != "postgres:aliases" || ch[0].Line != int(id1) {
		t.Errorf("changes: %v", ch)
	}
	t.Log(ch)
	after := rows(t, s, "aliases")
	if after["alias1@localhost.localdomain user1@localhost.localdomain,user2@otherdomain.tld"] != id1 || len(after) != len(before) {
		t.Errorf("alias add: %v", after)
	}
	// A new alias, then its deletion.
	edit([]string{conffile.VirtualFile}, func(d map[string]*confedit.Doc) ([]confedit.Change, error) {
		return confedit.AddToList(d[conffile.VirtualFile], key("new@localhost.localdomain"), []address.Address{addr("user1@localhost.localdomain")}, true)
	})
	snap, err := s.Load(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	if r := policy.Route(snap, "new@localhost.localdomain"); r.Status != policy.Deliver {
		t.Errorf("new alias: %+v", r)
	}
	edit([]string{conffile.VirtualFile}, func(d map[string]*confedit.Doc) ([]confedit.Change, error) {
		return confedit.RemoveFromList(d[conffile.VirtualFile], key("new@localhost.localdomain"), addr("user1@localhost.localdomain"), true)
	})
	if _, ok := rows(t, s, "aliases")["new@localhost.localdomain user1@localhost.localdomain"]; ok {
		t.Error("alias del left the row")
	}

	// Account, grant, restriction.
	edit([]string{conffile.AccountsFile}, func(d map[string]*confedit.Doc) ([]confedit.Change, error) {
		return confedit.AddAccount(d[conffile.AccountsFile], addr("new@localhost.localdomain"), "{SHA512-CRYPT}$6$salt$hash")
	})
	edit([]string{conffile.SendAsFile}, func(d map[string]*confedit.Doc) ([]confedit.Change, error) {
		return confedit.AddToList(d[conffile.SendAsFile], key("shared@localhost.localdomain"), []address.Address{addr("new@localhost.localdomain"), addr("user1@localhost.localdomain")}, false)
	})
	edit([]string{conffile.SendAccessFile}, func(d map[string]*confedit.Doc) ([]confedit.Change, error) {
		return confedit.AddRestriction(d[conffile.SendAccessFile], addr("user3@localhost.localdomain"))
	})
	edit([]string{conffile.VirtualFile}, func(d map[string]*confedit.Doc) ([]confedit.Change, error) {
		return confedit.AddToList(d[conffile.VirtualFile], key("team@localhost.localdomain"), []address.Address{addr("new@localhost.localdomain"), addr("user1@localhost.localdomain")}, true)
	})
	snap, err = s.Load(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	if d := policy.MaySend(snap, "new@localhost.localdomain", "shared@localhost.localdomain"); !d.Allowed {
		t.Errorf("sender add: %+v", d)
	}
	if d := policy.MaySend(snap, "user3@localhost.localdomain", "user3@localhost.localdomain"); d.Allowed {
		t.Errorf("restrict add: %+v", d)
	}

	// email del: the account, and its place in aliases and grants.
	ch = edit([]string{conffile.VirtualFile, conffile.SendAsFile, conffile.SendAccessFile, conffile.ReceiveAccessFile, conffile.AccountsFile},
		func(d map[string]*confedit.Doc) ([]confedit.Change, error) {
			a := addr("new@localhost.localdomain")
			changes, err := confedit.DeleteAccount(d[conffile.AccountsFile], a)
			if err != nil {
				return nil, err
			}
			changes = append(changes, confedit.RemoveItemEverywhere(d[conffile.VirtualFile], a, true)...)
			changes = append(changes, confedit.RemoveItemEverywhere(d[conffile.SendAsFile], a, false)...)
			return changes, nil
		})
	t.Log(ch)
	if len(ch) != 3 {
		t.Errorf("email del changes: %v", ch)
	}
	al := rows(t, s, "aliases")
	if _, ok := al["team@localhost.localdomain user1@localhost.localdomain"]; !ok {
		t.Errorf("email del: aliases %v", al)
	}
	if g := rows(t, s, "send_as"); len(g) != 3 {
		t.Errorf("email del: grants %v", g)
	} else if _, ok := g["shared@localhost.localdomain user1@localhost.localdomain"]; !ok {
		t.Errorf("email del: grants %v", g)
	}
	if _, ok := rows(t, s, "accounts")["new@localhost.localdomain|{SHA512-CRYPT}$6$salt$hash"]; ok {
		t.Error("email del left the account")
	}

	// Failures write nothing: an error of fn, a line the parser refuses.
	snapBefore, _ := s.Load(ctx, st)
	_, err = s.Edit(ctx, []string{conffile.AccountsFile, conffile.VirtualFile}, func(d map[string]*confedit.Doc) ([]confedit.Change, error) {
		confedit.DeleteAccount(d[conffile.AccountsFile], addr("user1@localhost.localdomain"))
		return nil, errors.New("boom")
	})
	if err == nil || err.Error() != "boom" {
		t.Errorf("fn error: %v", err)
	}
	_, err = s.Edit(ctx, []string{conffile.AccountsFile, conffile.VirtualFile}, func(d map[string]*confedit.Doc) ([]confedit.Change, error) {
		confedit.DeleteAccount(d[conffile.AccountsFile], addr("user1@localhost.localdomain"))
		d[conffile.VirtualFile].Append("broken")
		return nil, nil
	})
	if err == nil || !strings.Contains(err.Error(), "expected a key and at least one target") {
		t.Errorf("parse error: %v", err)
	}
	_, err = confeditAddExisting(s)
	if err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("add of an existing account: %v", err)
	}
	snapAfter, err := s.Load(ctx, st)
	if err != nil || content(snapAfter) != content(snapBefore) {
		t.Errorf("a failed edit changed the directory: %v", err)
	}
}

func confeditAddExisting(s *Store) ([]confedit.Change, error) {
	return s.Edit(context.Background(), []string{conffile.AccountsFile}, func(d map[string]*confedit.Doc) ([]confedit.Change, error) {
		return confedit.AddAccount(d[conffile.AccountsFile], addr("user1@localhost.localdomain"), "{SHA512-CRYPT}$6$a$b")
	})
}

// events collects the events of Watch.
func watch(t *testing.T, s *Store) <-chan Event {
	ch := make(chan Event, 100)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Watch(ctx, func(e Event) { ch <- e })
	}()
	t.Cleanup(func() { cancel(); <-done })
	return ch
}

func expect(t *testing.T, ch <-chan Event, kind EventKind, within time.Duration) Event {
	t.Helper()
	timer := time.NewTimer(within)
	defer timer.Stop()
	for {
		select {
		case e := <-ch:
			if e.Kind == kind {
				return e
			}
			t.Logf("event %v (%v) while waiting for %v", e.Kind, e.Err, kind)
		case <-timer.C:
			t.Fatalf("no %v event within %v", kind, within)
		}
	}
}

func TestWatchTwoNodes(t *testing.T) {
	t.Parallel()
	a, url := imported(t)
	b := open(t, url)
	ctx := context.Background()
	st := testSettings(t)
	events := watch(t, b)
	expect(t, events, Up, 5*time.Second)
	for i := range 3 {
		alias := fmt.Sprintf("node%d@localhost.localdomain", i)
		start := time.Now()
		if _, err := a.Edit(ctx, []string{conffile.VirtualFile}, func(d map[string]*confedit.Doc) ([]confedit.Change, error) {
			return confedit.AddToList(d[conffile.VirtualFile], key(alias), []address.Address{addr("user1@localhost.localdomain")}, true)
		}); err != nil {
			t.Fatal(err)
		}
		expect(t, events, Changed, time.Second)
		snap, err := b.Load(ctx, st)
		if err != nil {
			t.Fatal(err)
		}
		took := time.Since(start)
		if r := policy.Route(snap, alias); r.Status != policy.Deliver {
			t.Fatalf("the other node does not see %s: %+v", alias, r)
		}
		if took > time.Second {
			t.Errorf("change seen by the other node after %v (> 1 s)", took)
		}
		t.Logf("change seen by the other node after %v", took)
	}
}

func TestServerDown(t *testing.T) {
	t.Parallel()
	inst := pgtest.Own(t)
	url := inst.NewDB(t)
	s := open(t, url)
	ctx := context.Background()
	st := testSettings(t)
	if _, err := s.Import(ctx, fixture, st); err != nil {
		t.Fatal(err)
	}
	events := watch(t, s)
	expect(t, events, Up, 5*time.Second)

	start := time.Now()
	if err := inst.Pause(); err != nil {
		t.Fatal(err)
	}
	e := expect(t, events, Down, 3*time.Second)
	t.Logf("down reported %v after the stop: %v", time.Since(start), e.Err)
	if !directory.IsTemp(e.Err) {
		t.Errorf("Down event error is not a TempError: %v", e.Err)
	}
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := s.Load(lctx, st); !directory.IsTemp(err) {
		t.Errorf("Load with the server down: %v, want a TempError", err)
	} else {
		t.Log(err)
	}
	if _, err := confeditAddExisting(s); !directory.IsTemp(err) {
		t.Errorf("Edit with the server down: %v, want a TempError", err)
	}

	if err := inst.Resume(); err != nil {
		t.Fatal(err)
	}
	expect(t, events, Up, 5*time.Second)
	snap, err := s.Load(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := snap.Accounts[addr("user1@localhost.localdomain")]; !ok {
		t.Error("user1 missing after the restart")
	}
}

// Writers on two nodes are serialized: no update is lost.
func TestEditSerialized(t *testing.T) {
	t.Parallel()
	a, url := imported(t)
	b := open(t, url)
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := range 20 {
		s := a
		if i%2 == 1 {
			s = b
		}
		wg.Go(func() {
			_, err := s.Edit(context.Background(), []string{conffile.VirtualFile}, func(d map[string]*confedit.Doc) ([]confedit.Change, error) {
				return confedit.AddToList(d[conffile.VirtualFile], key("many@localhost.localdomain"), []address.Address{addr(fmt.Sprintf("t%d@example.org", i))}, true)
			})
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	snap, err := a.Load(context.Background(), testSettings(t))
	if err != nil {
		t.Fatal(err)
	}
	if al := snap.Aliases[key("many@localhost.localdomain")]; al == nil || len(al.Targets) != 20 {
		t.Errorf("concurrent alias adds: %+v", al)
	}
}

// sameDirectory loads dir and the database and checks that they hold the
// same directory; it returns both snapshots.
func sameDirectory(t *testing.T, s *Store, dir string, st *settings.Settings) (want, got *directory.Snapshot) {
	t.Helper()
	want, err := directory.Load(dir, st)
	if err != nil {
		t.Fatal(err)
	}
	got, err = s.Load(context.Background(), st)
	if err != nil {
		t.Fatal(err)
	}
	if content(want) != content(got) {
		t.Errorf("directory differs:\nfiles:\n%s\npostgres:\n%s", content(want), content(got))
	}
	return want, got
}

// A row written by hand in SQL that is not one line of its file (a line
// break, a leading blank or '#') is refused with its table and id: it would
// shift or hide the lines after it. It is not a temporary failure: a node
// keeps its last good directory.
func TestLoadRefusesRowsThatAreNotLines(t *testing.T) {
	t.Parallel()
	s, _ := imported(t)
	ctx := context.Background()
	for _, sql := range []string{
		`INSERT INTO aliases (alias_key, targets) VALUES ('x@localhost.localdomain', ARRAY[E'a@b.example\nuser1@localhost.localdomain'])`,
		`INSERT INTO regexp_aliases (rule) VALUES (' /^x/ user1@localhost.localdomain')`,
		`INSERT INTO regexp_aliases (rule) VALUES ('# /^x/ user1@localhost.localdomain')`,
	} {
		tx, err := s.pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
		var id int64
		table := "aliases"
		if strings.Contains(sql, "regexp") {
			table = "regexp_aliases"
		}
		if err := tx.QueryRow(ctx, "SELECT max(id) FROM "+table).Scan(&id); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		_, err = s.Load(ctx, testSettings(t))
		if want := fmt.Sprintf("postgres:%s:%d", table, id); err == nil || !strings.Contains(err.Error(), want) || directory.IsTemp(err) {
			t.Errorf("%s: Load error %v, want a permanent error naming %s", sql, err, want)
		}
		if _, err := s.pool.Exec(ctx, "DELETE FROM "+table+" WHERE id = $1", id); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Load(ctx, testSettings(t)); err != nil {
		t.Errorf("after removing the rows: %v", err)
	}
}
