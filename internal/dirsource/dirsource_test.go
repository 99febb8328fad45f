package dirsource

import (
	"context"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailgate/mailgate/internal/directory"
	"github.com/mailgate/mailgate/internal/pgstore"
	"github.com/mailgate/mailgate/internal/pgstore/pgtest"
)

// TestMain stops the package's shared PostgreSQL cluster at the end.
func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func testDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(dir+"/mailgate.toml", []byte("hostname = \"mail.example.test\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestFileSource(t *testing.T) {
	dir := testDir(t)
	os.WriteFile(dir+"/postfix-accounts.cf", []byte("a@example.test|{SHA512-CRYPT}$6$x$y\n"), 0o600)
	src := New(dir, noEnv, nil, nil)
	defer src.Close()
	snap, err := src.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if snap.Ext != nil || len(snap.Accounts) != 1 || snap.Available() != nil {
		t.Errorf("file snapshot: ext %v, %d accounts, available %v", snap.Ext, len(snap.Accounts), snap.Available())
	}
	// Watch returns at once for a source that is not PostgreSQL.
	done := make(chan struct{})
	go func() { src.Watch(context.Background(), func() {}, func(error) {}); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Watch of a file source did not return")
	}
}

// LDAP is asked per lookup: Load needs no server (mailgate starts while it
// is down), keeps one pool across loads and makes a new one when the LDAP
// settings change.
func TestLDAPSourceIsLazy(t *testing.T) {
	dir := testDir(t)
	set := map[string]string{"account_provisioner": "ldap", "ldap_server_host": "ldap://127.0.0.1:1", "ldap_search_base": "dc=example,dc=test", "ldap_timeout": "1s"}
	src := New(dir, noEnv, set, nil)
	defer src.Close()
	s1, err := src.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if s1.Ext == nil {
		t.Fatal("no External source")
	}
	if _, err := s1.Ext.Domain("example.test"); !directory.IsTemp(err) {
		t.Errorf("a lookup with the server down: %v, want a TempError", err)
	}
	s2, _ := src.Load(context.Background())
	if s2.Ext != s1.Ext {
		t.Error("a reload with the same settings made a new LDAP source")
	}
	set["ldap_search_base"] = "dc=other,dc=test"
	s3, err := src.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if s3.Ext == s1.Ext {
		t.Error("new LDAP settings kept the old source")
	}
}

// PostgreSQL down at start: Load is a TempError (serve then starts on the
// Unavailable snapshot) and Watch reports it until the context ends.
func TestPostgresDownAtStart(t *testing.T) {
	dir := testDir(t)
	src := New(dir, noEnv, map[string]string{"account_provisioner": "postgres",
		"database_url": "postgres://mailgate@127.0.0.1:1/mailgate?sslmode=disable&connect_timeout=1"}, nil)
	defer src.Close()
	_, err := src.Load(context.Background())
	if !directory.IsTemp(err) {
		t.Fatalf("Load with the database down: %v, want a TempError", err)
	}
	snap, err := src.Unavailable(err)
	if err != nil || snap.Available() == nil {
		t.Fatalf("Unavailable: %v, %v", snap, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	var downs atomic.Int32
	src.Watch(ctx, func() { t.Error("changed while the database is down") }, func(error) { downs.Add(1) })
	if downs.Load() == 0 {
		t.Error("Watch never reported the database down")
	}
}

// PostgreSQL up: a committed change reaches Watch (LISTEN/NOTIFY), and the
// next Load sees it.
func TestPostgresWatch(t *testing.T) {
	url := pgtest.DB(t)
	dir := testDir(t)
	src := New(dir, noEnv, map[string]string{"account_provisioner": "postgres", "database_url": url}, nil)
	defer src.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	changed := make(chan struct{}, 16)
	go src.Watch(ctx, func() { changed <- struct{}{} }, func(err error) { t.Errorf("down: %v", err) })
	<-changed // the load when the store opens

	st, err := src.settings()
	if err != nil {
		t.Fatal(err)
	}
	files := t.TempDir()
	os.WriteFile(files+"/postfix-accounts.cf", []byte("a@example.test|{SHA512-CRYPT}$6$x$y\n"), 0o600)
	store, err := pgstore.Open(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	// Drain the Up of the first LISTEN, if it came separately.
	time.Sleep(300 * time.Millisecond)
	for len(changed) > 0 {
		<-changed
	}
	if _, err := store.Import(ctx, files, st); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	case <-time.After(2 * time.Second):
		t.Fatal("no change reported within 2 s of the import")
	}
	snap, err := src.Load(ctx)
	if err != nil || len(snap.Accounts) != 1 {
		t.Fatalf("after the import: %v accounts, %v", len(snap.Accounts), err)
	}
}

// While Watch follows the database, a load is refused when the LISTEN
// connection is down (the node could not hear changes), and a changed
// database_url is refused for good (it needs a restart).
func TestPostgresLoadNeedsListening(t *testing.T) {
	url := pgtest.DB(t)
	set := map[string]string{"account_provisioner": "postgres", "database_url": url}
	src := New(testDir(t), noEnv, set, nil)
	defer src.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	changed := make(chan struct{}, 16)
	go src.Watch(ctx, func() { changed <- struct{}{} }, func(error) {})
	<-changed
	if _, err := src.Load(ctx); err != nil {
		t.Fatalf("listening: %v", err)
	}
	src.listening.Store(false) // as after a Down
	if _, err := src.Load(ctx); !directory.IsTemp(err) {
		t.Errorf("not listening: %v, want a TempError", err)
	}
	src.listening.Store(true)
	set["database_url"] = url + "&application_name=other"
	if _, err := src.Load(ctx); err == nil || directory.IsTemp(err) || !strings.Contains(err.Error(), "restart") {
		t.Errorf("changed database_url: %v, want a permanent error asking for a restart", err)
	}
}
