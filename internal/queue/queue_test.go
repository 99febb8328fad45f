package queue

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// clock is an injectable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// call is one Deliver call seen by fakeDeliverer.
type call struct {
	id    string
	from  string
	rcpts []string
	body  string
	env   Envelope
}

// fakeDeliverer answers with reply(rcpt, attempt) and records the calls.
type fakeDeliverer struct {
	mu    sync.Mutex
	calls []call
	tries map[string]int // rcpt → calls so far
	reply func(rcpt string, try int) Result
}

func (f *fakeDeliverer) Deliver(ctx context.Context, from string, rcpts []string, body io.Reader) []Result {
	b, err := io.ReadAll(body)
	if err != nil {
		panic(err)
	}
	id, env, _ := EnvelopeFromContext(ctx)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.tries == nil {
		f.tries = map[string]int{}
	}
	f.calls = append(f.calls, call{id: id, from: from, rcpts: slices.Clone(rcpts), body: string(b), env: env})
	var res []Result
	for _, r := range rcpts {
		f.tries[r]++
		if f.reply == nil {
			res = append(res, Result{Rcpt: r, Code: 250, Enhanced: "2.0.0", Msg: "ok"})
			continue
		}
		x := f.reply(r, f.tries[r])
		x.Rcpt = r
		res = append(res, x)
	}
	return res
}

func (f *fakeDeliverer) Calls() []call {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// bouncer collects DSNs.
type bouncer struct {
	mu   sync.Mutex
	dsns []*DSN
	fail error
}

func (b *bouncer) Bounce(ctx context.Context, d *DSN) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fail != nil {
		return b.fail
	}
	b.dsns = append(b.dsns, d)
	return nil
}

func (b *bouncer) DSNs() []*DSN {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.dsns)
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

func open(t testing.TB, dir string, opts Options) *Queue {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = quiet()
	}
	if opts.Hostname == "" {
		opts.Hostname = "mx.example.org"
	}
	q, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	return q
}

const body1 = "From: alice@example.org\r\nTo: bob@remote.example\r\nSubject: hello\r\nMessage-ID: <1@example.org>\r\n\r\nHi Bob.\r\n"

func enqueue(t testing.TB, q *Queue, env Envelope, body string) string {
	t.Helper()
	id, err := q.Enqueue(env, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func segFiles(t testing.TB, dir string) []string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	slices.Sort(m)
	return m
}

// copyDir copies the queue directory as it is now, as a crash would leave
// it (every acknowledged write is in the page cache and was fsynced).
func copyDir(t testing.TB, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "queue")
	os.MkdirAll(dst, 0o700)
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.Name() == lockName {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dst, e.Name()), b, 0o600)
	}
	return dst
}

func TestEnqueueReopen(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "queue")
	clk := newClock()
	q := open(t, dir, Options{Now: clk.Now})
	envs := []Envelope{
		{From: "alice@example.org", To: []string{"bob@remote.example", "carol@remote.example", "bob@remote.example"}},
		{From: "", To: []string{"x@remote.example"}, EnvID: "abc123", Ret: "FULL", SMTPUTF8: true, BodyType: "8BITMIME"},
		{From: "d@example.org", To: []string{"ü@bücher.example"}},
	}
	var ids []string
	for i, e := range envs {
		ids = append(ids, enqueue(t, q, e, fmt.Sprintf("%sbody %d\r\n", body1, i)))
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("queue dir: %v %v", fi.Mode(), err)
	}
	q.Close()
	if _, err := q.Enqueue(envs[0], strings.NewReader("x")); !errors.Is(err, ErrClosed) {
		t.Errorf("Enqueue after Close: %v", err)
	}

	d := &fakeDeliverer{}
	q = open(t, dir, Options{Now: clk.Now, Deliverer: d})
	list := q.List()
	if len(list) != 3 {
		t.Fatalf("%d messages after reopen", len(list))
	}
	for i, inf := range list {
		if inf.ID != ids[i] {
			t.Errorf("message %d: id %s, want %s", i, inf.ID, ids[i])
		}
		want := envs[i]
		if i == 0 {
			want.To = want.To[:2] // duplicate dropped
		}
		want.Arrival = clk.Now()
		if !want.Arrival.Equal(inf.Envelope.Arrival) {
			t.Errorf("arrival %v", inf.Envelope.Arrival)
		}
		inf.Envelope.Arrival = want.Arrival
		if fmt.Sprint(inf.Envelope) != fmt.Sprint(want) {
			t.Errorf("envelope %d: %+v, want %+v", i, inf.Envelope, want)
		}
		for _, r := range inf.Rcpts {
			if r.Status != Pending || r.Attempts != 0 || !r.Next.Equal(clk.Now()) {
				t.Errorf("rcpt %+v", r)
			}
		}
	}
	if n := q.RunOnce(context.Background()); n != 3 {
		t.Fatalf("RunOnce = %d", n)
	}
	calls := d.Calls()
	slices.SortFunc(calls, func(a, b call) int { return strings.Compare(a.id, b.id) })
	for i, c := range calls {
		if c.body != fmt.Sprintf("%sbody %d\r\n", body1, i) || c.from != envs[i].From || c.id != ids[i] || c.env.EnvID != envs[i].EnvID {
			t.Errorf("call %d: %+v", i, c)
		}
	}
	if q.Len() != 0 {
		t.Errorf("%d messages left", q.Len())
	}
	q.Close()
	q = open(t, dir, Options{Now: clk.Now})
	if q.Len() != 0 {
		t.Errorf("%d messages after second reopen", q.Len())
	}
	// Finished segments were deleted: only the new active one is left.
	if s := segFiles(t, dir); len(s) != 1 {
		t.Errorf("segments %v", s)
	}
}

func TestCrashAfterAck(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "queue")
	q := open(t, dir, Options{})
	var ids []string
	for i := range 10 {
		ids = append(ids, enqueue(t, q, Envelope{From: "a@example.org", To: []string{fmt.Sprintf("r%d@remote.example", i)}}, body1))
	}
	crashed := copyDir(t, dir) // no Close: the process "died" here
	q2 := open(t, crashed, Options{})
	for _, id := range ids {
		if _, ok := q2.Lookup(id); !ok {
			t.Errorf("acknowledged message %s lost", id)
		}
	}
}

func TestLocked(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "queue")
	open(t, dir, Options{})
	if _, err := Open(dir, Options{Logger: quiet()}); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: %v", err)
	}
}

func TestInvalid(t *testing.T) {
	q := open(t, filepath.Join(t.TempDir(), "queue"), Options{MaxSize: 100})
	for _, e := range []Envelope{
		{From: "a@example.org"},
		{From: "a@example.org", To: []string{"b@x\r\nRCPT TO:<c@y>"}},
		{From: "a b@example.org", To: []string{"b@x"}},
		{From: "<a@example.org>", To: []string{"b@x"}},
		{From: "a@example.org", To: []string{"nobody"}},
		{From: "a@example.org", To: []string{"b@x"}, EnvID: "a\nb"},
	} {
		if _, err := q.Enqueue(e, strings.NewReader("x")); !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: %v", e, err)
		}
	}
	if _, err := q.Enqueue(Envelope{To: []string{"b@x"}}, strings.NewReader(strings.Repeat("x", 101))); !errors.Is(err, ErrTooLarge) {
		t.Errorf("large: %v", err)
	}
	if _, err := q.Enqueue(Envelope{To: []string{"b@x"}}, strings.NewReader(strings.Repeat("x", 100))); err != nil {
		t.Errorf("at limit: %v", err)
	}
	if q.Len() != 1 {
		t.Errorf("Len %d", q.Len())
	}
}

// TestKillPoints cuts the log at every byte of the last record (a message,
// then a state record) and checks that reopening recovers exactly what was
// acknowledged before it, truncates the torn tail and keeps working.
func TestKillPoints(t *testing.T) {
	base := filepath.Join(t.TempDir(), "queue")
	clk := newClock()
	q := open(t, base, Options{Now: clk.Now, Deliverer: &fakeDeliverer{}})
	idA := enqueue(t, q, Envelope{From: "a@example.org", To: []string{"x@remote.example"}}, body1)
	seg := segFiles(t, base)[0]
	fi, _ := os.Stat(seg)
	afterA := fi.Size()
	idB := enqueue(t, q, Envelope{From: "b@example.org", To: []string{"y@remote.example", "z@remote.example"}}, body1+"B\r\n")
	fi, _ = os.Stat(seg)
	afterB := fi.Size()
	full, _ := os.ReadFile(seg)
	if n := q.RunOnce(context.Background()); n != 2 { // two 'S' records: both delivered
		t.Fatalf("RunOnce %d", n)
	}
	delivered, _ := os.ReadFile(seg)
	q.Close()

	check := func(t *testing.T, data []byte, cut int64, want []string) {
		dir := filepath.Join(t.TempDir(), "queue")
		os.MkdirAll(dir, 0o700)
		name := filepath.Join(dir, filepath.Base(seg))
		os.WriteFile(name, data[:cut], 0o600)
		q, err := Open(dir, Options{Now: clk.Now, Logger: quiet()})
		if err != nil {
			t.Fatalf("cut %d: %v", cut, err)
		}
		var got []string
		for _, inf := range q.List() {
			got = append(got, inf.ID)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("cut %d: messages %v, want %v", cut, got, want)
		}
		if len(want) > 0 {
			// the torn tail is gone: the old segment ends with whole records
			fi, err := os.Stat(name)
			if err != nil {
				t.Fatalf("cut %d: %v", cut, err)
			}
			if cut < afterB && fi.Size() != afterA || cut == afterB && fi.Size() != afterB {
				t.Fatalf("cut %d: segment size %d after recovery", cut, fi.Size())
			}
		}
		id, err := q.Enqueue(Envelope{To: []string{"n@remote.example"}}, strings.NewReader("new"))
		if err != nil {
			t.Fatalf("cut %d: Enqueue after recovery: %v", cut, err)
		}
		q.Close()
		q, err = Open(dir, Options{Now: clk.Now, Logger: quiet()})
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := q.Lookup(id); !ok || q.Len() != len(want)+1 {
			t.Fatalf("cut %d: second reopen has %d messages", cut, q.Len())
		}
		q.Close()
	}
	t.Run("message", func(t *testing.T) {
		for cut := afterA; cut <= afterB; cut++ {
			want := []string{idA}
			if cut == afterB {
				want = []string{idA, idB}
			}
			check(t, full, cut, want)
		}
	})
	t.Run("state", func(t *testing.T) {
		// The two state records follow B; at any cut inside them a message
		// whose 'S' record is incomplete is still queued (it will be
		// delivered again: at least once).
		total := int64(len(delivered))
		sawOne := false
		for cut := afterB; cut <= total; cut++ {
			dir := filepath.Join(t.TempDir(), "queue")
			os.MkdirAll(dir, 0o700)
			os.WriteFile(filepath.Join(dir, filepath.Base(seg)), delivered[:cut], 0o600)
			q, err := Open(dir, Options{Now: clk.Now, Logger: quiet()})
			if err != nil {
				t.Fatal(err)
			}
			n := q.Len()
			q.Close()
			switch {
			case cut == afterB && n != 2, cut == total && n != 0, n > 2:
				t.Fatalf("cut %d: %d messages", cut, n)
			case n == 1:
				sawOne = true
			}
		}
		if !sawOne {
			t.Error("no cut between the two state records")
		}
	})
	t.Run("corrupt", func(t *testing.T) {
		// A flipped bit in B's body: B fails its CRC and is dropped.
		data := slices.Clone(full)
		data[afterB-3] ^= 0x40
		dir := filepath.Join(t.TempDir(), "queue")
		os.MkdirAll(dir, 0o700)
		os.WriteFile(filepath.Join(dir, filepath.Base(seg)), data, 0o600)
		q := open(t, dir, Options{})
		if q.Len() != 1 {
			t.Fatalf("%d messages", q.Len())
		}
		if _, ok := q.Lookup(idA); !ok {
			t.Fatal("A lost")
		}
	})
}

func TestIncompleteSegmentRemoved(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "queue")
	q := open(t, dir, Options{})
	id := enqueue(t, q, Envelope{To: []string{"a@b.example"}}, body1)
	q.Close()
	// a rotation that died after creating the file
	for _, content := range []string{"", "MGQ"} {
		last := segFiles(t, dir)
		var n int
		fmt.Sscanf(filepath.Base(last[len(last)-1]), "%d.seg", &n)
		bad := filepath.Join(dir, fmt.Sprintf("%08d.seg", n+1))
		os.WriteFile(bad, []byte(content), 0o600)
		q = open(t, dir, Options{})
		if _, err := os.Stat(bad); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%q: incomplete segment not removed", content)
		}
		if _, ok := q.Lookup(id); !ok {
			t.Fatal("message lost")
		}
		if s := segFiles(t, dir); !slices.Equal(s, last) {
			t.Errorf("segments %v, want %v", s, last)
		}
		q.Close()
	}
	// a foreign file is an error, not silently ignored
	os.WriteFile(filepath.Join(dir, "00000000.seg"), []byte("x"), 0o600) // number 0 is not a segment: ignored
	os.WriteFile(filepath.Join(dir, "00000150.seg"), []byte("NOTASEGMENT-------"), 0o600)
	os.WriteFile(filepath.Join(dir, "00000200.seg"), []byte(segMagic), 0o600)
	if _, err := Open(dir, Options{Logger: quiet()}); !errors.Is(err, ErrCorruptFile) {
		t.Errorf("Open with a bad segment: %v", err)
	}
}

func TestDamagedMiddleSegment(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "queue")
	q := open(t, dir, Options{SegmentSize: 100}) // a segment per message
	a := enqueue(t, q, Envelope{To: []string{"a@b.example"}}, body1)
	b := enqueue(t, q, Envelope{To: []string{"a@b.example"}}, body1)
	c := enqueue(t, q, Envelope{To: []string{"a@b.example"}}, body1)
	q.Close()
	if n := len(segFiles(t, dir)); n != 3 {
		t.Fatalf("%d segments", n)
	}
	first := segFiles(t, dir)[1]
	data, _ := os.ReadFile(first)
	data[len(data)-5] ^= 1 // inside b
	os.WriteFile(first, data, 0o600)
	var logs bytes.Buffer
	q = open(t, dir, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	_, okA := q.Lookup(a)
	_, okB := q.Lookup(b)
	_, okC := q.Lookup(c)
	if !okA || okB || !okC {
		t.Errorf("a %v b %v c %v", okA, okB, okC)
	}
	if !strings.Contains(logs.String(), "damaged") {
		t.Errorf("no error logged: %s", logs.String())
	}
	if fi, _ := os.Stat(first); fi.Size() != int64(len(data)) {
		t.Error("a damaged middle segment must not be truncated")
	}
}

func TestConcurrentEnqueueDeliverOnce(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "queue")
	d := &fakeDeliverer{}
	q := open(t, dir, Options{Deliverer: d, Concurrency: 4, SegmentSize: 32 << 10})
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error)
	go func() { runDone <- q.Run(ctx) }()
	const workers, each = 32, 20
	var mu sync.Mutex
	ids := map[string]string{}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				rcpt := fmt.Sprintf("r%d-%d@remote.example", w, i)
				id, err := q.Enqueue(Envelope{From: "a@example.org", To: []string{rcpt}}, strings.NewReader(body1+rcpt))
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				ids[id] = rcpt
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	deadline := time.Now().Add(20 * time.Second)
	for q.Len() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-runDone; !errors.Is(err, context.Canceled) {
		t.Errorf("Run: %v", err)
	}
	if q.Len() != 0 {
		t.Fatalf("%d messages not delivered", q.Len())
	}
	seen := map[string]int{}
	for _, c := range d.Calls() {
		if len(c.rcpts) != 1 || ids[c.id] != c.rcpts[0] || c.body != body1+c.rcpts[0] {
			t.Errorf("bad call %+v", c)
		}
		seen[c.id]++
	}
	for id := range ids {
		if seen[id] != 1 {
			t.Errorf("%s delivered %d times", id, seen[id])
		}
	}
	if len(ids) != workers*each {
		t.Errorf("%d ids", len(ids))
	}
	if n := q.syncs.Load(); n >= workers*each {
		t.Logf("no group commit? %d fsyncs for %d messages", n, workers*each)
	}
	q.Close()
	// Every segment but the active one was deleted.
	if s := segFiles(t, dir); len(s) > 1 {
		t.Errorf("segments left: %v", s)
	}
}

func TestGroupCommit(t *testing.T) {
	q := open(t, filepath.Join(t.TempDir(), "queue"), Options{})
	before := q.syncs.Load()
	var wg sync.WaitGroup
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 5 {
				if _, err := q.Enqueue(Envelope{To: []string{"a@b.example"}}, strings.NewReader(body1)); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	n := q.syncs.Load() - before
	t.Logf("%d messages, %d fsyncs", 320, n)
	if n >= 320 {
		t.Errorf("%d fsyncs for 320 concurrent messages: no group commit", n)
	}
}

func TestBackoffAndRestart(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "queue")
	clk := newClock()
	d := &fakeDeliverer{reply: func(rcpt string, try int) Result {
		if try <= 5 {
			return Result{Code: 451, Enhanced: "4.3.0", Msg: "try later", RemoteMTA: "mx.remote.example"}
		}
		return Result{Code: 250, Msg: "2.0.0 ok"}
	}}
	opts := Options{Now: clk.Now, Deliverer: d, BackoffBase: time.Minute, BackoffCap: 5 * time.Minute}
	q := open(t, dir, opts)
	t0 := clk.Now()
	id := enqueue(t, q, Envelope{From: "a@example.org", To: []string{"r@remote.example"}}, body1)
	ctx := context.Background()
	// attempt k fails; the next one is due Base·2^(k-1) later, capped.
	waits := []time.Duration{time.Minute, 2 * time.Minute, 4 * time.Minute, 5 * time.Minute, 5 * time.Minute}
	at := t0
	for k, w := range waits {
		if n := q.RunOnce(ctx); n != 1 {
			t.Fatalf("attempt %d: RunOnce = %d", k+1, n)
		}
		inf, _ := q.Lookup(id)
		r := inf.Rcpts[0]
		if r.Attempts != k+1 || r.Status != Pending || !r.Next.Equal(at.Add(w)) || r.Last == nil || r.Last.Code != 451 {
			t.Fatalf("after attempt %d: %+v (want next %v)", k+1, r, at.Add(w))
		}
		clk.Advance(w - time.Second)
		if n := q.RunOnce(ctx); n != 0 {
			t.Fatalf("attempt %d: ran %d before due", k+1, n)
		}
		clk.Advance(time.Second)
		at = at.Add(w)
		if k == 2 {
			// restart: the state (attempts, next) survives
			q.Close()
			q = open(t, dir, opts)
		}
	}
	if n := q.RunOnce(ctx); n != 1 {
		t.Fatal("last attempt not run")
	}
	if _, ok := q.Lookup(id); ok {
		t.Fatal("message still queued after success")
	}
	if len(d.Calls()) != 6 {
		t.Errorf("%d calls", len(d.Calls()))
	}
}

func TestPartialDeliveryAndRcptSchedules(t *testing.T) {
	clk := newClock()
	d := &fakeDeliverer{reply: func(rcpt string, try int) Result {
		switch {
		case rcpt == "ok@remote.example":
			return Result{Code: 250}
		case try == 1:
			return Result{Temporary: true, Msg: "connection refused"}
		}
		return Result{Code: 250}
	}}
	q := open(t, filepath.Join(t.TempDir(), "queue"), Options{Now: clk.Now, Deliverer: d, BackoffBase: time.Minute})
	id := enqueue(t, q, Envelope{From: "a@example.org", To: []string{"ok@remote.example", "later@other.example"}}, body1)
	q.RunOnce(context.Background())
	inf, _ := q.Lookup(id)
	if inf.Rcpts[0].Status != Delivered || inf.Rcpts[1].Status != Pending {
		t.Fatalf("%+v", inf.Rcpts)
	}
	clk.Advance(time.Minute)
	q.RunOnce(context.Background())
	calls := d.Calls()
	if len(calls) != 2 || !slices.Equal(calls[1].rcpts, []string{"later@other.example"}) {
		t.Fatalf("calls %+v", calls)
	}
	if q.Len() != 0 {
		t.Error("not finished")
	}
}

func TestMissingResultAndPanic(t *testing.T) {
	clk := newClock()
	var mode string
	d := DelivererFunc(func(ctx context.Context, from string, rcpts []string, body io.Reader) []Result {
		if mode == "panic" {
			panic("boom")
		}
		return []Result{{Rcpt: "other@x.example", Code: 250}}
	})
	q := open(t, filepath.Join(t.TempDir(), "queue"), Options{Now: clk.Now, Deliverer: d, BackoffBase: time.Minute})
	id := enqueue(t, q, Envelope{From: "a@example.org", To: []string{"r@remote.example"}}, body1)
	for _, mode = range []string{"missing", "panic"} {
		q.RunOnce(context.Background())
		inf, _ := q.Lookup(id)
		if r := inf.Rcpts[0]; r.Status != Pending || r.Last == nil || !r.Last.Temporary {
			t.Fatalf("%s: %+v", mode, r)
		}
		clk.Advance(time.Hour)
	}
}

func TestShutdownDuringDelivery(t *testing.T) {
	clk := newClock()
	started := make(chan struct{})
	d := DelivererFunc(func(ctx context.Context, from string, rcpts []string, body io.Reader) []Result {
		close(started)
		<-ctx.Done()
		return []Result{{Rcpt: rcpts[0], Temporary: true, Msg: ctx.Err().Error()}}
	})
	dir := filepath.Join(t.TempDir(), "queue")
	q := open(t, dir, Options{Now: clk.Now, Deliverer: d})
	id := enqueue(t, q, Envelope{From: "a@example.org", To: []string{"r@remote.example"}}, body1)
	go q.Run(context.Background())
	<-started
	q.Close() // cancels the delivery and waits for it
	q = open(t, dir, Options{Now: clk.Now})
	inf, ok := q.Lookup(id)
	if !ok || inf.Rcpts[0].Attempts != 0 || !inf.Rcpts[0].Next.Equal(clk.Now()) {
		t.Fatalf("after shutdown: %+v", inf)
	}
}

func TestCompaction(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "queue")
	clk := newClock()
	d := &fakeDeliverer{reply: func(rcpt string, try int) Result {
		if rcpt == "slow@remote.example" {
			return Result{Code: 421, Msg: "busy"}
		}
		return Result{Code: 250}
	}}
	opts := Options{Now: clk.Now, Deliverer: d, SegmentSize: 4096, BackoffBase: time.Second, BackoffCap: time.Second}
	q := open(t, dir, opts)
	slow := enqueue(t, q, Envelope{From: "a@example.org", To: []string{"slow@remote.example"}}, body1)
	ctx := context.Background()
	maxSegs := 0
	for i := range 200 {
		enqueue(t, q, Envelope{From: "a@example.org", To: []string{fmt.Sprintf("r%d@remote.example", i)}}, body1+strings.Repeat("x", 200))
		clk.Advance(time.Second)
		q.RunOnce(ctx)
		maxSegs = max(maxSegs, len(segFiles(t, dir)))
	}
	inf, ok := q.Lookup(slow)
	if !ok || inf.Rcpts[0].Attempts < 150 {
		t.Fatalf("slow message: %+v", inf)
	}
	if maxSegs > 3 {
		t.Errorf("up to %d segments: the slow message pins them", maxSegs)
	}
	q.Close()
	q = open(t, dir, opts)
	inf2, ok := q.Lookup(slow)
	if !ok || q.Len() != 1 || inf2.Rcpts[0].Attempts != inf.Rcpts[0].Attempts {
		t.Fatalf("after reopen: %d messages, %+v", q.Len(), inf2)
	}
	// the relocated copy still has the right body
	d.reply = nil
	clk.Advance(time.Hour)
	q.RunOnce(ctx)
	calls := d.Calls()
	if last := calls[len(calls)-1]; last.id != slow || last.body != body1 {
		t.Errorf("relocated body: %+v", last)
	}
}

// TestCompactionCrash leaves both copies of a relocated message (crash
// between the copy and the deletion of the old segment): the later wins.
func TestCompactionCrash(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "queue")
	clk := newClock()
	d := &fakeDeliverer{reply: func(string, int) Result { return Result{Code: 451} }}
	q := open(t, dir, Options{Now: clk.Now, Deliverer: d, BackoffBase: time.Second})
	id := enqueue(t, q, Envelope{From: "a@example.org", To: []string{"r@remote.example", "s@remote.example"}}, body1)
	q.RunOnce(context.Background()) // attempts 1
	q.Close()
	q = open(t, dir, Options{Now: clk.Now, SegmentSize: 64}) // the first segment is full: a new one is active
	first := segFiles(t, dir)[0]
	old, _ := os.ReadFile(first)
	// relocate by hand: make the first segment look dead enough
	q.mu.Lock()
	q.segs[1].size = 1 << 30
	q.mu.Unlock()
	q.compact()
	if _, err := os.Stat(first); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("old segment not deleted after compaction")
	}
	q.Close()
	os.WriteFile(first, old, 0o600) // the unlink was lost
	q = open(t, dir, Options{Now: clk.Now})
	inf, ok := q.Lookup(id)
	if !ok || q.Len() != 1 || inf.Rcpts[0].Attempts != 1 || inf.Rcpts[1].Attempts != 1 {
		t.Fatalf("%d messages, %+v", q.Len(), inf)
	}
}

func TestFsyncFailureBreaksQueue(t *testing.T) {
	q := open(t, filepath.Join(t.TempDir(), "queue"), Options{})
	enqueue(t, q, Envelope{To: []string{"a@b.example"}}, body1)
	// simulate a failed fsync/write: close the active file under the committer
	q.mu.Lock()
	q.active.f.Close()
	q.mu.Unlock()
	if _, err := q.Enqueue(Envelope{To: []string{"a@b.example"}}, strings.NewReader(body1)); err == nil {
		t.Fatal("Enqueue succeeded on a closed file")
	}
}
