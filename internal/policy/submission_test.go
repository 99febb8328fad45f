package policy

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	netmail "net/mail"
	"strings"
	"testing"

	gomessage "github.com/emersion/go-message"
	_ "github.com/emersion/go-message/charset" // the go-message reader decodes every charset it knows
	gomail "github.com/emersion/go-message/mail"
	gotextproto "github.com/emersion/go-message/textproto"

	"github.com/mailgate/mailgate/internal/address"
	"github.com/mailgate/mailgate/internal/directory"
)

// The hostile messages below are our own, built after the attack classes of
// espoofer (github.com/chenjj/espoofer, cases server_a8–a19 and client_a1–a3),
// "Composition Kills" (Chen, Paxson, Jiang, USENIX Security 2020, §5–6),
// "Weak Links in Authentication Chains" (Shen et al., USENIX Security 2021,
// UI-level and header-ambiguity attacks), and SMTP smuggling (bare CR/LF,
// RFC 5321 §2.3.8).

const (
	u2local = "user2@localhost.localdomain" // not an account; owned by nobody
	idnU    = "kontakt@bücher.example"      // user1 may send as @xn--bcher-kva.example (submissionSnap)
	idnA    = "kontakt@xn--bcher-kva.example"
)

// submissionSnap is the DMS fixture plus a send-as grant for an IDN domain.
func submissionSnap(t testing.TB, set map[string]string) *directory.Snapshot {
	return load(t, map[string]string{"postfix-send-as.cf": "@xn--bcher-kva.example user1@localhost.localdomain\n"}, set)
}

// msg builds a message from header lines: the given lines, then To, Subject,
// Date and Message-ID, the empty line and a body; CRLF line endings.
func msg(lines ...string) []byte {
	var b strings.Builder
	for _, l := range lines {
		b.WriteString(l + "\r\n")
	}
	b.WriteString("To: Bob <bob@example.net>\r\nSubject: test\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\nMessage-ID: <1@client.example>\r\n\r\nHello Bob.\r\n")
	return []byte(b.String())
}

func ew(charset, text string) string {
	return "=?" + charset + "?b?" + base64.StdEncoding.EncodeToString([]byte(text)) + "?="
}

type hostileCase struct {
	name  string
	raw   []byte
	check string // expected Submission.Check
	field string // expected Submission.Field ("" for the block or the body)
	text  string // substring of the reply text, optional
}

func hostileCases() []hostileCase {
	from1 := "From: <" + user1 + ">"
	bigSubject := "Subject: " + strings.Repeat("long subject ", 6000)
	var manyFolds strings.Builder
	manyFolds.WriteString("X-Folded: a")
	for range 20000 {
		manyFolds.WriteString("\r\n b")
	}
	return []hostileCase{
		// --- Two From fields (espoofer server_a8–a11, client_a1; Composition Kills §5.1, Fig. 6)
		{"two From, same case", msg("From: <"+user2+">", from1), CheckStructure, "From", "more than one From field"},
		{"two From, same address", msg(from1, from1), CheckStructure, "From", "more than one From field"},
		{"From and FROM", msg(from1, "FROM: <"+user2+">"), CheckStructure, "From", "more than one From field"},
		{"from and From", msg("from: <"+user2+">", from1), CheckStructure, "From", "more than one From field"},
		{"From : (space before colon) then From", msg("From : <"+user2+">", from1), CheckStructure, "From", "more than one From field"},
		{"From then From : ", msg(from1, "From : <"+user2+">"), CheckStructure, "From", "more than one From field"},
		{"From<TAB>: then From", msg("From\t: <"+user2+">", from1), CheckStructure, "From", "more than one From field"},
		{"fRoM   : mixed case and spaces", msg(from1, "fRoM   :<"+user2+">"), CheckStructure, "From", "more than one From field"},
		{"From fields far apart", msg(from1, "X-A: 1", "X-B: 2", "From: "+user2), CheckStructure, "From", "more than one From field"},
		{"first line starts with space (server_a9)", msg(" From: <"+user2+">", from1), CheckMalformed, "", "first line starts with white space"},
		{"folded field name (server_a11)", msg("From", " : <"+user2+">", from1), CheckMalformed, "From", "line without a colon"},
		{"indented From folded into To", msg("To: <bob@example.net>", " From: <"+user2+">", from1), CheckMalformed, "To", "starts like a From field"},
		{"indented Sender folded into Subject", msg(from1, "Subject: hi", "\tSender: <"+user2+">"), CheckMalformed, "Subject", "starts like a Sender field"},
		{"mbox From_ line before From", msg("From "+user2+" Mon Jan  1 10:00:00 2024", from1), CheckMalformed, `"From u"`, "white space inside the field name"},
		// --- From with more than one address or trailing text (server_a14, a17–a19; client_a2)
		{"two angle addresses (server_a14)", msg("From: <" + user1 + ">, <" + user2 + ">"), CheckStructure, "From", "more than one address"},
		{"two bare addresses", msg("From: " + user1 + ", " + user2), CheckStructure, "From", "more than one address"},
		{"bare then angle (server_a18)", msg("From: " + user2 + ",<" + user1 + ">"), CheckStructure, "From", "more than one address"},
		{"addresses separated by space", msg("From: " + user1 + " " + user2), CheckStructure, "From", "more than one address"},
		{"two angle-addrs without comma", msg("From: <" + user1 + "> <" + user2 + ">"), CheckStructure, "From", "unexpected '<'"},
		{"quoted-pair comma (server_a17)", msg("From: <" + user1 + ">\\,<" + user2 + ">"), CheckStructure, "From", "backslash outside"},
		{"address after angle-addr (server_a19)", msg("From: <" + user1 + ">" + user2), CheckStructure, "From", "unexpected"},
		{"trailing comma", msg("From:<" + user1 + ">,"), CheckStructure, "From", "empty list element"},
		{"leading comma (obs-mbox-list)", msg("From: ,<" + user1 + ">"), CheckStructure, "From", "empty list element"},
		{"trailing garbage", msg("From: <" + user1 + "> garbage"), CheckStructure, "From", "unexpected"},
		{"nested angle brackets", msg("From: <<" + user2 + ">" + user1 + ">"), CheckStructure, "From", "unexpected '<'"},
		{"unterminated angle", msg("From: <" + user1), CheckStructure, "From", "without '>'"},
		// --- Groups and routes (RFC 5322 §3.4, §4.4; server_a16)
		{"group of two", msg("From: Team: <" + user1 + ">, <" + user2 + ">;"), CheckStructure, "From", "group syntax"},
		{"group of one owned", msg("From: Team: <" + user1 + ">;"), CheckStructure, "From", "group syntax"},
		{"empty group", msg("From: undisclosed-recipients:;"), CheckStructure, "From", "group syntax"},
		{"route to someone else (server_a16)", msg("From: <@localhost.localdomain:" + user2 + ">"), CheckStructure, "From", "source route"},
		{"route to own address", msg("From: <@relay.example,@other.example:" + user1 + ">"), CheckStructure, "From", "source route"},
		{"route without brackets", msg("From: @relay.example:" + user1), CheckStructure, "From", "group syntax"},
		// --- Encoded words (server_a15; Weak Links UI attacks)
		{"encoded word address in display name", msg("From: " + ew("utf-8", user2) + " <" + user1 + ">"), CheckStructure, "From", "COMMERCIAL AT"},
		{"encoded <address> as list element (server_a15)", msg("From:" + ew("utf-8", "<"+user2+">") + ",<" + user1 + ">"), CheckStructure, "From", "is not an address"},
		{"encoded word, Q, hiding an address", msg("From: =?utf-8?q?user2=40otherdomain=2Etld?= <" + user1 + ">"), CheckStructure, "From", "COMMERCIAL AT"},
		{"address split over two encoded words", msg("From: =?utf-8?q?user2?= =?utf-8?q?=40otherdomain=2Etld?= <" + user1 + ">"), CheckStructure, "From", "COMMERCIAL AT"},
		{"encoded word inside quotes", msg("From: \"" + ew("utf-8", user2) + "\" <" + user1 + ">"), CheckStructure, "From", "COMMERCIAL AT"},
		{"encoded word with unknown charset", msg("From: =?x-mac-klingon?q?Kirk?= <" + user1 + ">"), CheckStructure, "From", "not accepted"},
		{"encoded word in UTF-7", msg("From: =?utf-7?q?+AEA-?= <" + user1 + ">"), CheckStructure, "From", "not accepted"},
		{"encoded word, unknown encoding", msg("From: =?utf-8?x?abc?= <" + user1 + ">"), CheckStructure, "From", "unknown encoding"},
		{"encoded word, invalid UTF-8", msg("From: =?utf-8?q?=C0=80?= <" + user1 + ">"), CheckStructure, "From", "invalid UTF-8"},
		{"encoded word, undefined windows-1252 byte", msg("From: =?windows-1252?q?=8D?= <" + user1 + ">"), CheckStructure, "From", "not defined in its charset"},
		{"encoded word decoding to a bidi override", msg("From: " + ew("utf-8", "\u202edlt.niamodrehto@2resu") + " <" + user1 + ">"), CheckStructure, "From", "bidirectional control"},
		{"encoded word decoding to CRLF", msg("From: " + ew("utf-8", "Bob\r\nFrom: "+user2) + " <" + user1 + ">"), CheckStructure, "From", "control character"},
		{"encoded word decoding to another encoded word", msg("From: " + ew("utf-8", ew("utf-8", user2)) + " <" + user1 + ">"), CheckStructure, "From", "another encoded word"},
		{"encoded word as local part", msg("From: <" + ew("utf-8", "ceo") + "@localhost.localdomain>"), CheckStructure, "From", "encoded word"},
		{"whole From encoded (Weak Links)", msg("From: " + ew("utf-8", user1)), CheckStructure, "From", "is not an address"},
		{"UTF-8 BOM before the first field", msg("\ufeff" + from1), CheckMalformed, `"\xef"`, "8-bit"},
		{"malformed encoded word", msg("From: =?utf-8?q?Bob <" + user1 + ">"), CheckStructure, "From", "looks like an RFC 2047 encoded word"},
		// --- Comments
		{"comment holds an address (obsolete display)", msg("From: " + u2local + " (" + user1 + ")"), CheckStructure, "From", "comment contains U+0040"},
		{"comment holds owned address, From is not", msg("From: <" + user2 + "> (" + user1 + ")"), CheckStructure, "From", "comment contains U+0040"},
		{"comment with angle bracket", msg("From: <" + user1 + "> (see <here)"), CheckStructure, "From", "angle bracket"},
		{"nested comment with @", msg("From: <" + user1 + "> (a (b@c) d)"), CheckStructure, "From", "COMMERCIAL AT"},
		{"comment with encoded @", msg("From: <" + user1 + "> (=?utf-8?q?user2=40otherdomain=2Etld?=)"), CheckStructure, "From", "COMMERCIAL AT"},
		{"comment inside angle brackets", msg("From: <" + user1 + "(" + user2 + ")>"), CheckStructure, "From", "COMMERCIAL AT"},
		{"unterminated comment", msg("From: <" + user1 + "> (open"), CheckStructure, "From", "unterminated comment"},
		// --- Display names that hold addresses (Weak Links: display-name spoofing)
		{"address as unquoted display name", msg("From: " + user1 + " <" + user2 + ">"), CheckStructure, "From", "display name contains '@'"},
		{"address as quoted display name", msg("From: \"" + user1 + "\" <" + user2 + ">"), CheckStructure, "From", "is another address than"},
		{"own address as unquoted display name", msg("From: " + user1 + " <" + user1 + ">"), CheckStructure, "From", "display name contains '@'"},
		{"address as quoted display name with a comment", msg("From: \"" + user1 + "\" (x) <" + user2 + ">"), CheckStructure, "From", "is another address than"},
		{"display name with <address>", msg("From: \"Bob <" + user2 + ">\" <" + user1 + ">"), CheckStructure, "From", "angle bracket"},
		{"display name with fullwidth @", msg("From: user2＠otherdomain.tld <" + user1 + ">"), CheckStructure, "From", "FULLWIDTH COMMERCIAL AT"},
		{"display name with look-alike brackets", msg("From: \"Bob ‹ceo›\" <" + user1 + ">"), CheckStructure, "From", "look-alike"},
		{"bidi override in display name", msg("From: \u202eBob <" + user1 + ">"), CheckStructure, "From", "bidirectional control"},
		{"zero-width space in display name", msg("From: Pay\u200bPal <" + user1 + ">"), CheckStructure, "From", "Cf"},
		{"EN QUAD in display name", msg("From: Bob\u2000Smith <" + user1 + ">"), CheckStructure, "From", "non-ASCII white-space"},
		{"Hangul filler as display name", msg("From: \u3164 <" + user1 + ">"), CheckStructure, "From", "invisible"},
		{"control character in quoted display name", msg("From: \"Bob\x1b[2J\" <" + user1 + ">"), CheckStructure, "From", "control character"},
		// --- Addresses with invisible characters, homoglyphs and IDN tricks (SPEC §1)
		{"zero-width space in address", msg("From: <user1\u200b@localhost.localdomain>"), CheckStructure, "From", "invalid address"},
		{"EN QUAD after address", msg("From: <" + user1 + "\u2000>"), CheckStructure, "From", "invalid address"},
		{"bidi control in address", msg("From: <user1@localhost.localdomain\u202e>"), CheckStructure, "From", "invalid address"},
		{"Cyrillic homoglyph domain", msg("From: <user1@lоcalhоst.localdomain>"), CheckNotOwned, "From", "not owned by user " + user1},
		{"Cyrillic homoglyph local part", msg("From: <usеr1@localhost.localdomain>"), CheckNotOwned, "From", "not owned by user " + user1},
		{"fullwidth dot in domain", msg("From: <user1@localhost．localdomain>"), CheckStructure, "From", "invalid address"},
		{"ideographic full stop in domain", msg("From: <user1@localhost。localdomain>"), CheckStructure, "From", "invalid address"},
		{"fake A-label", msg("From: <user1@xn--localhost-.localdomain>"), CheckStructure, "From", "invalid address"},
		{"KELVIN SIGN in local part", msg("From: <\u212aevin@localhost.localdomain>"), CheckStructure, "From", "invalid address"},
		{"domain literal", msg("From: <user1@[127.0.0.1]>"), CheckStructure, "From", "domain literal"},
		{"quoted local part holding an address", msg("From: <\"" + user2 + "\"@localhost.localdomain>"), CheckStructure, "From", "invalid address"},
		{"obsolete spaces inside address", msg("From: user1 @ localhost.localdomain"), CheckStructure, "From", "white space or a comment inside the address"},
		{"trailing dot", msg("From: <user1@localhost.localdomain.>"), CheckStructure, "From", "invalid address"},
		// --- Malformed block (SPEC §6; SMTP smuggling)
		{"NUL in header", msg(from1, "Subject: a\x00b"), CheckMalformed, "Subject", "NUL"},
		{"NUL inside From", msg("From: <" + user1 + ">\x00<" + user2 + ">"), CheckMalformed, "From", "NUL"},
		{"NUL in body", append(msg(from1), "tail\x00\r\n"...), CheckMalformed, "", "NUL"},
		{"bare CR in header", msg(from1, "Subject: a\rFrom: <"+user2+">"), CheckMalformed, "Subject", "bare CR"},
		{"bare LF in header", msg(from1, "Subject: a\nFrom: <"+user2+">"), CheckMalformed, "Subject", "bare LF"},
		{"bare LF ends the header", []byte(from1 + "\r\n\nFrom: <" + user2 + ">\r\n\r\nbody\r\n"), CheckMalformed, "", "bare LF"},
		{"bare LF in body (smuggling)", append(msg(from1), "x\r\n.\nMAIL FROM:<"+user2+">\r\n"...), CheckMalformed, "", "bare LF"},
		{"bare CR in body (smuggling)", append(msg(from1), "x\r\n.\rMAIL FROM:<"+user2+">\r\n"...), CheckMalformed, "", "bare CR"},
		{"whitespace-only continuation", msg(from1, "Subject: a", " ", "X: b"), CheckMalformed, "Subject", "only white space"},
		{"whitespace-only line before second From", msg("Subject: a", "\t", "From: <"+user2+">"), CheckMalformed, "Subject", "only white space"},
		{"8-bit in field name", msg(from1, "Fröm: <"+user2+">"), CheckMalformed, `"Fr\xc3"`, "8-bit"},
		{"Cyrillic letter in From name", msg("Frоm: <"+user2+">", from1), CheckMalformed, `"Fr\xd0"`, "8-bit"},
		{"space inside field name", msg(from1, "Fr om: <"+user2+">"), CheckMalformed, `"Fr o"`, "white space inside the field name"},
		{"empty field name", msg(from1, ": <"+user2+">"), CheckMalformed, "", "empty field name"},
		{"control character in field name", msg("From\x0b: <"+user2+">", from1), CheckMalformed, `"From\v"`, "control character"},
		{"over-long header block", msg(from1, bigSubject), CheckMalformed, "", "larger than 65536"},
		{"over-long folded field", msg(from1, manyFolds.String()), CheckMalformed, "", "larger than 65536"},
		// --- Missing or empty From
		{"missing From", msg("Sender: <" + user1 + ">"), CheckStructure, "From", "no From field"},
		{"empty From", msg("From:"), CheckStructure, "From", "no address"},
		{"From of white space", msg("From:   "), CheckStructure, "From", "no address"},
		{"From with display name only", msg("From: User One"), CheckStructure, "From", "is not an address"},
		{"From null address", msg("From: <>"), CheckStructure, "From", "empty address"},
		// --- Ownership
		{"From of another account", msg("From: <" + user2 + ">"), CheckNotOwned, "From", "<" + user2 + "> not owned by user " + user1},
		{"From of nobody", msg("From: " + u2local), CheckNotOwned, "From", "not owned"},
		{"From in a catch-all domain", msg("From: <anyone@localdomain2.com>"), CheckNotOwned, "From", "not owned"},
		{"From through a regexp outside managed domains", msg("From: <postmaster@gmail.com>"), CheckNotOwned, "From", "not owned"},
		{"From of an alias with no mailbox", msg("From: <alias2@localhost.localdomain>"), CheckNotOwned, "From", "not owned"},
		{"Sender not owned", msg(from1, "Sender: <"+user2+">"), CheckNotOwned, "Sender", "<" + user2 + "> not owned by user " + user1},
		{"two Sender fields", msg(from1, "Sender: <"+user1+">", "sender: <"+user1+">"), CheckStructure, "Sender", "more than one Sender field"},
		{"Sender with two addresses", msg(from1, "Sender: <"+user1+">, <"+user2+">"), CheckStructure, "Sender", "more than one address"},
		{"Resent-From not owned (server_a13)", msg(from1, "Resent-From: <"+user2+">"), CheckNotOwned, "Resent-From", "not owned"},
		{"Resent-From list, one not owned", msg(from1, "Resent-From: <"+user1+">, <"+user2+">"), CheckNotOwned, "Resent-From", "<" + user2 + "> not owned"},
		{"second Resent-From not owned", msg(from1, "Resent-From: <"+user1+">", "Resent-From: "+user2), CheckNotOwned, "Resent-From", "not owned"},
		{"Resent-Sender not owned", msg(from1, "Resent-Sender: <"+user2+">"), CheckNotOwned, "Resent-Sender", "not owned"},
		{"Resent-From group", msg(from1, "Resent-From: list: <"+user1+">;"), CheckStructure, "Resent-From", "group syntax"},
		{"Sender with a hidden address", msg(from1, "Sender: "+ew("utf-8", user2)+" <"+user1+">"), CheckStructure, "Sender", "COMMERCIAL AT"},
		{"From not owned, comment owned", msg("From: " + user2 + " (User One)"), CheckNotOwned, "From", "not owned"},
	}
}

func TestCheckSubmissionHostile(t *testing.T) {
	snap := submissionSnap(t, nil)
	cases := hostileCases()
	if len(cases) < 60 {
		t.Fatalf("only %d hostile cases", len(cases))
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := CheckSubmission(snap, user1, user1, c.raw)
			if s.Allowed {
				t.Fatalf("accepted: %+v", s.Headers)
			}
			if s.Reply.Code != 550 || s.Reply.Enhanced != "5.7.1" {
				t.Errorf("reply %s, want 550 5.7.1", s.Reply)
			}
			if s.Check != c.check || s.Field != c.field {
				t.Errorf("check %q field %q, want %q %q (reply %s)", s.Check, s.Field, c.check, c.field, s.Reply)
			}
			prefix := "message header " + c.field + ": "
			switch {
			case c.field == "" && (strings.Contains(c.text, "NUL") || strings.HasPrefix(c.text, "bare")) && strings.HasPrefix(s.Reply.Text, "message body: "):
				prefix = "message body: "
			case c.field == "":
				prefix = "message header: "
			}
			if !strings.HasPrefix(s.Reply.Text, prefix) || !strings.Contains(s.Reply.Text, c.text) {
				t.Errorf("reply %q, want it to start with %q and contain %q", s.Reply, prefix, c.text)
			}
			checkReplyLine(t, s.Reply)
		})
	}
}

// checkReplyLine: an SMTP reply line is printable US-ASCII and short.
func checkReplyLine(t *testing.T, r Reply) {
	t.Helper()
	line := r.String()
	if len(line) > 510 {
		t.Errorf("reply line is %d bytes", len(line))
	}
	for i := 0; i < len(line); i++ {
		if line[i] < ' ' || line[i] > '~' {
			t.Errorf("reply %q has byte 0x%02X", line, line[i])
			break
		}
	}
}

func TestCheckSubmissionControls(t *testing.T) {
	snap := submissionSnap(t, nil)
	cases := []struct {
		name     string
		raw      []byte
		from     string // expected canonical From address
		rule     string // expected deciding rule of the From decision
		nameWant string
	}{
		{"own address", msg("From: <" + user1 + ">"), user1, RuleAccount, ""},
		{"own address, bare", msg("From: " + user1), user1, RuleAccount, ""},
		{"own address, uppercase", msg("From: USER1@LocalHost.LocalDomain"), user1, RuleAccount, ""},
		{"quoted local part", msg("From: \"user1\"@localhost.localdomain"), user1, RuleAccount, ""},
		{"display name", msg("From: User One <" + user1 + ">"), user1, RuleAccount, "User One"},
		{"own address as quoted display name", msg("From: \"" + user1 + "\" <" + user1 + ">"), user1, RuleAccount, user1},
		{"own address as quoted display name, other case", msg("From: \"User1@LOCALHOST.localdomain\" <" + user1 + ">"), user1, RuleAccount, "User1@LOCALHOST.localdomain"},
		{"alias", msg("From: Alias <alias1@localhost.localdomain>"), "alias1@localhost.localdomain", RuleAlias, "Alias"},
		{"send-as grant", msg("From: <" + user3 + ">"), user3, RuleSendAs, ""},
		{"regexp alias", msg("From: <test123@localhost.localdomain>"), "test123@localhost.localdomain", RuleRegexp, ""},
		{"postmaster through regexp", msg("From: <postmaster@localhost.localdomain>"), "postmaster@localhost.localdomain", RuleRegexp, ""},
		{"+tag", msg("From: <user1+news@localhost.localdomain>"), "user1+news@localhost.localdomain", RuleExtension, ""},
		{"IDN domain, U-label", msg("From: Kontakt <" + idnU + ">"), idnA, RuleSendAsDomain, "Kontakt"},
		{"IDN domain, A-label", msg("From: <" + idnA + ">"), idnA, RuleSendAsDomain, ""},
		{"non-ASCII display name, UTF-8", msg("From: Jörg Müller <" + user1 + ">"), user1, RuleAccount, "Jörg Müller"},
		{"non-ASCII display name, RFC 2047 Q", msg("From: =?utf-8?q?J=C3=B6rg_M=C3=BCller?= <" + user1 + ">"), user1, RuleAccount, "Jörg Müller"},
		{"non-ASCII display name, RFC 2047 B", msg("From: " + ew("UTF-8", "Zoë Åberg") + " <" + user1 + ">"), user1, RuleAccount, "Zoë Åberg"},
		{"display name in ISO-8859-1", msg("From: =?ISO-8859-1?Q?Andr=E9?= Pirard <" + user1 + ">"), user1, RuleAccount, "André Pirard"},
		{"display name in windows-1251", msg("From: =?windows-1251?b?y+jn4A==?= <" + user1 + ">"), user1, RuleAccount, "Лиза"},
		{"display name in Japanese", msg("From: 山田太郎 <" + user1 + ">"), user1, RuleAccount, "山田太郎"},
		{"quoted display name", msg("From: \"One, User (Sales)\" <" + user1 + ">"), user1, RuleAccount, "One, User (Sales)"},
		{"obs-phrase with dots", msg("From: User Q. One <" + user1 + ">"), user1, RuleAccount, "User Q. One"},
		{"comment without @", msg("From: " + user1 + " (User One)"), user1, RuleAccount, ""},
		{"comments around name-addr", msg("From: (work) User One <" + user1 + "> (office)"), user1, RuleAccount, "User One"},
		{"Reply-To of someone else", msg("From: <"+user1+">", "Reply-To: <"+user2+">, other@example.com"), user1, RuleAccount, ""},
		{"folded From value", msg("From: User One", " <"+user1+">"), user1, RuleAccount, "User One"},
		{"folded between display name words", msg("From: =?utf-8?q?J=C3=B6rg?=", "\t=?utf-8?q?_M=C3=BCller?= <"+user1+">"), user1, RuleAccount, "Jörg Müller"},
		{"obsolete From : (single)", msg("From : <" + user1 + ">"), user1, RuleAccount, ""},
		{"lowercase from", msg("from: <" + user1 + ">"), user1, RuleAccount, ""},
		{"Sender owned", msg("From: <alias1@localhost.localdomain>", "Sender: <"+user1+">"), "alias1@localhost.localdomain", RuleAlias, ""},
		{"spaces inside angle brackets", msg("From: < " + user1 + " >"), user1, RuleAccount, ""},
		{"header only, no body", []byte("From: <" + user1 + ">\r\nSubject: x\r\n"), user1, RuleAccount, ""},
		{"8-bit Subject (RFC 6532)", msg("From: <"+user1+">", "Subject: Grüße"), user1, RuleAccount, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := CheckSubmission(snap, user1, user1, c.raw)
			if !s.Allowed || s.Reply.Code != 250 {
				t.Fatalf("rejected: %s (check %s)", s.Reply, s.Check)
			}
			froms := 0
			for _, h := range s.Headers {
				if h.Field == "From" {
					froms++
				}
			}
			if froms != 1 {
				t.Fatalf("%d From decisions in %+v", froms, s.Headers)
			}
			for _, h := range s.Headers {
				if h.Field != "From" {
					continue
				}
				if h.Address != c.from || h.Decision.Rule != c.rule || h.Name != c.nameWant {
					t.Errorf("From decision %q rule %q name %q, want %q %q %q", h.Address, h.Decision.Rule, h.Name, c.from, c.rule, c.nameWant)
				}
				if h.Decision.Grant == nil || len(h.Decision.Grant.Chain) == 0 {
					t.Errorf("no provenance in %+v", h.Decision)
				}
			}
			if _, err := json.Marshal(s); err != nil {
				t.Error(err)
			}
		})
	}
	// Resent-From and Resent-Sender, all owned.
	s := CheckSubmission(snap, user1, user1, msg("From: <"+user1+">", "Resent-From: <"+user1+">, <"+user3+">", "Resent-Sender: "+user1, "Resent-From: <alias1@localhost.localdomain>"))
	if !s.Allowed || len(s.Headers) != 5 {
		t.Errorf("Resent fields: %s %+v", s.Reply, s.Headers)
	}
}

func TestCheckSubmissionEnvelope(t *testing.T) {
	snap := submissionSnap(t, nil)
	// The envelope decides first, with MaySend's own reply.
	s := CheckSubmission(snap, user1, user2, msg("From: <"+user1+">"))
	if s.Allowed || s.Check != CheckEnvelope || s.Reply.String() != "553 5.7.1 <"+user2+">: Sender address rejected: not owned by user "+user1 || s.Envelope.Rule != RuleNotOwned {
		t.Errorf("envelope not owned: %+v", s)
	}
	s = CheckSubmission(snap, user1, "", msg("From: <"+user1+">"))
	if s.Allowed || s.Reply.String() != "553 5.7.1 null sender not allowed for authenticated submission" {
		t.Errorf("null sender: %s", s.Reply)
	}
	s = CheckSubmission(snap, "nobody@localhost.localdomain", user1, msg("From: <"+user1+">"))
	if s.Allowed || s.Reply.Code != 535 {
		t.Errorf("unknown login: %s", s.Reply)
	}
	// Envelope fine, header not.
	s = CheckSubmission(snap, user1, "alias1@localhost.localdomain", msg("From: <"+user2+">"))
	if s.Allowed || s.Reply.String() != "550 5.7.1 message header From: <"+user2+"> not owned by user "+user1 {
		t.Errorf("header not owned: %s", s.Reply)
	}
	if !s.Envelope.Allowed || len(s.Headers) != 1 || s.Headers[0].Decision.Rule != RuleNotOwned || len(s.Headers[0].Decision.Owners) != 1 || s.Headers[0].Decision.Owners[0].Login != user2 {
		t.Errorf("decisions: %+v", s)
	}
	s = CheckSubmission(snap, user1, user1, msg("From: <"+user1+">", "From: <"+user1+">"))
	if s.Reply.String() != "550 5.7.1 message header From: more than one From field (at byte offsets 0 and 37; RFC 5322 section 3.6 allows exactly one)" {
		t.Errorf("two From: %s", s.Reply)
	}
	// Restricted sender address in the header.
	r := load(t, map[string]string{"postfix-send-access.cf": "alias1@localhost.localdomain REJECT\n"}, nil)
	s = CheckSubmission(r, user1, user1, msg("From: <alias1@localhost.localdomain>"))
	if s.Allowed || s.Reply.String() != "550 5.7.1 message header From: <alias1@localhost.localdomain> access denied" {
		t.Errorf("restricted: %s", s.Reply)
	}
}

func TestCheckSubmissionSettings(t *testing.T) {
	t.Run("header_from=envelope", func(t *testing.T) {
		snap := submissionSnap(t, map[string]string{"header_from": "envelope", "null_sender": "allow"})
		if s := CheckSubmission(snap, user1, user1, msg("From: User One <"+user1+">")); !s.Allowed {
			t.Errorf("matching: %s", s.Reply)
		}
		if s := CheckSubmission(snap, user1, "USER1@localhost.localdomain", msg("From: <"+user1+">")); !s.Allowed {
			t.Errorf("matching in canonical form: %s", s.Reply)
		}
		s := CheckSubmission(snap, user1, user1, msg("From: <alias1@localhost.localdomain>"))
		if s.Allowed || s.Check != CheckMismatch || s.Reply.String() != "550 5.7.1 message header From: <alias1@localhost.localdomain> differs from the envelope sender <"+user1+"> (header_from = envelope)" {
			t.Errorf("mismatch: %+v", s)
		}
		// Null envelope sender: the From must still be owned.
		if s := CheckSubmission(snap, user1, "", msg("From: <alias1@localhost.localdomain>")); !s.Allowed {
			t.Errorf("null envelope, owned From: %s", s.Reply)
		}
		if s := CheckSubmission(snap, user1, "", msg("From: <"+user2+">")); s.Allowed || s.Check != CheckNotOwned {
			t.Errorf("null envelope, From not owned: %s", s.Reply)
		}
		if s := CheckSubmission(snap, user1, user1, msg("From: <"+user1+">", "From: <"+user1+">")); s.Allowed || s.Check != CheckStructure {
			t.Errorf("structure still checked: %s", s.Reply)
		}
	})
	t.Run("header_from=off", func(t *testing.T) {
		snap := submissionSnap(t, map[string]string{"header_from": "off"})
		s := CheckSubmission(snap, user1, user1, msg("From: <"+user2+">", "Sender: <"+user2+">"))
		if !s.Allowed || s.Headers[0].Decision.Rule != RuleHeaderFromOff {
			t.Errorf("off: %+v", s)
		}
		for _, c := range hostileCases() {
			s := CheckSubmission(snap, user1, user1, c.raw)
			if c.check == CheckNotOwned {
				if !s.Allowed {
					t.Errorf("off, %s: %s", c.name, s.Reply)
				}
				continue
			}
			if s.Allowed || s.Check != c.check {
				t.Errorf("off, %s: structural check %q not applied (%s)", c.name, c.check, s.Reply)
			}
		}
		if s := CheckSubmission(snap, user1, user2, msg("From: <"+user1+">")); s.Allowed {
			t.Error("off: the envelope is still checked")
		}
	})
	t.Run("spoof_protection=false", func(t *testing.T) {
		snap := submissionSnap(t, map[string]string{"spoof_protection": "false"})
		s := CheckSubmission(snap, user1, user2, msg("From: <"+user2+">", "Sender: <postmaster@gmail.com>"))
		if !s.Allowed || s.Envelope.Rule != RuleSpoofOff || s.Headers[0].Decision.Rule != RuleSpoofOff {
			t.Errorf("spoof off: %+v", s)
		}
		for _, c := range hostileCases() {
			s := CheckSubmission(snap, user1, user1, c.raw)
			if c.check == CheckNotOwned {
				continue
			}
			if s.Allowed || s.Check != c.check {
				t.Errorf("spoof off, %s: structural check %q not applied (%s)", c.name, c.check, s.Reply)
			}
		}
	})
	t.Run("spoof_protection=false, header_from=envelope", func(t *testing.T) {
		snap := submissionSnap(t, map[string]string{"spoof_protection": "false", "header_from": "envelope"})
		if s := CheckSubmission(snap, user1, user2, msg("From: <"+user2+">")); !s.Allowed {
			t.Errorf("equal: %s", s.Reply)
		}
		if s := CheckSubmission(snap, user1, user2, msg("From: <postmaster@gmail.com>")); s.Allowed || s.Check != CheckMismatch {
			t.Errorf("different: %s", s.Reply)
		}
	})
}

func TestReplyText(t *testing.T) {
	got := replyText("a\r\nb §3 … \u202e\U0001F600" + strings.Repeat("x", 500))
	if !strings.HasPrefix(got, `a\u000D\u000Ab section 3 ... \u202E\U0001F600x`) || len(got) > maxReplyText+10 || !strings.HasSuffix(got, "...") {
		t.Errorf("replyText = %q", got)
	}
}

// ---------------------------------------------------------------------------
// The property: a message is accepted only if every originator address that
// other readers would extract is owned by the login.

var originatorKeys = []string{"From", "Sender", "Resent-From", "Resent-Sender"}

func fromLike(key string) bool {
	k := strings.TrimSpace(key)
	for _, o := range originatorKeys {
		if strings.EqualFold(k, o) {
			return true
		}
	}
	return false
}

type extraction struct {
	reader, addr, name string
}

// readerExtractions runs every reader over raw.
func readerExtractions(raw []byte) []extraction {
	var out []extraction
	add := func(reader string, list []*netmail.Address) {
		for _, a := range list {
			out = append(out, extraction{reader, a.Address, a.Name})
		}
	}
	// github.com/emersion/go-message: AddressList on the originator keys, and
	// every field it files under a From-like key. Its partial header is used
	// even when it reports an error, as a careless consumer would.
	if h, _ := gotextproto.ReadHeader(bufio.NewReader(bytes.NewReader(raw))); true {
		mh := gomail.Header{Header: gomessage.Header{Header: h}}
		for _, k := range originatorKeys {
			list, _ := mh.AddressList(k)
			add("go-message AddressList("+k+")", list)
		}
		fields := h.Fields()
		for fields.Next() {
			if fromLike(fields.Key()) {
				list, _ := gomail.ParseAddressList(fields.Value())
				add("go-message field "+fields.Key(), list)
			}
		}
	}
	// net/mail: ReadMessage, Header.AddressList, and ParseAddressList on every
	// From-like key (it files "From :" under "From ").
	if m, err := netmail.ReadMessage(bytes.NewReader(raw)); err == nil {
		for _, k := range originatorKeys {
			list, _ := m.Header.AddressList(k)
			add("net/mail AddressList("+k+")", list)
		}
		for k, vs := range m.Header {
			if !fromLike(k) {
				continue
			}
			for _, v := range vs {
				list, _ := netmail.ParseAddressList(v)
				add("net/mail key "+k, list)
			}
		}
	}
	// Naive readers: first or last "<…>" of every From-like line, with and
	// without unfolding (a line-based reader that ignores indentation).
	hdr := raw
	if i := bytes.Index(raw, []byte("\r\n\r\n")); i >= 0 {
		hdr = raw[:i]
	}
	if i := bytes.Index(hdr, []byte("\n\n")); i >= 0 {
		hdr = hdr[:i]
	}
	lines := strings.Split(string(hdr), "\n")
	var unfolded []string
	for _, l := range lines {
		l = strings.TrimSuffix(l, "\r")
		if (strings.HasPrefix(l, " ") || strings.HasPrefix(l, "\t")) && len(unfolded) > 0 {
			unfolded[len(unfolded)-1] += l
			continue
		}
		unfolded = append(unfolded, l)
	}
	naive := func(reader string, ls []string) {
		for _, l := range ls {
			l = strings.TrimLeft(l, " \t")
			colon := strings.IndexByte(l, ':')
			if colon < 0 || !fromLike(l[:colon]) {
				continue
			}
			v := l[colon+1:]
			if i := strings.IndexByte(v, '<'); i >= 0 {
				if j := strings.IndexByte(v[i:], '>'); j >= 0 {
					out = append(out, extraction{reader + " first <>", v[i+1 : i+j], ""})
				}
			}
			if i := strings.LastIndexByte(v, '<'); i >= 0 {
				if j := strings.IndexByte(v[i:], '>'); j >= 0 {
					out = append(out, extraction{reader + " last <>", v[i+1 : i+j], ""})
				}
			}
		}
	}
	naive("naive unfolded", unfolded)
	plain := make([]string, len(lines))
	for i, l := range lines {
		plain[i] = strings.TrimSuffix(l, "\r")
	}
	naive("naive line-based", plain)
	return out
}

// checkProperty fails t when an accepted message lets some reader extract an
// originator address that login does not own, or a display name holding an
// address other than the mailbox's own.
func checkProperty(t *testing.T, snap *directory.Snapshot, login string, raw []byte) {
	t.Helper()
	for _, e := range readerExtractions(raw) {
		a, err := address.Parse(strings.TrimSpace(e.addr), address.Options{UTF8Local: true})
		if err != nil {
			t.Errorf("accepted message %q: %s extracts %q, which is not a valid address: %v", raw, e.reader, e.addr, err)
			continue
		}
		if d := MaySend(snap, login, a.String()); !d.Allowed {
			t.Errorf("accepted message %q: %s extracts %s, not owned by %s (%s)", raw, e.reader, a, login, d.Reply)
		}
		// A display name may hold an address only when it is the mailbox's
		// own (SPEC §6), and so owned as well.
		if strings.ContainsAny(e.name, "@＠﹫<>") {
			n, err := address.Parse(strings.TrimSpace(e.name), address.Options{UTF8Local: true})
			if err != nil || n != a {
				t.Errorf("accepted message %q: %s extracts the display name %q for %s", raw, e.reader, e.name, a)
			}
		}
	}
}

// checkInvariants holds for every result, accepted or not.
func checkInvariants(t *testing.T, s Submission) {
	t.Helper()
	if s.Allowed {
		if s.Reply.Code != 250 || s.Check != "" || len(s.Headers) == 0 {
			t.Errorf("allowed with %s, check %q, %d headers", s.Reply, s.Check, len(s.Headers))
		}
		for _, h := range s.Headers {
			if !h.Decision.Allowed {
				t.Errorf("allowed with a denied header decision %+v", h)
			}
		}
		return
	}
	if s.Reply.Code < 400 || s.Check == "" {
		t.Errorf("denied with %s, check %q", s.Reply, s.Check)
	}
	if s.Check != CheckEnvelope && (s.Reply.Code != 550 || s.Reply.Enhanced != "5.7.1" || !strings.HasPrefix(s.Reply.Text, "message ")) {
		t.Errorf("header rejection %s", s.Reply)
	}
	checkReplyLine(t, s.Reply)
}

func TestSubmissionProperty(t *testing.T) {
	snap := submissionSnap(t, nil)
	var corpus [][]byte
	for _, c := range hostileCases() {
		corpus = append(corpus, c.raw)
	}
	corpus = append(corpus, seedControls()...)
	accepted := 0
	for _, raw := range corpus {
		s := CheckSubmission(snap, user1, user1, raw)
		checkInvariants(t, s)
		if s.Allowed {
			accepted++
			checkProperty(t, snap, user1, raw)
		}
	}
	if accepted == 0 {
		t.Fatal("no message accepted: the property was not exercised")
	}
	// The readers do see spoofed addresses in the hostile messages: the
	// property is not vacuous.
	spotted := 0
	for _, c := range hostileCases() {
		for _, e := range readerExtractions(c.raw) {
			if a, err := address.Parse(strings.TrimSpace(e.addr), address.Options{UTF8Local: true}); err == nil && !MaySend(snap, user1, a.String()).Allowed {
				spotted++
				break
			}
		}
	}
	if spotted < 20 {
		t.Errorf("the readers find an address not owned by user1 in only %d hostile messages", spotted)
	}
}

// seedControls are accepted messages used as fuzzing seeds.
func seedControls() [][]byte {
	return [][]byte{
		msg("From: <" + user1 + ">"),
		msg("From: User One <"+user1+">", "Sender: "+user1),
		msg("From: =?utf-8?q?J=C3=B6rg?= <alias1@localhost.localdomain> (work)"),
		msg("from : \"One, User\" <"+user3+">", "Reply-To: <"+user2+">"),
		msg("From: User One", " <"+user1+">", "Resent-From: <"+user1+">, "+user3, "Resent-Sender: <"+user1+">"),
		msg("From: Kontakt <" + idnU + ">"),
		[]byte("From: user1+x@localhost.localdomain\r\n"),
	}
}

func FuzzCheckSubmission(f *testing.F) {
	snap := submissionSnap(f, nil)
	for _, c := range hostileCases() {
		if len(c.raw) < 4096 {
			f.Add(c.raw)
		}
	}
	for _, raw := range seedControls() {
		f.Add(raw)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		s := CheckSubmission(snap, user1, user1, raw)
		checkInvariants(t, s)
		if s.Allowed {
			checkProperty(t, snap, user1, raw)
		}
	})
}
