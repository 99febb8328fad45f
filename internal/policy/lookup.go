package policy

import (
	"fmt"
	"slices"
	"strings"

	"github.com/mailgate/mailgate/internal/address"
	"github.com/mailgate/mailgate/internal/conffile"
	"github.com/mailgate/mailgate/internal/directory"
)

// lookup asks a Snapshot and, when it has one, its External source (LDAP).
// The first failure of the source is kept in err: every later question
// answers "no", and the caller turns err into a temporary failure instead of
// a verdict. Without an External source nothing can fail.
type lookup struct {
	snap    *directory.Snapshot
	err     error
	managed map[string]bool // the External source's answers within one decision
}

func (l *lookup) failed(err error) bool {
	if err != nil && l.err == nil {
		l.err = err
	}
	return l.err != nil
}

// isManaged reports whether a canonical domain is managed (SPEC §3). One
// decision asks about the same domain several times: the External source's
// answer is asked once.
func (l *lookup) isManaged(domain string) bool {
	if l.snap.Ext == nil {
		return l.snap.IsManaged(domain)
	}
	if l.err != nil {
		return false
	}
	if ok, seen := l.managed[domain]; seen {
		return ok
	}
	ok, err := l.snap.LookupManaged(domain)
	if l.failed(err) {
		return false
	}
	if l.managed == nil {
		l.managed = make(map[string]bool, 2)
	}
	l.managed[domain] = ok
	return ok
}

// account reports whether a is an account, with its provenance.
func (l *lookup) account(a address.Address) (conffile.Pos, bool) {
	if l.snap.Ext == nil {
		acc, ok := l.snap.Accounts[a]
		if !ok {
			return conffile.Pos{}, false
		}
		return acc.Pos, true
	}
	if l.err != nil {
		return conffile.Pos{}, false
	}
	pos, ok, err := l.snap.LookupAccount(a)
	return pos, !l.failed(err) && ok
}

// extAliases returns what the External source knows of key as an alias.
func (l *lookup) extAliases(key conffile.Key) []directory.ExtTarget {
	return l.ext(func(x directory.External) ([]directory.ExtTarget, error) { return x.Aliases(key) })
}

// extSenders returns the owners of s that the External source's senders
// filter lists.
func (l *lookup) extSenders(s address.Address) []directory.ExtTarget {
	return l.ext(func(x directory.External) ([]directory.ExtTarget, error) { return x.Senders(s) })
}

// ext asks the External source, if any and unless it failed already.
func (l *lookup) ext(ask func(directory.External) ([]directory.ExtTarget, error)) []directory.ExtTarget {
	if l.snap.Ext == nil || l.err != nil {
		return nil
	}
	t, err := ask(l.snap.Ext)
	if l.failed(err) {
		return nil
	}
	return t
}

// withExt adds the External source's targets for key to an alias entry (the
// union of both sources), or makes the entry when only the source has one.
func withExt(e entry, found bool, ext []directory.ExtTarget, rule, key string) (entry, bool) {
	if len(ext) == 0 {
		return e, found
	}
	var where []string
	if !found {
		p := ext[0].Pos
		e = entry{step: Step{Rule: rule, Key: key, Pos: &p}}
	}
next:
	for _, t := range ext {
		for _, have := range e.targets {
			if have == t.Address {
				continue next
			}
		}
		e.targets = append(e.targets, t.Address)
		if s := t.Pos.String(); !slices.Contains(where, s) && (e.step.Pos == nil || *e.step.Pos != t.Pos) {
			where = append(where, s)
		}
	}
	if len(where) > 0 {
		d := "also " + strings.Join(where, ", ")
		if e.step.Detail != "" {
			d = e.step.Detail + "; " + d
		}
		e.step.Detail = d
	}
	return e, true
}

// tempFailReply is the answer when the directory cannot be asked: a
// temporary failure, never a verdict (SPEC §5, issue 7).
func tempFailReply(what string, a fmt.Stringer) *Reply {
	return &Reply{451, "4.3.0", fmt.Sprintf("<%s>: %s address rejected: Temporary lookup failure", a, what)}
}
