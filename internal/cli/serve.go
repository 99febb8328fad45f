package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/mailgate/mailgate/internal/confedit"
	"github.com/mailgate/mailgate/internal/conffile"
	"github.com/mailgate/mailgate/internal/daemon"
	"github.com/mailgate/mailgate/internal/passwd"
)

func init() {
	register(&command{
		path: "serve",
		flags: []flagSpec{
			{"hostname", "NAME", "the server's host name (greeting, Received, certificate); sets the hostname setting"},
			{"smtp", "ADDR", `inbound MX listener, no AUTH (default ":25"; "" disables)`},
			{"submission", "ADDR", `submission listener: STARTTLS, then AUTH (default ":587"; "" disables)`},
			{"submissions", "ADDR", `submissions listener: implicit TLS, AUTH (default ":465"; "" disables)`},
			{"relay-host", "HOST:PORT", "next hop for all non-local mail (default: MX lookup); sets the relay_host setting"},
			{"tls-cert", "FILE", "certificate chain, PEM (default: a self-signed certificate kept in DATA/tls)"},
			{"tls-key", "FILE", "private key of --tls-cert, PEM"},
			{"policy", "ADDR", "Postfix SMTP access policy listener: MaySend for smtpd_sender_restrictions (default off)"},
			{"socketmap", "ADDR", "Postfix socketmap listener: tables domains, mailboxes, aliases, senders, recipient_access (default off)"},
			{"milter", "ADDR", "milter listener: the header checks for Postfix's submission services (default off)"},
			{"sasl", "ADDR", "Dovecot authentication protocol listener for Postfix's SMTP AUTH (default off)"},
			{"demo", "", `demo mode: create a demo configuration in the configuration directory when it has no accounts, and listen on 127.0.0.1:2525 (smtp), 127.0.0.1:2587 (submission) and 127.0.0.1:2465 (submissions) unless given`},
			{"log-level", "LEVEL", "debug, info (default), warn or error"},
		},
		summary: "run the mail server: inbound SMTP, submission, Maildir delivery, outbound queue",
		help: `Runs until SIGTERM or SIGINT, then stops accepting connections, lets every
transaction in progress finish (up to 30 s) and exits; a message answered
with 250 is already on disk. Configuration files are re-read within a
second of a change; a broken file keeps the last good configuration and
the error is logged with its file:line. Logs go to standard error.

Mail for local accounts goes to DATA/mail/<domain>/<local>/ (Maildir); the
rest is queued in DATA/queue and relayed to --relay-host or by MX lookup,
with retries for queue_lifetime (default 5 days) and a bounce to the sender
after a permanent failure. Limits and timeouts are settings (see 'mailgate
config check'): max_connections, max_connections_per_ip, max_recipients,
smtp_timeout, data_timeout, message_size_limit.

The directory comes from account_provisioner: the files (default), LDAP
(asked per lookup) or PostgreSQL (reloaded on every committed change); when
that source is down, MAIL FROM and RCPT TO answer 451 4.3.0 and AUTH
454 4.7.0 until it is back.`,
		run: runServe,
	})
}

func runServe(c *ctx) int {
	level := slog.LevelInfo
	if v, ok := c.flags["log-level"]; ok {
		if err := level.UnmarshalText([]byte(v)); err != nil {
			fmt.Fprintf(c.Stderr, "mailgate: serve: --log-level %q: expected debug, info, warn or error\n", v)
			return ExitUsage
		}
	}
	log := slog.New(slog.NewTextHandler(c.Stderr, &slog.HandlerOptions{Level: level}))
	demo := c.flags["demo"] == "true"
	addr := func(flag, def, demoDef string) string {
		if v, ok := c.flags[flag]; ok {
			return v
		}
		if demo {
			return demoDef
		}
		return def
	}
	set := map[string]string{}
	for k, v := range c.global.set {
		set[k] = v
	}
	if v, ok := c.flags["hostname"]; ok {
		set["hostname"] = v
	}
	if v, ok := c.flags["relay-host"]; ok {
		set["relay_host"] = v
	}
	if demo {
		created, err := writeDemoConfig(c.global.configDir)
		if err != nil {
			fmt.Fprintf(c.Stderr, "mailgate: serve --demo: %v\n", err)
			return ExitFail
		}
		if created {
			log.Warn("demo configuration created: accounts user1@example.test and user2@example.test, password \"mypassword\"; do not use it in production", "dir", c.global.configDir)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	err := daemon.Run(ctx, daemon.Options{
		ConfigDir:   c.global.configDir,
		DataDir:     c.global.dataDir,
		Getenv:      c.Getenv,
		Set:         set,
		SMTP:        addr("smtp", ":25", "127.0.0.1:2525"),
		Submission:  addr("submission", ":587", "127.0.0.1:2587"),
		Submissions: addr("submissions", ":465", "127.0.0.1:2465"),
		TLSCert:     c.flags["tls-cert"],
		TLSKey:      c.flags["tls-key"],
		Policy:      c.flags["policy"],
		Socketmap:   c.flags["socketmap"],
		Milter:      c.flags["milter"],
		SASL:        c.flags["sasl"],
		Logger:      log,
	})
	if err != nil {
		fmt.Fprintf(c.Stderr, "mailgate: serve: %v\n", err)
		return ExitFail
	}
	return ExitOK
}

// writeDemoConfig writes a small demo configuration into dir unless it
// already has an accounts file. It reports whether it wrote one.
func writeDemoConfig(dir string) (bool, error) {
	accounts := filepath.Join(dir, conffile.AccountsFile)
	if _, err := os.Stat(accounts); err == nil {
		return false, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return false, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, err
	}
	unlock, err := confedit.Lock(dir)
	if err != nil {
		return false, err
	}
	defer unlock()
	var acc strings.Builder
	for _, u := range []string{"user1@example.test", "user2@example.test"} {
		h, err := passwd.Hash("mypassword")
		if err != nil {
			return false, err
		}
		fmt.Fprintf(&acc, "%s|%s\n", u, h)
	}
	virtual := "# demo aliases: mail for these goes to user1\npostmaster@example.test user1@example.test\nalias1@example.test user1@example.test\n"
	vpath := filepath.Join(dir, conffile.VirtualFile)
	if _, err := os.Stat(vpath); errors.Is(err, os.ErrNotExist) {
		if err := confedit.WriteFile(vpath, []byte(virtual), 0o644); err != nil {
			return false, err
		}
	}
	if err := confedit.WriteFile(accounts, []byte(acc.String()), 0o600); err != nil {
		return false, err
	}
	return true, nil
}
