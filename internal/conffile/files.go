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

// splitTargets splits a target list on commas and/or ASCII white space.
func splitTargets(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' })
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
func ParseAccounts(file string, data []byte) ([]Account, []Diag) {
	lines, diags := SplitLines(file, data, false)
	var out []Account
	for _, l := range lines {
		pos := Pos{file, l.Num}
		parts := strings.SplitN(l.Text, "|", 3)
		if len(parts) < 2 {
			diags = append(diags, Diag{pos, Error, "expected address|{SCHEME}hash"})
			continue
		}
		a, err := address.Parse(parts[0], addrOpts)
		if err != nil {
			diags = append(diags, Diag{pos, Error, err.Error()})
			continue
		}
		acc := Account{Pos: pos, Address: a, Hash: parts[1]}
		if len(parts) == 3 {
			acc.Extra, acc.HasExtra = parts[2], true
		}
		if !validHash(acc.Hash) {
			diags = append(diags, Diag{pos, Error, fmt.Sprintf("%s: password field must be {SCHEME}hash", a)})
			continue
		}
		if s := acc.Scheme(); !contains(SupportedSchemes, s) {
			diags = append(diags, Diag{pos, Warning, fmt.Sprintf("%s: password scheme {%s} is not supported (%s): this account cannot log in", a, s, strings.Join(SupportedSchemes, ", "))})
		}
		out = append(out, acc)
	}
	return out, diags
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
func ParseVirtual(file string, data []byte, localDomain string) ([]Alias, []Diag) {
	lines, diags := SplitLines(file, data, true)
	var out []Alias
	for _, l := range lines {
		pos := Pos{file, l.Num}
		f := fields(l.Text)
		if len(f) < 2 {
			diags = append(diags, Diag{pos, Error, fmt.Sprintf("%q: expected a key and at least one target", l.Text)})
			continue
		}
		key, err := ParseKey(f[0], true)
		if err != nil {
			diags = append(diags, Diag{pos, Error, "key: " + err.Error()})
			continue
		}
		targets, tdiags := parseTargets(pos, strings.Join(f[1:], " "), localDomain)
		diags = append(diags, tdiags...)
		if len(tdiags) > 0 {
			continue
		}
		out = append(out, Alias{Pos: pos, Key: key, Targets: targets})
	}
	return out, diags
}

func parseTargets(pos Pos, s, localDomain string) ([]Target, []Diag) {
	var out []Target
	var diags []Diag
	for _, t := range splitTargets(s) {
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
func ParseSendAs(file string, data []byte) ([]Grant, []Diag) {
	lines, diags := SplitLines(file, data, true)
	var out []Grant
	for _, l := range lines {
		pos := Pos{file, l.Num}
		f := fields(l.Text)
		if len(f) < 2 {
			diags = append(diags, Diag{pos, Error, fmt.Sprintf("%q: expected a sender and at least one login", l.Text)})
			continue
		}
		key, err := ParseKey(f[0], false)
		if err != nil {
			diags = append(diags, Diag{pos, Error, "sender: " + err.Error()})
			continue
		}
		g := Grant{Pos: pos, Sender: key}
		ok := true
		for _, t := range splitTargets(strings.Join(f[1:], " ")) {
			a, err := address.Parse(t, addrOpts)
			if err != nil {
				diags = append(diags, Diag{pos, Error, "login: " + err.Error()})
				ok = false
				continue
			}
			g.Logins = append(g.Logins, a)
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
func ParseAccess(file string, data []byte) ([]Access, []Diag) {
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
func ParseLocalAliases(file string, data []byte, localDomain string) ([]LocalAlias, []Diag) {
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
