package policy

import (
	"fmt"
	"sort"

	"github.com/mailgate/mailgate/internal/address"
	"github.com/mailgate/mailgate/internal/conffile"
	"github.com/mailgate/mailgate/internal/directory"
)

// Analyze expands every alias key of the snapshot the way Route would and
// reports, at the line of the key: targets that resolve to nothing (warning:
// mail to them bounces) and alias loops or expansions over the limits (error:
// mail to the key is deferred with 451 4.6.0 until the loop is fixed).
func Analyze(snap *directory.Snapshot) []conffile.Diag {
	var out []conffile.Diag
	seen := map[string]bool{}
	report := func(pos conffile.Pos, sev conffile.Severity, msg string) {
		k := fmt.Sprintf("%s|%s", pos, msg)
		if !seen[k] {
			seen[k] = true
			out = append(out, conffile.Diag{Pos: pos, Severity: sev, Msg: msg})
		}
	}
	check := func(key string, pos conffile.Pos, res RouteResult, problem string) {
		if problem != "" {
			report(pos, conffile.Error, fmt.Sprintf("%s: %s (mail to it is deferred with 451 4.6.0)", key, problem))
			return
		}
		for _, d := range res.Undeliverable {
			report(pos, conffile.Warning, fmt.Sprintf("%s: target %s resolves to nothing: %s", key, d.Address, d.Reason))
		}
	}
	for k, al := range snap.Aliases {
		pos := al.Lines[0]
		switch {
		case k.IsCatchAll(), k.IsBare():
			res := RouteResult{}
			r := resolver{lookup: &lookup{snap: snap}, catchAll: true, res: &res}
			rule := RuleCatchAll
			if k.IsBare() {
				rule = RuleLocalAlias
			}
			e := fromAlias(al, rule, k.String())
			r.expand(address.Address{Local: k.Local, Domain: k.Domain}, e, "", "", nil, 0)
			check(k.String(), pos, res, r.problem)
		default:
			a := address.Address{Local: k.Local, Domain: k.Domain}
			if !snap.IsManaged(a.Domain) {
				report(pos, conffile.Warning, fmt.Sprintf("%s: domain %s is excluded (excluded_domains): this alias is never used", a, a.Domain))
				continue
			}
			res := RouteAddress(snap, a)
			if res.Status == Rejected {
				continue // a receive restriction, not a broken alias
			}
			check(a.String(), pos, res, res.Problem)
		}
	}
	for name, al := range snap.LocalAliases {
		res := RouteResult{}
		r := resolver{lookup: &lookup{snap: snap}, catchAll: true, res: &res}
		a := address.Address{Local: name, Domain: snap.Settings.Hostname}
		r.expand(a, fromAlias(al, RuleLocalAlias, a.String()), "", "", nil, 0)
		check(name, al.Lines[0], res, r.problem)
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Pos.File != out[j].Pos.File {
			return out[i].Pos.File < out[j].Pos.File
		}
		if out[i].Pos.Line != out[j].Pos.Line {
			return out[i].Pos.Line < out[j].Pos.Line
		}
		return out[i].Msg < out[j].Msg
	})
	return out
}
