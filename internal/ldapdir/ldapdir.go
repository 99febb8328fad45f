// Package ldapdir is the LDAP directory source (account_provisioner = ldap):
// a directory.External that asks an LDAP server per lookup, with the
// filters of docker-mailserver's LDAP_QUERY_FILTER_* settings.
//
// Filters are templates, as in Postfix's ldap_table: %s stands for the whole
// lookup key, %u for its local part, %d for its domain part and %% for a
// literal %. Every substituted value is escaped as an RFC 4515 §3 assertion
// value, so a key can never change a filter's structure. A query is
// suppressed (answers "not found") when the key is empty, when %u is used and
// the key's local part is empty (a catch-all "@domain"), or when %d is used
// and the key has no domain part. White space between filter components, as
// docker-mailserver's filters have, is accepted.
//
// Connections are made lazily, so a Source can be made while the server is
// down. They are kept in a small bounded pool, bound as ldap_bind_dn
// (anonymous when it is empty); every dial, bind and search is bounded by
// ldap_timeout. A connection that fails is discarded with every idle one and
// the operation is retried once on a new connection, so a server restart is
// not seen when the server is back. Any server, network or time-out failure
// is a *directory.TempError: the caller answers a temporary failure, never a
// verdict.
//
// Answers of Account, Aliases, Domain, Senders and Login, positive and
// negative, are cached for ldap_cache_ttl (0 disables the cache); errors are
// never cached, and Authenticate never is. A change in the directory is
// therefore seen at most ldap_cache_ttl after it is made: that is the
// staleness bound. The cache is bounded (100,000 answers).
//
// A Source is safe for concurrent use.
package ldapdir

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/url"
	"slices"
	"sync/atomic"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/mailgate/mailgate/internal/address"
	"github.com/mailgate/mailgate/internal/conffile"
	"github.com/mailgate/mailgate/internal/directory"
	"github.com/mailgate/mailgate/internal/settings"
)

// defaultTimeout applies when the settings give none.
const defaultTimeout = 5 * time.Second

// addrOpts: directory entries may name internationalized mailboxes.
var addrOpts = address.Options{UTF8Local: true}

// mailAttr is the attribute whose values are the addresses found (Postfix's
// result_attribute = mail).
const mailAttr = "mail"

// Source is the LDAP directory source. It implements directory.External.
type Source struct {
	cfg     settings.LDAP
	log     *slog.Logger
	timeout time.Duration

	user, alias, group, domain, senders, login *template

	service *pool // bound as the service: every search
	auth    *pool // only binds as users (Authenticate)
	cache   *cache
	stats   counters
}

var _ directory.External = (*Source)(nil)

type counters struct {
	searches, dials, retries, hits, misses atomic.Uint64
}

// Stats are counters of a Source's work since it was made.
type Stats struct {
	Searches    uint64 // searches sent to the server
	Dials       uint64 // connections opened
	Retries     uint64 // operations retried on a new connection
	CacheHits   uint64
	CacheMisses uint64
	CacheSize   int // answers held
}

// Stats returns the Source's counters.
func (s *Source) Stats() Stats {
	return Stats{
		Searches:    s.stats.searches.Load(),
		Dials:       s.stats.dials.Load(),
		Retries:     s.stats.retries.Load(),
		CacheHits:   s.stats.hits.Load(),
		CacheMisses: s.stats.misses.Load(),
		CacheSize:   s.cache.len(),
	}
}

// New checks the settings and every filter template, and returns a Source.
// It does not connect: the server may be down.
func New(cfg settings.LDAP, log *slog.Logger) (*Source, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Source{cfg: cfg, log: log, timeout: cfg.Timeout}
	if s.timeout <= 0 {
		s.timeout = defaultTimeout
	}
	ep, err := parseServer(cfg.ServerHost)
	if err != nil {
		return nil, fmt.Errorf("ldap_server_host: %w", err)
	}
	ep.timeout = s.timeout
	ep.startTLS = cfg.StartTLS
	if cfg.SearchBase == "" {
		return nil, errors.New("ldap_search_base: empty")
	}
	if _, err := ldap.ParseDN(cfg.SearchBase); err != nil {
		return nil, fmt.Errorf("ldap_search_base: %q is not a DN: %w", cfg.SearchBase, err)
	}
	if cfg.BindDN != "" && cfg.BindPW == "" {
		return nil, errors.New("ldap_bind_pw: empty while ldap_bind_dn is set (an LDAP bind with an empty password is unauthenticated)")
	}
	for _, f := range []struct {
		setting string
		text    string
		dst     **template
	}{
		{"ldap_query_filter_user", cfg.FilterUser, &s.user},
		{"ldap_query_filter_alias", cfg.FilterAlias, &s.alias},
		{"ldap_query_filter_group", cfg.FilterGroup, &s.group},
		{"ldap_query_filter_domain", cfg.FilterDomain, &s.domain},
		{"ldap_query_filter_senders", cfg.FilterSenders, &s.senders},
		{"ldap_query_filter_login", cfg.FilterLogin, &s.login},
	} {
		if f.text == "" {
			continue // that lookup finds nothing
		}
		t, err := parseTemplate(f.setting, f.text)
		if err != nil {
			return nil, err
		}
		*f.dst = t
	}
	s.service = newPool("service", ep, cfg.BindDN, cfg.BindPW, log, &s.stats)
	s.auth = newPool("auth", ep, "", "", log, &s.stats)
	s.cache = newCache(cfg.CacheTTL)
	return s, nil
}

// parseServer reads ldap_server_host: ldap://host[:port] or
// ldaps://host[:port] (a bare host is taken as ldap://).
func parseServer(v string) (endpoint, error) {
	if v == "" {
		return endpoint{}, errors.New("empty")
	}
	raw := v
	if !containsScheme(v) {
		raw = "ldap://" + v
	}
	u, err := url.Parse(raw)
	if err != nil {
		return endpoint{}, fmt.Errorf("%q is not an LDAP URL: %w", v, err)
	}
	var port string
	switch u.Scheme {
	case "ldap":
		port = "389"
	case "ldaps":
		port = "636"
	default:
		return endpoint{}, fmt.Errorf("%q: scheme %q, expected ldap:// or ldaps://", v, u.Scheme)
	}
	host := u.Hostname()
	if host == "" {
		return endpoint{}, fmt.Errorf("%q has no host", v)
	}
	if p := u.Port(); p != "" {
		port = p
	}
	return endpoint{
		scheme:   u.Scheme,
		hostport: net.JoinHostPort(host, port),
		tls:      &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12},
	}, nil
}

func containsScheme(v string) bool {
	for i := 0; i+2 < len(v); i++ {
		if v[i] == ':' && v[i+1] == '/' && v[i+2] == '/' {
			return true
		}
	}
	return false
}

// Close closes the idle connections; connections in use are closed when
// their operation ends. Lookups after Close fail.
func (s *Source) Close() error {
	s.service.close()
	s.auth.close()
	s.cache.flush()
	return nil
}

// temp wraps err as a temporary failure of the source.
func temp(err error) error {
	return &directory.TempError{Source: "ldap", Err: err}
}

// search runs template t with key on the service pool and returns the
// entries. ok is false when the query was suppressed (see the package
// comment) or t is nil. With sizeLimit > 0, a size-limit-exceeded result is
// not an error: the entries returned so far are the answer. Errors are
// *directory.TempError.
func (s *Source) search(t *template, key string, attrs []string, sizeLimit int) ([]*ldap.Entry, error) {
	if t == nil {
		return nil, nil
	}
	filter, ok := t.expand(key)
	if !ok {
		return nil, nil
	}
	req := ldap.NewSearchRequest(s.cfg.SearchBase, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases,
		sizeLimit, timeLimit(s.timeout), false, filter, attrs, nil)
	var res *ldap.SearchResult
	err := s.service.run(func(c *ldap.Conn) error {
		s.stats.searches.Add(1)
		var err error
		res, err = c.Search(req)
		return err
	})
	if err != nil {
		if sizeLimit > 0 && res != nil && ldap.IsErrorWithCode(err, ldap.LDAPResultSizeLimitExceeded) {
			return res.Entries, nil
		}
		return nil, temp(fmt.Errorf("%s search for %q: %w", t.setting, key, err))
	}
	if res == nil {
		return nil, temp(fmt.Errorf("%s search for %q: no result", t.setting, key))
	}
	return res.Entries, nil
}

// timeLimit is the server-side time limit of a search, in whole seconds.
func timeLimit(d time.Duration) int {
	sec := math.Ceil(d.Seconds())
	if sec < 1 {
		return 1
	}
	if sec > math.MaxInt32 {
		return math.MaxInt32
	}
	return int(sec)
}

func pos(e *ldap.Entry) conffile.Pos {
	return conffile.Pos{File: "ldap " + e.DN}
}

// cached returns the cached answer for (k, key), or computes, caches and
// returns it. Errors are not cached.
func cached[T any](s *Source, k kind, key string, compute func() (T, error)) (T, error) {
	ck := cacheKey{k, key}
	if v, ok := s.cache.get(ck); ok {
		s.stats.hits.Add(1)
		return v.(T), nil
	}
	if s.cache != nil {
		s.stats.misses.Add(1)
	}
	v, err := compute()
	if err != nil {
		return v, err
	}
	s.cache.put(ck, v)
	return v, nil
}

type accountAnswer struct {
	acc directory.ExtAccount
	ok  bool
}

// Account reports whether a is an account: whether the user filter finds an
// entry for a.
func (s *Source) Account(a address.Address) (directory.ExtAccount, bool, error) {
	key := a.String()
	ans, err := cached(s, kindAccount, key, func() (accountAnswer, error) {
		entries, err := s.search(s.user, key, []string{"1.1"}, 1)
		if err != nil || len(entries) == 0 {
			return accountAnswer{}, err
		}
		return accountAnswer{directory.ExtAccount{Pos: pos(entries[0])}, true}, nil
	})
	return ans.acc, ans.ok, err
}

// Aliases returns the targets of key (an address, or "@domain" for a
// catch-all): every mail value of every entry that the alias and the group
// filters find, de-duplicated.
func (s *Source) Aliases(key conffile.Key) ([]directory.ExtTarget, error) {
	k := key.String()
	ts, err := cached(s, kindAliases, k, func() ([]directory.ExtTarget, error) {
		var out []directory.ExtTarget
		seen := map[address.Address]bool{}
		for _, t := range []*template{s.alias, s.group} {
			entries, err := s.search(t, k, []string{mailAttr}, 0)
			if err != nil {
				return nil, err
			}
			out = s.appendMail(out, seen, entries, t, k)
		}
		return out, nil
	})
	return slices.Clone(ts), err
}

// appendMail appends the valid, not yet seen mail values of entries.
func (s *Source) appendMail(out []directory.ExtTarget, seen map[address.Address]bool, entries []*ldap.Entry, t *template, key string) []directory.ExtTarget {
	for _, e := range entries {
		for _, v := range e.GetEqualFoldAttributeValues(mailAttr) {
			a, err := address.Parse(v, addrOpts)
			if err != nil {
				s.log.Warn("ldap: skipping an invalid mail value", "dn", e.DN, "filter", t.setting, "key", key, "err", err)
				continue
			}
			if seen[a] {
				continue
			}
			seen[a] = true
			out = append(out, directory.ExtTarget{Address: a, Pos: pos(e)})
		}
	}
	return out
}

// Domain reports whether domain is managed: whether the domain filter finds
// any entry.
func (s *Source) Domain(domain string) (bool, error) {
	return cached(s, kindDomain, domain, func() (bool, error) {
		entries, err := s.search(s.domain, domain, []string{"1.1"}, 1)
		return len(entries) > 0, err
	})
}

// Senders returns the accounts that the senders filter lists as owners of
// the sender address sa: the mail values of the entries it finds. Without a
// senders filter it returns nothing.
func (s *Source) Senders(sa address.Address) ([]directory.ExtTarget, error) {
	if s.senders == nil {
		return nil, nil
	}
	key := sa.String()
	ts, err := cached(s, kindSenders, key, func() ([]directory.ExtTarget, error) {
		entries, err := s.search(s.senders, key, []string{mailAttr}, 0)
		if err != nil {
			return nil, err
		}
		return s.appendMail(nil, map[address.Address]bool{}, entries, s.senders, key), nil
	})
	return slices.Clone(ts), err
}

type loginAnswer struct {
	addr address.Address
	pos  conffile.Pos
	ok   bool
}

// Login maps a login (an address or a uid) to its account's address: the
// first mail value of the one entry the login filter finds. An unknown login,
// an ambiguous one (more than one entry: never guess) or an entry without a
// valid mail value answer ok = false.
func (s *Source) Login(login string) (address.Address, conffile.Pos, bool, error) {
	ans, err := cached(s, kindLogin, login, func() (loginAnswer, error) {
		e, a, err := s.findLogin(login)
		if err != nil || e == nil {
			return loginAnswer{}, err
		}
		return loginAnswer{a, pos(e), true}, nil
	})
	return ans.addr, ans.pos, ans.ok, err
}

// findLogin searches the login filter for login; it returns the entry and
// its account address, or a nil entry when there is no usable one.
func (s *Source) findLogin(login string) (*ldap.Entry, address.Address, error) {
	entries, err := s.search(s.login, login, []string{mailAttr}, 2)
	if err != nil {
		return nil, address.Address{}, err
	}
	switch len(entries) {
	case 0:
		return nil, address.Address{}, nil
	case 1:
	default:
		s.log.Warn("ldap: ambiguous login, the login filter finds more than one entry; refusing it",
			"login", login, "dns", []string{entries[0].DN, entries[1].DN})
		return nil, address.Address{}, nil
	}
	e := entries[0]
	vals := e.GetEqualFoldAttributeValues(mailAttr)
	if len(vals) == 0 {
		s.log.Warn("ldap: the login's entry has no mail attribute", "login", login, "dn", e.DN)
		return nil, address.Address{}, nil
	}
	// LDAP does not order values: an address login names its own value
	// among several; a uid login takes the first.
	v := vals[0]
	if la, err := address.Parse(login, addrOpts); err == nil {
		for _, x := range vals {
			if xa, err := address.Parse(x, addrOpts); err == nil && xa == la {
				v = x
				break
			}
		}
	}
	a, err := address.Parse(v, addrOpts)
	if err != nil {
		s.log.Warn("ldap: the login's entry has an invalid mail value", "login", login, "dn", e.DN, "err", err)
		return nil, address.Address{}, nil
	}
	return e, a, nil
}

// Authenticate checks login's password with a simple bind as the login's
// entry, on a connection that is never used for searches, and returns the
// account's address. An empty password, an unknown or ambiguous login and a
// wrong password are directory.ErrBadCredentials; anything else is a
// *directory.TempError. Never cached.
func (s *Source) Authenticate(login, password string) (address.Address, error) {
	if password == "" {
		// An empty password would be an unauthenticated bind, which many
		// servers answer with success.
		return address.Address{}, directory.ErrBadCredentials
	}
	e, a, err := s.findLogin(login)
	if err != nil {
		return address.Address{}, err
	}
	if e == nil {
		return address.Address{}, directory.ErrBadCredentials
	}
	if e.DN == "" {
		// A bind with an empty name is anonymous, whatever the password.
		s.log.Warn("ldap: the login's entry has an empty DN; refusing it", "login", login)
		return address.Address{}, directory.ErrBadCredentials
	}
	err = s.auth.run(func(c *ldap.Conn) error {
		return c.Bind(e.DN, password)
	})
	switch {
	case err == nil:
		return a, nil
	case ldap.IsErrorWithCode(err, ldap.LDAPResultInvalidCredentials):
		return address.Address{}, directory.ErrBadCredentials
	default:
		return address.Address{}, temp(fmt.Errorf("bind as %q (login %q): %w", e.DN, login, err))
	}
}
