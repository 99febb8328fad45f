package ldapdir

import (
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/mailgate/mailgate/internal/address"
	"github.com/mailgate/mailgate/internal/conffile"
	"github.com/mailgate/mailgate/internal/directory"
	"github.com/mailgate/mailgate/internal/settings"
)

const (
	dnSomeUser  = "uid=some.user,ou=users,dc=example,dc=test"
	dnOtherUser = "uid=some.other.user,ou=users,dc=example,dc=test"
	dnUserID    = "uid=some.user.id,ou=users,dc=example,dc=test"
)

func addr(t testing.TB, s string) address.Address {
	t.Helper()
	a, err := address.Parse(s, addrOpts)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func key(t testing.TB, s string) conffile.Key {
	t.Helper()
	if d, ok := strings.CutPrefix(s, "@"); ok {
		return conffile.Key{Domain: d}
	}
	return conffile.KeyOf(addr(t, s))
}

// targets renders targets as "address<dn>" strings, sorted.
func targets(ts []directory.ExtTarget) []string {
	var out []string
	for _, t := range ts {
		out = append(out, t.Address.String()+"<"+strings.TrimPrefix(t.Pos.String(), "ldap ")+">")
	}
	slices.Sort(out)
	return out
}

func TestLookups(t *testing.T) {
	in := needLDAP(t)
	for _, fs := range []struct {
		name string
		cfg  settings.LDAP
	}{
		{"default filters", in.defaultConfig()},
		{"DMS test filters", in.testConfig()},
	} {
		t.Run(fs.name, func(t *testing.T) {
			s := newSource(t, fs.cfg)
			for _, tc := range []struct {
				addr string
				dn   string // "" for none
			}{
				{"some.user@localhost.localdomain", dnSomeUser},
				{"Some.User@LocalHost.LocalDomain", dnSomeUser},
				{"some.other.user@localhost.otherdomain", dnOtherUser},
				{"some.user.email@localhost.localdomain", dnUserID},
				{"postmaster@localhost.localdomain", ""},
				{"employees@localhost.localdomain", ""},
				{"nobody@localhost.localdomain", ""},
				{"some.user@localhost.otherdomain", ""},
			} {
				acc, ok, err := s.Account(addr(t, tc.addr))
				if err != nil {
					t.Fatalf("Account(%s): %v", tc.addr, err)
				}
				if ok != (tc.dn != "") || ok && acc.Pos.String() != "ldap "+tc.dn || ok && acc.Pos.Line != 0 {
					t.Errorf("Account(%s) = %v, %v; want %q", tc.addr, acc.Pos, ok, tc.dn)
				}
			}

			for _, tc := range []struct {
				key  string
				want []string
			}{
				{"postmaster@localhost.localdomain", []string{"some.user@localhost.localdomain<" + dnSomeUser + ">"}},
				{"postmaster@localhost.otherdomain", []string{"some.other.user@localhost.otherdomain<" + dnOtherUser + ">"}},
				{"employees@localhost.localdomain", []string{"some.user@localhost.localdomain<" + dnSomeUser + ">"}},
				{"employees@localhost.otherdomain", []string{"some.other.user@localhost.otherdomain<" + dnOtherUser + ">"}},
				{"some.user@localhost.localdomain", nil},
				{"nobody@localhost.localdomain", nil},
				{"@localhost.localdomain", nil},
			} {
				ts, err := s.Aliases(key(t, tc.key))
				if err != nil {
					t.Fatalf("Aliases(%s): %v", tc.key, err)
				}
				if got := targets(ts); !slices.Equal(got, tc.want) {
					t.Errorf("Aliases(%s) = %q, want %q", tc.key, got, tc.want)
				}
			}

			for d, want := range map[string]bool{
				"localhost.localdomain": true,
				"localhost.otherdomain": true,
				"example.test":          false,
				"localdomain":           false,
			} {
				got, err := s.Domain(d)
				if err != nil || got != want {
					t.Errorf("Domain(%s) = %v, %v; want %v", d, got, err, want)
				}
			}

			for login, want := range map[string]string{
				"some.user":                             "some.user@localhost.localdomain",
				"some.user@localhost.localdomain":       "some.user@localhost.localdomain",
				"SOME.USER@localhost.localdomain":       "some.user@localhost.localdomain",
				"some.user.id":                          "some.user.email@localhost.localdomain",
				"some.user.email@localhost.localdomain": "some.user.email@localhost.localdomain",
				"some.other.user":                       "some.other.user@localhost.otherdomain",
				"nobody":                                "",
				"postmaster@localhost.localdomain":      "",
				"":                                      "",
			} {
				a, p, ok, err := s.Login(login)
				if err != nil {
					t.Fatalf("Login(%q): %v", login, err)
				}
				if ok != (want != "") || a.String() != want || ok && !strings.HasPrefix(p.String(), "ldap uid=") {
					t.Errorf("Login(%q) = %v, %v, %v; want %q", login, a, p, ok, want)
				}
			}
		})
	}
}

func TestSenders(t *testing.T) {
	in := needLDAP(t)
	// The default settings have no senders filter.
	s := newSource(t, in.defaultConfig())
	if ts, err := s.Senders(addr(t, "some.user@localhost.localdomain")); ts != nil || err != nil {
		t.Errorf("Senders without a filter = %v, %v", ts, err)
	}

	s = newSource(t, in.testConfig())
	id := "some.user.email@localhost.localdomain<" + dnUserID + ">"
	for _, tc := range []struct {
		sender string
		want   []string
	}{
		// some.user.id owns every address (userID=some.user.id).
		{"some.user@localhost.localdomain", []string{"some.user@localhost.localdomain<" + dnSomeUser + ">", id}},
		{"postmaster@localhost.otherdomain", []string{"some.other.user@localhost.otherdomain<" + dnOtherUser + ">", id}},
		{"employees@localhost.localdomain", []string{"some.user@localhost.localdomain<" + dnSomeUser + ">", id}},
		{"anyone@elsewhere.test", []string{id}},
	} {
		ts, err := s.Senders(addr(t, tc.sender))
		if err != nil {
			t.Fatalf("Senders(%s): %v", tc.sender, err)
		}
		slices.Sort(tc.want)
		if got := targets(ts); !slices.Equal(got, tc.want) {
			t.Errorf("Senders(%s) = %q, want %q", tc.sender, got, tc.want)
		}
	}
}

func TestLoginAmbiguous(t *testing.T) {
	in := needLDAP(t)
	cfg := in.defaultConfig()
	// Every account of the key's domain: two in localhost.localdomain.
	cfg.FilterLogin = "(&(mail=*@%d)(objectClass=PostfixBookMailAccount))"
	s := newSource(t, cfg)
	if a, _, ok, err := s.Login("x@localhost.localdomain"); ok || err != nil {
		t.Errorf("ambiguous Login = %v, %v, %v; want not found", a, ok, err)
	}
	if _, err := s.Authenticate("x@localhost.localdomain", "secret"); !errors.Is(err, directory.ErrBadCredentials) {
		t.Errorf("ambiguous Authenticate: %v, want ErrBadCredentials", err)
	}
	// One account there: found.
	if a, _, ok, err := s.Login("x@localhost.otherdomain"); !ok || err != nil || a.String() != "some.other.user@localhost.otherdomain" {
		t.Errorf("Login = %v, %v, %v", a, ok, err)
	}
	// No domain part: %d suppresses the query.
	if _, _, ok, err := s.Login("some.user"); ok || err != nil {
		t.Errorf("Login without a domain = %v, %v", ok, err)
	}
}

func TestAuthenticate(t *testing.T) {
	in := needLDAP(t)
	s := newSource(t, in.defaultConfig())
	for _, tc := range []struct {
		login, password, want string
		err                   error
	}{
		{"some.user", "secret", "some.user@localhost.localdomain", nil},
		{"some.user@localhost.localdomain", "secret", "some.user@localhost.localdomain", nil},
		{"some.user.id", "secret", "some.user.email@localhost.localdomain", nil},
		{"some.other.user@localhost.otherdomain", "secret", "some.other.user@localhost.otherdomain", nil},
		{"some.user", "wrong", "", directory.ErrBadCredentials},
		{"some.user", "secret ", "", directory.ErrBadCredentials},
		{"some.user", "", "", directory.ErrBadCredentials},
		{"nobody", "secret", "", directory.ErrBadCredentials},
		{"", "secret", "", directory.ErrBadCredentials},
		{"*", "secret", "", directory.ErrBadCredentials},
		{"postmaster@localhost.localdomain", "secret", "", directory.ErrBadCredentials},
	} {
		a, err := s.Authenticate(tc.login, tc.password)
		if !errors.Is(err, tc.err) || (err == nil) != (tc.err == nil) || a.String() != tc.want {
			t.Errorf("Authenticate(%q, %q) = %v, %v; want %q, %v", tc.login, tc.password, a, err, tc.want, tc.err)
		}
	}

	// An empty password is refused without asking the server.
	before := s.Stats()
	if _, err := s.Authenticate("some.user", ""); !errors.Is(err, directory.ErrBadCredentials) {
		t.Errorf("empty password: %v", err)
	}
	if after := s.Stats(); after.Searches != before.Searches || after.Dials != before.Dials {
		t.Errorf("empty password reached the server: %+v → %+v", before, after)
	}

	// Binding as users leaves the service connections as they were.
	if _, ok, err := s.Account(addr(t, "some.user@localhost.localdomain")); !ok || err != nil {
		t.Errorf("Account after Authenticate = %v, %v", ok, err)
	}
}

// TestInjectionServer: hostile keys find nothing, where the unescaped filter
// would find every entry.
func TestInjectionServer(t *testing.T) {
	in := needLDAP(t)
	s := newSource(t, in.defaultConfig())
	for _, k := range []string{"*", "a*)(uid=*", "*)(|(uid=*", "some.user)(|(uid=*", "*)(mailEnabled=TRUE"} {
		if a, _, ok, err := s.Login(k); ok || err != nil {
			t.Errorf("Login(%q) = %v, %v, %v", k, a, ok, err)
		}
		hostile := address.Address{Local: k, Domain: "localhost.localdomain"}
		if _, ok, err := s.Account(hostile); ok || err != nil {
			t.Errorf("Account(%q) = %v, %v", hostile, ok, err)
		}
		if ts, err := s.Aliases(conffile.Key{Local: k, Domain: "localhost.localdomain"}); len(ts) > 0 || err != nil {
			t.Errorf("Aliases(%q) = %v, %v", k, ts, err)
		}
		if ok, err := s.Domain(k); ok || err != nil {
			t.Errorf("Domain(%q) = %v, %v", k, ok, err)
		}
	}
}

// TestServerDown: a stopped server is a quick temporary failure, and the
// same Source answers again once it is back.
func TestServerDown(t *testing.T) {
	in := needLDAP(t)
	cfg := in.defaultConfig()
	cfg.Timeout = time.Second
	s := newSource(t, cfg)
	some := addr(t, "some.user@localhost.localdomain")
	if _, ok, err := s.Account(some); !ok || err != nil {
		t.Fatalf("Account = %v, %v", ok, err)
	}
	if _, err := s.Authenticate("some.user", "secret"); err != nil {
		t.Fatalf("Authenticate: %v", err)
	}

	in.pause(t)
	resumed := false
	defer func() {
		if !resumed {
			in.resume(t)
		}
	}()
	check := func(what string, err error, start time.Time) {
		t.Helper()
		if !directory.IsTemp(err) {
			t.Errorf("%s with the server down: %v, want a TempError", what, err)
		} else if d := time.Since(start); d > cfg.Timeout+500*time.Millisecond {
			t.Errorf("%s took %v with the server down (timeout %v)", what, d, cfg.Timeout)
		}
	}
	start := time.Now()
	_, _, err := s.Account(some)
	check("Account", err, start)
	var te *directory.TempError
	if errors.As(err, &te) && (te.Source != "ldap" || !strings.Contains(err.Error(), "ldap_query_filter_user")) {
		t.Errorf("TempError = %+v (%v)", te, err)
	}
	start = time.Now()
	_, err = s.Aliases(key(t, "postmaster@localhost.localdomain"))
	check("Aliases", err, start)
	start = time.Now()
	_, err = s.Domain("localhost.localdomain")
	check("Domain", err, start)
	start = time.Now()
	_, _, _, err = s.Login("some.user")
	check("Login", err, start)
	start = time.Now()
	_, err = s.Authenticate("some.user", "secret")
	check("Authenticate", err, start)

	in.resume(t)
	resumed = true
	if _, ok, err := s.Account(some); !ok || err != nil {
		t.Errorf("Account after the server is back = %v, %v", ok, err)
	}
	if a, err := s.Authenticate("some.user", "secret"); err != nil || a != some {
		t.Errorf("Authenticate after the server is back = %v, %v", a, err)
	}
}

// TestServerRestart: a restart between two lookups is not seen (the dead
// pooled connection is replaced and the lookup retried).
func TestServerRestart(t *testing.T) {
	in := needLDAP(t)
	s := newSource(t, in.defaultConfig())
	some := addr(t, "some.user@localhost.localdomain")
	if _, ok, err := s.Account(some); !ok || err != nil {
		t.Fatalf("Account = %v, %v", ok, err)
	}
	in.pause(t)
	in.resume(t)
	if _, ok, err := s.Account(some); !ok || err != nil {
		t.Errorf("Account after a restart = %v, %v", ok, err)
	}
	if a, err := s.Authenticate("some.user", "secret"); err != nil || a != some {
		t.Errorf("Authenticate after a restart = %v, %v", a, err)
	}
}

// fakeServer listens on loopback and hands every connection to serve.
func fakeServer(t *testing.T, serve func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				serve(c)
			}()
		}
	}()
	return "ldap://" + ln.Addr().String()
}

// TestUnresponsiveServer: a server that accepts but never answers, or
// answers garbage, is a temporary failure within the time-out.
func TestUnresponsiveServer(t *testing.T) {
	for _, tc := range []struct {
		name  string
		serve func(net.Conn)
	}{
		{"silent", func(c net.Conn) { _, _ = io.Copy(io.Discard, c) }},
		{"garbage", func(c net.Conn) {
			buf := make([]byte, 512)
			_, _ = c.Read(buf)
			_, _ = c.Write([]byte("\x30\x84\xff\xff\xff\xff garbage that is no LDAP message"))
			_, _ = io.Copy(io.Discard, c)
		}},
		{"short", func(c net.Conn) {
			buf := make([]byte, 512)
			_, _ = c.Read(buf)
			// A well-formed envelope with an unknown operation and no result.
			_, _ = c.Write([]byte{0x30, 0x05, 0x02, 0x01, 0x01, 0x7f, 0x00})
			c.Close()
		}},
		{"closing", func(c net.Conn) { c.Close() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url := fakeServer(t, tc.serve)
			for _, bind := range []bool{false, true} {
				cfg := settings.LDAP{
					ServerHost: url, SearchBase: "dc=example,dc=test",
					FilterUser: settings.DefaultLDAPFilterUser, FilterLogin: settings.DefaultLDAPFilterLogin,
					Timeout: 300 * time.Millisecond,
				}
				if bind {
					cfg.BindDN, cfg.BindPW = "cn=admin,dc=example,dc=test", "secret"
				}
				s := newSource(t, cfg)
				start := time.Now()
				_, _, err := s.Account(address.Address{Local: "a", Domain: "b.test"})
				if !directory.IsTemp(err) {
					t.Errorf("bind %v: Account: %v, want a TempError", bind, err)
				}
				if d := time.Since(start); d > 2*cfg.Timeout+300*time.Millisecond {
					t.Errorf("bind %v: Account took %v (timeout %v)", bind, d, cfg.Timeout)
				}
				_, err = s.Authenticate("a", "secret")
				if !directory.IsTemp(err) {
					t.Errorf("bind %v: Authenticate: %v, want a TempError", bind, err)
				}
			}
		})
	}
}

// TestCache: with a TTL, a changed entry is answered from the cache until
// the TTL has passed; without a cache, at once.
func TestCache(t *testing.T) {
	in := needLDAP(t)
	admin := in.admin(t)
	const dn = "uid=cache.test,ou=users,dc=example,dc=test"
	add := ldap.NewAddRequest(dn, nil)
	add.Attribute("objectClass", []string{"inetOrgPerson", "PostfixBookMailAccount"})
	add.Attribute("uid", []string{"cache.test"})
	add.Attribute("cn", []string{"Cache Test"})
	add.Attribute("sn", []string{"Test"})
	add.Attribute("mail", []string{"cache.test@localhost.localdomain"})
	add.Attribute("mailAlias", []string{"cache.alias@localhost.localdomain"})
	add.Attribute("mailEnabled", []string{"TRUE"})
	if err := admin.Add(add); err != nil {
		t.Fatalf("adding %s: %v", dn, err)
	}
	t.Cleanup(func() { _ = admin.Del(ldap.NewDelRequest(dn, nil)) })

	const ttl = 300 * time.Millisecond
	cfg := in.defaultConfig()
	cfg.CacheTTL = ttl
	cachedSrc := newSource(t, cfg)
	cfg.CacheTTL = 0
	direct := newSource(t, cfg)

	a := addr(t, "cache.test@localhost.localdomain")
	ak := key(t, "cache.alias@localhost.localdomain")
	for _, s := range []*Source{cachedSrc, direct} {
		if _, ok, err := s.Account(a); !ok || err != nil {
			t.Fatalf("Account = %v, %v", ok, err)
		}
		if ts, err := s.Aliases(ak); len(ts) != 1 || err != nil {
			t.Fatalf("Aliases = %v, %v", ts, err)
		}
		if _, _, ok, err := s.Login("cache.test"); !ok || err != nil {
			t.Fatalf("Login = %v, %v", ok, err)
		}
	}
	changed := time.Now()
	mod := ldap.NewModifyRequest(dn, nil)
	mod.Replace("mailEnabled", []string{"FALSE"})
	if err := admin.Modify(mod); err != nil {
		t.Fatalf("modifying %s: %v", dn, err)
	}

	if _, ok, err := direct.Account(a); ok || err != nil {
		t.Errorf("without cache: Account after the change = %v, %v; want not found", ok, err)
	}
	if ts, err := direct.Aliases(ak); len(ts) != 0 || err != nil {
		t.Errorf("without cache: Aliases after the change = %v, %v", ts, err)
	}
	if _, ok, err := cachedSrc.Account(a); !ok || err != nil {
		if time.Since(changed) < ttl {
			t.Errorf("with cache: Account after the change = %v, %v; want the cached answer", ok, err)
		}
	}
	if ts, err := cachedSrc.Aliases(ak); len(ts) != 1 || err != nil {
		if time.Since(changed) < ttl {
			t.Errorf("with cache: Aliases after the change = %v, %v; want the cached answer", ts, err)
		}
	}
	if st := cachedSrc.Stats(); st.CacheHits == 0 || st.CacheSize == 0 {
		t.Errorf("Stats = %+v, want cache hits", st)
	}

	// After the TTL, the change is seen.
	time.Sleep(time.Until(changed.Add(ttl + 50*time.Millisecond)))
	if _, ok, err := cachedSrc.Account(a); ok || err != nil {
		t.Errorf("with cache, after the TTL: Account = %v, %v; want not found", ok, err)
	}
	if ts, err := cachedSrc.Aliases(ak); len(ts) != 0 || err != nil {
		t.Errorf("with cache, after the TTL: Aliases = %v, %v", ts, err)
	}
	if _, _, ok, err := cachedSrc.Login("cache.test"); ok || err != nil {
		t.Errorf("with cache, after the TTL: Login = %v, %v", ok, err)
	}

	// Negative answers are cached too.
	mod = ldap.NewModifyRequest(dn, nil)
	mod.Replace("mailEnabled", []string{"TRUE"})
	if err := admin.Modify(mod); err != nil {
		t.Fatal(err)
	}
	changed = time.Now()
	if _, ok, err := cachedSrc.Account(a); ok || err != nil {
		if time.Since(changed) < ttl {
			t.Errorf("with cache: the negative answer was not cached (%v, %v)", ok, err)
		}
	}
	if _, ok, err := direct.Account(a); !ok || err != nil {
		t.Errorf("without cache: Account = %v, %v", ok, err)
	}
}

// TestCacheErrorsNotCached: a failure is not remembered.
func TestCacheErrorsNotCached(t *testing.T) {
	in := needLDAP(t)
	cfg := in.defaultConfig()
	cfg.CacheTTL = time.Minute
	cfg.Timeout = time.Second
	s := newSource(t, cfg)
	a := addr(t, "some.other.user@localhost.otherdomain")
	in.pause(t)
	_, _, err := s.Account(a)
	in.resume(t)
	if !directory.IsTemp(err) {
		t.Fatalf("Account with the server down: %v", err)
	}
	if _, ok, err := s.Account(a); !ok || err != nil {
		t.Errorf("Account once the server is back = %v, %v", ok, err)
	}
}

func TestCacheBound(t *testing.T) {
	c := newCache(time.Minute)
	c.max = 4
	now := time.Unix(1000, 0)
	c.now = func() time.Time { return now }
	for i := range 4 {
		c.put(cacheKey{kindDomain, fmt.Sprint(i)}, true)
	}
	now = now.Add(2 * time.Minute) // all expired
	c.put(cacheKey{kindDomain, "new"}, true)
	if n := c.len(); n != 1 {
		t.Errorf("after dropping expired entries: %d entries, want 1", n)
	}
	for i := range 3 {
		c.put(cacheKey{kindDomain, fmt.Sprint(i)}, true)
	}
	c.put(cacheKey{kindDomain, "overflow"}, true) // none expired: reset
	if n := c.len(); n != 1 {
		t.Errorf("after a reset: %d entries, want 1", n)
	}
	if _, ok := c.get(cacheKey{kindDomain, "overflow"}); !ok {
		t.Error("the new entry is missing")
	}
	var nilCache *cache
	nilCache.put(cacheKey{kindDomain, "x"}, true)
	if _, ok := nilCache.get(cacheKey{kindDomain, "x"}); ok {
		t.Error("a nil cache cached")
	}
}

// TestConcurrent: many lookups at once, with and without a cache.
func TestConcurrent(t *testing.T) {
	in := needLDAP(t)
	for _, ttl := range []time.Duration{0, time.Minute} {
		cfg := in.testConfig()
		cfg.CacheTTL = ttl
		s := newSource(t, cfg)
		some := addr(t, "some.user@localhost.localdomain")
		pm := key(t, "postmaster@localhost.localdomain")
		var wg sync.WaitGroup
		errs := make(chan error, 64)
		for g := range 48 {
			wg.Go(func() {
				for i := range 10 {
					var err error
					switch (g + i) % 4 {
					case 0:
						var ok bool
						if _, ok, err = s.Account(some); err == nil && !ok {
							err = errors.New("Account: not found")
						}
					case 1:
						var ts []directory.ExtTarget
						if ts, err = s.Aliases(pm); err == nil && len(ts) != 1 {
							err = fmt.Errorf("Aliases: %v", ts)
						}
					case 2:
						var ok bool
						if ok, err = s.Domain("localhost.otherdomain"); err == nil && !ok {
							err = errors.New("Domain: not managed")
						}
					case 3:
						_, err = s.Authenticate("some.user", "secret")
					}
					if err != nil {
						select {
						case errs <- err:
						default:
						}
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Errorf("ttl %v: %v", ttl, err)
		}
	}
}

func TestClose(t *testing.T) {
	in := needLDAP(t)
	s := newSource(t, in.defaultConfig())
	some := addr(t, "some.user@localhost.localdomain")
	if _, ok, err := s.Account(some); !ok || err != nil {
		t.Fatalf("Account = %v, %v", ok, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Account(some); !directory.IsTemp(err) {
		t.Errorf("Account after Close: %v", err)
	}
}
