package cli

import (
	"errors"
	"fmt"

	"github.com/mailgate/mailgate/internal/conffile"
	"github.com/mailgate/mailgate/internal/directory"
	"github.com/mailgate/mailgate/internal/policy"
	"github.com/mailgate/mailgate/internal/settings"
)

func init() {
	register(&command{
		path:    "domain list",
		flags:   []flagSpec{jsonFlag},
		summary: `managed domains: "DOMAIN<TAB>mailbox|alias"`,
		help: `A mailbox domain is the domain of an account; an alias domain is the domain
of an alias key (user@domain or @domain) that is not a mailbox domain.
Everything else is not managed: mail for it goes out. excluded_domains are
never managed.`,
		run: runDomainList,
	})
	register(&command{
		path:    "config check",
		flags:   []flagSpec{jsonFlag},
		summary: "validate every file; print the settings, errors and warnings with file:line",
		help: `Prints every effective setting with where its value came from, then every
error and warning with file:line: syntax errors, duplicate keys (merged),
alias targets that resolve to nothing, alias loops and over-deep expansions.
Exit status 1 when there is an error or an alias loop.`,
		run: runConfigCheck,
	})
}

func runDomainList(c *ctx) int {
	if !c.load() {
		return ExitFail
	}
	type row struct {
		Domain string `json:"domain"`
		Class  string `json:"class"`
	}
	rows := []row{}
	for _, d := range c.snap.SortedDomains() {
		rows = append(rows, row{d, string(c.snap.Domains[d])})
	}
	if c.json() {
		c.printJSON(rows)
		return ExitOK
	}
	for _, r := range rows {
		fmt.Fprintf(c.Stdout, "%s\t%s\n", r.Domain, r.Class)
	}
	return ExitOK
}

type diagJSON struct {
	File     string `json:"file"`
	Line     int    `json:"line"`
	Severity string `json:"severity"`
	Message  string `json:"message"`
}

type settingJSON struct {
	Name   string `json:"name"`
	Value  string `json:"value"`
	Origin string `json:"origin"`
}

type checkJSON struct {
	OK          bool           `json:"ok"`
	Settings    []settingJSON  `json:"settings"`
	Diagnostics []diagJSON     `json:"diagnostics"`
	Counts      map[string]int `json:"counts,omitempty"`
}

func runConfigCheck(c *ctx) int {
	out := checkJSON{Settings: []settingJSON{}, Diagnostics: []diagJSON{}}
	s, err := settings.Load(c.global.configDir, c.Getenv, c.global.set)
	if err != nil {
		out.Diagnostics = append(out.Diagnostics, diagJSON{File: settings.FileName, Severity: "error", Message: err.Error()})
		return c.reportCheck(out)
	}
	vals := s.Values()
	for _, n := range settings.Names {
		out.Settings = append(out.Settings, settingJSON{n, vals[n], s.Origin[n]})
	}
	c.setting = s
	snap, _, err := c.loadSnapshot(s)
	var diags []conffile.Diag
	extDown := false
	if err == nil && snap.Ext != nil {
		// An LDAP source is asked per lookup: check that it answers.
		if _, perr := snap.Ext.Domain(s.Hostname); perr != nil {
			extDown = true
			out.Diagnostics = append(out.Diagnostics, diagJSON{File: s.LDAP.ServerHost, Severity: "error", Message: perr.Error()})
		}
	}
	if err != nil {
		var le *directory.LoadError
		if !errors.As(err, &le) {
			out.Diagnostics = append(out.Diagnostics, diagJSON{Severity: "error", Message: err.Error()})
			return c.reportCheck(out)
		}
		diags = le.Diags
	} else {
		diags = snap.Diags
		if !extDown {
			// (With LDAP down every alias would look broken.)
			diags = append(diags, policy.Analyze(snap)...)
		}
		out.Counts = map[string]int{
			"accounts": len(snap.Accounts), "aliases": len(snap.Aliases),
			"send_as": len(snap.SendAs), "domains": len(snap.Domains),
			"local_aliases":     len(snap.LocalAliases),
			"send_restrictions": len(snap.SendRestrict), "receive_restrictions": len(snap.RecvRestrict),
		}
		if snap.Regexp != nil {
			out.Counts["regexp_rules"] = snap.Regexp.Len()
		}
	}
	for _, d := range diags {
		out.Diagnostics = append(out.Diagnostics, diagJSON{d.Pos.File, d.Pos.Line, d.Severity.String(), d.Msg})
	}
	return c.reportCheck(out)
}

func (c *ctx) reportCheck(out checkJSON) int {
	errs, warns := 0, 0
	for _, d := range out.Diagnostics {
		if d.Severity == "error" {
			errs++
		} else {
			warns++
		}
	}
	out.OK = errs == 0
	if c.json() {
		c.printJSON(out)
	} else {
		fmt.Fprintf(c.Stdout, "configuration directory: %s\n\nsettings:\n", c.global.configDir)
		for _, s := range out.Settings {
			fmt.Fprintf(c.Stdout, "  %-20s = %-32q (%s)\n", s.Name, s.Value, s.Origin)
		}
		if out.Counts != nil {
			fmt.Fprintf(c.Stdout, "\nloaded: %d accounts, %d alias keys, %d regexp rules, %d send-as keys, %d managed domains\n",
				out.Counts["accounts"], out.Counts["aliases"], out.Counts["regexp_rules"], out.Counts["send_as"], out.Counts["domains"])
		}
		if len(out.Diagnostics) > 0 {
			fmt.Fprintln(c.Stdout)
		}
		for _, d := range out.Diagnostics {
			loc := d.File
			if d.Line > 0 {
				loc = fmt.Sprintf("%s:%d", d.File, d.Line)
			}
			if loc != "" {
				loc += ": "
			}
			fmt.Fprintf(c.Stdout, "%s%s: %s\n", loc, d.Severity, d.Message)
		}
		fmt.Fprintf(c.Stdout, "\n%d errors, %d warnings\n", errs, warns)
	}
	if errs > 0 {
		fmt.Fprintf(c.Stderr, "mailgate: config check: %d errors\n", errs)
		return ExitFail
	}
	return ExitOK
}
