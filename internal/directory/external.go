package directory

import (
	"errors"
	"fmt"

	"github.com/mailgate/mailgate/internal/address"
	"github.com/mailgate/mailgate/internal/conffile"
)

// External is a directory source that is asked per lookup instead of being
// held in memory: LDAP. Its answers are united with the Snapshot's own maps
// (the files that still apply beside it); package policy asks it through the
// Snapshot's Lookup* methods.
//
// Every method may fail (server down, time-out): the caller then answers a
// temporary failure, never a verdict. Answers carry their provenance as
// conffile.Pos values with Line 0 (e.g. File "ldap uid=a,ou=users,...").
type External interface {
	// Account reports whether a is an account (the user filter).
	Account(a address.Address) (ExtAccount, bool, error)
	// Aliases returns the targets of key (an address, or @domain for a
	// catch-all) as an alias: the union of the alias and group filters.
	Aliases(key conffile.Key) ([]ExtTarget, error)
	// Domain reports whether domain is managed (the domain filter).
	Domain(domain string) (bool, error)
	// Senders returns the accounts the senders filter lists as owners of
	// s, beyond those found through accounts, aliases and groups.
	Senders(s address.Address) ([]ExtTarget, error)
	// Login maps a login (an address or a uid) to its account's address.
	Login(login string) (address.Address, conffile.Pos, bool, error)
	// Authenticate checks a login's password (an LDAP bind as the user)
	// and returns the account's address. A wrong login or password is
	// ErrBadCredentials; anything else is a temporary failure.
	Authenticate(login, password string) (address.Address, error)
}

// ExtAccount is an account found in an External source.
type ExtAccount struct {
	Pos conffile.Pos
}

// ExtTarget is an address an External source answered, with where it came from.
type ExtTarget struct {
	Address address.Address
	Pos     conffile.Pos
}

// ErrBadCredentials is returned by External.Authenticate for a wrong login
// or password.
var ErrBadCredentials = errors.New("invalid credentials")

// TempError is a temporary failure of a directory source: the answer is
// unknown, and the SMTP reply is 451 4.3.0 (AUTH: 454 4.7.0).
type TempError struct {
	Source string // "ldap", "postgres"
	Err    error
}

func (e *TempError) Error() string {
	return fmt.Sprintf("directory source %s unavailable: %v", e.Source, e.Err)
}

func (e *TempError) Unwrap() error { return e.Err }

// IsTemp reports whether err is (or wraps) a TempError.
func IsTemp(err error) bool {
	var t *TempError
	return errors.As(err, &t)
}

// Available returns the reason the snapshot cannot answer (its source is
// down), or nil.
func (s *Snapshot) Available() error {
	return s.Unavailable
}

// LookupAccount reports whether a is an account, in the snapshot's maps or
// in its External source. pos is the account's provenance.
func (s *Snapshot) LookupAccount(a address.Address) (pos conffile.Pos, ok bool, err error) {
	if acc, ok := s.Accounts[a]; ok {
		return acc.Pos, true, nil
	}
	if s.Ext == nil {
		return conffile.Pos{}, false, nil
	}
	e, ok, err := s.Ext.Account(a)
	return e.Pos, ok, err
}

// LookupManaged reports whether a canonical domain is managed (SPEC §3),
// asking the External source when the maps do not know it.
func (s *Snapshot) LookupManaged(domain string) (bool, error) {
	if _, ok := s.Domains[domain]; ok {
		return true, nil
	}
	if s.Ext == nil || s.Settings.IsExcluded(domain) {
		return false, nil
	}
	return s.Ext.Domain(domain)
}

// LookupLogin maps a login to its account address: an account address as
// such, or whatever the External source maps it to (a uid). ok is false for
// an unknown login.
func (s *Snapshot) LookupLogin(login string, l address.Address, parsed bool) (address.Address, conffile.Pos, bool, error) {
	if parsed {
		if acc, ok := s.Accounts[l]; ok {
			return l, acc.Pos, true, nil
		}
	}
	if s.Ext == nil {
		return address.Address{}, conffile.Pos{}, false, nil
	}
	return s.Ext.Login(login)
}
