// Package pgtest runs throwaway PostgreSQL clusters for tests, through
// test/pg/instance.sh. When PostgreSQL is not installed the tests that need
// it are skipped, except when CI=true: then they fail.
package pgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"
)

// Instance is a running cluster.
type Instance struct {
	Dir  string // PG_DIR
	Port string
	URL  string // of the database "mailgate"
}

// ErrMissing is returned by Start when PostgreSQL is not installed.
var ErrMissing = errors.New("PostgreSQL is not installed")

func script() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "test", "pg", "instance.sh")
}

func runScript(args ...string) (string, error) {
	cmd := exec.Command(script(), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == 3 {
		return "", fmt.Errorf("%w: %s", ErrMissing, strings.TrimSpace(stderr.String()))
	}
	if err != nil {
		return "", fmt.Errorf("instance.sh %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// Start starts a new cluster.
func Start() (*Instance, error) {
	out, err := runScript("start")
	if err != nil {
		return nil, err
	}
	inst := &Instance{}
	for _, line := range strings.Split(out, "\n") {
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		v = strings.Trim(v, "'")
		switch k {
		case "PG_DIR":
			inst.Dir = v
		case "PG_PORT":
			inst.Port = v
		case "DATABASE_URL":
			inst.URL = v
		}
	}
	if inst.Dir == "" || inst.URL == "" {
		return nil, fmt.Errorf("instance.sh start: unexpected output %q", out)
	}
	return inst, nil
}

// Pause stops the server, keeping its data.
func (i *Instance) Pause() error { _, err := runScript("pause", i.Dir); return err }

// Resume starts it again on the same port.
func (i *Instance) Resume() error { _, err := runScript("resume", i.Dir); return err }

// Stop stops the server and removes its directory.
func (i *Instance) Stop() error { _, err := runScript("stop", i.Dir); return err }

var dbSeq atomic.Int64

// NewDB creates an empty database and returns its URL.
func (i *Instance) NewDB(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("t%d_%d", os.Getpid(), dbSeq.Add(1))
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, i.URL)
	if err != nil {
		t.Fatalf("connecting to the test cluster: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("creating database %s: %v", name, err)
	}
	u, err := url.Parse(i.URL)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	return u.String()
}

var (
	shared    *Instance
	sharedErr error
	mu        sync.Mutex
	started   bool
)

// Main runs the tests of a package with a shared cluster, started on first
// use and stopped at the end. Call it from TestMain.
func Main(m *testing.M) int {
	code := m.Run()
	mu.Lock()
	defer mu.Unlock()
	if shared != nil {
		if err := shared.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "pgtest:", err)
		}
	}
	return code
}

// unavailable skips t, or fails it under CI=true.
func unavailable(t testing.TB, err error) {
	t.Helper()
	if !errors.Is(err, ErrMissing) {
		t.Fatalf("starting PostgreSQL: %v", err)
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("PostgreSQL is required under CI=true: %v", err)
	}
	t.Skipf("no PostgreSQL: %v", err)
}

// Shared returns the package's shared cluster (see Main).
func Shared(t testing.TB) *Instance {
	t.Helper()
	mu.Lock()
	if !started {
		started = true
		shared, sharedErr = Start()
	}
	inst, err := shared, sharedErr
	mu.Unlock()
	if err != nil {
		unavailable(t, err)
	}
	return inst
}

// DB returns the URL of a new empty database of the shared cluster.
func DB(t testing.TB) string {
	t.Helper()
	return Shared(t).NewDB(t)
}

// Own starts a cluster for t alone (to stop it), removed at the end of t.
func Own(t testing.TB) *Instance {
	t.Helper()
	inst, err := Start()
	if err != nil {
		unavailable(t, err)
	}
	t.Cleanup(func() {
		if err := inst.Stop(); err != nil {
			t.Error(err)
		}
	})
	return inst
}
