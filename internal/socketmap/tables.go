package socketmap

import (
	"fmt"
	"log/slog"
	"strconv"
	"strings"

	"github.com/mailgate/mailgate/internal/address"
	"github.com/mailgate/mailgate/internal/directory"
	"github.com/mailgate/mailgate/internal/policy"
)

// The tables served (see the package comment).
const (
	TableDomains         = "domains"
	TableMailboxes       = "mailboxes"
	TableAliases         = "aliases"
	TableSenders         = "senders"
	TableRecipientAccess = "recipient_access"
)

var tables = map[string]func(*directory.Snapshot, string) string{
	TableDomains:         lookupDomain,
	TableMailboxes:       lookupMailbox,
	TableAliases:         lookupAlias,
	TableSenders:         lookupSender,
	TableRecipientAccess: lookupRecipientAccess,
}

const notFound = "NOTFOUND "

// answer answers one request payload "<table> <key>" with the payload of
// the reply netstring.
func (s *Server) answer(req []byte, log *slog.Logger) string {
	name, key, ok := strings.Cut(string(req), " ")
	if !ok {
		log.Warn("socketmap: request without a space", "request", truncate(string(req)))
		return "PERM malformed request: expected \"<table> <key>\""
	}
	table, ok := tables[name]
	if !ok {
		log.Warn("socketmap: unknown table", "table", truncate(name))
		return "PERM unknown table " + quote(name)
	}
	var snap *directory.Snapshot
	if s.Snapshot != nil {
		snap = s.Snapshot()
	}
	if snap == nil {
		log.Warn("socketmap: directory unavailable; temporary failure", "table", name, "key", truncate(key))
		return "TEMP directory unavailable"
	}
	r := table(snap, key)
	if strings.HasPrefix(r, "OK ") && len(r) > MaxNetstring {
		r = fmt.Sprintf("TEMP reply of %d octets exceeds the socketmap limit of %d", len(r), MaxNetstring)
	}
	if strings.HasPrefix(r, "OK ") || r == notFound {
		log.Debug("socketmap lookup", "table", name, "key", truncate(key), "reply", truncate(r))
	} else {
		log.Info("socketmap lookup failed", "table", name, "key", truncate(key), "reply", truncate(r))
	}
	return r
}

// parseAddress canonicalizes a lookup key (any case, U-labels or A-labels,
// SMTPUTF8 local parts).
func parseAddress(key string) (address.Address, bool) {
	a, err := address.Parse(key, address.Options{UTF8Local: true})
	return a, err == nil
}

// lookupDomain: OK <canonical domain> for a managed domain.
func lookupDomain(snap *directory.Snapshot, key string) string {
	d, err := address.ParseDomain(key)
	if err != nil {
		return notFound
	}
	if err := snap.Available(); err != nil {
		return temp(err)
	}
	managed, err := snap.LookupManaged(d)
	if err != nil {
		return temp(err)
	}
	if !managed {
		return notFound
	}
	return "OK " + d
}

// lookupMailbox: OK <domain>/<local>/ for an account, or for an address
// whose base (recipient_delimiter) is an account — what virtual(8) looks up
// after alias expansion has carried an extension (user+tag@d).
func lookupMailbox(snap *directory.Snapshot, key string) string {
	a, ok := parseAddress(key)
	if !ok {
		return notFound
	}
	if err := snap.Available(); err != nil {
		return temp(err)
	}
	managed, err := snap.LookupManaged(a.Domain)
	if err != nil {
		return temp(err)
	}
	if !managed {
		return notFound
	}
	_, ok, err = snap.LookupAccount(a)
	if err != nil {
		return temp(err)
	}
	if !ok {
		base, _, _, split := address.SplitExtension(a.Local, snap.Settings.RecipientDelimiter)
		if !split {
			return notFound
		}
		a = address.Address{Local: base, Domain: a.Domain}
		_, ok, err = snap.LookupAccount(a)
		if err != nil {
			return temp(err)
		}
		if !ok {
			return notFound
		}
	}
	rel, err := maildirRel(a)
	if err != nil {
		return "PERM " + err.Error()
	}
	return "OK " + rel + "/"
}

// maildirRel is the Maildir directory of a canonical account relative to
// the mail root, by the rule of internal/maildir (Store.Dir): refused when a
// part is empty, starts with a dot or holds "/", "\" or NUL.
func maildirRel(a address.Address) (string, error) {
	for _, part := range []string{a.Local, a.Domain} {
		if part == "" || strings.HasPrefix(part, ".") || strings.ContainsAny(part, "/\\\x00") {
			return "", fmt.Errorf("mailbox %s has no safe Maildir path", quote(a.String()))
		}
	}
	return a.Domain + "/" + a.Local, nil
}

// lookupAlias: Route(key) fully resolved (see the package comment).
func lookupAlias(snap *directory.Snapshot, key string) string {
	a, ok := parseAddress(key)
	if !ok {
		return notFound
	}
	res := policy.RouteAddress(snap, a)
	switch res.Status {
	case policy.Deliver:
		seen := make(map[string]bool, len(res.Destinations))
		out := make([]string, 0, len(res.Destinations))
		for _, d := range res.Destinations {
			if (d.Kind == policy.Mailbox || d.Kind == policy.Forward) && !seen[d.Address] {
				seen[d.Address] = true
				out = append(out, d.Address)
			}
		}
		if len(out) == 0 {
			return notFound
		}
		return "OK " + strings.Join(out, ",")
	case policy.TempFail:
		return "TEMP " + sanitize(replyText(res))
	default: // Remote, NotFound, Rejected, Invalid
		return notFound
	}
}

// lookupRecipientAccess: an access(5) result for the verdicts an alias
// table cannot express (receive restriction, alias loop, unknown user), with
// the reply of `mailgate serve`; NOTFOUND (DUNNO) otherwise — never OK,
// which would permit the recipient and skip the relay restrictions.
func lookupRecipientAccess(snap *directory.Snapshot, key string) string {
	a, ok := parseAddress(key)
	if !ok {
		return notFound
	}
	res := policy.RouteAddress(snap, a)
	switch res.Status {
	case policy.Rejected, policy.TempFail, policy.NotFound:
		if res.Reply == nil {
			return "TEMP no reply for route status " + string(res.Status)
		}
		return "OK " + sanitize(res.Reply.String())
	default:
		return notFound
	}
}

// lookupSender: the logins that may use the address (policy.Owners).
func lookupSender(snap *directory.Snapshot, key string) string {
	a, ok := parseAddress(key)
	if !ok {
		return notFound
	}
	owners, err := policy.Owners(snap, a)
	if err != nil {
		return temp(err)
	}
	seen := make(map[string]bool, len(owners))
	logins := make([]string, 0, len(owners))
	for _, o := range owners {
		if !seen[o.Login] {
			seen[o.Login] = true
			logins = append(logins, o.Login)
		}
	}
	if len(logins) == 0 {
		return notFound
	}
	return "OK " + strings.Join(logins, ",")
}

// temp is the answer when the directory source cannot be asked.
func temp(err error) string {
	return "TEMP " + sanitize(err.Error())
}

func replyText(res policy.RouteResult) string {
	if res.Reply != nil {
		return res.Reply.String()
	}
	return res.Problem
}

// sanitize replaces control characters by "?" (a reply is one line of a
// Postfix log or an SMTP reply).
func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r >= 0x80 && r < 0xa0 {
			return '?'
		}
		return r
	}, s)
}

// quote quotes untrusted text for a reply or a log, ASCII only, cut at 64
// octets.
func quote(s string) string {
	return strconv.QuoteToASCII(truncate(s))
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
