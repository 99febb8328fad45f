package conffile

import (
	"fmt"
	"strings"

	"github.com/mailgate/mailgate/internal/address"
)

// File names inside the configuration directory.
const (
	AccountsFile      = "postfix-accounts.cf"
	VirtualFile       = "postfix-virtual.cf"
	RegexpFile        = "postfix-regexp.cf"
	SendAsFile        = "postfix-send-as.cf"
	SendAccessFile    = "postfix-send-access.cf"
	ReceiveAccessFile = "postfix-receive-access.cf"
	LocalAliasesFile  = "postfix-aliases.cf"
)

// addrOpts: configuration files may name internationalized (SMTPUTF8) mailboxes.
var addrOpts = address.Options{UTF8Local: true}

// Key is an alias or grant key: a full address, a catch-all "@domain"
// (Local empty) or, in postfix-virtual.cf only, a bare local part (Domain empty).
type Key struct {
	Local  string `json:"local,omitempty"`
	Domain string `json:"domain,omitempty"`
}

func (k Key) String() string {
	switch {
	case k.Domain == "":
		return k.Local
	case k.Local == "":
		return "@" + k.Domain
	}
	return k.Local + "@" + k.Domain
}

// IsCatchAll reports whether the key is "@domain".
func (k Key) IsCatchAll() bool { return k.Local == "" && k.Domain != "" }

// IsBare reports whether the key is a bare local part.
func (k Key) IsBare() bool { return k.Domain == "" }

// KeyOf returns the key of a full address.
func KeyOf(a address.Address) Key { return Key{a.Local, a.Domain} }

// ParseKey parses "user@domain", "@domain" or, when bare is true, "user".
func ParseKey(s string, bare bool) (Key, error) {
	if strings.HasPrefix(s, "@") {
		d, err := address.ParseDomain(s[1:])
		if err != nil {
			return Key{}, err
		}
		return Key{Domain: d}, nil
	}
	if !strings.Contains(s, "@") && !strings.HasPrefix(s, "\"") {
		if !bare {
			return Key{}, fmt.Errorf("%q: an address (user@domain) or @domain is required", s)
		}
		l, err := address.ParseLocal(s, addrOpts)
		if err != nil {
			return Key{}, err
		}
		return Key{Local: l}, nil
	}
	a, err := address.Parse(s, addrOpts)
	if err != nil {
		return Key{}, err
	}
	return KeyOf(a), nil
}

// fields splits on ASCII space and tab only: other Unicode white space is
// part of the token, so that the address parser rejects it instead of
// silently cutting it off.
func fields(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ' ' || r == '\t' })
}

// splitFirst splits off the first field of s (as fields would) and returns
// it and the rest of the line; more reports whether the rest holds another
// field.
func splitFirst(s string) (first, rest string, more bool) {
	s = strings.TrimLeft(s, " \t")
	i := strings.IndexAny(s, " \t")
	if i < 0 {
		return s, "", false
	}
	first, rest = s[:i], s[i+1:]
	return first, rest, strings.TrimLeft(rest, " \t") != ""
}

func isTargetSep(r rune) bool { return r == ',' || r == ' ' || r == '\t' }

// splitTargets splits a target list on commas and/or ASCII white space.
func splitTargets(s string) []string {
	return strings.FieldsFunc(s, isTargetSep)
}

// Account is a line of postfix-accounts.cf: address|{SCHEME}hash[|extra].
type Account struct {
	Pos      Pos
	Address  address.Address
	Hash     string // "{SCHEME}..." as written
	Extra    string // everything after the second '|', kept verbatim
	HasExtra bool
}

// Scheme returns the password scheme named in braces, e.g. "SHA512-CRYPT".
func (a Account) Scheme() string {
	if strings.HasPrefix(a.Hash, "{") {
		if i := strings.IndexByte(a.Hash, '}'); i > 0 {
			return strings.ToUpper(a.Hash[1:i])
		}
	}
	return ""
}

// validHash checks the shape "{SCHEME}hash": a scheme of letters, digits and
// '-' or '.', then a non-empty hash of printable ASCII.
func validHash(h string) bool {
	end := strings.IndexByte(h, '}')
	if !strings.HasPrefix(h, "{") || end < 2 || end == len(h)-1 {
		return false
	}
	for _, c := range h[1:end] {
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	for i := end + 1; i < len(h); i++ {
		if h[i] <= ' ' || h[i] >= 0x7f {
			return false
		}
	}
	return true
}

// SupportedSchemes are the password schemes mailgate verifies.
var SupportedSchemes = []string{"SHA512-CRYPT", "SHA256-CRYPT", "BLF-CRYPT"}

// ParseAccounts parses postfix-accounts.cf.
func ParseAccounts[D Data](file string, data D) ([]Account, []Diag) {
	text := string(data)
	out := make([]Account, 0, strings.Count(text, "\n")+1)
	var diags []Diag
	lineDiags := eachLine(file, text, false, func(l Line) {
		pos := Pos{file, l.Num}
		addr, hash, ok := strings.Cut(l.Text, "|")
		if !ok {
			diags = append(diags, Diag{pos, Error, "expected address|{SCHEME}hash"})
			return
		}
		a, err := address.Parse(addr, addrOpts)
		if err == nil {
			err = CheckMailboxName(a) // the local part names the Maildir
		}
		if err != nil {
			diags = append(diags, Diag{pos, Error, err.Error()})
			return
		}
		acc := Account{Pos: pos, Address: a}
		acc.Hash, acc.Extra, acc.HasExtra = strings.Cut(hash, "|")
		if !validHash(acc.Hash) {
			diags = append(diags, Diag{pos, Error, fmt.Sprintf("%s: password field must be {SCHEME}hash", a)})
			return
		}
		if s := acc.Scheme(); !contains(SupportedSchemes, s) {
			diags = append(diags, Diag{pos, Warning, fmt.Sprintf("%s: password scheme {%s} is not supported (%s): this account cannot log in", a, s, strings.Join(SupportedSchemes, ", "))})
		}
		out = append(out, acc)
	})
	return out, append(lineDiags, diags...)
}

// Target is an alias target.
type Target struct {
	Address address.Address
	Pos     Pos
}

// Alias is a line of postfix-virtual.cf: key target[,target…].
type Alias struct {
	Pos     Pos
	Key     Key
	Targets []Target
}

// ParseVirtual parses postfix-virtual.cf. A target without a domain is
// qualified with localDomain (the server's host name), as Postfix appends
// $myorigin.
func ParseVirtual[D Data](file string, data D, localDomain string) ([]Alias, []Diag) {
	var out []Alias
	diags := ParseVirtualFunc(file, data, localDomain, func(a Alias) { out = append(out, a) })
	return out, diags
}

// ParseVirtualFunc is ParseVirtual calling yield with each entry, in file
// order, instead of returning them: a large file's entries need not be in
// memory twice, as parsed and as indexed by the caller.
func ParseVirtualFunc[D Data](file string, data D, localDomain string, yield func(Alias)) []Diag {
	var diags []Diag
	lineDiags := eachLine(file, string(data), true, func(l Line) {
		pos := Pos{file, l.Num}
		first, rest, more := splitFirst(l.Text)
		if !more {
			diags = append(diags, Diag{pos, Error, fmt.Sprintf("%q: expected a key and at least one target", l.Text)})
			return
		}
		key, err := ParseKey(first, true)
		if err != nil {
			diags = append(diags, Diag{pos, Error, "key: " + err.Error()})
			return
		}
		targets, tdiags := parseTargets(pos, rest, localDomain)
		diags = append(diags, tdiags...)
		if len(tdiags) > 0 {
			return
		}
		yield(Alias{Pos: pos, Key: key, Targets: targets})
	})
	return append(lineDiags, diags...)
}

func parseTargets(pos Pos, s, localDomain string) ([]Target, []Diag) {
	n := 0
	for range strings.FieldsFuncSeq(s, isTargetSep) {
		n++
	}
	out := make([]Target, 0, n)
	var diags []Diag
	for t := range strings.FieldsFuncSeq(s, isTargetSep) {
		text := t
		if !strings.Contains(t, "@") {
			text = t + "@" + localDomain
		}
		a, err := address.Parse(text, addrOpts)
		if err != nil {
			diags = append(diags, Diag{pos, Error, "target: " + err.Error()})
			continue
		}
		out = append(out, Target{Address: a, Pos: pos})
	}
	if len(out) == 0 && len(diags) == 0 {
		diags = append(diags, Diag{pos, Error, "no target"})
	}
	return out, diags
}

// Grant is a line of postfix-send-as.cf: sender login[,login…], where sender
// is an address or @domain.
type Grant struct {
	Pos    Pos
	Sender Key
	Logins []address.Address
}

// ParseSendAs parses postfix-send-as.cf.
func ParseSendAs[D Data](file string, data D) ([]Grant, []Diag) {
	lines, diags := SplitLines(file, data, true)
	var out []Grant
	for _, l := range lines {
		pos := Pos{file, l.Num}
		first, rest, more := splitFirst(l.Text)
		if !more {
			diags = append(diags, Diag{pos, Error, fmt.Sprintf("%q: expected a sender and at least one login", l.Text)})
			continue
		}
		key, err := ParseKey(first, false)
		if err != nil {
			diags = append(diags, Diag{pos, Error, "sender: " + err.Error()})
			continue
		}
		g := Grant{Pos: pos, Sender: key}
		ok := true
		for t := range strings.FieldsFuncSeq(rest, isTargetSep) {
			a, err := address.Parse(t, addrOpts)
			if err != nil {
				diags = append(diags, Diag{pos, Error, "login: " + err.Error()})
				ok = false
				continue
			}
			g.Logins = append(g.Logins, a)
		}
		if ok && len(g.Logins) == 0 {
			diags = append(diags, Diag{pos, Error, fmt.Sprintf("%q: no login", l.Text)})
			ok = false
		}
		if ok {
			out = append(out, g)
		}
	}
	return out, diags
}

// Access is a line of postfix-send-access.cf or postfix-receive-access.cf:
// "address REJECT" (what DMS's `email restrict` writes).
type Access struct {
	Pos     Pos
	Address address.Address
}

// ParseAccess parses an access file.
func ParseAccess[D Data](file string, data D) ([]Access, []Diag) {
	lines, diags := SplitLines(file, data, true)
	var out []Access
	for _, l := range lines {
		pos := Pos{file, l.Num}
		f := fields(l.Text)
		if len(f) != 2 {
			diags = append(diags, Diag{pos, Error, fmt.Sprintf("%q: expected \"address REJECT\"", l.Text)})
			continue
		}
		a, err := address.Parse(f[0], addrOpts)
		if err != nil {
			diags = append(diags, Diag{pos, Error, err.Error()})
			continue
		}
		if !strings.EqualFold(f[1], "REJECT") {
			diags = append(diags, Diag{pos, Error, fmt.Sprintf("action %q is not supported (only REJECT)", f[1])})
			continue
		}
		out = append(out, Access{Pos: pos, Address: a})
	}
	return out, diags
}

// LocalAlias is a line of postfix-aliases.cf (aliases(5)): "name: target[, target…]".
type LocalAlias struct {
	Pos     Pos
	Name    string
	Targets []Target
}

// ParseLocalAliases parses postfix-aliases.cf. Targets without a domain are
// qualified with localDomain. Pipes, files and :include: are not supported.
func ParseLocalAliases[D Data](file string, data D, localDomain string) ([]LocalAlias, []Diag) {
	lines, diags := SplitLines(file, data, true)
	var out []LocalAlias
	for _, l := range lines {
		pos := Pos{file, l.Num}
		name, rest, ok := strings.Cut(l.Text, ":")
		if !ok {
			diags = append(diags, Diag{pos, Error, fmt.Sprintf("%q: expected \"name: target\"", l.Text)})
			continue
		}
		local, err := address.ParseLocal(strings.TrimRight(name, " \t"), addrOpts)
		if err != nil {
			diags = append(diags, Diag{pos, Error, "name: " + err.Error()})
			continue
		}
		bad := false
		for _, t := range splitTargets(rest) {
			if strings.HasPrefix(t, "|") || strings.HasPrefix(t, "/") || strings.HasPrefix(t, ":include:") {
				diags = append(diags, Diag{pos, Error, fmt.Sprintf("target %q: pipes, files and :include: are not supported", t)})
				bad = true
			}
		}
		if bad {
			continue
		}
		targets, tdiags := parseTargets(pos, rest, localDomain)
		diags = append(diags, tdiags...)
		if len(tdiags) > 0 {
			continue
		}
		out = append(out, LocalAlias{Pos: pos, Name: local, Targets: targets})
	}
	return out, diags
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
