// Package policy is the only place where mailgate decides. Route answers
// "where does mail for R go" (SPEC §4) and MaySend "may login L use sender S"
// (SPEC §5). Every entry point — the SMTP server, the Postfix adapters and
// `mailgate check` — calls these same functions, so that a decision never
// differs between paths. Decisions are values: the verdict, the SMTP reply
// (code, enhanced status, text) and the provenance (rule, file:line, chain).
package policy

import (
	"fmt"

	"github.com/mailgate/mailgate/internal/conffile"
)

// Reply is an SMTP reply: RFC 5321 §4.2 code, RFC 3463 enhanced status code
// and text.
type Reply struct {
	Code     int    `json:"code"`
	Enhanced string `json:"enhanced"`
	Text     string `json:"text"`
}

func (r Reply) String() string { return fmt.Sprintf("%d %s %s", r.Code, r.Enhanced, r.Text) }

// Error makes a Reply usable as a typed error carrying its SMTP code.
func (r Reply) Error() string { return r.String() }

// Temporary reports whether the reply is a 4xx transient failure.
func (r Reply) Temporary() bool { return r.Code >= 400 && r.Code < 500 }

// Step is one link of a decision's provenance.
type Step struct {
	Rule   string        `json:"rule"`          // what applied: see the Rule* constants
	Key    string        `json:"key"`           // the address or key it applied to
	Pos    *conffile.Pos `json:"pos,omitempty"` // the line that says so
	Detail string        `json:"detail,omitempty"`
}

func (s Step) String() string {
	out := s.Rule + " " + s.Key
	if s.Detail != "" {
		out += " (" + s.Detail + ")"
	}
	if s.Pos != nil {
		out += " at " + s.Pos.String()
	}
	return out
}

// Rule names used in provenance.
const (
	RuleAccount       = "account"        // the address is an account (postfix-accounts.cf)
	RuleAlias         = "alias"          // exact alias key (postfix-virtual.cf)
	RuleRegexp        = "regexp"         // regexp alias (postfix-regexp.cf)
	RuleLocalAlias    = "local-alias"    // postfix-aliases.cf or a bare postfix-virtual.cf key
	RulePostmaster    = "postmaster"     // built-in root/postmaster → postmaster_address
	RuleExtension     = "extension"      // address extension removed, rules applied to the base
	RuleCatchAll      = "catch-all"      // @domain alias key
	RuleSendAs        = "send-as"        // explicit grant (postfix-send-as.cf)
	RuleSendAsDomain  = "send-as-domain" // @domain grant (postfix-send-as.cf)
	RuleSpoofOff      = "spoof-protection-off"
	RuleNullSender    = "null-sender"
	RuleRestricted    = "restricted"      // postfix-send-access.cf / postfix-receive-access.cf
	RuleRemote        = "remote"          // not a managed domain
	RuleNotOwned      = "not-owned"       // MaySend denial
	RuleUnknownLogin  = "unknown-login"   // the login is not an account
	RuleInvalidSender = "invalid-address" // syntax
	RuleSenders       = "senders-filter"  // the senders filter of the LDAP source
	RuleTempFail      = "tempfail"        // the directory source failed: 451 4.3.0
	RuleSelf          = "self"            // an alias target equal to its own key: keep a copy
)

func posPtr(p conffile.Pos) *conffile.Pos { return &p }
