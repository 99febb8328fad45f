package reload

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailgate/mailgate/internal/address"
	"github.com/mailgate/mailgate/internal/directory"
	"github.com/mailgate/mailgate/internal/settings"
)

func loader(dir string) LoadFunc {
	return func() (*directory.Snapshot, error) {
		s, err := settings.Load(dir, func(string) (string, bool) { return "", false }, map[string]string{"hostname": "mx.example.test"})
		if err != nil {
			return nil, err
		}
		return directory.Load(dir, s)
	}
}

func TestReload(t *testing.T) {
	dir := t.TempDir()
	accounts := filepath.Join(dir, "postfix-accounts.cf")
	os.WriteFile(accounts, []byte("a@example.test|{SHA512-CRYPT}$6$x$y\n"), 0o644)
	var logBuf bytes.Buffer
	w, err := New(dir, loader(dir), Options{Logger: slog.New(slog.NewTextHandler(&logBuf, nil))})
	if err != nil {
		t.Fatal(err)
	}
	has := func(addr string) bool {
		a, _ := address.Parse(addr, address.Options{})
		_, ok := w.Snapshot().Account(a)
		return ok
	}
	if !has("a@example.test") {
		t.Fatal("first snapshot lacks the account")
	}
	if w.Check() {
		t.Error("Check reloaded without a change")
	}

	// A change of the same size in the same second is still seen (rename
	// gives a new inode).
	tmp := accounts + ".tmp"
	os.WriteFile(tmp, []byte("b@example.test|{SHA512-CRYPT}$6$x$y\n"), 0o644)
	os.Rename(tmp, accounts)
	if !w.Check() || !has("b@example.test") || has("a@example.test") {
		t.Fatal("change not picked up")
	}

	// A new file appears.
	os.WriteFile(filepath.Join(dir, "postfix-virtual.cf"), []byte("x@example.test b@example.test\n"), 0o644)
	if !w.Check() || len(w.Snapshot().Aliases) != 1 {
		t.Fatal("new file not picked up")
	}

	// A broken file keeps the last good snapshot and logs file:line.
	good := w.Snapshot()
	os.WriteFile(filepath.Join(dir, "postfix-virtual.cf"), []byte("x@example.test b@example.test\nbad line@@ x\n"), 0o644)
	if !w.Check() {
		t.Fatal("broken change not noticed")
	}
	if w.Snapshot() != good {
		t.Error("a broken file replaced the snapshot")
	}
	if !strings.Contains(logBuf.String(), "postfix-virtual.cf:2") {
		t.Errorf("log lacks file:line:\n%s", logBuf.String())
	}
	if r, f := w.Stats(); r != 2 || f != 1 {
		t.Errorf("Stats = %d, %d; want 2, 1", r, f)
	}
	// A broken settings file too.
	os.WriteFile(filepath.Join(dir, "postfix-virtual.cf"), []byte("x@example.test b@example.test\n"), 0o644)
	w.Check()
	good = w.Snapshot()
	os.WriteFile(filepath.Join(dir, settings.FileName), []byte("nonsense = 1\n"), 0o644)
	w.Check()
	if w.Snapshot() != good {
		t.Error("a broken mailgate.toml replaced the snapshot")
	}
}

func TestRunPicksUpChanges(t *testing.T) {
	dir := t.TempDir()
	w, err := New(dir, loader(dir), Options{Interval: 20 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil))})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	go func() { w.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	os.WriteFile(filepath.Join(dir, "postfix-accounts.cf"), []byte("c@example.test|{SHA512-CRYPT}$6$x$y\n"), 0o644)
	deadline := time.Now().Add(2 * time.Second)
	for len(w.Snapshot().Accounts) != 1 {
		if time.Now().After(deadline) {
			t.Fatal("Run did not reload within 2 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestBrokenAtStart(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "postfix-virtual.cf"), []byte("bad@@ x\n"), 0o644)
	if _, err := New(dir, loader(dir), Options{}); err == nil {
		t.Fatal("New accepted a broken configuration")
	}
}

// A source that is down makes the snapshot unavailable (temporary failures),
// at start too; Run retries it at every tick and puts the fresh snapshot in
// force as soon as it answers. Any other error keeps the last good snapshot.
func TestUnavailableSource(t *testing.T) {
	dir := t.TempDir()
	var down atomic.Bool
	down.Store(true)
	good := loader(dir)
	load := func() (*directory.Snapshot, error) {
		if down.Load() {
			return nil, &directory.TempError{Source: "test", Err: errors.New("connection refused")}
		}
		return good()
	}
	unavailable := func(cause error) (*directory.Snapshot, error) {
		snap, err := good()
		if err == nil {
			snap.Unavailable = cause
		}
		return snap, err
	}
	if _, err := New(dir, load, Options{}); !directory.IsTemp(err) {
		t.Fatalf("without Unavailable, a source down at start is an error: %v", err)
	}
	w, err := New(dir, load, Options{Interval: 10 * time.Millisecond, Unavailable: unavailable,
		Logger: slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if w.Snapshot().Available() == nil {
		t.Fatal("the snapshot of a source down at start must be unavailable")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go w.Run(ctx)
	time.Sleep(50 * time.Millisecond)
	if w.Snapshot().Available() == nil {
		t.Fatal("available while the source is down")
	}
	down.Store(false)
	waitFor(t, func() bool { return w.Snapshot().Available() == nil })

	down.Store(true)
	w.MarkUnavailable(errors.New("lost"))
	if w.Snapshot().Available() == nil {
		t.Fatal("MarkUnavailable had no effect")
	}
	down.Store(false)
	waitFor(t, func() bool { return w.Snapshot().Available() == nil })
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
