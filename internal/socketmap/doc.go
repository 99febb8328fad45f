// Package socketmap is a server for Postfix's socketmap lookup tables
// (socketmap_table(5), Sendmail's socket map protocol), through which a
// stock Postfix asks mailgate where mail goes and who may send as whom
// (SPEC §9): `virtual_mailbox_domains = socketmap:inet:HOST:PORT:domains`,
// `virtual_alias_maps = …:aliases`, `virtual_mailbox_maps = …:mailboxes`,
// `smtpd_sender_login_maps = …:senders` and `check_recipient_access
// …:recipient_access`.
//
// # Protocol
//
// Requests and replies are netstrings ("<decimal length>:<payload>,"). A
// request's payload is "<table> <key>": the table name, one space, and the
// key (everything after the first space). The reply payload is one of
// (socketmap_table(5)):
//
//	OK <data>      the key was found; data is the value
//	NOTFOUND       the key was not found (the payload is "NOTFOUND ", with the space)
//	TEMP <reason>  temporary failure: Postfix defers (451 4.3.0 / deferred mail)
//	PERM <reason>  permanent failure: Postfix treats it as a configuration error
//
// Postfix keeps the connection for many requests (it closes it after 10s
// idle, 100s old); the server handles each connection concurrently and
// closes it after IdleTimeout without a request.
//
// Limits and errors: a request payload over MaxNetstring (100000, Postfix's
// own socketmap reply limit) octets, a length that is not strict decimal
// (no sign, space or leading zero), a missing ':' or ',' or a truncated
// netstring is malformed: the server answers "PERM malformed netstring" and
// closes the connection, since it cannot know where the next request begins.
// A well-formed netstring without a space gets PERM and the connection stays
// open, as does an unknown table name (PERM: a configuration error). When
// the directory is unavailable (Snapshot returns nil) every lookup in a
// known table answers TEMP — never a NOTFOUND that Postfix could take for an
// unknown user, and never an accept. An OK reply that would exceed
// MaxNetstring octets is replaced by TEMP (Postfix would refuse it).
//
// Postfix opens socketmap tables with DICT_FLAG_PATTERN (dict_sockmap.c),
// so it sends only the full lookup key: it never retries user@domain without
// its extension, nor @domain, nor the bare user part. Extensions, catch-alls
// and every other fallback are therefore resolved here, by package policy.
// Keys may arrive in any case and with IDNA U-labels: they are canonicalized
// by package address; a key that is not a valid address (or domain) is
// NOTFOUND.
//
// # Tables
//
// domains — key a domain: "OK <domain>" (canonical A-label) when it is
// managed (SPEC §3, directory.Snapshot.IsManaged), else NOTFOUND.
//
// mailboxes — key an address: "OK <domain>/<local>/" when it is an account,
// the Maildir directory relative to the mail root as internal/maildir lays it
// out (DATA/mail/<domain>/<local>), canonical, with the trailing slash that
// tells virtual(8) it is a Maildir (virtual_mailbox_base = DATA/mail). An
// address whose base (SPEC §1 recipient_delimiter split) is an account gets
// the base account's Maildir: alias expansion carries extensions
// (alias1+x → user1+x) and virtual(8) looks the result up unchanged, while
// mailgate delivers it to user1's Maildir. An account whose name is not a safe
// path (internal/maildir refuses it) gets PERM. Else NOTFOUND.
//
// aliases — key an address: policy.Route, fully resolved. Status deliver
// answers "OK " followed by the comma-separated final destinations
// (Destination.Address: the account address with any carried extension for
// mailboxes, the forward address for forwards), without duplicates. Postfix
// resolves virtual aliases recursively (cleanup(8), virtual(5)): it looks
// each result up again, and stops at a result that equals its own key. The
// final destinations are fixed points of Route: a forward is outside the
// managed domains (Route says remote → NOTFOUND, the address stays), a mailbox
// address routes to itself (possibly among others, for "keep a copy and
// forward" aliases, where Postfix stops at the self-reference and already
// holds the others). So Postfix's recursion over this table ends after one
// more lookup per destination with exactly the destinations of `mailgate
// check route`. An account that is not an alias therefore answers
// "OK <itself>" rather than NOTFOUND: that is a self-mapping for Postfix,
// and it makes user+ext@domain of an account a listed recipient for
// smtpd's reject_unlisted_recipient, which looks in virtual_alias_maps and
// virtual_mailbox_maps with the full address only.
// Status tempfail (alias loop, expansion limit) answers TEMP with the
// reply (mail is deferred, as `mailgate serve` defers with 451 4.6.0).
// Status unknown, remote, invalid and rejected answer NOTFOUND: a virtual
// alias table cannot express a rejection. For rejected (a receive
// restriction of postfix-receive-access.cf) NOTFOUND is also what keeps
// delivery right when the restricted account is reached through an alias
// (Route restricts only the recipient as given, and Postfix looks up the
// alias's result again); the restriction itself is enforced at RCPT time
// by the recipient_access table.
//
// recipient_access — key an address: for `check_recipient_access`, an
// access(5) result for what the alias table cannot say: when Route answers
// rejected, tempfail or unknown, "OK " + the reply of `mailgate serve`
// ("554 5.7.1 <R>: Recipient address rejected: Access denied", "451 4.6.0
// …", "550 5.1.1 <R>: Recipient address rejected: User unknown"), which
// Postfix sends verbatim; NOTFOUND (no opinion, the next restriction
// applies) for deliver, remote and invalid. It never answers OK as an
// access action, which would permit the recipient and skip the relay checks.
//
// senders — key an address: for smtpd_sender_login_maps with
// reject_sender_login_mismatch / reject_authenticated_sender_login_mismatch:
// "OK " followed by the comma-separated logins of policy.Owners (SPEC §5
// rules a–d, including the extension fallback that Postfix does not do for
// this pattern table), NOTFOUND when nobody owns it. The answer does not
// depend on spoof_protection (owners do not); with spoof_protection = false
// the sender login maps must not be used (the policy service, which answers
// MaySend, handles that setting).
package socketmap
