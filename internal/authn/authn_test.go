package authn

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailgate/mailgate/internal/conffile"
	"github.com/mailgate/mailgate/internal/directory"
	"github.com/mailgate/mailgate/internal/passwd"
	"github.com/mailgate/mailgate/internal/policy"
	"github.com/mailgate/mailgate/internal/settings"
)

// hashes caches passwd.Hash results: SHA512-CRYPT is slow under -race.
var hashes sync.Map

func hashOf(t testing.TB, password string) string {
	t.Helper()
	if h, ok := hashes.Load(password); ok {
		return h.(string)
	}
	h, err := passwd.Hash(password)
	if err != nil {
		t.Fatal(err)
	}
	hashes.Store(password, h)
	return h
}

// snapshot builds a Snapshot from postfix-accounts.cf lines "address|hash".
func snapshot(t testing.TB, lines ...string) *directory.Snapshot {
	t.Helper()
	s, err := settings.Load(t.TempDir(), func(string) (string, bool) { return "", false }, map[string]string{"hostname": "mail.example.test"})
	if err != nil {
		t.Fatal(err)
	}
	snap, err := directory.Build(map[string][]byte{conffile.AccountsFile: []byte(strings.Join(lines, "\n") + "\n")}, s)
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

// clock is a fake time source; its sleep advances it and records the delays.
type clock struct {
	mu     sync.Mutex
	now    time.Time
	sleeps []time.Duration
}

func newClock() *clock { return &clock{now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func (c *clock) Sleep(ctx context.Context, d time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sleeps = append(c.sleeps, d)
	c.now = c.now.Add(d)
	return ctx.Err()
}

// takeSleeps returns and clears the recorded delays.
func (c *clock) takeSleeps() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.sleeps
	c.sleeps = nil
	return s
}

// counter wraps the verification function to count calls per stored hash.
type counter struct {
	mu    sync.Mutex
	calls map[string]int
}

func count(a *Authenticator) *counter {
	c := &counter{calls: map[string]int{}}
	a.verify = func(stored, password string) error {
		c.mu.Lock()
		c.calls[stored]++
		c.mu.Unlock()
		return passwd.Verify(stored, password)
	}
	return c
}

func (c *counter) get(stored string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls[stored]
}

func (c *counter) total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, v := range c.calls {
		n += v
	}
	return n
}

var quiet = slog.New(slog.DiscardHandler)

func newAuth(c *clock, o Options) *Authenticator {
	o.Now, o.Sleep, o.Logger = c.Now, c.Sleep, quiet
	return New(o)
}

var (
	ip1 = netip.MustParseAddr("192.0.2.1")
	ip2 = netip.MustParseAddr("192.0.2.2")
)

func TestAuthenticateOutcomes(t *testing.T) {
	hash := hashOf(t, "correct horse")
	snap := snapshot(t,
		"alice@example.org|"+hash,
		"bücher@xn--bcher-kva.example|"+hash,
		"broken@example.org|{PLAIN}secret",
		"badhash@example.org|{SHA512-CRYPT}nodollar",
	)
	a := newAuth(newClock(), Options{FreeFailures: 1000})
	ctx := context.Background()
	ok := []struct{ login, want string }{
		{"alice@example.org", "alice@example.org"},
		{"ALICE@Example.ORG", "alice@example.org"},
		{`"alice"@example.org`, "alice@example.org"},
		{"BÜCHER@bücher.example", "bücher@xn--bcher-kva.example"},
	}
	for _, c := range ok {
		got, err := a.Authenticate(ctx, snap, ip1, c.login, "correct horse")
		if err != nil || got.String() != c.want {
			t.Errorf("Authenticate(%q) = %v, %v; want %s", c.login, got, err, c.want)
		}
	}
	invalid := []struct{ login, password string }{
		{"alice@example.org", "correct horse "},
		{"alice@example.org", "Correct horse"},
		{"alice@example.org", ""},
		{"alice@example.org", strings.Repeat("x", passwd.MaxLength+1)},
		{"nobody@example.org", "correct horse"},
		{"alice", "correct horse"},
		{"", "correct horse"},
		{"alice@example.org ", "correct horse"},
		{"alice@example.org\x00", "correct horse"},
		{"alice@[192.0.2.1]", "correct horse"},
	}
	for _, c := range invalid {
		got, err := a.Authenticate(ctx, snap, ip1, c.login, c.password)
		var r policy.Reply
		if !errors.As(err, &r) || r != ErrInvalidCredentials || !got.IsZero() {
			t.Errorf("Authenticate(%q, %q) = %v, %v; want %v", c.login, c.password, got, err, ErrInvalidCredentials)
		}
	}
	if got := ErrInvalidCredentials.String(); got != "535 5.7.8 Authentication credentials invalid" {
		t.Errorf("invalid reply = %q", got)
	}
	for _, login := range []string{"broken@example.org", "BADHASH@example.org"} {
		_, err := a.Authenticate(ctx, snap, ip1, login, "secret")
		if err != ErrTemporaryFailure || ErrTemporaryFailure.String() != "454 4.7.0 Temporary authentication failure" {
			t.Errorf("Authenticate(%s) = %v, want %v", login, err, ErrTemporaryFailure)
		}
	}
	if _, err := a.Authenticate(ctx, nil, ip1, "alice@example.org", "correct horse"); err != ErrTemporaryFailure {
		t.Errorf("nil snapshot: %v, want %v", err, ErrTemporaryFailure)
	}
}

// An unknown or malformed login costs a verification against the dummy
// hash, which must be a real SHA512-CRYPT hash with the default rounds.
func TestUnknownLoginVerifiesDummy(t *testing.T) {
	if err := passwd.Verify(dummyHash, "correct horse"); !errors.Is(err, passwd.ErrMismatch) {
		t.Fatalf("dummy hash: Verify = %v, want ErrMismatch", err)
	}
	if !strings.HasPrefix(dummyHash, "{SHA512-CRYPT}$6$") || strings.Contains(dummyHash, "rounds=") {
		t.Fatalf("dummy hash %q is not SHA512-CRYPT with default rounds", dummyHash)
	}
	hash := hashOf(t, "correct horse")
	snap := snapshot(t, "alice@example.org|"+hash)
	a := newAuth(newClock(), Options{FreeFailures: 1000})
	n := count(a)
	for i, login := range []string{"nobody@example.org", "not an address", "bob@example.org"} {
		if _, err := a.Authenticate(context.Background(), snap, ip1, login, "correct horse"); err != ErrInvalidCredentials {
			t.Fatalf("%s: %v", login, err)
		}
		if got := n.get(dummyHash); got != i+1 {
			t.Fatalf("after %q: %d dummy verifications, want %d", login, got, i+1)
		}
	}
	if _, err := a.Authenticate(context.Background(), snap, ip1, "alice@example.org", "wrong"); err != ErrInvalidCredentials {
		t.Fatal(err)
	}
	if n.get(dummyHash) != 3 || n.get(hash) != 1 {
		t.Fatalf("wrong password verified %d×dummy, %d×account; want 3, 1", n.get(dummyHash), n.get(hash))
	}
}

func TestBackoff(t *testing.T) {
	hash := hashOf(t, "pw")
	snap := snapshot(t, "alice@example.org|"+hash)
	c := newClock()
	a := newAuth(c, Options{CacheTTL: -1})
	ctx := context.Background()
	fail := func(ip netip.Addr) {
		t.Helper()
		if _, err := a.Authenticate(ctx, snap, ip, "alice@example.org", "wrong"); err != ErrInvalidCredentials {
			t.Fatalf("wrong password: %v", err)
		}
	}
	succeed := func(ip netip.Addr) {
		t.Helper()
		if _, err := a.Authenticate(ctx, snap, ip, "alice@example.org", "pw"); err != nil {
			t.Fatalf("right password: %v", err)
		}
	}
	expect := func(what string, want ...time.Duration) {
		t.Helper()
		got := c.takeSleeps()
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("%s: slept %v, want %v", what, got, want)
		}
	}
	// Three free failures, and a success in between costs nothing either.
	fail(ip1)
	succeed(ip1)
	fail(ip1)
	fail(ip1)
	expect("free failures")
	// Then every attempt waits 1s, 2s, 4s, … up to 30s; successes wait
	// too and do not reset the count.
	fail(ip1)
	expect("4th failure", time.Second)
	succeed(ip1)
	expect("success after 4 failures", 2*time.Second)
	succeed(ip1)
	expect("second success", 2*time.Second)
	for range 6 {
		fail(ip1)
	}
	expect("failures 5 to 10", 2*time.Second, 4*time.Second, 8*time.Second, 16*time.Second, 30*time.Second, 30*time.Second)
	fail(ip1)
	expect("capped", 30*time.Second)
	// Another network is unaffected, loopback included.
	succeed(ip2)
	lo := netip.MustParseAddr("127.0.0.1")
	for range 3 {
		fail(lo)
	}
	expect("other networks")
	fail(lo)
	expect("loopback is not exempt", time.Second)
	// The count is forgotten FailureWindow after the last failure…
	c.Advance(14 * time.Minute)
	succeed(ip1)
	expect("within the window", 30*time.Second)
	c.Advance(15 * time.Minute)
	succeed(ip1)
	fail(ip1)
	fail(ip1)
	fail(ip1)
	expect("after the window")
	fail(ip1)
	expect("counting again", time.Second)
	if a.clients.m[networkOf(ip2)] != nil {
		t.Error("a network without failures is still tracked")
	}
}

func TestBackoffNetworks(t *testing.T) {
	snap := snapshot(t, "alice@example.org|"+hashOf(t, "pw"))
	c := newClock()
	a := newAuth(c, Options{FreeFailures: 1, CacheTTL: -1})
	ctx := context.Background()
	attempt := func(ip string) time.Duration {
		t.Helper()
		if _, err := a.Authenticate(ctx, snap, netip.MustParseAddr(ip), "alice@example.org", "wrong"); err != ErrInvalidCredentials {
			t.Fatal(err)
		}
		s := c.takeSleeps()
		switch len(s) {
		case 0:
			return 0
		case 1:
			return s[0]
		}
		t.Fatalf("%s: slept %v", ip, s)
		return 0
	}
	steps := []struct {
		ip   string
		want time.Duration
	}{
		{"2001:db8:1:2::1", 0},
		{"2001:db8:1:2:ffff:ffff:ffff:ffff", time.Second},           // same /64
		{"2001:db8:1:2::1%eth0", 2 * time.Second},                   // zone ignored
		{"2001:db8:1:3::1", 0},                                      // next /64
		{"198.51.100.7", 0},                                         // IPv4 /32
		{"::ffff:198.51.100.7", time.Second},                        // IPv4-mapped is the same address
		{"198.51.100.8", 0},                                         // neighbour /32
		{"::198.51.100.7", 0},                                       // IPv4-compatible is IPv6 (::/64)
		{"::1", time.Second},                                        // same ::/64
		{"2001:db8:1:2::abcd", 4 * time.Second},                     // first /64 again
		{"2001:db8:1:2:8000::", 8 * time.Second},                    // still within it
		{"2001:db8:1:3:8000::", time.Second},                        // second /64
		{"198.51.100.7", 2 * time.Second},                           // the /32 again
		{"2001:db8:1:2::1", 16 * time.Second},                       // first /64 again
		{"::ffff:198.51.100.8", time.Second},                        // the neighbour, mapped
		{"2001:db8:1:2::1", 30 * time.Second},                       // cap
		{"2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", 0},               // unrelated
		{"2001:db8:ffff:ffff:0000:0000:0000:0000", 1 * time.Second}, // same /64 as above
	}
	for _, s := range steps {
		if got := attempt(s.ip); got != s.want {
			t.Errorf("%s: waited %v, want %v", s.ip, got, s.want)
		}
	}
	// Unknown peers share one bucket.
	if _, err := a.Authenticate(ctx, snap, netip.Addr{}, "alice@example.org", "wrong"); err != ErrInvalidCredentials {
		t.Fatal(err)
	}
	if _, err := a.Authenticate(ctx, snap, netip.Addr{}, "x", "wrong"); err != ErrInvalidCredentials {
		t.Fatal(err)
	}
	if s := c.takeSleeps(); fmt.Sprint(s) != "[1s]" {
		t.Errorf("invalid client addresses: slept %v, want [1s]", s)
	}
}

func TestBackoffMaxClients(t *testing.T) {
	snap := snapshot(t, "alice@example.org|"+hashOf(t, "pw"))
	c := newClock()
	a := newAuth(c, Options{FreeFailures: 1, MaxClients: 2, CacheTTL: -1})
	ctx := context.Background()
	fail := func(ip netip.Addr) {
		t.Helper()
		if _, err := a.Authenticate(ctx, snap, ip, "alice@example.org", "wrong"); err != ErrInvalidCredentials {
			t.Fatal(err)
		}
	}
	ip3 := netip.MustParseAddr("192.0.2.3")
	fail(ip1)
	c.Advance(time.Second)
	fail(ip2)
	c.Advance(time.Second)
	fail(ip1) // ip1 is now the most recent failure
	c.expectSleeps(t, "[1s]")
	c.Advance(time.Second)
	fail(ip3) // evicts ip2, the oldest
	if n := len(a.clients.m); n != 2 {
		t.Fatalf("%d networks tracked, want at most 2", n)
	}
	if n := a.clients.order.Len(); n != 2 {
		t.Fatalf("%d networks in the eviction order, want 2", n)
	}
	fail(ip2)
	c.expectSleeps(t, "[]") // forgotten
	fail(ip3)
	c.expectSleeps(t, "[1s]") // remembered
	// Expired networks are pruned when a new one arrives.
	c.Advance(time.Hour)
	fail(ip1)
	if n := len(a.clients.m); n != 1 {
		t.Errorf("%d networks tracked after the window, want 1", n)
	}
}

// expectSleeps checks the recorded delays.
func (c *clock) expectSleeps(t *testing.T, want string) {
	t.Helper()
	if got := fmt.Sprint(c.takeSleeps()); got != want {
		t.Fatalf("slept %s, want %s", got, want)
	}
}

// Concurrent attempts from one network queue behind each other, so each
// sees the failures of those before it: a burst of N guesses waits like N
// sequential ones.
func TestBackoffSerializesNetwork(t *testing.T) {
	snap := snapshot(t, "alice@example.org|"+hashOf(t, "pw"))
	var active, maxActive atomic.Int32
	var mu sync.Mutex
	var sleeps []time.Duration
	a := New(Options{
		CacheTTL: -1,
		Logger:   quiet,
		Sleep: func(ctx context.Context, d time.Duration) error {
			n := active.Add(1)
			defer active.Add(-1)
			for {
				m := maxActive.Load()
				if n <= m || maxActive.CompareAndSwap(m, n) {
					break
				}
			}
			mu.Lock()
			sleeps = append(sleeps, d)
			mu.Unlock()
			time.Sleep(2 * time.Millisecond)
			return nil
		},
	})
	const n = 8
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			if _, err := a.Authenticate(context.Background(), snap, ip1, "alice@example.org", "wrong"); err != ErrInvalidCredentials {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if m := maxActive.Load(); m != 1 {
		t.Errorf("%d attempts of one network slept at once, want 1", m)
	}
	want := []time.Duration{1, 2, 4, 8, 16}
	for i := range want {
		want[i] *= time.Second
	}
	if fmt.Sprint(sleeps) != fmt.Sprint(want) {
		t.Errorf("a burst of %d failures slept %v, want %v", n, sleeps, want)
	}
}

func TestContextCanceled(t *testing.T) {
	snap := snapshot(t, "alice@example.org|"+hashOf(t, "pw"))
	// The default sleep, with a one-hour back-off.
	a := New(Options{FreeFailures: 1, BackoffBase: time.Hour, BackoffCap: time.Hour, Logger: quiet})
	n := count(a)
	bg := context.Background()
	if _, err := a.Authenticate(bg, snap, ip1, "alice@example.org", "wrong"); err != ErrInvalidCredentials {
		t.Fatal(err)
	}

	// Already canceled: nothing is verified.
	done, cancel := context.WithCancel(bg)
	cancel()
	if _, err := a.Authenticate(done, snap, ip2, "alice@example.org", "pw"); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled context: %v", err)
	}

	// Canceled during the back-off.
	ctx, cancel := context.WithCancel(bg)
	errc := make(chan error, 2)
	go func() {
		_, err := a.Authenticate(ctx, snap, ip1, "alice@example.org", "pw")
		errc <- err
	}()
	// A second attempt queues behind the first and is canceled while
	// waiting for its turn.
	ctx2, cancel2 := context.WithTimeout(bg, 20*time.Millisecond)
	defer cancel2()
	if _, err := a.Authenticate(ctx2, snap, ip1, "alice@example.org", "pw"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("queued attempt: %v, want DeadlineExceeded", err)
	}
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("attempt in back-off: %v, want Canceled", err)
		}
		var r policy.Reply
		if errors.As(err, &r) {
			t.Errorf("cancellation is a Reply: %v", r)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("cancellation did not end the back-off")
	}
	if got := n.total(); got != 1 {
		t.Errorf("%d verifications, want only the first", got)
	}
	// Canceled attempts are not failures, and leave no waiters behind.
	a.clients.mu.Lock()
	c := a.clients.m[networkOf(ip1)]
	if c == nil || c.failures != 1 || c.refs != 0 || len(c.turn) != 0 {
		t.Errorf("network state after cancellations: %+v", c)
	}
	if a.clients.m[networkOf(ip2)] != nil {
		t.Errorf("the canceled attempt of a fresh network left an entry")
	}
	a.clients.mu.Unlock()
}

func TestCache(t *testing.T) {
	hash := hashOf(t, "pw")
	snap := snapshot(t, "alice@example.org|"+hash, "bob@example.org|"+hash, "carol@example.org|"+hash)
	c := newClock()
	a := newAuth(c, Options{FreeFailures: 1000, CacheSize: 2})
	n := count(a)
	ctx := context.Background()
	auth := func(snap *directory.Snapshot, login, pw string) error {
		t.Helper()
		_, err := a.Authenticate(ctx, snap, ip1, login, pw)
		return err
	}
	verified := func(what string, want int) {
		t.Helper()
		if got := n.total(); got != want {
			t.Fatalf("%s: %d verifications in total, want %d", what, got, want)
		}
	}
	if err := auth(snap, "alice@example.org", "pw"); err != nil {
		t.Fatal(err)
	}
	verified("first login", 1)
	if err := auth(snap, "Alice@EXAMPLE.org", "pw"); err != nil {
		t.Fatal(err)
	}
	verified("cached login, other case", 1)
	if err := auth(snap, "alice@example.org", "PW"); err != ErrInvalidCredentials {
		t.Fatal(err)
	}
	if err := auth(snap, "alice@example.org", "PW"); err != ErrInvalidCredentials {
		t.Fatal(err)
	}
	verified("failures are not cached", 3)
	if err := auth(snap, "bob@example.org", "pw"); err != nil {
		t.Fatal(err)
	}
	verified("other account", 4)
	for k, el := range a.cache.m {
		e := el.Value.(*cacheEntry)
		if e.hash != hash || e.key != k || e.key != a.cache.sum(e.account.String(), "pw") {
			t.Fatalf("cache entry %+v", *e)
		}
	}
	// The snapshot is rebuilt with the same hash: still cached.
	snap2 := snapshot(t, "bob@example.org|"+hash, "alice@example.org|"+hash, "carol@example.org|"+hash)
	if err := auth(snap2, "alice@example.org", "pw"); err != nil {
		t.Fatal(err)
	}
	verified("same hash in a new snapshot", 4)
	// Size 2: carol evicts the least recently used, bob.
	if err := auth(snap, "carol@example.org", "pw"); err != nil {
		t.Fatal(err)
	}
	verified("carol", 5)
	if err := auth(snap, "alice@example.org", "pw"); err != nil {
		t.Fatal(err)
	}
	verified("alice still cached", 5)
	if err := auth(snap, "bob@example.org", "pw"); err != nil {
		t.Fatal(err)
	}
	verified("bob was evicted", 6)
	if len(a.cache.m) != 2 || a.cache.lru.Len() != 2 {
		t.Fatalf("cache holds %d/%d entries, want 2", len(a.cache.m), a.cache.lru.Len())
	}

	// A password change invalidates the entry at once.
	changed := snapshot(t, "alice@example.org|"+hashOf(t, "new"), "bob@example.org|"+hash)
	if err := auth(changed, "alice@example.org", "pw"); err != ErrInvalidCredentials {
		t.Fatalf("old password after a change: %v", err)
	}
	verified("changed password", 7)
	if err := auth(changed, "alice@example.org", "new"); err != nil {
		t.Fatal(err)
	}
	// So does the removal of the account (and it costs a dummy verification).
	removed := snapshot(t, "carol@example.org|"+hash)
	before := n.get(dummyHash)
	if err := auth(removed, "bob@example.org", "pw"); err != ErrInvalidCredentials {
		t.Fatalf("removed account: %v", err)
	}
	if n.get(dummyHash) != before+1 {
		t.Error("a removed account did not cost a dummy verification")
	}
	// Going back to the old snapshot does not revive the dropped entry
	// silently: it verifies again.
	total := n.total()
	if err := auth(snap, "bob@example.org", "pw"); err != nil {
		t.Fatal(err)
	}
	verified("bob after removal", total+1)

	// Expiry.
	total = n.total()
	c.Advance(time.Hour - time.Second)
	if err := auth(snap, "bob@example.org", "pw"); err != nil {
		t.Fatal(err)
	}
	verified("within the TTL", total)
	c.Advance(time.Hour)
	if err := auth(snap, "bob@example.org", "pw"); err != nil {
		t.Fatal(err)
	}
	verified("after the TTL", total+1)
}

func TestCacheDisabled(t *testing.T) {
	snap := snapshot(t, "alice@example.org|"+hashOf(t, "pw"))
	a := newAuth(newClock(), Options{CacheTTL: -1})
	n := count(a)
	for range 3 {
		if _, err := a.Authenticate(context.Background(), snap, ip1, "alice@example.org", "pw"); err != nil {
			t.Fatal(err)
		}
	}
	if n.total() != 3 || a.cache != nil {
		t.Errorf("disabled cache: %d verifications, want 3", n.total())
	}
}

// The cache key separates login and password, and differs between
// processes (Authenticators).
func TestCacheKey(t *testing.T) {
	a, b := New(Options{}), New(Options{})
	if a.cache.key == b.cache.key {
		t.Fatal("two Authenticators share the HMAC key")
	}
	if a.cache.sum("a@b.c", "d") == a.cache.sum("a@b.cd", "") {
		t.Error("login and password run together in the key")
	}
	mac := hmac.New(sha256.New, a.cache.key[:])
	mac.Write([]byte("a@b.c\x00pw"))
	if k := a.cache.sum("a@b.c", "pw"); !bytes.Equal(k[:], mac.Sum(nil)) {
		t.Error("the key is not HMAC-SHA256(login NUL password)")
	}
	if a.cache.sum("a@b.c", "pw") == b.cache.sum("a@b.c", "pw") {
		t.Error("two Authenticators compute the same key")
	}
}

func TestDelay(t *testing.T) {
	a := New(Options{FreeFailures: 2, BackoffBase: 3 * time.Second, BackoffCap: time.Minute})
	want := []time.Duration{0, 0, 3, 6, 12, 24, 48, 60, 60}
	for n, w := range want {
		if got := a.delay(n); got != w*time.Second {
			t.Errorf("delay(%d) = %v, want %v", n, got, w*time.Second)
		}
	}
	if got := a.delay(1 << 40); got != time.Minute {
		t.Errorf("delay(huge) = %v", got)
	}
	// No free failures: even the first attempt waits.
	if got := New(Options{FreeFailures: -1}).delay(0); got != time.Second {
		t.Errorf("FreeFailures -1: delay(0) = %v, want 1s", got)
	}
	d := New(Options{})
	if d.o.CacheTTL != time.Hour || d.o.CacheSize != 10000 || d.o.FreeFailures != 3 || d.o.BackoffBase != time.Second ||
		d.o.BackoffCap != 30*time.Second || d.o.FailureWindow != 15*time.Minute || d.o.MaxClients != 100000 {
		t.Errorf("defaults: %+v", d.o)
	}
}

// Many clients and accounts at once, for the race detector, with the real
// clock and sleep (a back-off short enough to finish).
func TestConcurrent(t *testing.T) {
	hash := hashOf(t, "pw")
	var lines []string
	for i := range 4 {
		lines = append(lines, fmt.Sprintf("u%d@example.org|%s", i, hash))
	}
	snap := snapshot(t, lines...)
	a := New(Options{FreeFailures: 1, BackoffBase: time.Microsecond, BackoffCap: 50 * time.Microsecond, MaxClients: 3, CacheSize: 2, Logger: quiet})
	var wg sync.WaitGroup
	var bad atomic.Int32
	for g := range 8 {
		wg.Go(func() {
			ip := netip.AddrFrom4([4]byte{10, 0, 0, byte(g % 5)})
			for i := range 12 {
				login := fmt.Sprintf("U%d@example.org", (g+i)%4)
				pw := "pw"
				if i%3 == 0 {
					pw = "no"
				}
				got, err := a.Authenticate(context.Background(), snap, ip, login, pw)
				if (pw == "pw") != (err == nil) || (err == nil && got.String() != strings.ToLower(login)) {
					bad.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if bad.Load() != 0 {
		t.Errorf("%d wrong answers under concurrency", bad.Load())
	}
	a.clients.mu.Lock()
	defer a.clients.mu.Unlock()
	if len(a.clients.m) > 3 || a.clients.order.Len() != len(a.clients.m) {
		t.Errorf("client table: %d entries, %d in order", len(a.clients.m), a.clients.order.Len())
	}
	for _, c := range a.clients.m {
		if c.refs != 0 || len(c.turn) != 0 {
			t.Errorf("left over: %+v", c)
		}
	}
}

// A cached credential is answered without back-off, even from a network
// in back-off.
func TestCachedSkipsBackoff(t *testing.T) {
	snap := snapshot(t, "alice@example.org|"+hashOf(t, "pw"))
	var slept atomic.Int32
	a := New(Options{
		Logger: quiet,
		Sleep: func(ctx context.Context, d time.Duration) error {
			slept.Add(1)
			return nil
		},
	})
	if _, err := a.Authenticate(context.Background(), snap, ip1, "alice@example.org", "pw"); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		a.Authenticate(context.Background(), snap, ip1, "alice@example.org", "wrong")
	}
	before := slept.Load()
	if before == 0 {
		t.Fatal("no back-off after 5 failures")
	}
	if _, err := a.Authenticate(context.Background(), snap, ip1, "alice@example.org", "pw"); err != nil {
		t.Fatal(err)
	}
	if slept.Load() != before {
		t.Errorf("a cached credential waited for the back-off")
	}
	// An uncached attempt still waits.
	a.Authenticate(context.Background(), snap, ip1, "alice@example.org", "other")
	if slept.Load() == before {
		t.Errorf("an uncached attempt skipped the back-off")
	}
}

// A snapshot whose directory source is down answers 454 4.7.0 for every
// login, even one whose credentials are cached: the account may have been
// removed meanwhile (issue 7).
func TestUnavailableDirectory(t *testing.T) {
	snap := snapshot(t, "alice@example.org|"+hashOf(t, "pw"))
	a := newAuth(newClock(), Options{})
	ctx := context.Background()
	if _, err := a.Authenticate(ctx, snap, ip1, "alice@example.org", "pw"); err != nil {
		t.Fatal(err)
	}
	down := *snap
	down.Unavailable = &directory.TempError{Source: "postgres", Err: errors.New("connection refused")}
	for _, pw := range []string{"pw", "wrong"} {
		if _, err := a.Authenticate(ctx, &down, ip1, "alice@example.org", pw); !errors.Is(err, ErrTemporaryFailure) {
			t.Errorf("password %q with the directory down: %v, want %v", pw, err, ErrTemporaryFailure)
		}
	}
}
