package policy

import (
	"fmt"
	"slices"
	"strings"

	"github.com/mailgate/mailgate/internal/address"
	"github.com/mailgate/mailgate/internal/conffile"
	"github.com/mailgate/mailgate/internal/directory"
)

// Owner is an account that may use a sender address, with the reason.
type Owner struct {
	Login string `json:"login"` // canonical account address
	Chain []Step `json:"chain"` // the rules that grant it, outermost first
}

// Decision is the answer of MaySend.
type Decision struct {
	Allowed bool    `json:"allowed"`
	Login   string  `json:"login"`
	Sender  string  `json:"sender"`          // canonical sender, "" for the null sender
	Rule    string  `json:"rule"`            // the rule that decided
	Reply   Reply   `json:"reply"`           // 250 2.1.0 when allowed, else the rejection
	Grant   *Owner  `json:"grant,omitempty"` // when allowed by ownership: the granting chain
	Owners  []Owner `json:"owners"`          // when denied for ownership: who does own the sender
	Detail  string  `json:"detail,omitempty"`
}

// MaySend decides whether login may use sender as envelope sender or header
// From (SPEC §5). sender "" or "<>" is the null sender. Both are parsed and
// validated (SPEC §1) here.
func MaySend(snap *directory.Snapshot, login, sender string) Decision {
	return maySend(snap, login, sender, true)
}

// maySend is MaySend; fast enables the shortcut for a login sending as
// itself (the tests compare it with the general path).
func maySend(snap *directory.Snapshot, login, sender string, fast bool) Decision {
	d := Decision{Login: login, Sender: sender, Owners: []Owner{}}
	if err := snap.Available(); err != nil {
		return d.tempFail(sender, err)
	}
	l, err := address.Parse(login, address.Options{UTF8Local: true})
	if err != nil && snap.Ext == nil {
		return d.deny(RuleUnknownLogin, Reply{535, "5.7.8", fmt.Sprintf("invalid login: %s", reason(err))}, "")
	}
	// SPEC §5: L is the login resolved to its account; with LDAP a uid
	// login (some.user) maps to the account's address. The rejection text
	// names the login as given.
	named := login
	if err == nil {
		d.Login = canonicalString(login, l)
		named = l.String()
	}
	var accPos conffile.Pos
	if acc, ok := snap.Accounts[l]; ok && err == nil {
		accPos = acc.Pos
	} else {
		account, pos, ok, lerr := snap.LookupLogin(login, l, err == nil)
		if lerr != nil {
			return d.tempFail(sender, lerr)
		}
		if !ok {
			return d.deny(RuleUnknownLogin, Reply{535, "5.7.8", fmt.Sprintf("login %s is not an account", named)}, "")
		}
		// The login filter found an entry: it must be an account for the
		// user filter too (the same rule as Route's), or it owns nothing.
		if _, isAccount, aerr := snap.LookupAccount(account); aerr != nil {
			return d.tempFail(sender, aerr)
		} else if !isAccount {
			return d.deny(RuleUnknownLogin, Reply{535, "5.7.8", fmt.Sprintf("login %s is not an account", named)},
				"the login maps to "+account.String()+", which is not an account")
		}
		l, accPos = account, pos
		d.Login = l.String()
	}
	if sender == "" || sender == "<>" {
		d.Sender = ""
		if snap.Settings.NullSender == "allow" {
			return d.allow(RuleNullSender, "null_sender = allow")
		}
		return d.deny(RuleNullSender, Reply{553, "5.7.1", "null sender not allowed for authenticated submission"}, "null_sender = refuse")
	}
	s, err := address.Parse(sender, address.Options{UTF8Local: true})
	if err != nil {
		return d.deny(RuleInvalidSender, Reply{501, "5.1.7", fmt.Sprintf("<%s>: Sender address rejected: %s", sender, reason(err))}, "")
	}
	d.Sender = canonicalString(sender, s)
	if r, pos, ok := restricted(snap, snap.SendRestrict, s); ok {
		return d.deny(RuleRestricted, accessDenied(s), "sender "+r.String()+" is restricted at "+pos.String())
	}
	if r, pos, ok := restricted(snap, snap.SendRestrict, l); ok {
		return d.deny(RuleRestricted, accessDenied(s), "login "+r.String()+" is restricted at "+pos.String())
	}
	if !snap.Settings.SpoofProtection {
		return d.allow(RuleSpoofOff, "spoof_protection = false: every authenticated user may use any sender")
	}
	if fast && s == l {
		// The login sends as itself: Owners would find it first, by rule a,
		// with exactly this chain, whatever else owns the address, and the
		// decision would be the same (TestMaySendFastPath).
		d = d.allow(RuleAccount, "")
		d.Grant = &Owner{Login: d.Login, Chain: []Step{{Rule: RuleAccount, Key: d.Sender, Pos: posPtr(accPos)}}}
		return d
	}
	o := ownerSet{lookup: lookup{snap: snap}}
	o.collect(s, nil)
	if o.err != nil {
		return d.tempFail(sender, o.err)
	}
	owners := o.sorted()
	for i := range owners {
		if owners[i].Login == d.Login {
			d = d.allow(owners[i].Chain[0].Rule, "")
			d.Grant = &owners[i]
			return d
		}
	}
	d.Owners = owners
	if o.problem != "" {
		// An alias of S loops or expands too far: its members are unknown
		// until the configuration is fixed, as Route answers (SPEC §4).
		return d.deny(RuleNotOwned, Reply{451, "4.6.0", fmt.Sprintf("<%s>: Sender address rejected: %s", s, o.problem)}, o.problem)
	}
	names := make([]string, len(owners))
	for i, o := range owners {
		names[i] = o.Login
	}
	detail := "no account owns " + s.String()
	if len(names) > 0 {
		detail = "owned by " + strings.Join(names, ", ")
	}
	return d.deny(RuleNotOwned, Reply{553, "5.7.1", fmt.Sprintf("<%s>: Sender address rejected: not owned by user %s", s, named)}, detail)
}

// tempFail is the decision when the directory cannot be asked: 451 4.3.0,
// neither allowed nor denied for good.
func (d Decision) tempFail(sender string, err error) Decision {
	s := sender
	if a, perr := address.Parse(sender, address.Options{UTF8Local: true}); perr == nil {
		s = a.String()
	}
	return d.deny(RuleTempFail, *tempFailReply("Sender", stringer(s)), err.Error())
}

type stringer string

func (s stringer) String() string { return string(s) }

func accessDenied(s address.Address) Reply {
	return Reply{554, "5.7.1", fmt.Sprintf("<%s>: Sender address rejected: Access denied", s)}
}

// canonicalString returns a.String(), reusing in when it already is that
// string (no allocation in the common case of canonical input).
func canonicalString(in string, a address.Address) string {
	if len(in) == len(a.Local)+1+len(a.Domain) && strings.HasPrefix(in, a.Local) &&
		in[len(a.Local)] == '@' && in[len(a.Local)+1:] == a.Domain {
		return in
	}
	return a.String()
}

func (d Decision) allow(rule, detail string) Decision {
	d.Allowed, d.Rule, d.Detail = true, rule, detail
	d.Reply = Reply{250, "2.1.0", "Ok"}
	return d
}

func (d Decision) deny(rule string, r Reply, detail string) Decision {
	d.Allowed, d.Rule, d.Reply, d.Detail = false, rule, r, detail
	return d
}

// Owners returns owners(S) (SPEC §5), each with its provenance, sorted by login:
//
//	a. S itself, when S is an account;
//	b. the accounts reached by routing S through exact alias keys and regexp
//	   aliases (rules 1, 2, 4 of §4, recursively), only in managed domains;
//	   catch-all keys grant nothing;
//	c. grants in postfix-send-as.cf for S and for @domain(S);
//	d. when S has no entry of its own and has an extension: owners(base(S)).
//
// A failure of the directory source is returned as the error (a
// *directory.TempError), with the owners found before it.
func Owners(snap *directory.Snapshot, s address.Address) ([]Owner, error) {
	if err := snap.Available(); err != nil {
		return []Owner{}, err
	}
	o := ownerSet{lookup: lookup{snap: snap}}
	o.collect(s, nil)
	return o.sorted(), o.err
}

// ownerSet collects owners, the first chain found for each login. An
// address usually has one or two owners: a slice, indexed by a map only when
// it grows long.
type ownerSet struct {
	lookup
	list    []Owner
	index   map[string]bool
	problem string // an alias loop or expansion limit met on the way
}

const ownerSetIndexAt = 16

func (o *ownerSet) has(login string) bool {
	if o.index != nil {
		return o.index[login]
	}
	for i := range o.list {
		if o.list[i].Login == login {
			return true
		}
	}
	return false
}

func (o *ownerSet) add(login string, chain []Step) {
	if o.has(login) {
		return
	}
	o.list = append(o.list, Owner{Login: login, Chain: chain})
	switch {
	case o.index != nil:
		o.index[login] = true
	case len(o.list) > ownerSetIndexAt:
		o.index = make(map[string]bool, 2*len(o.list))
		for i := range o.list {
			o.index[o.list[i].Login] = true
		}
	}
}

// sorted returns the owners by login.
func (o *ownerSet) sorted() []Owner {
	if o.list == nil {
		return []Owner{}
	}
	slices.SortFunc(o.list, func(a, b Owner) int { return strings.Compare(a.Login, b.Login) })
	return o.list
}

func (o *ownerSet) collect(s address.Address, chain []Step) {
	snap := o.snap
	hasEntry := false
	key := s.String()
	// a.
	if pos, ok := o.account(s); ok {
		hasEntry = true
		o.add(key, extend(chain, Step{Rule: RuleAccount, Key: key, Pos: posPtr(pos)}))
	}
	// b. Only in managed domains: the local aliases of the server's own
	// names (postfix-aliases.cf, bare keys) route mail but grant no sending.
	if e, ok := o.aliasEntry(s, key); ok && o.isManaged(s.Domain) {
		hasEntry = true
		res := RouteResult{}
		r := resolver{lookup: &o.lookup, catchAll: false, res: &res, path: []address.Address{s}}
		r.expand(s, e, "", "", chain, 0)
		if r.problem == "" {
			for _, d := range res.Destinations {
				if d.Kind == Mailbox {
					o.add(d.Mailbox, d.Chain)
				}
			}
		} else if o.problem == "" {
			o.problem = r.problem
		}
	}
	// c.
	for _, g := range snap.SendAs[conffile.KeyOf(s)] {
		hasEntry = true
		o.add(g.Login, extend(chain, Step{Rule: RuleSendAs, Key: key, Pos: posPtr(g.Pos)}))
	}
	for _, g := range snap.SendAs[conffile.Key{Domain: s.Domain}] {
		o.add(g.Login, extend(chain, Step{Rule: RuleSendAsDomain, Key: "@" + s.Domain, Pos: posPtr(g.Pos)}))
	}
	// The senders filter of an External source (LDAP_QUERY_FILTER_SENDERS):
	// one more source of owners, united with the others.
	// It is not an entry of S for rule d: a filter that matches every
	// address (the "may send as anyone" pattern) must not hide base(S).
	for _, t := range o.extSenders(s) {
		o.add(t.Address.String(), extend(chain, Step{Rule: RuleSenders, Key: key, Pos: posPtr(t.Pos)}))
	}
	if o.err != nil {
		return
	}
	// d.
	if !hasEntry {
		if base, delim, ext, ok := address.SplitExtension(s.Local, snap.Settings.RecipientDelimiter); ok {
			b := address.Address{Local: base, Domain: s.Domain}
			o.collect(b, extend(chain, Step{Rule: RuleExtension, Key: key, Detail: "base " + b.String() + ", extension " + delim + ext}))
		}
	}
}

// restricted looks a up in an access map (postfix-send-access.cf or
// postfix-receive-access.cf): the address itself, then — as Postfix's
// check_sender_access and check_recipient_access do with
// recipient_delimiter — its base without the extension, so that
// "user+tag@d" is restricted with "user@d".
func restricted(snap *directory.Snapshot, m map[address.Address]conffile.Pos, a address.Address) (address.Address, conffile.Pos, bool) {
	if pos, ok := m[a]; ok {
		return a, pos, true
	}
	if base, _, _, ok := address.SplitExtension(a.Local, snap.Settings.RecipientDelimiter); ok {
		b := address.Address{Local: base, Domain: a.Domain}
		if pos, ok := m[b]; ok {
			return b, pos, true
		}
	}
	return address.Address{}, conffile.Pos{}, false
}
