package maildir

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailgate/mailgate/internal/address"
)

func mustAddr(t testing.TB, s string) address.Address {
	t.Helper()
	a, err := address.Parse(s, address.Options{UTF8Local: true})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func openStore(t testing.TB) (*Store, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "mail")
	s, err := Open(dir, Options{Hostname: "mx.example"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, dir
}

const msg = "From: a@b.example\r\nSubject: hi\r\n\r\nline 1\r\nline 2\r\n"

func TestLayoutAndHeaders(t *testing.T) {
	s, dir := openStore(t)
	mb := mustAddr(t, "Alice@Bücher.Example")
	p, err := s.Deliver(mb, Headers{Sender: "bob@remote.example", OriginalTo: "Alice+News@bücher.example"}, strings.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	md := filepath.Join(dir, "xn--bcher-kva.example", "alice")
	if filepath.Dir(p) != filepath.Join(md, "new") {
		t.Fatalf("path %s not in %s/new", p, md)
	}
	for _, sub := range []string{"", "tmp", "new", "cur", ".."} {
		fi, err := os.Lstat(filepath.Join(md, sub))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o700 || !fi.IsDir() {
			t.Errorf("%s: mode %v, want dir 0700", sub, fi.Mode())
		}
	}
	if d, _ := s.Dir(mb); d != md {
		t.Errorf("Dir = %s, want %s", d, md)
	}
	got, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	want := "Return-Path: <bob@remote.example>\n" +
		"X-Original-To: Alice+News@bücher.example\n" +
		"Delivered-To: alice@xn--bcher-kva.example\n" +
		"From: a@b.example\nSubject: hi\n\nline 1\nline 2\n"
	if string(got) != want {
		t.Errorf("file:\n%q\nwant\n%q", got, want)
	}
	name := filepath.Base(p)
	re := regexp.MustCompile(`^(\d+)\.M(\d+)P(\d+)Q(\d+)R([0-9a-f]{16})\.mx\.example,S=(\d+)$`)
	m := re.FindStringSubmatch(name)
	if m == nil {
		t.Fatalf("name %q does not match %v", name, re)
	}
	if m[3] != strconv.Itoa(os.Getpid()) {
		t.Errorf("pid %s", m[3])
	}
	if m[6] != strconv.Itoa(len(want)) {
		t.Errorf("S=%s, want %d", m[6], len(want))
	}
	if ents, _ := os.ReadDir(filepath.Join(md, "tmp")); len(ents) != 0 {
		t.Errorf("tmp/ not empty: %v", ents)
	}
	fi, _ := os.Stat(p)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("file mode %v", fi.Mode())
	}
}

func TestNullSenderAndDefaultOriginalTo(t *testing.T) {
	s, _ := openStore(t)
	p, err := s.Deliver(mustAddr(t, "bob@example.org"), Headers{}, strings.NewReader("Subject: x\n\nbody"))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(p)
	want := "Return-Path: <>\nX-Original-To: bob@example.org\nDelivered-To: bob@example.org\nSubject: x\n\nbody"
	if string(got) != want {
		t.Errorf("got %q", got)
	}
}

func TestPackageDeliver(t *testing.T) {
	dir := t.TempDir()
	p, err := Deliver(dir, mustAddr(t, "c@example.org"), Headers{Sender: "x@y.example"}, strings.NewReader("a\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(p, filepath.Join(dir, "example.org", "c", "new")+string(filepath.Separator)) {
		t.Errorf("path %s", p)
	}
}

func TestLineEndings(t *testing.T) {
	for _, c := range []struct{ in, out string }{
		{"a\r\nb\r\n", "a\nb\n"},
		{"a\nb\n", "a\nb\n"},
		{"a\rb\r", "a\rb\r"},
		{"a\r\r\nb", "a\r\nb"},
		{"\r", "\r"},
		{"", ""},
	} {
		for _, chunk := range []int{1, 2, 3, 1 << 20} {
			var out bytes.Buffer
			w := &lfWriter{w: &out}
			in := []byte(c.in)
			for len(in) > 0 {
				n := min(chunk, len(in))
				if k, err := w.Write(in[:n]); err != nil || k != n {
					t.Fatal(k, err)
				}
				in = in[n:]
			}
			w.flush()
			if out.String() != c.out {
				t.Errorf("%q chunk %d: got %q want %q", c.in, chunk, out.String(), c.out)
			}
		}
	}
}

func TestRefusals(t *testing.T) {
	s, dir := openStore(t)
	for _, c := range []struct {
		name string
		mb   address.Address
		hdr  Headers
		want error
	}{
		{"slash", address.Address{Local: "a/b", Domain: "example.org"}, Headers{}, ErrUnsafeName},
		{"dotdot", address.Address{Local: "..", Domain: "example.org"}, Headers{}, ErrUnsafeName},
		{"leading dot", address.Address{Local: ".x", Domain: "example.org"}, Headers{}, ErrUnsafeName},
		{"domain dotdot", address.Address{Local: "a", Domain: ".."}, Headers{}, ErrUnsafeName},
		{"empty", address.Address{}, Headers{}, ErrUnsafeName},
		{"uppercase", address.Address{Local: "Alice", Domain: "example.org"}, Headers{}, ErrNotCanonical},
		{"u-label", address.Address{Local: "a", Domain: "bücher.example"}, Headers{}, ErrNotCanonical},
		{"crlf sender", mustAddr(t, "a@example.org"), Headers{Sender: "x@y\r\nBcc: z"}, ErrBadHeader},
		{"angle sender", mustAddr(t, "a@example.org"), Headers{Sender: "x@y>"}, ErrBadHeader},
		{"lf orig", mustAddr(t, "a@example.org"), Headers{OriginalTo: "a@b\nX: y"}, ErrBadHeader},
	} {
		_, err := s.Deliver(c.mb, c.hdr, strings.NewReader("x"))
		if !errors.Is(err, c.want) {
			t.Errorf("%s: err = %v, want %v", c.name, err, c.want)
		}
	}
	// Nothing was created for the refused deliveries.
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("root not empty: %v", ents)
	}
}

func TestSymlinkRefused(t *testing.T) {
	outside := t.TempDir()
	for _, c := range []struct {
		name string
		link string // relative to the root, pointing to outside
	}{
		{"domain", "example.org"},
		{"local", "example.org/alice"},
		{"new", "example.org/alice/new"},
		{"tmp", "example.org/alice/tmp"},
		{"cur", "example.org/alice/cur"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, dir := openStore(t)
			link := filepath.Join(dir, filepath.FromSlash(c.link))
			if err := os.MkdirAll(filepath.Dir(link), 0o700); err != nil {
				t.Fatal(err)
			}
			for _, sub := range []string{"tmp", "new", "cur"} {
				os.MkdirAll(filepath.Join(outside, sub), 0o700)
			}
			if err := os.Symlink(outside, link); err != nil {
				t.Fatal(err)
			}
			_, err := s.Deliver(mustAddr(t, "alice@example.org"), Headers{}, strings.NewReader("x"))
			if !errors.Is(err, ErrSymlink) {
				t.Fatalf("err = %v, want ErrSymlink", err)
			}
			if !strings.Contains(err.Error(), link) {
				t.Errorf("error %q does not name %s", err, link)
			}
			filepath.WalkDir(outside, func(p string, d fs.DirEntry, err error) error {
				if err == nil && !d.IsDir() {
					t.Errorf("file written outside the root: %s", p)
				}
				return nil
			})
		})
	}
	// A symlink inside the root is refused as well (no aliasing of mailboxes).
	s, dir := openStore(t)
	os.MkdirAll(filepath.Join(dir, "example.org", "bob"), 0o700)
	os.Symlink("bob", filepath.Join(dir, "example.org", "alice"))
	if _, err := s.Deliver(mustAddr(t, "alice@example.org"), Headers{}, strings.NewReader("x")); !errors.Is(err, ErrSymlink) {
		t.Fatalf("err = %v, want ErrSymlink", err)
	}
}

func TestRootMayBeSymlink(t *testing.T) {
	real := t.TempDir()
	link := filepath.Join(t.TempDir(), "mail")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	if _, err := Deliver(link, mustAddr(t, "a@example.org"), Headers{}, strings.NewReader("x")); err != nil {
		t.Fatal(err)
	}
}

func TestNotDirRefused(t *testing.T) {
	s, dir := openStore(t)
	os.MkdirAll(filepath.Join(dir, "example.org"), 0o700)
	os.WriteFile(filepath.Join(dir, "example.org", "alice"), nil, 0o600)
	_, err := s.Deliver(mustAddr(t, "alice@example.org"), Headers{}, strings.NewReader("x"))
	if !errors.Is(err, ErrNotDir) {
		t.Fatalf("err = %v", err)
	}
}

func TestErrorsNamePath(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root ignores permissions")
	}
	s, dir := openStore(t)
	mb := mustAddr(t, "alice@example.org")
	if _, err := s.Deliver(mb, Headers{}, strings.NewReader("x")); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(dir, "example.org", "alice", "tmp")
	os.Chmod(tmp, 0o500)
	defer os.Chmod(tmp, 0o700)
	_, err := s.Deliver(mb, Headers{}, strings.NewReader("x"))
	if !errors.Is(err, fs.ErrPermission) || !strings.Contains(err.Error(), tmp+string(filepath.Separator)) {
		t.Fatalf("err = %v, want permission error naming %s", err, tmp)
	}
}

type failReader struct{ n int }

func (f *failReader) Read(p []byte) (int, error) {
	if f.n == 0 {
		return 0, errors.New("connection reset")
	}
	f.n--
	p[0] = 'x'
	return 1, nil
}

func TestReadErrorLeavesNothing(t *testing.T) {
	s, dir := openStore(t)
	_, err := s.Deliver(mustAddr(t, "alice@example.org"), Headers{}, &failReader{n: 10})
	if err == nil || !strings.Contains(err.Error(), "connection reset") || !strings.Contains(err.Error(), filepath.Join(dir, "example.org", "alice", "tmp")) {
		t.Fatalf("err = %v", err)
	}
	for _, sub := range []string{"tmp", "new"} {
		if ents, _ := os.ReadDir(filepath.Join(dir, "example.org", "alice", sub)); len(ents) != 0 {
			t.Errorf("%s not empty: %v", sub, ents)
		}
	}
}

func TestUniqueConcurrent(t *testing.T) {
	now := time.Unix(1700000000, 0) // a frozen clock: names differ by Q and R only
	dir := filepath.Join(t.TempDir(), "mail")
	s, err := Open(dir, Options{Hostname: "h", Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const workers, each = 16, 25
	mbs := []address.Address{mustAddr(t, "a@example.org"), mustAddr(t, "b@example.org"), mustAddr(t, "a@example.net")}
	var wg sync.WaitGroup
	var mu sync.Mutex
	paths := map[string]bool{}
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				p, err := s.Deliver(mbs[(w+i)%len(mbs)], Headers{}, strings.NewReader(fmt.Sprintf("Subject: %d-%d\n\n", w, i)))
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if paths[p] {
					t.Errorf("duplicate %s", p)
				}
				paths[p] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	total := 0
	for _, mb := range mbs {
		d, _ := s.Dir(mb)
		ents, _ := os.ReadDir(filepath.Join(d, "new"))
		total += len(ents)
	}
	if total != workers*each || len(paths) != workers*each {
		t.Fatalf("%d files, %d paths, want %d", total, len(paths), workers*each)
	}
}

// TestNoPartialFileInNew delivers large messages while a reader loops over
// new/: every file it sees must be complete (its size equals S=).
func TestNoPartialFileInNew(t *testing.T) {
	s, _ := openStore(t)
	mb := mustAddr(t, "alice@example.org")
	d, _ := s.Dir(mb)
	body := strings.Repeat("0123456789abcdef\r\n", 20000) // 360 KB
	var done atomic.Bool
	var seen atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !done.Load() {
			ents, _ := os.ReadDir(filepath.Join(d, "new"))
			for _, e := range ents {
				data, err := os.ReadFile(filepath.Join(d, "new", e.Name()))
				if err != nil {
					continue
				}
				i := strings.LastIndex(e.Name(), ",S=")
				want, _ := strconv.Atoi(e.Name()[i+3:])
				if len(data) != want || !strings.HasSuffix(string(data), "0123456789abcdef\n") {
					t.Errorf("partial file %s: %d bytes, want %d", e.Name(), len(data), want)
				}
				seen.Add(1)
			}
		}
	}()
	var ww sync.WaitGroup
	for range 4 {
		ww.Add(1)
		go func() {
			defer ww.Done()
			for range 10 {
				if _, err := s.Deliver(mb, Headers{}, strings.NewReader(body)); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	ww.Wait()
	done.Store(true)
	wg.Wait()
	if seen.Load() == 0 {
		t.Error("reader saw no file")
	}
}

func TestDeliverAll(t *testing.T) {
	s, dir := openStore(t)
	targets := []Target{
		{Mailbox: mustAddr(t, "a@example.org"), OriginalTo: "list@example.org"},
		{Mailbox: mustAddr(t, "b@example.org")},
		{Mailbox: address.Address{Local: "../x", Domain: "example.org"}},
		{Mailbox: mustAddr(t, "a@example.org"), OriginalTo: "a+x@example.org"},
	}
	body := []byte("Subject: all\r\n\r\nhello\r\n")
	res := s.DeliverAll("s@remote.example", targets, bytes.NewReader(body), int64(len(body)))
	if len(res) != len(targets) {
		t.Fatal(len(res))
	}
	for i, r := range res {
		if i == 2 {
			if !errors.Is(r.Err, ErrUnsafeName) {
				t.Errorf("target 2: %v", r.Err)
			}
			continue
		}
		if r.Err != nil {
			t.Fatalf("target %d: %v", i, r.Err)
		}
		got, _ := os.ReadFile(r.Path)
		orig := r.OriginalTo
		if orig == "" {
			orig = r.Mailbox.String()
		}
		want := "Return-Path: <s@remote.example>\nX-Original-To: " + orig + "\nDelivered-To: " + r.Mailbox.String() + "\nSubject: all\n\nhello\n"
		if string(got) != want {
			t.Errorf("target %d: %q", i, got)
		}
	}
	if res[0].Path == res[3].Path {
		t.Error("same path twice")
	}
	ents, _ := os.ReadDir(filepath.Join(dir, "example.org", "a", "new"))
	if len(ents) != 2 {
		t.Errorf("a/new has %d files", len(ents))
	}
}

func TestEscapeHost(t *testing.T) {
	if got := escapeHost("a/b:c,d.e-f_g"); got != `a\057b\072c\054d.e-f_g` {
		t.Errorf("got %s", got)
	}
}
