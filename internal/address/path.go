package address

import "strings"

// ParseReversePath parses the reverse-path of MAIL FROM (RFC 5321 §4.1.1.2,
// §4.1.2): "<mailbox>", "<>" for the null sender, or — as many clients write
// it — a bare mailbox without angle brackets. The argument is the path only,
// without ESMTP parameters. A source route (A-d-l, "<@a,@b:u@c>") is refused,
// not stripped: RFC 5321 Appendix C lets a server ignore it, but a route
// changes what downstream systems see as the sender.
func ParseReversePath(s string, opt Options) (a Address, null bool, err error) {
	switch {
	case s == "<>":
		return Address{}, true, nil
	case s == "":
		return Address{}, false, &Error{Input: s, Reason: "empty reverse-path (the null sender is written <>)"}
	case strings.HasPrefix(s, "<"):
		if !strings.HasSuffix(s, ">") || len(s) < 2 {
			return Address{}, false, &Error{Input: s, Reason: "missing closing '>'"}
		}
		inner := s[1 : len(s)-1]
		if strings.HasPrefix(inner, "@") {
			return Address{}, false, &Error{Input: s, Reason: "source routes (RFC 5321 §4.1.2 A-d-l) are not accepted"}
		}
		if strings.ContainsAny(inner, "<>") && !strings.HasPrefix(inner, "\"") {
			return Address{}, false, &Error{Input: s, Reason: "nested angle brackets"}
		}
		a, err := Parse(inner, opt)
		return a, false, err
	case strings.HasSuffix(s, ">"):
		return Address{}, false, &Error{Input: s, Reason: "missing opening '<'"}
	}
	a, err = Parse(s, opt)
	return a, false, err
}
