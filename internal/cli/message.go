package cli

import (
	"fmt"
	"io"
	"math"
	"os"

	"github.com/mailgate/mailgate/internal/envelope"
	"github.com/mailgate/mailgate/internal/header"
	"github.com/mailgate/mailgate/internal/policy"
)

func init() {
	register(&command{
		path: "check message", args: []string{"LOGIN"}, optArgs: []string{"FILE|-"},
		flags:   []flagSpec{jsonFlag, {"mail-from", "S", "the envelope sender, as a client writes it after MAIL FROM: (<> is the null sender)"}},
		summary: "would LOGIN's submission of this raw message be accepted? (exit 0 yes, 1 no)",
		help: `Reads a raw message (RFC 5322, CRLF line endings as sent over SMTP) from
FILE or standard input and runs what mailgate serve runs for an
authenticated submission: MaySend on the envelope sender, then the header
checks (one From with one mailbox, owned; Sender and Resent-* owned; no
smuggling, NUL, folded field names, hidden addresses). --mail-from (path
and ESMTP parameters) is validated with the SMTP server's address rules; a
source route, which the server ignores, is refused here. Without it, the
envelope sender is the message's From address.
Messages larger than message_size_limit are refused.`,
		run: runCheckMessage,
	})
}

func runCheckMessage(c *ctx) int {
	if !c.load() {
		return ExitFail
	}
	in := c.Stdin
	name := "standard input"
	if len(c.args) > 1 && c.args[1] != "-" {
		f, err := os.Open(c.args[1])
		if err != nil {
			return c.fail("%v", err)
		}
		defer f.Close()
		in, name = f, c.args[1]
	}
	if in == nil {
		return c.fail("no message: give FILE or standard input")
	}
	limit := c.setting.MessageSizeLimit
	if limit == 0 {
		limit = math.MaxInt64 - 1 // message_size_limit = 0: no limit
	}
	raw, err := io.ReadAll(io.LimitReader(in, limit+1))
	if err != nil {
		return c.fail("reading %s: %v", name, err)
	}
	if int64(len(raw)) > limit {
		return c.fail("the message is larger than message_size_limit (%d bytes): 552 5.3.4", limit)
	}
	envSender := ""
	if mf, ok := c.flags["mail-from"]; ok {
		m, err := envelope.ParseMailFrom(mf)
		if err != nil {
			return c.fail("--mail-from: %v", err)
		}
		if !m.Null {
			envSender = m.Sender.String()
		}
	} else {
		envSender = c.fromAddress(raw)
	}
	s := policy.CheckSubmission(c.snap, c.args[0], envSender, raw)
	if c.json() {
		c.printJSON(s)
		if !s.Allowed {
			fmt.Fprintf(c.Stderr, "rejected: %s\n", s.Reply)
			return ExitFail
		}
		return ExitOK
	}
	w := c.Stdout
	if !s.Allowed {
		w = c.Stderr
		fmt.Fprintf(w, "rejected: %s\n  check: %s\n", s.Reply, s.Check)
	} else {
		fmt.Fprintf(w, "accepted: %s\n", s.Reply)
	}
	env := s.Envelope.Sender
	if env == "" {
		env = "<>"
	}
	fmt.Fprintf(w, "  envelope %s: %s (rule %s)\n", env, verdict(s.Envelope), s.Envelope.Rule)
	for _, h := range s.Headers {
		fmt.Fprintf(w, "  %s %s: %s (rule %s)\n", h.Field, h.Address, verdict(h.Decision), h.Decision.Rule)
		if h.Decision.Grant != nil {
			writeChain(w, "    ", h.Decision.Grant.Chain)
		}
	}
	if !s.Allowed {
		return ExitFail
	}
	return ExitOK
}

func verdict(d policy.Decision) string {
	if d.Allowed {
		return "allowed"
	}
	return "denied: " + d.Reply.String()
}

// fromAddress is the message's single From address, or — when the header
// has no single usable From — the login itself, so that the header
// verdict, not a made-up envelope, decides.
func (c *ctx) fromAddress(raw []byte) string {
	if b, err := header.Parse(raw); err == nil {
		if origs, err := b.Originators(); err == nil {
			for _, o := range origs {
				if o.Field == header.From {
					return o.Mailbox.Address.String()
				}
			}
		}
	}
	return c.args[0]
}
