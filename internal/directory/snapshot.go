// Package directory holds mailgate's view of accounts, aliases, send-as
// grants, restrictions and managed domains as one immutable Snapshot, built
// from the configuration files (the embedded default source). A reload builds
// a new Snapshot; readers never see a half-built one.
//
// The directory knows what is configured; package policy decides what it means.
package directory

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/mailgate/mailgate/internal/address"
	"github.com/mailgate/mailgate/internal/conffile"
	"github.com/mailgate/mailgate/internal/pcretable"
	"github.com/mailgate/mailgate/internal/settings"
)

// DomainClass says why a domain is managed (SPEC §3).
type DomainClass string

const (
	MailboxDomain DomainClass = "mailbox" // the domain of an account
	AliasDomain   DomainClass = "alias"   // the domain of an alias key, not a mailbox domain
)

// Alias is the merged entry of one alias key: the union of the targets of
// every line with that key, in file order, without duplicates.
type Alias struct {
	Key     conffile.Key
	Targets []conffile.Target
	Lines   []conffile.Pos // every line that defined the key
}

// Grant is one login's permission to use a sender key (postfix-send-as.cf).
type Grant struct {
	Login string // canonical account address
	Pos   conffile.Pos
}

// Snapshot is an immutable view of the directory.
type Snapshot struct {
	Settings *settings.Settings

	Accounts     map[address.Address]*conffile.Account
	Aliases      map[conffile.Key]*Alias // keys "u@d", "@d" and bare "u"
	Regexp       *pcretable.Table        // nil when there is no postfix-regexp.cf
	SendAs       map[conffile.Key][]Grant
	SendRestrict map[address.Address]conffile.Pos
	RecvRestrict map[address.Address]conffile.Pos
	LocalAliases map[string]*Alias // postfix-aliases.cf: local name → targets
	Domains      map[string]DomainClass

	// Ext, when not nil, is asked for what the maps do not hold (LDAP).
	Ext External
	// Unavailable, when not nil, says why this snapshot cannot answer (its
	// source is down): every decision is a temporary failure.
	Unavailable error

	// Diags are the warnings found while loading (errors make Load fail).
	Diags []conffile.Diag

	regexpOrigins []conffile.Pos // for BuildRendered: the origin of each regexp line
}

// LoadError is returned by Load when a file has errors; Diags holds every
// diagnostic, errors and warnings, in file order.
type LoadError struct{ Diags []conffile.Diag }

func (e *LoadError) Error() string {
	var errs []error
	for _, d := range e.Diags {
		if d.Severity == conffile.Error {
			errs = append(errs, d)
		}
	}
	return errors.Join(errs...).Error()
}

// Load reads every configuration file in dir (each is optional) and builds a
// Snapshot. When any file has an error, Load returns a *LoadError.
func Load(dir string, s *settings.Settings) (*Snapshot, error) {
	// Each file is read when build needs it. A read error ends the load
	// whatever was found before it, as when every file was read first.
	return build(func(name string) (string, bool, error) {
		text, err := conffile.ReadString(filepath.Join(dir, name))
		if errors.Is(err, os.ErrNotExist) {
			return "", false, nil
		}
		if err != nil {
			return "", false, fmt.Errorf("reading %s: %w", name, err)
		}
		return text, true, nil
	}, s)
}

// Build builds a Snapshot from file contents keyed by file name.
func Build(files map[string][]byte, s *settings.Settings) (*Snapshot, error) {
	return build(func(name string) (string, bool, error) {
		data, ok := files[name]
		return string(data), ok, nil
	}, s)
}

// build builds a Snapshot from the files that read returns (ok false for a
// missing file).
func build(read func(name string) (text string, ok bool, err error), s *settings.Settings) (*Snapshot, error) {
	snap := &Snapshot{
		Settings:     s,
		SendAs:       map[conffile.Key][]Grant{},
		SendRestrict: map[address.Address]conffile.Pos{},
		RecvRestrict: map[address.Address]conffile.Pos{},
		LocalAliases: map[string]*Alias{},
		Domains:      map[string]DomainClass{},
	}
	var diags []conffile.Diag
	add := func(d []conffile.Diag) { diags = append(diags, d...) }

	// postfix-accounts.cf and postfix-virtual.cf are most of a large
	// directory, and independent of each other: index them in parallel.
	var acc accountsPart
	var wg sync.WaitGroup
	wg.Go(func() { acc = loadAccounts(read, s.AccountProvisioner) })
	al := loadAliases(read, s.Hostname)
	wg.Wait()
	if acc.err != nil {
		return nil, acc.err
	}
	if al.err != nil {
		return nil, al.err
	}
	snap.Accounts, snap.Aliases = acc.index, al.index
	add(acc.diags)
	add(al.diags)

	text, ok, err := read(conffile.RegexpFile)
	if err != nil {
		return nil, err
	}
	if ok {
		t, err := pcretable.Parse(conffile.RegexpFile, []byte(text))
		if err != nil {
			var pe *pcretable.ParseError
			for _, e := range unjoin(err) {
				if errors.As(e, &pe) {
					add([]conffile.Diag{{Pos: conffile.Pos{File: pe.File, Line: pe.Line}, Severity: conffile.Error, Msg: pe.Msg}})
				} else {
					add([]conffile.Diag{{Pos: conffile.Pos{File: conffile.RegexpFile}, Severity: conffile.Error, Msg: e.Error()}})
				}
			}
		} else {
			snap.Regexp = t
		}
	}

	if text, _, err = read(conffile.SendAsFile); err != nil {
		return nil, err
	}
	grants, d := conffile.ParseSendAs(conffile.SendAsFile, text)
	add(d)
	for _, g := range grants {
		k := g.Sender
		for _, l := range g.Logins {
			login := l.String()
			dup := false
			for _, have := range snap.SendAs[k] {
				if have.Login == login {
					dup = true
					add([]conffile.Diag{{Pos: g.Pos, Severity: conffile.Warning,
						Msg: fmt.Sprintf("duplicate grant of %s to %s (first at %s)", k, login, have.Pos)}})
				}
			}
			if !dup {
				snap.SendAs[k] = append(snap.SendAs[k], Grant{Login: login, Pos: g.Pos})
			}
			if _, ok := snap.Accounts[l]; !ok && s.AccountProvisioner != "ldap" {
				add([]conffile.Diag{{Pos: g.Pos, Severity: conffile.Warning,
					Msg: fmt.Sprintf("login %s is not an account: this grant cannot be used", login)}})
			}
		}
	}

	for _, f := range []struct {
		name string
		into map[address.Address]conffile.Pos
	}{{conffile.SendAccessFile, snap.SendRestrict}, {conffile.ReceiveAccessFile, snap.RecvRestrict}} {
		text, _, err := read(f.name)
		if err != nil {
			return nil, err
		}
		entries, d := conffile.ParseAccess(f.name, text)
		add(d)
		for _, e := range entries {
			k := e.Address
			if prev, ok := f.into[k]; ok {
				add([]conffile.Diag{{Pos: e.Pos, Severity: conffile.Warning,
					Msg: fmt.Sprintf("%s is already restricted at %s", k, prev)}})
				continue
			}
			f.into[k] = e.Pos
		}
	}

	if text, _, err = read(conffile.LocalAliasesFile); err != nil {
		return nil, err
	}
	locals, d := conffile.ParseLocalAliases(conffile.LocalAliasesFile, text, s.Hostname)
	add(d)
	slab := newAliasSlab(len(locals))
	for _, l := range locals {
		add(mergeAlias(snap.LocalAliases, l.Name, conffile.Key{Local: l.Name}, l.Pos, l.Targets, "local alias", slab))
	}

	// SPEC §3: mailbox domains, then alias domains; excluded domains never.
	// (The loops skip runs of one domain: a map access per entry is a good
	// part of the load time of a large directory.)
	last := ""
	for i := range acc.list {
		if d := acc.list[i].Address.Domain; d != last {
			if !s.IsExcluded(d) {
				snap.Domains[d] = MailboxDomain
			}
			last = d
		}
	}
	for d := range al.domains {
		if d == "" || s.IsExcluded(d) {
			continue
		}
		if _, ok := snap.Domains[d]; !ok {
			snap.Domains[d] = AliasDomain
		}
	}

	sortDiags(diags)
	for _, d := range diags {
		if d.Severity == conffile.Error {
			return nil, &LoadError{Diags: diags}
		}
	}
	snap.Diags = diags
	return snap, nil
}

type accountsPart struct {
	list  []conffile.Account
	index map[address.Address]*conffile.Account
	diags []conffile.Diag
	err   error
}

// loadAccounts reads and indexes postfix-accounts.cf. With account_provisioner
// = ldap the accounts and their passwords come from LDAP alone, as in
// docker-mailserver: the file is ignored, with a warning.
func loadAccounts(read func(string) (string, bool, error), provisioner string) (p accountsPart) {
	text, ok, err := read(conffile.AccountsFile)
	if err != nil {
		p.err = err
		return p
	}
	if provisioner == "ldap" {
		p.index = map[address.Address]*conffile.Account{}
		if ok && strings.TrimSpace(text) != "" {
			p.diags = append(p.diags, conffile.Diag{Pos: conffile.Pos{File: conffile.AccountsFile, Line: 1}, Severity: conffile.Warning,
				Msg: "ignored: accounts come from LDAP (account_provisioner = ldap)"})
		}
		return p
	}
	p.list, p.diags = conffile.ParseAccounts(conffile.AccountsFile, text)
	p.index = make(map[address.Address]*conffile.Account, len(p.list))
	for i := range p.list {
		a := &p.list[i]
		k := a.Address
		if prev, ok := p.index[k]; ok {
			p.diags = append(p.diags, conffile.Diag{Pos: a.Pos, Severity: conffile.Error,
				Msg: fmt.Sprintf("account %s is already defined at %s", k, prev.Pos)})
			continue
		}
		p.index[k] = a
	}
	return p
}

type aliasesPart struct {
	index   map[conffile.Key]*Alias
	domains map[string]bool // of the keys
	diags   []conffile.Diag
	err     error
}

// loadAliases reads and indexes postfix-virtual.cf.
func loadAliases(read func(string) (string, bool, error), hostname string) (p aliasesPart) {
	text, _, err := read(conffile.VirtualFile)
	if err != nil {
		p.err = err
		return p
	}
	// At most one entry per line: size the index and the slab for that.
	n := strings.Count(text, "\n") + 1
	p.index = make(map[conffile.Key]*Alias, n)
	p.domains = map[string]bool{}
	slab := newAliasSlab(n)
	var merged []conffile.Diag
	last := ""
	p.diags = conffile.ParseVirtualFunc(conffile.VirtualFile, text, hostname, func(a conffile.Alias) {
		merged = append(merged, mergeAlias(p.index, a.Key, a.Key, a.Pos, a.Targets, "alias", slab)...)
		if d := a.Key.Domain; d != last {
			p.domains[d] = true
			last = d
		}
	})
	p.diags = append(p.diags, merged...)
	return p
}

// aliasSlab hands out the Alias values and first Lines of one file from two
// arrays instead of three allocations per key.
type aliasSlab struct {
	aliases []Alias
	lines   []conffile.Pos
}

func newAliasSlab(n int) *aliasSlab {
	return &aliasSlab{aliases: make([]Alias, n), lines: make([]conffile.Pos, n)}
}

func (s *aliasSlab) new(key conffile.Key, pos conffile.Pos) *Alias {
	a := &s.aliases[0]
	s.aliases = s.aliases[1:]
	a.Key = key
	a.Lines = s.lines[:1:1] // an append for a duplicate key copies
	a.Lines[0] = pos
	s.lines = s.lines[1:]
	return a
}

// mergeAlias adds the targets of one line to the entry of its key. The
// targets slice becomes the entry's when the key is new.
func mergeAlias[K comparable](m map[K]*Alias, k K, key conffile.Key, pos conffile.Pos, targets []conffile.Target, what string, slab *aliasSlab) []conffile.Diag {
	a, ok := m[k]
	if !ok {
		a = slab.new(key, pos)
		a.Targets = appendNew(targets[:0], targets)
		m[k] = a
		return nil
	}
	diags := []conffile.Diag{{Pos: pos, Severity: conffile.Warning,
		Msg: fmt.Sprintf("duplicate %s key %s (also at %s): targets merged", what, key, a.Lines[0])}}
	a.Lines = append(a.Lines, pos)
	a.Targets = appendNew(a.Targets, targets)
	return diags
}

// appendNew appends the targets whose address is not in have yet, in order.
// have may share its array with targets when it is targets[:0].
func appendNew(have, targets []conffile.Target) []conffile.Target {
next:
	for _, t := range targets {
		for _, h := range have {
			if h.Address == t.Address {
				continue next
			}
		}
		have = append(have, t)
	}
	return have
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

func sortDiags(d []conffile.Diag) {
	sort.SliceStable(d, func(i, j int) bool {
		if d[i].Pos.File != d[j].Pos.File {
			return d[i].Pos.File < d[j].Pos.File
		}
		return d[i].Pos.Line < d[j].Pos.Line
	})
}

// IsManaged reports whether a canonical domain is managed (SPEC §3).
func (s *Snapshot) IsManaged(domain string) bool {
	_, ok := s.Domains[domain]
	return ok
}

// IsLocalDomain reports whether a canonical domain is the server's own host
// name (or "localhost") without being a managed domain: mail for it is
// resolved through postfix-aliases.cf and bare postfix-virtual.cf keys.
func (s *Snapshot) IsLocalDomain(domain string) bool {
	if s.IsManaged(domain) {
		return false
	}
	return domain == s.Settings.Hostname || domain == "localhost"
}

// Account returns the account of a canonical address.
func (s *Snapshot) Account(a address.Address) (*conffile.Account, bool) {
	acc, ok := s.Accounts[a]
	return acc, ok
}

// SortedDomains returns the managed domains in order.
func (s *Snapshot) SortedDomains() []string {
	out := make([]string, 0, len(s.Domains))
	for d := range s.Domains {
		out = append(out, d)
	}
	sort.Strings(out)
	return out
}
