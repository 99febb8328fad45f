// Package authn checks SMTP AUTH credentials (RFC 4954) against the accounts
// of postfix-accounts.cf, for the submission listeners of `mailgate serve`
// (SPEC §8) and for a Dovecot-protocol SASL listener. The SASL mechanism
// (PLAIN, RFC 4616; LOGIN) is decoded by the caller; this package only
// decides whether a login and password are valid.
//
// # Logins
//
// The login is the account address in any case: it is parsed with package
// address (SMTPUTF8 local parts allowed) and looked up in canonical form, and
// Authenticate returns the canonical account address — the identity that
// policy.MaySend must be asked about. Passwords are verified by package passwd
// ({SHA512-CRYPT}, {SHA256-CRYPT}, {BLF-CRYPT}).
//
// # Replies
//
// Errors are policy.Reply values, ready to be sent to the client:
//
//   - ErrInvalidCredentials, "535 5.7.8 Authentication credentials invalid"
//     (RFC 4954 §6), for every kind of failure: unknown login, wrong password,
//     malformed login. The reply never says which, and an unknown or malformed
//     login still costs one SHA512-CRYPT verification (against a fixed dummy
//     hash with the default 5000 rounds) so that the response time does not
//     tell whether an account exists either. (The equivalence is exact for
//     accounts hashed with SHA512-CRYPT at 5000 rounds, what docker-mailserver
//     and passwd.Hash write; an account with another scheme or cost answers
//     in that scheme's time.)
//   - ErrTemporaryFailure, "454 4.7.0 Temporary authentication failure"
//     (RFC 4954 §6), when the server cannot decide: no directory loaded, or
//     an account whose stored hash cannot be used (unknown scheme, malformed
//     hash). The cause is logged with the account's file:line; the client
//     only sees the 454.
//
// A canceled or expired context ends the call with an error wrapping
// ctx.Err() (errors.Is(err, context.Canceled) holds); it is not a Reply.
//
// # Back-off
//
// Failures are counted per client network: the IPv4 address (/32) or the
// IPv6 /64 (one customer's allocation, RFC 6177; an IPv4-mapped IPv6 address
// counts as IPv4). An invalid (zero) client address — a caller that does not
// know the peer — forms one shared network of its own. After FreeFailures
// failures, each further attempt from that network, successful or not,
// first waits
//
//	min(BackoffBase · 2^(n − FreeFailures), BackoffCap)
//
// where n is the number of failures so far: with the defaults, the 4th
// attempt after three failures waits 1s, then 2s, 4s, … up to 30s. A
// network's count is forgotten FailureWindow after its last failure.
// Loopback clients are not exempt (a local proxy or webmail relaying for
// everyone should authenticate through its own channel, not share a budget
// of guesses).
//
// A success does NOT reset the count: an attacker who holds the password of
// one account could otherwise interleave its good logins with guesses at
// other accounts and never be slowed down. The cost is that a legitimate user
// who mistyped several times keeps waiting until FailureWindow has passed
// without failures. A credential found in the cache (below) is the
// exception: it proves that the client knew the password before, so it is
// answered at once, without back-off and without waiting in line — users
// who share an address with a guesser (NAT, a webmail proxy) keep working.
//
// Attempts from one network are serialized: an attempt waits for the previous
// attempt of the same network to finish (back-off included) before it
// computes its own delay. Without this, an attacker would run its guesses on
// many parallel connections and sleep through the back-off in parallel;
// with it, one network gets at most one guess per BackoffCap once the cap is
// reached, however many connections it opens. Every wait respects the
// context (the SMTP server gives up an AUTH after 35 s with 454 4.7.0, and
// at once when it shuts down).
//
// The table of networks is bounded by MaxClients; when it is full, the
// least recently active network (oldest last failure) is forgotten, and a
// network is dropped as soon as its failures have expired.
//
// # Credential cache
//
// Like Dovecot's auth cache, a verified credential is remembered for
// CacheTTL so that clients that authenticate for every message do not pay a
// password hash each time. The password itself is never stored: the cache
// key is HMAC-SHA256, under a random key drawn when the process starts, of the
// canonical login, a NUL and the password; the value is the account, the
// stored hash string it was verified against, and an expiry time. A cached
// entry is used only while the account still exists in the snapshot with
// exactly that stored hash, so a password change or the removal of the
// account takes effect at the next attempt. Only successes are cached; the
// cache holds at most CacheSize entries (least recently used are dropped
// first).
//
// An Authenticator is safe for concurrent use.
package authn

import (
	"container/list"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/mailgate/mailgate/internal/address"
	"github.com/mailgate/mailgate/internal/directory"
	"github.com/mailgate/mailgate/internal/passwd"
	"github.com/mailgate/mailgate/internal/policy"
)

var (
	// ErrInvalidCredentials is the reply to every failed authentication
	// (RFC 4954 §6).
	ErrInvalidCredentials = policy.Reply{Code: 535, Enhanced: "5.7.8", Text: "Authentication credentials invalid"}
	// ErrTemporaryFailure is the reply when the credentials cannot be
	// checked for a reason on the server's side (RFC 4954 §6).
	ErrTemporaryFailure = policy.Reply{Code: 454, Enhanced: "4.7.0", Text: "Temporary authentication failure"}
)

// dummyHash is verified when the login names no account, so that an unknown
// login costs the same SHA512-CRYPT computation (5000 rounds) as a known
// one. Nobody knows its password (32 random bytes, hex-encoded, discarded).
const dummyHash = "{SHA512-CRYPT}$6$VjsxEuxXxacZJrzL$3d.UEhleQiFXwxwGS5hcLj5S./A2.qB3cmXGJ/o7ojsNClbqSUyWyA4vUQkmVrRzqstL/KjmMx73E8kcz8hLx/"

// loginOpts parses logins: account addresses may have SMTPUTF8 local parts,
// as in postfix-accounts.cf.
var loginOpts = address.Options{UTF8Local: true}

// Options configures an Authenticator. The zero value gives the defaults.
type Options struct {
	CacheTTL      time.Duration // how long a verified credential stays cached; default 1h; <0 disables the cache
	CacheSize     int           // max cached credentials; default 10000
	FreeFailures  int           // failures per client network before back-off starts; default 3 (when 0); <0 means none: every attempt waits
	BackoffBase   time.Duration // first delay once back-off starts; default 1s, doubling per further failure
	BackoffCap    time.Duration // longest delay; default 30s
	FailureWindow time.Duration // a network's failure count is forgotten after this long without failures; default 15m
	MaxClients    int           // bound on tracked client networks; default 100000 (the oldest is evicted)
	Now           func() time.Time
	Sleep         func(ctx context.Context, d time.Duration) error // default: a timer that stops when ctx is done
	Logger        *slog.Logger                                     // default slog.Default(); never sees a password
}

// Authenticator checks credentials; create it with New.
type Authenticator struct {
	o       Options
	log     *slog.Logger
	verify  func(stored, password string) error // passwd.Verify; replaced by tests to count verifications
	cache   *credCache                          // nil when disabled
	clients *clientTable
}

// New returns an Authenticator with the defaults filled in for the zero
// fields of o.
func New(o Options) *Authenticator {
	if o.CacheTTL == 0 {
		o.CacheTTL = time.Hour
	}
	if o.CacheSize <= 0 {
		o.CacheSize = 10000
	}
	switch {
	case o.FreeFailures == 0:
		o.FreeFailures = 3
	case o.FreeFailures < 0:
		o.FreeFailures = 0
	}
	if o.BackoffBase <= 0 {
		o.BackoffBase = time.Second
	}
	if o.BackoffCap <= 0 {
		o.BackoffCap = 30 * time.Second
	}
	if o.BackoffCap < o.BackoffBase {
		o.BackoffCap = o.BackoffBase
	}
	if o.FailureWindow <= 0 {
		o.FailureWindow = 15 * time.Minute
	}
	if o.MaxClients <= 0 {
		o.MaxClients = 100000
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Sleep == nil {
		o.Sleep = sleep
	}
	a := &Authenticator{
		o:      o,
		log:    o.Logger,
		verify: passwd.Verify,
		clients: &clientTable{
			m:      make(map[netip.Prefix]*client),
			max:    o.MaxClients,
			window: o.FailureWindow,
		},
	}
	if a.log == nil {
		a.log = slog.Default()
	}
	if o.CacheTTL > 0 {
		a.cache = &credCache{ttl: o.CacheTTL, max: o.CacheSize, m: make(map[[sha256.Size]byte]*list.Element)}
		rand.Read(a.cache.key[:]) // never fails (crypto/rand.Read crashes the program instead)
	}
	return a
}

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Authenticate checks login/password against the accounts of snap (login =
// account address, any case, parsed with package address; canonical form).
// It returns the canonical account address. client is the peer's address;
// it selects the back-off bucket (see the package documentation).
//
// The error is ErrInvalidCredentials or ErrTemporaryFailure (policy.Reply
// values), or wraps ctx.Err() when ctx ends while waiting.
func (a *Authenticator) Authenticate(ctx context.Context, snap *directory.Snapshot, client netip.Addr, login, password string) (address.Address, error) {
	if err := ctx.Err(); err != nil {
		return address.Address{}, fmt.Errorf("authentication aborted: %w", err)
	}
	// A credential verified before proves that the client knows the
	// password: it is answered at once, without back-off or waiting in line
	// (so that users sharing an address with a guesser are not slowed down).
	if acct, ok := a.cached(snap, login, password); ok {
		return acct, nil
	}
	c, err := a.clients.acquire(ctx, networkOf(client), a.o.Now())
	if err != nil {
		return address.Address{}, fmt.Errorf("authentication aborted waiting for an earlier attempt from the same network: %w", err)
	}
	failed := false
	defer func() { a.clients.release(c, failed, a.o.Now()) }()

	if d := a.delay(a.clients.failures(c, a.o.Now())); d > 0 {
		if err := a.o.Sleep(ctx, d); err != nil {
			return address.Address{}, fmt.Errorf("authentication aborted during back-off: %w", err)
		}
	}
	acct, err := a.check(snap, login, password)
	failed = errors.Is(err, ErrInvalidCredentials)
	return acct, err
}

// cached reports whether login/password is a cached verified credential.
func (a *Authenticator) cached(snap *directory.Snapshot, login, password string) (address.Address, bool) {
	if a.cache == nil || snap == nil || snap.Available() != nil {
		return address.Address{}, false
	}
	addr, err := address.Parse(login, loginOpts)
	if err != nil {
		return address.Address{}, false
	}
	if !a.cache.lookup(a.cache.sum(addr.String(), password), snap, a.o.Now()) {
		return address.Address{}, false
	}
	return addr, true
}

// delay returns the back-off before an attempt when the network has n
// failures.
func (a *Authenticator) delay(n int) time.Duration {
	if n < a.o.FreeFailures {
		return 0
	}
	d := a.o.BackoffBase
	for i := n - a.o.FreeFailures; i > 0 && d < a.o.BackoffCap; i-- {
		d *= 2
	}
	return min(d, a.o.BackoffCap)
}

// check verifies the credentials, without back-off.
func (a *Authenticator) check(snap *directory.Snapshot, login, password string) (address.Address, error) {
	if snap == nil {
		a.log.Error("authentication: no directory loaded")
		return address.Address{}, ErrTemporaryFailure
	}
	if err := snap.Available(); err != nil {
		a.log.Warn("authentication: the directory is unavailable", "err", err)
		return address.Address{}, ErrTemporaryFailure
	}
	addr, err := address.Parse(login, loginOpts)
	if snap.Ext != nil {
		if _, ok := snap.Accounts[addr]; err != nil || !ok {
			return a.checkExt(snap, login, password)
		}
	}
	if err != nil {
		_ = a.verify(dummyHash, password)
		a.log.Debug("authentication failed: malformed login", "login", truncate(login), "reason", err)
		return address.Address{}, ErrInvalidCredentials
	}
	var key [sha256.Size]byte
	if a.cache != nil {
		key = a.cache.sum(addr.String(), password)
		if a.cache.lookup(key, snap, a.o.Now()) {
			return addr, nil
		}
	}
	acct, ok := snap.Accounts[addr]
	if !ok {
		_ = a.verify(dummyHash, password)
		a.log.Debug("authentication failed: unknown login", "login", addr.String())
		return address.Address{}, ErrInvalidCredentials
	}
	switch err := a.verify(acct.Hash, password); {
	case err == nil:
		if a.cache != nil {
			a.cache.store(key, addr, acct.Hash, a.o.Now())
		}
		return addr, nil
	case errors.Is(err, passwd.ErrMismatch):
		a.log.Debug("authentication failed: password mismatch", "login", addr.String())
		return address.Address{}, ErrInvalidCredentials
	default:
		a.log.Error("authentication: the stored password of the account cannot be used",
			"account", addr.String(), "pos", acct.Pos.String(), "err", err)
		return address.Address{}, ErrTemporaryFailure
	}
}

// checkExt verifies the credentials with the directory's External source
// (LDAP: a bind as the user), which also maps a uid login to its account.
// Its answers are not cached here: the source binds every time.
func (a *Authenticator) checkExt(snap *directory.Snapshot, login, password string) (address.Address, error) {
	acct, err := snap.Ext.Authenticate(login, password)
	switch {
	case err == nil:
		return acct, nil
	case errors.Is(err, directory.ErrBadCredentials):
		a.log.Debug("authentication failed", "login", truncate(login), "source", "external")
		return address.Address{}, ErrInvalidCredentials
	default:
		a.log.Warn("authentication: the directory source failed", "login", truncate(login), "err", err)
		return address.Address{}, ErrTemporaryFailure
	}
}

// truncate bounds a client-supplied string before it is logged.
func truncate(s string) string {
	const max = 256
	if len(s) > max {
		return s[:max] + "…"
	}
	return s
}

// networkOf returns the back-off bucket of a client address: the /32 of an
// IPv4 address (IPv4-mapped IPv6 included), the /64 of an IPv6 address, and
// the zero Prefix for an invalid address.
func networkOf(ip netip.Addr) netip.Prefix {
	ip = ip.Unmap().WithZone("")
	switch {
	case !ip.IsValid():
		return netip.Prefix{}
	case ip.Is4():
		return netip.PrefixFrom(ip, 32)
	default:
		p, _ := ip.Prefix(64)
		return p
	}
}

// clientTable holds the failure counts of client networks.
type clientTable struct {
	mu     sync.Mutex
	m      map[netip.Prefix]*client
	order  list.List // of *client, by last activity (creation or failure), oldest first
	max    int
	window time.Duration
}

// client is the state of one network. An entry exists while an attempt from
// the network is in progress or while it has failures.
type client struct {
	key         netip.Prefix
	elem        *list.Element // nil once removed from the table
	turn        chan struct{} // capacity 1: held by the attempt in progress
	refs        int           // attempts holding or waiting for turn
	failures    int
	lastFailure time.Time
}

// acquire returns the entry of network key once the calling attempt holds
// its turn.
func (t *clientTable) acquire(ctx context.Context, key netip.Prefix, now time.Time) (*client, error) {
	t.mu.Lock()
	c := t.m[key]
	if c == nil {
		t.pruneLocked(now)
		for len(t.m) >= t.max {
			t.removeLocked(t.order.Front().Value.(*client))
		}
		c = &client{key: key, turn: make(chan struct{}, 1)}
		c.elem = t.order.PushBack(c)
		t.m[key] = c
	}
	c.refs++
	t.mu.Unlock()

	select {
	case c.turn <- struct{}{}:
		if err := ctx.Err(); err == nil {
			return c, nil
		}
		<-c.turn
	case <-ctx.Done():
	}
	t.mu.Lock()
	t.derefLocked(c)
	t.mu.Unlock()
	return nil, ctx.Err()
}

// failures returns the failure count of c, forgetting it when the last
// failure is FailureWindow old.
func (t *clientTable) failures(c *client, now time.Time) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	if c.failures > 0 && now.Sub(c.lastFailure) >= t.window {
		c.failures = 0
	}
	return c.failures
}

// release ends an attempt, counting it as a failure when failed.
func (t *clientTable) release(c *client, failed bool, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if failed {
		c.failures++
		c.lastFailure = now
		if c.elem != nil {
			t.order.MoveToBack(c.elem)
		}
	}
	<-c.turn
	t.derefLocked(c)
}

func (t *clientTable) derefLocked(c *client) {
	c.refs--
	if c.refs == 0 && c.failures == 0 && c.elem != nil {
		t.removeLocked(c)
	}
}

func (t *clientTable) removeLocked(c *client) {
	t.order.Remove(c.elem)
	c.elem = nil
	delete(t.m, c.key)
}

// pruneLocked forgets the oldest networks whose failures have expired.
func (t *clientTable) pruneLocked(now time.Time) {
	for e := t.order.Front(); e != nil; e = t.order.Front() {
		c := e.Value.(*client)
		if c.refs > 0 || now.Sub(c.lastFailure) < t.window {
			return
		}
		t.removeLocked(c)
	}
}

// credCache remembers verified credentials (see the package documentation).
type credCache struct {
	key [32]byte // HMAC key, random per process
	ttl time.Duration
	max int

	mu  sync.Mutex
	m   map[[sha256.Size]byte]*list.Element
	lru list.List // of *cacheEntry, least recently used first
}

type cacheEntry struct {
	key     [sha256.Size]byte
	account address.Address
	hash    string // the stored hash the password was verified against
	expires time.Time
}

// sum returns the cache key of a canonical login and a password.
func (c *credCache) sum(login, password string) [sha256.Size]byte {
	h := hmac.New(sha256.New, c.key[:])
	h.Write([]byte(login))
	h.Write([]byte{0})
	h.Write([]byte(password))
	var k [sha256.Size]byte
	h.Sum(k[:0])
	return k
}

// lookup reports whether key is cached, unexpired, and its account still has
// the same stored hash in snap. A stale entry is dropped.
func (c *credCache) lookup(key [sha256.Size]byte, snap *directory.Snapshot, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	el := c.m[key]
	if el == nil {
		return false
	}
	e := el.Value.(*cacheEntry)
	if acct, ok := snap.Accounts[e.account]; !ok || acct.Hash != e.hash || !now.Before(e.expires) {
		c.lru.Remove(el)
		delete(c.m, key)
		return false
	}
	c.lru.MoveToBack(el)
	return true
}

// store caches a verified credential.
func (c *credCache) store(key [sha256.Size]byte, account address.Address, hash string, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el := c.m[key]; el != nil {
		e := el.Value.(*cacheEntry)
		e.account, e.hash, e.expires = account, hash, now.Add(c.ttl)
		c.lru.MoveToBack(el)
		return
	}
	for len(c.m) >= c.max {
		old := c.lru.Front()
		delete(c.m, old.Value.(*cacheEntry).key)
		c.lru.Remove(old)
	}
	c.m[key] = c.lru.PushBack(&cacheEntry{key: key, account: account, hash: hash, expires: now.Add(c.ttl)})
}
