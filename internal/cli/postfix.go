package cli

import (
	"fmt"
	"path/filepath"
	"strconv"

	"github.com/mailgate/mailgate/internal/postfixconf"
	"github.com/mailgate/mailgate/internal/settings"
)

func init() {
	register(&command{
		path: "postfix config",
		flags: []flagSpec{
			{"policy", "ADDR", "the --policy listener of mailgate serve (HOST:PORT)"},
			{"socketmap", "ADDR", "the --socketmap listener (HOST:PORT)"},
			{"milter", "ADDR", "the --milter listener (HOST:PORT)"},
			{"sasl", "ADDR", "the --sasl listener (HOST:PORT)"},
			{"mail-root", "DIR", "virtual_mailbox_base: the Maildir root (default DATA/mail, absolute)"},
			{"uid", "N", "owner of the Maildirs Postfix writes (default 5000, as docker-mailserver)"},
			{"gid", "N", "group of the Maildirs (default 5000)"},
			{"submission", "SERVICE", `master.cf name or [host:]port of the STARTTLS submission service (default "submission")`},
			{"submissions", "SERVICE", `master.cf name or [host:]port of the implicit-TLS service (default "submissions")`},
		},
		summary: "print the Postfix settings that make mailgate decide for a stock Postfix",
		help: `Prints the main.cf settings (one "NAME = VALUE" per line, for postconf -e)
and the master.cf lines of the submission services that connect a Postfix
to the listeners of 'mailgate serve --policy … --socketmap … --milter …
--sasl …': SMTP AUTH, managed domains, mailboxes, aliases, sender
ownership, the restrictions and the header checks are then mailgate's,
with the same answers as 'mailgate serve' itself. Postfix keeps its queue
and delivers into the Maildirs with virtual(8). See docs/postfix.md.`,
		run: runPostfixConfig,
	})
}

func runPostfixConfig(c *ctx) int {
	o := postfixconf.Options{
		Policy: c.flags["policy"], Socketmap: c.flags["socketmap"], Milter: c.flags["milter"], SASL: c.flags["sasl"],
		MailRoot: c.flags["mail-root"], Submission: c.flags["submission"], Submissions: c.flags["submissions"],
		UID: 5000, GID: 5000,
	}
	if s, err := settings.Load(c.global.configDir, c.Getenv, c.global.set); err == nil {
		o.Delimiter = s.RecipientDelimiter
	} else {
		fmt.Fprintf(c.Stderr, "mailgate: postfix config: settings: %v\n", err)
		return ExitFail
	}
	vm, err := filepath.Abs(filepath.Join(c.global.dataDir, postfixconf.VMailboxFile))
	if err != nil {
		fmt.Fprintf(c.Stderr, "mailgate: postfix config: %v\n", err)
		return ExitFail
	}
	o.VMailbox = vm
	if o.MailRoot == "" {
		abs, err := filepath.Abs(filepath.Join(c.global.dataDir, "mail"))
		if err != nil {
			fmt.Fprintf(c.Stderr, "mailgate: postfix config: %v\n", err)
			return ExitFail
		}
		o.MailRoot = abs
	}
	for _, f := range []struct {
		name string
		dst  *int
	}{{"uid", &o.UID}, {"gid", &o.GID}} {
		if v, ok := c.flags[f.name]; ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				fmt.Fprintf(c.Stderr, "mailgate: postfix config: --%s %q: not a number\n\n%s", f.name, v, c.cmd.usage())
				return ExitUsage
			}
			*f.dst = n
		}
	}
	if err := o.Check(); err != nil {
		fmt.Fprintf(c.Stderr, "mailgate: postfix config: %v\n\n%s", err, c.cmd.usage())
		return ExitUsage
	}
	fmt.Fprint(c.Stdout, postfixconf.MainCF(o))
	fmt.Fprintln(c.Stdout)
	fmt.Fprint(c.Stdout, postfixconf.MasterCF(o))
	return ExitOK
}
