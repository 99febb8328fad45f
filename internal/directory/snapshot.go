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

	// Diags are the warnings found while loading (errors make Load fail).
	Diags []conffile.Diag
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
	read := func(name string) ([]byte, error) {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", name, err)
		}
		return data, nil
	}
	files := map[string][]byte{}
	for _, name := range []string{conffile.AccountsFile, conffile.VirtualFile, conffile.RegexpFile,
		conffile.SendAsFile, conffile.SendAccessFile, conffile.ReceiveAccessFile, conffile.LocalAliasesFile} {
		data, err := read(name)
		if err != nil {
			return nil, err
		}
		if data != nil {
			files[name] = data
		}
	}
	return Build(files, s)
}

// Build builds a Snapshot from file contents keyed by file name.
func Build(files map[string][]byte, s *settings.Settings) (*Snapshot, error) {
	snap := &Snapshot{
		Settings:     s,
		Accounts:     map[address.Address]*conffile.Account{},
		Aliases:      map[conffile.Key]*Alias{},
		SendAs:       map[conffile.Key][]Grant{},
		SendRestrict: map[address.Address]conffile.Pos{},
		RecvRestrict: map[address.Address]conffile.Pos{},
		LocalAliases: map[string]*Alias{},
		Domains:      map[string]DomainClass{},
	}
	var diags []conffile.Diag
	add := func(d []conffile.Diag) { diags = append(diags, d...) }

	accounts, d := conffile.ParseAccounts(conffile.AccountsFile, files[conffile.AccountsFile])
	add(d)
	for i := range accounts {
		a := &accounts[i]
		k := a.Address
		if prev, ok := snap.Accounts[k]; ok {
			add([]conffile.Diag{{Pos: a.Pos, Severity: conffile.Error,
				Msg: fmt.Sprintf("account %s is already defined at %s", k, prev.Pos)}})
			continue
		}
		snap.Accounts[k] = a
	}

	aliases, d := conffile.ParseVirtual(conffile.VirtualFile, files[conffile.VirtualFile], s.Hostname)
	add(d)
	for _, a := range aliases {
		add(mergeAlias(snap.Aliases, a.Key, a.Key, a.Pos, a.Targets, "alias"))
	}

	if data, ok := files[conffile.RegexpFile]; ok {
		t, err := pcretable.Parse(conffile.RegexpFile, data)
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

	grants, d := conffile.ParseSendAs(conffile.SendAsFile, files[conffile.SendAsFile])
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
			if _, ok := snap.Accounts[l]; !ok {
				add([]conffile.Diag{{Pos: g.Pos, Severity: conffile.Warning,
					Msg: fmt.Sprintf("login %s is not an account: this grant cannot be used", login)}})
			}
		}
	}

	for _, f := range []struct {
		name string
		into map[address.Address]conffile.Pos
	}{{conffile.SendAccessFile, snap.SendRestrict}, {conffile.ReceiveAccessFile, snap.RecvRestrict}} {
		entries, d := conffile.ParseAccess(f.name, files[f.name])
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

	locals, d := conffile.ParseLocalAliases(conffile.LocalAliasesFile, files[conffile.LocalAliasesFile], s.Hostname)
	add(d)
	for _, l := range locals {
		add(mergeAlias(snap.LocalAliases, l.Name, conffile.Key{Local: l.Name}, l.Pos, l.Targets, "local alias"))
	}

	// SPEC §3: mailbox domains, then alias domains; excluded domains never.
	for _, a := range snap.Accounts {
		if !s.IsExcluded(a.Address.Domain) {
			snap.Domains[a.Address.Domain] = MailboxDomain
		}
	}
	for _, a := range snap.Aliases {
		d := a.Key.Domain
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

func mergeAlias[K comparable](m map[K]*Alias, k K, key conffile.Key, pos conffile.Pos, targets []conffile.Target, what string) []conffile.Diag {
	var diags []conffile.Diag
	a, ok := m[k]
	if !ok {
		a = &Alias{Key: key}
		m[k] = a
	} else {
		diags = append(diags, conffile.Diag{Pos: pos, Severity: conffile.Warning,
			Msg: fmt.Sprintf("duplicate %s key %s (also at %s): targets merged", what, key, a.Lines[0])})
	}
	a.Lines = append(a.Lines, pos)
next:
	for _, t := range targets {
		for _, have := range a.Targets {
			if have.Address == t.Address {
				continue next
			}
		}
		a.Targets = append(a.Targets, t)
	}
	return diags
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
