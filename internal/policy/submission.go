package policy

import (
	"errors"
	"strings"
	"unicode/utf8"

	"github.com/mailgate/mailgate/internal/directory"
	"github.com/mailgate/mailgate/internal/header"
)

// Submission is the answer of CheckSubmission: the verdict on one
// authenticated submission (envelope sender and message), SPEC §5 and §6.
type Submission struct {
	Allowed bool  `json:"allowed"`
	Reply   Reply `json:"reply"` // 250 2.0.0 when allowed; else the envelope's MaySend reply, or 550 5.7.1 naming the header
	// Check names the check that decided a rejection: one of the Check*
	// constants; "" when allowed.
	Check string `json:"check,omitempty"`
	// Field is the header field concerned by a header rejection (From,
	// Sender, Resent-From, Resent-Sender, or the field name as written for
	// a malformed field); "" for the envelope or the block as a whole.
	Field    string           `json:"field,omitempty"`
	Envelope Decision         `json:"envelope"` // MaySend on the envelope sender
	Headers  []HeaderDecision `json:"headers"`  // one per header originator mailbox, in message order (empty when the header was not read)
}

// HeaderDecision is the decision on one header originator mailbox.
type HeaderDecision struct {
	Field    string   `json:"field"`          // From, Sender, Resent-From or Resent-Sender
	Address  string   `json:"address"`        // canonical address
	Name     string   `json:"name,omitempty"` // decoded display name
	Decision Decision `json:"decision"`       // MaySend(login, address), or the header_from = off pass
}

// The checks of CheckSubmission, as reported in Submission.Check.
const (
	CheckEnvelope  = "envelope"          // MaySend on the envelope sender failed (its reply is used)
	CheckMalformed = "malformed"         // the header block or the body is malformed (SPEC §6, first bullet)
	CheckStructure = "structure"         // an originator field occurs too often, or holds anything but the allowed mailboxes
	CheckNotOwned  = "not-owned"         // MaySend(login, header address) failed
	CheckMismatch  = "envelope-mismatch" // header_from = envelope and From differs from the envelope sender
)

// RuleHeaderFromOff is the rule of a header originator decision when
// header_from = off: ownership of header addresses is not checked.
const RuleHeaderFromOff = "header-from-off"

// maxReplyText keeps a reply line well under the 512 octets of RFC 5321
// §4.5.3.1.5.
const maxReplyText = 400

// CheckSubmission runs, for an authenticated submission, MaySend on the
// envelope sender and the SPEC §6 header checks on the raw message.
//
// envelopeSender is the reverse-path as an address, or "" for the null
// sender. raw is the whole message as received at the end of DATA (CRLF
// line endings, dot-stuffing removed). The checks run in this order and the
// first failure decides:
//
//  1. MaySend(login, envelopeSender); on failure its reply (553 5.7.1, 535
//     5.7.8, …) is the answer and nothing else is checked;
//  2. the header block (header.Parse): bare CR/LF and NUL anywhere, field
//     names, folding, size;
//  3. the originator fields (Block.Originators): From exactly once with
//     exactly one mailbox, Sender at most once with one mailbox, Resent-From
//     and Resent-Sender mailboxes; display names and comments;
//  4. unless header_from = off: MaySend(login, a) for the From address, then,
//     with header_from = envelope and a non-null envelope sender, From equal
//     to the envelope sender, then MaySend for the Sender, Resent-From and
//     Resent-Sender addresses, in message order.
//
// Every header rejection is 550 5.7.1 with a text naming the field, e.g.
// "message header From: <x@y> not owned by user L". With spoof_protection =
// false MaySend allows every address, so only steps 2 and 3 (and the
// envelope comparison of header_from = envelope) can reject.
func CheckSubmission(snap *directory.Snapshot, login string, envelopeSender string, raw []byte) Submission {
	s := Submission{Headers: []HeaderDecision{}}
	s.Envelope = MaySend(snap, login, envelopeSender)
	if !s.Envelope.Allowed {
		s.Reply, s.Check = s.Envelope.Reply, CheckEnvelope
		return s
	}
	block, err := header.Parse(raw)
	if err != nil {
		return s.rejectErr(CheckMalformed, err)
	}
	origs, err := block.Originators()
	if err != nil {
		return s.rejectErr(CheckStructure, err)
	}
	mode := snap.Settings.HeaderFrom
	loginName := s.Envelope.Login
	decisions := make([]HeaderDecision, len(origs))
	for i, o := range origs {
		hd := HeaderDecision{Field: o.Field, Address: o.Mailbox.Address.String(), Name: o.Mailbox.Name}
		if mode == "off" {
			hd.Decision = Decision{Login: loginName, Sender: hd.Address, Owners: []Owner{}}.allow(RuleHeaderFromOff, "header_from = off: header addresses are not checked for ownership")
		} else {
			hd.Decision = MaySend(snap, login, hd.Address)
		}
		decisions[i] = hd
	}
	s.Headers = decisions
	// From first (it is what the reader sees), then the others in order.
	order := make([]int, 0, len(origs))
	for i, o := range origs {
		if o.Field == header.From {
			order = append([]int{i}, order...)
		} else {
			order = append(order, i)
		}
	}
	for _, i := range order {
		hd := decisions[i]
		if hd.Decision.Rule == RuleTempFail {
			// The directory could not be asked: try again later, never 5xx.
			s.Allowed, s.Check, s.Field = false, CheckNotOwned, hd.Field
			s.Reply = hd.Decision.Reply
			return s
		}
		if !hd.Decision.Allowed {
			return s.reject(CheckNotOwned, hd.Field, headerDenial(hd, loginName))
		}
		if hd.Field == header.From && mode == "envelope" && s.Envelope.Sender != "" && hd.Address != s.Envelope.Sender {
			return s.reject(CheckMismatch, hd.Field, "<"+hd.Address+"> differs from the envelope sender <"+s.Envelope.Sender+"> (header_from = envelope)")
		}
	}
	s.Allowed = true
	s.Reply = Reply{250, "2.0.0", "Ok"}
	return s
}

// headerDenial is the text of a header ownership denial.
func headerDenial(hd HeaderDecision, login string) string {
	switch hd.Decision.Rule {
	case RuleNotOwned:
		return "<" + hd.Address + "> not owned by user " + login
	case RuleRestricted:
		return "<" + hd.Address + "> access denied"
	}
	return "<" + hd.Address + "> refused: " + hd.Decision.Reply.Text
}

func (s Submission) reject(check, field, text string) Submission {
	s.Allowed, s.Check, s.Field = false, check, field
	prefix := "message header: "
	if field != "" {
		prefix = "message header " + field + ": "
	}
	s.Reply = Reply{550, "5.7.1", replyText(prefix + text)}
	return s
}

func (s Submission) rejectErr(check string, err error) Submission {
	var he *header.Error
	if !errors.As(err, &he) {
		return s.reject(check, "", err.Error())
	}
	if he.Body {
		s.Allowed, s.Check = false, check
		s.Reply = Reply{550, "5.7.1", replyText("message body: " + he.Reason)}
		return s
	}
	return s.reject(check, he.Field, he.Reason)
}

var replySpelling = strings.NewReplacer("§", "section ", "…", "...")

// replyText makes text safe for an SMTP reply line (RFC 5321 §4.2: text is
// US-ASCII): "§" and "…" are spelled out, every other character outside
// printable US-ASCII is written as \uXXXX, and the text is cut at
// maxReplyText bytes.
func replyText(text string) string {
	text = replySpelling.Replace(text)
	var b strings.Builder
	for _, r := range text {
		if b.Len() >= maxReplyText {
			b.WriteString("...")
			break
		}
		switch {
		case r >= ' ' && r < 0x7f:
			b.WriteRune(r)
		case r == utf8.RuneError:
			b.WriteString(`\uFFFD`)
		default:
			const hex = "0123456789ABCDEF"
			if r > 0xFFFF {
				b.WriteString(`\U`)
				for sh := 28; sh >= 0; sh -= 4 {
					b.WriteByte(hex[(r>>sh)&0xF])
				}
			} else {
				b.WriteString(`\u`)
				for sh := 12; sh >= 0; sh -= 4 {
					b.WriteByte(hex[(r>>sh)&0xF])
				}
			}
		}
	}
	return b.String()
}
