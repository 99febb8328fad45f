package cli

import (
	"fmt"
	"io"
	"strings"

	"github.com/mailgate/mailgate/internal/policy"
)

func init() {
	register(&command{
		path:    "check send",
		args:    []string{"LOGIN", "SENDER"},
		flags:   []flagSpec{jsonFlag},
		summary: "may LOGIN use SENDER as envelope sender or From? (exit 0 allowed, 1 denied)",
		help: `Answers with the rule and file:line that allow it, or for a denial the
rejection text and the accounts that do own SENDER. SENDER "<>" (or "")
is the null sender.`,
		run: runCheckSend,
	})
	register(&command{
		path:    "check route",
		args:    []string{"ADDRESS"},
		flags:   []flagSpec{jsonFlag},
		summary: "where does mail for ADDRESS go? (exit 0 deliverable or remote, 1 otherwise)",
		help: `Shows every destination (mailbox or external forward) with the chain of
rules and file:line that leads there, and every alias target that resolves
to nothing.`,
		run: runCheckRoute,
	})
}

func runCheckSend(c *ctx) int {
	if !c.load() {
		return ExitFail
	}
	d := policy.MaySend(c.snap, c.args[0], c.args[1])
	if c.json() {
		c.printJSON(d)
		if !d.Allowed {
			fmt.Fprintf(c.Stderr, "denied: %s\n", d.Reply)
			return ExitFail
		}
		return ExitOK
	}
	if d.Allowed {
		sender := d.Sender
		if sender == "" {
			sender = "<>"
		}
		fmt.Fprintf(c.Stdout, "allowed: %s may send as %s\n  rule: %s\n", d.Login, sender, d.Rule)
		if d.Detail != "" {
			fmt.Fprintf(c.Stdout, "  %s\n", d.Detail)
		}
		if d.Grant != nil {
			writeChain(c.Stdout, "  ", d.Grant.Chain)
		}
		return ExitOK
	}
	w := c.Stderr
	fmt.Fprintf(w, "denied: %s\n  rule: %s\n", d.Reply, d.Rule)
	if d.Detail != "" {
		fmt.Fprintf(w, "  %s\n", d.Detail)
	}
	for _, o := range d.Owners {
		fmt.Fprintf(w, "  owner %s:\n", o.Login)
		writeChain(w, "    ", o.Chain)
	}
	return ExitFail
}

func writeChain(w io.Writer, indent string, chain []policy.Step) {
	for _, s := range chain {
		fmt.Fprintf(w, "%s%s\n", indent, s)
	}
}

func runCheckRoute(c *ctx) int {
	if !c.load() {
		return ExitFail
	}
	r := policy.Route(c.snap, c.args[0])
	ok := r.Status == policy.Deliver || r.Status == policy.Remote
	if c.json() {
		c.printJSON(r)
		if !ok {
			fmt.Fprintf(c.Stderr, "%s: %s\n", r.Status, r.Reply)
			return ExitFail
		}
		return ExitOK
	}
	w := c.Stdout
	if !ok {
		w = c.Stderr
	}
	fmt.Fprintf(w, "%s: %s\n", r.Recipient, r.Status)
	if r.Reply != nil {
		fmt.Fprintf(w, "  reply: %s\n", r.Reply)
	}
	if r.Problem != "" {
		fmt.Fprintf(w, "  problem: %s\n", r.Problem)
	}
	for _, d := range r.Destinations {
		line := fmt.Sprintf("  %s %s", d.Kind, d.Address)
		if d.Kind == policy.Mailbox && d.Address != d.Mailbox {
			line += fmt.Sprintf(" (mailbox %s, extension %s)", d.Mailbox, d.Extension)
		}
		fmt.Fprintln(w, line)
		writeChain(w, "    via ", d.Chain)
	}
	if len(r.Undeliverable) > 0 && r.Status == policy.Deliver {
		fmt.Fprintln(w, "  some targets resolve to nothing (mail to them bounces):")
	}
	for _, d := range r.Undeliverable {
		fmt.Fprintf(w, "  %s %s: %s\n", d.Kind, d.Address, d.Reason)
		writeChain(w, "    via ", d.Chain)
	}
	if r.Status == policy.NotFound && len(r.Undeliverable) > 0 {
		fmt.Fprintf(w, "  no deliverable destination: %s\n", strings.TrimSpace(r.Reply.String()))
	}
	if !ok {
		return ExitFail
	}
	return ExitOK
}
