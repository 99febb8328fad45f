package policy

import (
	"fmt"
	"strings"

	"github.com/mailgate/mailgate/internal/address"
	"github.com/mailgate/mailgate/internal/conffile"
	"github.com/mailgate/mailgate/internal/directory"
)

// Limits of alias expansion (SPEC §4).
const (
	MaxDepth     = 20
	MaxAddresses = 1000
)

// DestKind is the kind of a resolved destination.
type DestKind string

const (
	Mailbox DestKind = "mailbox" // a local account's Maildir
	Forward DestKind = "forward" // an address outside the managed domains
	Unknown DestKind = "unknown" // an address inside a managed domain that nothing resolves
)

// Destination is one place mail for a recipient goes.
type Destination struct {
	Kind      DestKind `json:"kind"`
	Address   string   `json:"address"`             // the final address, with any carried extension
	Mailbox   string   `json:"mailbox,omitempty"`   // the account, for Kind == Mailbox
	Extension string   `json:"extension,omitempty"` // delimiter + extension, for Kind == Mailbox
	Reason    string   `json:"reason,omitempty"`    // for Kind == Unknown
	Chain     []Step   `json:"chain"`               // how the recipient led here
}

// RouteStatus is the verdict of Route.
type RouteStatus string

const (
	Deliver  RouteStatus = "deliver"  // at least one destination
	Remote   RouteStatus = "remote"   // not managed: goes out (relay host or MX)
	NotFound RouteStatus = "unknown"  // 550 5.1.1
	Rejected RouteStatus = "rejected" // receive restriction
	TempFail RouteStatus = "tempfail" // alias loop or expansion limit: 451 4.6.0
	Invalid  RouteStatus = "invalid"  // not a valid address
)

// RouteResult is the answer of Route with its provenance.
type RouteResult struct {
	Recipient     string        `json:"recipient"`
	Status        RouteStatus   `json:"status"`
	Reply         *Reply        `json:"reply,omitempty"` // for unknown, rejected, tempfail, invalid
	Destinations  []Destination `json:"destinations"`    // mailboxes and forwards
	Undeliverable []Destination `json:"undeliverable"`   // targets that resolve to nothing
	Problem       string        `json:"problem,omitempty"`
}

// Route resolves a recipient (SPEC §4). recipient is parsed and validated
// first; an invalid address gets 501 5.1.3.
func Route(snap *directory.Snapshot, recipient string) RouteResult {
	a, err := address.Parse(recipient, address.Options{UTF8Local: true})
	if err != nil {
		return RouteResult{Recipient: recipient, Status: Invalid,
			Reply:        &Reply{501, "5.1.3", fmt.Sprintf("<%s>: Recipient address rejected: %s", recipient, reason(err))},
			Destinations: []Destination{}, Undeliverable: []Destination{}}
	}
	return RouteAddress(snap, a)
}

// RouteAddress is Route for a parsed, canonical address.
func RouteAddress(snap *directory.Snapshot, a address.Address) RouteResult {
	res := RouteResult{Recipient: a.String(), Destinations: []Destination{}, Undeliverable: []Destination{}}
	if err := snap.Available(); err != nil {
		return res.tempFail(a, err)
	}
	if _, pos, ok := restricted(snap, snap.RecvRestrict, a); ok {
		res.Status = Rejected
		res.Reply = &Reply{554, "5.7.1", fmt.Sprintf("<%s>: Recipient address rejected: Access denied", a)}
		res.Undeliverable = append(res.Undeliverable, Destination{Kind: Unknown, Address: a.String(),
			Reason: "receive restriction", Chain: []Step{{Rule: RuleRestricted, Key: a.String(), Pos: posPtr(pos)}}})
		return res
	}
	lk := &lookup{snap: snap}
	if !lk.isManaged(a.Domain) && !isLocalName(snap, a.Domain) {
		if lk.err != nil {
			return res.tempFail(a, lk.err)
		}
		res.Status = Remote
		res.Destinations = append(res.Destinations, Destination{Kind: Forward, Address: a.String(),
			Chain: []Step{{Rule: RuleRemote, Key: a.String(), Detail: "domain " + a.Domain + " is not managed"}}})
		return res
	}
	r := resolver{lookup: lk, catchAll: true, res: &res}
	r.resolve(a, nil, 0, false)
	switch {
	case lk.err != nil:
		return res.tempFail(a, lk.err)
	case r.problem != "":
		res.Status = TempFail
		res.Problem = r.problem
		res.Reply = &Reply{451, "4.6.0", fmt.Sprintf("<%s>: Recipient address rejected: %s", a, r.problem)}
	case len(res.Destinations) > 0:
		res.Status = Deliver
	default:
		res.Status = NotFound
		res.Reply = &Reply{550, "5.1.1", fmt.Sprintf("<%s>: Recipient address rejected: User unknown", a)}
	}
	return res
}

// tempFail is the answer when the directory source failed: 451 4.3.0 and
// nothing else, whatever was found before the failure.
func (res RouteResult) tempFail(a address.Address, err error) RouteResult {
	res.Status = TempFail
	res.Problem = err.Error()
	res.Reply = tempFailReply("Recipient", a)
	res.Destinations, res.Undeliverable = []Destination{}, []Destination{}
	return res
}

// isLocalName reports whether domain is the server's own host name or
// localhost, where postfix-aliases.cf and bare postfix-virtual.cf keys apply.
func isLocalName(snap *directory.Snapshot, domain string) bool {
	return domain == snap.Settings.Hostname || domain == "localhost"
}

// resolver expands aliases. Route uses it with catch-alls; ownership
// (MaySend rule b) without.
type resolver struct {
	*lookup
	catchAll bool
	res      *RouteResult
	path     []address.Address // addresses being expanded, for loop detection
	count    int
	problem  string
}

// entry is what the alias rules (SPEC §4 rules 1 and 2) say about an address.
type entry struct {
	targets []address.Address
	step    Step
}

// aliasEntry applies rule 1 (exact key, in the snapshot and its External
// source; at the server's own names also bare keys and postfix-aliases.cf)
// and rule 2 (regexp aliases) to a; key is a.String().
func (l *lookup) aliasEntry(a address.Address, key string) (entry, bool) {
	snap := l.snap
	managed := l.isManaged(a.Domain)
	if managed {
		k := conffile.KeyOf(a)
		var e entry
		al, found := snap.Aliases[k]
		if found {
			e = fromAlias(al, RuleAlias, key)
		}
		if e, found = withExt(e, found, l.extAliases(k), RuleAlias, key); found {
			return e, true
		}
	}
	if isLocalName(snap, a.Domain) {
		if al, ok := snap.Aliases[conffile.Key{Local: a.Local}]; ok {
			return fromAlias(al, RuleLocalAlias, key), true
		}
		if al, ok := snap.LocalAliases[a.Local]; ok {
			return fromAlias(al, RuleLocalAlias, key), true
		}
	}
	if managed && snap.Regexp != nil {
		if m, ok := snap.Regexp.Lookup(key); ok {
			e := entry{step: Step{Rule: RuleRegexp, Key: key, Detail: m.Rule + " → " + m.Result,
				Pos: posPtr(snap.RegexpPos(m.Line))}}
			for _, t := range strings.FieldsFunc(m.Result, isTargetSep) {
				if !strings.Contains(t, "@") {
					t += "@" + snap.Settings.Hostname // as postfix-virtual.cf targets (Postfix appends $myorigin)
				}
				ta, err := address.Parse(t, address.Options{UTF8Local: true})
				if err != nil {
					// Kept as an unresolvable target so that it is reported.
					ta = address.Address{Local: t}
				}
				e.targets = append(e.targets, ta)
			}
			return e, true
		}
	}
	return entry{}, false
}

func fromAlias(al *directory.Alias, rule string, key string) entry {
	e := entry{step: Step{Rule: rule, Key: key, Pos: posPtr(al.Lines[0])}}
	if len(al.Lines) > 1 {
		var more []string
		for _, p := range al.Lines[1:] {
			more = append(more, p.String())
		}
		e.step.Detail = "merged with " + strings.Join(more, ", ")
	}
	e.targets = make([]address.Address, len(al.Targets))
	for i, t := range al.Targets {
		e.targets[i] = t.Address
	}
	return e
}

func (r *resolver) onPath(a address.Address) bool {
	for _, p := range r.path {
		if p == a {
			return true
		}
	}
	return false
}

func extend(chain []Step, s Step) []Step {
	out := make([]Step, len(chain), len(chain)+1)
	copy(out, chain)
	return append(out, s)
}

// resolve applies SPEC §4 to a; self is true for a target equal to its own
// key ("keep a copy": only the account rule applies).
func (r *resolver) resolve(a address.Address, chain []Step, depth int, self bool) {
	if r.problem != "" || r.err != nil {
		return
	}
	r.count++
	if r.count > MaxAddresses {
		r.problem = fmt.Sprintf("alias expansion exceeds %d addresses", MaxAddresses)
		return
	}
	if depth > MaxDepth {
		r.problem = fmt.Sprintf("alias expansion deeper than %d levels", MaxDepth)
		return
	}
	if a.Domain == "" {
		r.unknown(a, chain, "not a valid address")
		return
	}
	snap := r.snap
	if !r.isManaged(a.Domain) && !isLocalName(snap, a.Domain) {
		if r.err == nil {
			r.add(Destination{Kind: Forward, Address: a.String(), Chain: chain})
		}
		return
	}
	if self {
		if _, ok := r.account(a); ok {
			key := a.String()
			r.mailbox(key, a, "", extend(chain, Step{Rule: RuleSelf, Key: key, Detail: "target equals its key: deliver to this mailbox too"}))
			return
		}
		if base, delim, ext, ok := address.SplitExtension(a.Local, snap.Settings.RecipientDelimiter); ok {
			b := address.Address{Local: base, Domain: a.Domain}
			if _, ok := r.account(b); ok {
				r.mailbox(b.String(), b, delim+ext, extend(chain, Step{Rule: RuleSelf, Key: a.String(), Detail: "target equals its key: deliver to this mailbox too"}))
				return
			}
		}
		r.unknown(a, chain, "target equals its own key but is not an account")
		return
	}
	if r.onPath(a) {
		r.problem = "alias loop: " + r.loopText(a)
		return
	}
	r.path = append(r.path, a)
	defer func() { r.path = r.path[:len(r.path)-1] }()

	// Rules 1–3 on the address itself.
	if r.rules123(a, a, "", "", chain, depth) {
		return
	}
	// Rule 4: the base address, with the extension carried into every target.
	if base, delim, ext, ok := address.SplitExtension(a.Local, snap.Settings.RecipientDelimiter); ok {
		b := address.Address{Local: base, Domain: a.Domain}
		step := Step{Rule: RuleExtension, Key: a.String(), Detail: "base " + b.String() + ", extension " + delim + ext}
		if r.rules123(a, b, delim, ext, extend(chain, step), depth) {
			return
		}
	}
	// Rule 5: catch-all.
	if r.catchAll && r.isManaged(a.Domain) {
		k := conffile.Key{Domain: a.Domain}
		var e entry
		al, found := snap.Aliases[k]
		if found {
			e = fromAlias(al, RuleCatchAll, "@"+a.Domain)
		}
		if e, found = withExt(e, found, r.extAliases(k), RuleCatchAll, "@"+a.Domain); found {
			r.expand(a, e, "", "", chain, depth)
			return
		}
	}
	if r.err != nil {
		return
	}
	// Built-in root and postmaster at the server's own names.
	if isLocalName(snap, a.Domain) && (a.Local == "root" || a.Local == "postmaster") {
		pm, err := address.Parse(snap.Settings.PostmasterAddress, address.Options{})
		if err == nil && pm != a {
			r.resolve(pm, extend(chain, Step{Rule: RulePostmaster, Key: a.String(), Detail: "postmaster_address " + pm.String()}), depth+1, false)
			return
		}
	}
	// Rule 6.
	if depth == 0 {
		return // the caller reports the recipient itself as unknown
	}
	r.unknown(a, chain, "unknown in managed domain "+a.Domain)
}

// rules123 applies rules 1–3 to lookup (a itself, or its base for rule 4),
// carrying delim+ext into the targets. It reports whether a rule applied.
func (r *resolver) rules123(a, lookup address.Address, delim, ext string, chain []Step, depth int) bool {
	key := lookup.String()
	if e, ok := r.aliasEntry(lookup, key); ok {
		r.expand(lookup, e, delim, ext, chain, depth)
		return true
	}
	if pos, ok := r.account(lookup); ok {
		r.mailbox(key, lookup, joinExt(delim, ext), extend(chain, Step{Rule: RuleAccount, Key: key, Pos: posPtr(pos)}))
		return true
	}
	return r.err != nil // a failed source ends the expansion
}

func joinExt(delim, ext string) string {
	if delim == "" {
		return ""
	}
	return delim + ext
}

// expand resolves the targets of an alias entry matched for key.
func (r *resolver) expand(key address.Address, e entry, delim, ext string, chain []Step, depth int) {
	chain = extend(chain, e.step)
	for _, t := range e.targets {
		if t.Domain == "" {
			r.unknown(t, chain, "the regexp result is not a valid address")
			continue
		}
		self := t == key
		if delim != "" {
			t = t.WithExtension(delim, ext)
		}
		r.resolve(t, chain, depth+1, self)
		if r.problem != "" || r.err != nil {
			return
		}
	}
}

// mailbox adds the mailbox of account (mailbox is account.String()), with
// the extension ext carried, if any.
func (r *resolver) mailbox(mailbox string, account address.Address, ext string, chain []Step) {
	addr := mailbox
	if ext != "" {
		addr = account.WithExtension(ext[:1], ext[1:]).String()
	}
	r.add(Destination{Kind: Mailbox, Address: addr, Mailbox: mailbox, Extension: ext, Chain: chain})
}

func (r *resolver) unknown(a address.Address, chain []Step, why string) {
	d := Destination{Kind: Unknown, Address: a.String(), Reason: why, Chain: chain}
	if a.Domain == "" {
		d.Address = a.Local
	}
	for _, have := range r.res.Undeliverable {
		if have.Address == d.Address {
			return
		}
	}
	r.res.Undeliverable = append(r.res.Undeliverable, d)
}

func (r *resolver) add(d Destination) {
	for _, have := range r.res.Destinations {
		if have.Kind == d.Kind && have.Address == d.Address {
			return
		}
	}
	r.res.Destinations = append(r.res.Destinations, d)
}

func (r *resolver) loopText(a address.Address) string {
	var parts []string
	start := 0
	for i, p := range r.path {
		if p == a {
			start = i
			break
		}
	}
	for _, p := range r.path[start:] {
		parts = append(parts, p.String())
	}
	return strings.Join(append(parts, a.String()), " → ")
}

func reason(err error) string {
	var ae *address.Error
	if e, ok := err.(*address.Error); ok {
		ae = e
		return ae.Reason
	}
	return err.Error()
}

// isTargetSep separates the targets of a regexp alias result: commas and
// ASCII white space (Postfix's ISSPACE, which includes CR, VT and FF).
func isTargetSep(r rune) bool {
	return r == ',' || r == ' ' || r == '\t' || r == '\r' || r == '\n' || r == '\v' || r == '\f'
}
