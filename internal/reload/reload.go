// Package reload keeps the directory snapshot of a running server current
// (SPEC §8: "configuration files are reloaded on change without a restart;
// a broken file keeps the last good state in force and logs the file:line
// error").
//
// A Watcher polls the configuration files (the DMS files and mailgate.toml)
// with stat(2) every Interval (default 500 ms, so a change is in force well
// within 2 s). A change is any difference in size, modification time, inode
// or existence; the atomic rename that mailgate's own commands use always
// changes the inode. A file that changes again while it is being read (a
// write in place, in progress) is read again at the next check rather than
// used half-written. On a change the settings and the snapshot are rebuilt
// from scratch; if that fails, every diagnostic is logged with its file:line
// and the previous snapshot stays in force. Readers get the current snapshot
// with one atomic load and keep using the one they got for a whole decision,
// so a reload never changes the rules in the middle of a transaction.
package reload

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mailgate/mailgate/internal/conffile"
	"github.com/mailgate/mailgate/internal/directory"
	"github.com/mailgate/mailgate/internal/settings"
)

// Files are the names, inside the configuration directory, whose changes
// trigger a reload.
var Files = []string{
	settings.FileName,
	conffile.AccountsFile,
	conffile.VirtualFile,
	conffile.RegexpFile,
	conffile.SendAsFile,
	conffile.SendAccessFile,
	conffile.ReceiveAccessFile,
	conffile.LocalAliasesFile,
}

// LoadFunc builds a complete snapshot (settings included) from the
// configuration directory.
type LoadFunc func() (*directory.Snapshot, error)

// Options configure a Watcher.
type Options struct {
	Interval time.Duration // polling period; default 500 ms
	Logger   *slog.Logger
	// OnReload, when set, is called after every successful reload.
	OnReload func(*directory.Snapshot)
	// Unavailable, when set, makes a source that cannot be reached at
	// start (a *directory.TempError: the database is down) not an error:
	// the Watcher starts with the snapshot it returns, which answers
	// temporary failures until a reload succeeds.
	Unavailable func(cause error) (*directory.Snapshot, error)
}

// Watcher holds the snapshot in force and replaces it when the files change.
type Watcher struct {
	dir   string
	load  LoadFunc
	opts  Options
	cur   atomic.Pointer[directory.Snapshot]
	state map[string]fileState

	mu      sync.Mutex // serializes Check
	reloads atomic.Int64
	failed  atomic.Int64
}

type fileState struct {
	exists bool
	size   int64
	mtime  int64
	ctime  int64
	ino    uint64
}

// New loads the first snapshot; a broken configuration at start is an error
// (there is no last good state to keep).
func New(dir string, load LoadFunc, opts Options) (*Watcher, error) {
	if opts.Interval <= 0 {
		opts.Interval = 500 * time.Millisecond
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	w := &Watcher{dir: dir, load: load, opts: opts}
	w.state = w.stat()
	snap, err := load()
	if err != nil && directory.IsTemp(err) && opts.Unavailable != nil {
		opts.Logger.Error("directory source unavailable at start: answering temporary failures until it is back", "err", err)
		snap, err = opts.Unavailable(err)
	}
	if err != nil {
		return nil, err
	}
	w.cur.Store(snap)
	return w, nil
}

// Reload rebuilds the snapshot now, whether or not a file changed: the
// database announced a change, or came back.
func (w *Watcher) Reload() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.state = w.stat()
	snap, err := w.load()
	w.apply(snap, err)
}

// MarkUnavailable puts in force a copy of the current snapshot that answers
// every question with a temporary failure (the database is down: what it
// holds now is unknown). The next successful reload ends it.
func (w *Watcher) MarkUnavailable(cause error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.markUnavailableLocked(cause)
}

func (w *Watcher) markUnavailableLocked(cause error) {
	cur := w.cur.Load()
	if cur.Unavailable != nil {
		return
	}
	c := *cur
	c.Unavailable = cause
	w.cur.Store(&c)
	w.opts.Logger.Error("directory source unavailable: answering temporary failures", "err", cause)
}

// Snapshot returns the snapshot in force.
func (w *Watcher) Snapshot() *directory.Snapshot { return w.cur.Load() }

// Stats returns the number of successful and of failed reloads so far.
func (w *Watcher) Stats() (reloads, failed int64) { return w.reloads.Load(), w.failed.Load() }

// Run polls until ctx is canceled. While the snapshot is unavailable (its
// source is down) every poll is a reload attempt.
func (w *Watcher) Run(ctx context.Context) {
	t := time.NewTicker(w.opts.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if w.cur.Load().Unavailable != nil {
				// The source is down: try it again at every tick, so
				// that service resumes even when the notice that it
				// is back came before it could answer.
				w.Reload()
				continue
			}
			w.Check()
		}
	}
}

// Check reloads when a file changed since the last check, and reports
// whether it tried. It is Run's single step.
func (w *Watcher) Check() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := w.stat()
	if equal(now, w.state) {
		return false
	}
	snap, err := w.load()
	if after := w.stat(); !equal(after, now) {
		// A file changed while it was being read (an editor or a script
		// writing in place): what was read may be half a file. Keep the
		// snapshot in force; the next check reads it again.
		w.opts.Logger.Debug("configuration changed while loading; retrying")
		return true
	}
	w.state = now
	w.apply(snap, err)
	return true
}

// apply puts a freshly loaded snapshot in force, or handles the failure: a
// source that cannot be reached makes the snapshot unavailable; any other
// error keeps the last good one.
func (w *Watcher) apply(snap *directory.Snapshot, err error) {
	if err != nil {
		w.failed.Add(1)
		if directory.IsTemp(err) {
			w.markUnavailableLocked(err)
			return
		}
		w.logFailure(err)
		return
	}
	if prev := w.cur.Load(); prev != nil && prev.Unavailable != nil {
		w.opts.Logger.Info("directory source available again")
	}
	w.cur.Store(snap)
	w.reloads.Add(1)
	for _, d := range snap.Diags {
		w.opts.Logger.Warn("configuration warning", "at", d.Pos.String(), "msg", d.Msg)
	}
	w.opts.Logger.Info("configuration reloaded", "accounts", len(snap.Accounts), "aliases", len(snap.Aliases), "domains", len(snap.Domains))
	if w.opts.OnReload != nil {
		w.opts.OnReload(snap)
	}
}

func (w *Watcher) logFailure(err error) {
	var le *directory.LoadError
	if errors.As(err, &le) {
		for _, d := range le.Diags {
			if d.Severity == conffile.Error {
				w.opts.Logger.Error("configuration error, keeping the last good configuration", "at", d.Pos.String(), "msg", d.Msg)
			}
		}
		return
	}
	w.opts.Logger.Error("configuration error, keeping the last good configuration", "err", err)
}

func (w *Watcher) stat() map[string]fileState {
	m := make(map[string]fileState, len(Files))
	for _, name := range Files {
		fi, err := os.Stat(filepath.Join(w.dir, name))
		if err != nil {
			m[name] = fileState{}
			continue
		}
		st := fileState{exists: true, size: fi.Size(), mtime: fi.ModTime().UnixNano()}
		if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
			st.ino = sys.Ino
			st.ctime = sys.Ctim.Nano()
		}
		m[name] = st
	}
	return m
}

func equal(a, b map[string]fileState) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// String describes the watcher for logs.
func (w *Watcher) String() string { return fmt.Sprintf("reload.Watcher(%s)", w.dir) }
