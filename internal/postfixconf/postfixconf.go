// Package postfixconf writes the Postfix settings that wire a stock Postfix
// to the listeners of `mailgate serve` (SPEC §9), so that Postfix keeps its
// queue and delivery while mailgate makes every decision:
//
//   - SMTP AUTH: smtpd_sasl_type = dovecot, smtpd_sasl_path = inet:… (the
//     --sasl listener speaks the Dovecot authentication protocol);
//   - managed domains, mailboxes, aliases and sender ownership: socketmap
//     tables (the --socketmap listener) for virtual_mailbox_domains,
//     virtual_mailbox_maps, virtual_alias_maps and smtpd_sender_login_maps;
//     the receive restriction through check_recipient_access;
//   - MaySend with mailgate's texts: check_policy_service (the --policy
//     listener) in smtpd_sender_restrictions of the submission services;
//   - the SPEC §6 header checks: a milter (the --milter listener) on the
//     submission services, given the {auth_authen} macro.
//
// When mailgate cannot answer, every lookup fails temporarily and Postfix
// answers 4xx (451 4.3.0 for a table, 454 4.7.0 for AUTH, 451 4.7.1 for the
// milter with milter_default_action = tempfail); nothing is accepted.
package postfixconf

import (
	"fmt"
	"net"
	"strconv"
	"strings"
)

// Options name the mailgate listeners and the Postfix side.
type Options struct {
	Policy    string // host:port of --policy
	Socketmap string // host:port of --socketmap
	Milter    string // host:port of --milter
	SASL      string // host:port of --sasl
	MailRoot  string // virtual_mailbox_base: the Maildir root (mailgate's DATA/mail)
	VMailbox  string // the file VMailboxFile under mailgate's data directory, absolute
	// UID and GID own the Maildirs written by Postfix's virtual(8);
	// docker-mailserver uses 5000:5000.
	UID, GID int
	// Delimiter is mailgate's recipient_delimiter setting; Postfix must
	// split extensions the same way. Default "+".
	Delimiter string
	// Submission and Submissions are the master.cf service names or
	// [host:]port of the two submission services; default "submission"
	// (587) and "submissions" (465).
	Submission, Submissions string
}

// Check validates the options: every listener address must be host:port.
func (o *Options) Check() error {
	for _, a := range []struct{ flag, v string }{{"--policy", o.Policy}, {"--socketmap", o.Socketmap}, {"--milter", o.Milter}, {"--sasl", o.SASL}} {
		if a.v == "" {
			return fmt.Errorf("%s is required", a.flag)
		}
		host, port, err := net.SplitHostPort(a.v)
		if err != nil || host == "" {
			return fmt.Errorf("%s %q: expected HOST:PORT", a.flag, a.v)
		}
		if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
			return fmt.Errorf("%s %q: bad port", a.flag, a.v)
		}
		if strings.ContainsAny(a.v, " \t,\n") {
			return fmt.Errorf("%s %q: white space or comma in the address", a.flag, a.v)
		}
	}
	if o.MailRoot == "" || !strings.HasPrefix(o.MailRoot, "/") || strings.ContainsAny(o.MailRoot, " \t\n,") {
		return fmt.Errorf("--mail-root %q: expected an absolute path without white space", o.MailRoot)
	}
	if o.VMailbox == "" || !strings.HasPrefix(o.VMailbox, "/") || strings.ContainsAny(o.VMailbox, " \t\n,") {
		return fmt.Errorf("mailbox table %q: expected an absolute path without white space", o.VMailbox)
	}
	if o.UID < 1 || o.GID < 1 {
		return fmt.Errorf("--uid/--gid: expected positive numbers")
	}
	if o.Delimiter == "" {
		o.Delimiter = "+"
	}
	if strings.ContainsAny(o.Delimiter, " \t\n,=") {
		return fmt.Errorf("recipient delimiter %q cannot be written to main.cf", o.Delimiter)
	}
	if o.Submission == "" {
		o.Submission = "submission"
	}
	if o.Submissions == "" {
		o.Submissions = "submissions"
	}
	return nil
}

// MainCF returns the main.cf settings, one "name = value" per line
// (ready for `postconf -e`), with comments.
func MainCF(o Options) string {
	sm := func(table string) string { return "socketmap:inet:" + o.Socketmap + ":" + table }
	var b strings.Builder
	line := func(comment, name, value string) {
		if comment != "" {
			fmt.Fprintf(&b, "# %s\n", comment)
		}
		fmt.Fprintf(&b, "%s = %s\n", name, value)
	}
	b.WriteString("# --- main.cf: apply each setting with postconf -e 'NAME = VALUE' ---\n")
	line("managed domains, mailboxes and aliases come from mailgate (Route, SPEC §3–§4)", "virtual_mailbox_domains", sm("domains"))
	line("", "virtual_mailbox_maps", sm("mailboxes"))
	line("full alias resolution, catch-alls and +extensions are done by mailgate", "virtual_alias_maps", sm("aliases"))
	line("Maildirs under mailgate's mail root, in the docker-mailserver layout <domain>/<local>/", "virtual_mailbox_base", o.MailRoot)
	line("", "virtual_transport", "virtual")
	line("", "virtual_uid_maps", fmt.Sprintf("static:%d", o.UID))
	line("", "virtual_gid_maps", fmt.Sprintf("static:%d", o.GID))
	line("", "virtual_minimum_uid", strconv.Itoa(min(o.UID, 100)))
	line("the same extension delimiters as mailgate's recipient_delimiter setting", "recipient_delimiter", o.Delimiter)
	line("no legacy address forms that could change the recipient behind mailgate's back", "allow_percent_hack", "no")
	line("", "swap_bangpath", "no")
	line("owners(S): the union of accounts, aliases, regexp aliases and send-as grants (SPEC §5)", "smtpd_sender_login_maps", sm("senders"))
	line("the receive restriction (email restrict … receive)", "smtpd_recipient_restrictions",
		"check_recipient_access "+sm("recipient_access")+", permit_sasl_authenticated, reject_unauth_destination")
	line("port 25: only the managed domains (554 5.7.1 Relay access denied otherwise)", "smtpd_relay_restrictions",
		"permit_sasl_authenticated, reject_unauth_destination")
	line("SMTP AUTH is checked by mailgate (Dovecot authentication protocol)", "smtpd_sasl_type", "dovecot")
	line("", "smtpd_sasl_path", "inet:"+o.SASL)
	line("", "smtpd_sasl_security_options", "noanonymous")
	line("the milter needs the login; if mailgate is down, mail is deferred, never accepted unchecked", "milter_mail_macros",
		"i {auth_type} {auth_authen} {auth_author} {mail_addr} {mail_host} {mail_mailer}")
	line("", "milter_default_action", "tempfail")
	line("", "milter_protocol", "6")
	line("the policy service answers MaySend with mailgate's texts", "mailgate_submission_sender_restrictions",
		"check_policy_service { inet:"+o.Policy+", default_action=DEFER_IF_PERMIT }, permit_sasl_authenticated, reject")
	return b.String()
}

// MasterCF returns the master.cf service lines of the two submission
// services.
func MasterCF(o Options) string {
	opts := []string{
		"-o smtpd_sasl_auth_enable=yes",
		"-o smtpd_client_restrictions=permit_sasl_authenticated,reject",
		"-o smtpd_relay_restrictions=permit_sasl_authenticated,reject",
		"-o smtpd_recipient_restrictions=check_recipient_access,socketmap:inet:" + o.Socketmap + ":recipient_access,permit_sasl_authenticated,reject",
		"-o smtpd_sender_restrictions=$mailgate_submission_sender_restrictions",
		"-o smtpd_milters=inet:" + o.Milter,
		"-o milter_macro_daemon_name=ORIGINATING",
	}
	var b strings.Builder
	b.WriteString("# --- master.cf: the submission services (replace existing ones of the same name) ---\n")
	b.WriteString("# submission (RFC 6409): STARTTLS required before AUTH\n")
	fmt.Fprintf(&b, "%s inet n - n - - smtpd\n  -o syslog_name=postfix/submission\n  -o smtpd_tls_security_level=encrypt\n", o.Submission)
	for _, x := range opts {
		fmt.Fprintf(&b, "  %s\n", x)
	}
	b.WriteString("# submissions (RFC 8314): implicit TLS\n")
	fmt.Fprintf(&b, "%s inet n - n - - smtpd\n  -o syslog_name=postfix/submissions\n  -o smtpd_tls_wrappermode=yes\n", o.Submissions)
	for _, x := range opts {
		fmt.Fprintf(&b, "  %s\n", x)
	}
	b.WriteString("# virtual(8) may not read a socketmap (it chooses the file it writes as root): it\n")
	b.WriteString("# reads the mailbox table that mailgate serve rewrites on every change; max_use=1\n")
	b.WriteString("# makes each delivery read the current table (a new account is never \"unknown\")\n")
	fmt.Fprintf(&b, "virtual unix - n n - - virtual\n  -o virtual_mailbox_maps=texthash:%s\n  -o max_use=1\n", o.VMailbox)
	return b.String()
}
