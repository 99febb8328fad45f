package delivery

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/internal/directory"
	"github.com/mailgate/mailgate/internal/maildir"
	"github.com/mailgate/mailgate/internal/policy"
	"github.com/mailgate/mailgate/internal/queue"
	"github.com/mailgate/mailgate/internal/settings"
)

func setup(t *testing.T) (*Agent, *directory.Snapshot, string) {
	t.Helper()
	st, err := settings.Load(t.TempDir(), func(string) (string, bool) { return "", false }, map[string]string{"hostname": "mx.example.test"})
	if err != nil {
		t.Fatal(err)
	}
	snap, err := directory.Build(map[string][]byte{
		"postfix-accounts.cf": []byte("alice@example.test|{SHA512-CRYPT}$6$x$y\nbob@example.test|{SHA512-CRYPT}$6$x$y\n"),
		"postfix-virtual.cf":  []byte("team@example.test alice@example.test,bob@example.test,friend@remote.example\nboth@example.test alice@example.test\n"),
	}, st)
	if err != nil {
		t.Fatal(err)
	}
	data := t.TempDir()
	store, err := maildir.Open(filepath.Join(data, "mail"), maildir.Options{Hostname: "mx"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	q, err := queue.Open(filepath.Join(data, "queue"), queue.Options{
		Deliverer: queue.DelivererFunc(func(ctx context.Context, from string, rcpts []string, _ io.Reader) []queue.Result {
			return nil
		}),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	return &Agent{Mail: store, Queue: q, Snapshot: func() *directory.Snapshot { return snap }}, snap, data
}

func rcpts(snap *directory.Snapshot, addrs ...string) []Recipient {
	var out []Recipient
	for _, a := range addrs {
		r := policy.Route(snap, a)
		out = append(out, Recipient{Original: r.Recipient, Route: r})
	}
	return out
}

func newFiles(t *testing.T, data, domain, local string) []string {
	t.Helper()
	ents, _ := os.ReadDir(filepath.Join(data, "mail", domain, local, "new"))
	var out []string
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(data, "mail", domain, local, "new", e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(b))
	}
	return out
}

func TestAcceptLocalAndRemote(t *testing.T) {
	a, snap, data := setup(t)
	msg := []byte("Subject: hi\r\n\r\nbody\r\n")
	out, err := a.Accept(Envelope{From: "x@remote.example"}, rcpts(snap, "team@example.test", "both@example.test", "other@remote.example"), msg)
	if err != nil {
		t.Fatal(err)
	}
	// alice once (team and both lead there), bob once; friend and other queued.
	if len(out.Local) != 2 || out.Remote != 2 || out.QueueID == "" {
		t.Fatalf("outcome = %+v", out)
	}
	alice := newFiles(t, data, "example.test", "alice")
	if len(alice) != 1 || !strings.Contains(alice[0], "X-Original-To: team@example.test\n") || !strings.Contains(alice[0], "Return-Path: <x@remote.example>\n") {
		t.Errorf("alice's copy: %q", alice)
	}
	info, ok := a.Queue.Lookup(out.QueueID)
	if !ok || len(info.Rcpts) != 2 || info.Rcpts[0].Rcpt != "friend@remote.example" || info.Rcpts[1].Rcpt != "other@remote.example" {
		t.Errorf("queued = %+v", info)
	}
}

func TestAcceptLocalFailureQueuesNothing(t *testing.T) {
	a, snap, data := setup(t)
	// bob's Maildir cannot be created: a file is in the way.
	os.MkdirAll(filepath.Join(data, "mail", "example.test"), 0o700)
	os.WriteFile(filepath.Join(data, "mail", "example.test", "bob"), []byte("x"), 0o600)
	_, err := a.Accept(Envelope{From: "x@remote.example"}, rcpts(snap, "team@example.test"), []byte("Subject: x\r\n\r\n"))
	if !errors.Is(err, ErrTemporary) {
		t.Fatalf("want ErrTemporary, got %v", err)
	}
	if a.Queue.Len() != 0 {
		t.Errorf("the remote copy was queued although the local delivery failed")
	}
}

func TestBounce(t *testing.T) {
	a, _, data := setup(t)
	dsn := &queue.DSN{To: "alice@example.test", QueueID: "q1", Message: []byte("Subject: Undelivered\r\n\r\nsorry\r\n")}
	if err := a.Bounce(context.Background(), dsn); err != nil {
		t.Fatal(err)
	}
	got := newFiles(t, data, "example.test", "alice")
	if len(got) != 1 || !strings.Contains(got[0], "Return-Path: <>\n") {
		t.Errorf("bounce copy: %q", got)
	}
	// A bounce to a remote sender is queued from <>.
	if err := a.Bounce(context.Background(), &queue.DSN{To: "x@remote.example", Message: []byte("Subject: u\r\n\r\n")}); err != nil {
		t.Fatal(err)
	}
	list := a.Queue.List()
	if len(list) != 1 || list[0].Envelope.From != "" {
		t.Errorf("remote bounce: queue = %+v", list)
	}
	// A bounce to an unknown local address is dropped, not retried.
	if err := a.Bounce(context.Background(), &queue.DSN{To: "ghost@example.test", Message: []byte("Subject: u\r\n\r\n")}); err != nil {
		t.Errorf("bounce to an unknown address: %v", err)
	}
}
