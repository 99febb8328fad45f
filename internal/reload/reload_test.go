package reload

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
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
