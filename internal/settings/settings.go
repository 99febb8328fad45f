// Package settings holds mailgate's scalar settings (SPEC §2): their defaults,
// the optional mailgate.toml in the configuration directory, environment
// variables (mailgate's own MAILGATE_* names and docker-mailserver's names, so
// that a DMS mailserver.env works unchanged) and command-line overrides.
//
// Precedence, lowest to highest: default < mailgate.toml < DMS environment
// name < MAILGATE_* environment name < command-line flag. Every effective value
// remembers where it came from, for `mailgate config check`.
package settings

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/mailgate/mailgate/internal/address"
)

// FileName is the settings file inside the configuration directory.
const FileName = "mailgate.toml"

// Settings are the effective settings.
type Settings struct {
	Hostname           string   // the server's own host name (canonical A-label)
	RecipientDelimiter string   // set of extension delimiter characters
	PostmasterAddress  string   // canonical address
	SpoofProtection    bool     // MaySend enforced for authenticated senders
	NullSender         string   // "refuse" or "allow"
	HeaderFrom         string   // "owned", "envelope" or "off"
	ExcludedDomains    []string // canonical domains that are never managed
	AccountProvisioner string   // "file", "ldap" or "postgres"
	MessageSizeLimit   int64    // bytes; 0 means no limit (as in Postfix and DMS)
	RelayHost          string   // "host:port", or "" for MX lookup

	// mailgate serve (SPEC §8).
	MaxConnections      int           // simultaneous SMTP connections over all listeners
	MaxConnectionsPerIP int           // simultaneous SMTP connections from one client address
	MaxRecipients       int           // RCPT commands accepted per message
	SMTPTimeout         time.Duration // idle time allowed while waiting for a command
	DataTimeout         time.Duration // time allowed for the whole DATA transfer of one message
	QueueLifetime       time.Duration // undeliverable mail is bounced after this long
	QueueBackoffMin     time.Duration // first retry delay of the outbound queue
	QueueBackoffMax     time.Duration // longest retry delay

	// Directory sources beyond files (docs/directories.md).
	DatabaseURL string // PostgreSQL connection string, for account_provisioner = postgres
	LDAP        LDAP   // for account_provisioner = ldap

	// Origin maps each setting name to where its value came from:
	// "default", "mailgate.toml", "env NAME" or "flag".
	Origin map[string]string
}

// Names lists the settings in display order.
var Names = []string{
	"hostname", "recipient_delimiter", "postmaster_address", "spoof_protection",
	"null_sender", "header_from", "excluded_domains", "account_provisioner",
	"message_size_limit", "relay_host",
	"max_connections", "max_connections_per_ip", "max_recipients",
	"smtp_timeout", "data_timeout", "queue_lifetime", "queue_backoff_min", "queue_backoff_max",
	"database_url",
	"ldap_server_host", "ldap_search_base", "ldap_bind_dn", "ldap_bind_pw", "ldap_start_tls",
	"ldap_query_filter_user", "ldap_query_filter_alias", "ldap_query_filter_group",
	"ldap_query_filter_domain", "ldap_query_filter_senders", "ldap_query_filter_login",
	"ldap_timeout", "ldap_cache_ttl",
}

// LDAP holds the settings of the LDAP directory source. The names follow
// docker-mailserver's LDAP_* variables; every filter takes the lookup key
// for each %s, escaped as an LDAP filter value (RFC 4515 §3).
type LDAP struct {
	ServerHost    string        // URL: ldap://host[:port] or ldaps://host[:port]
	SearchBase    string        // base DN of every search
	BindDN        string        // DN of the search bind ("" for anonymous)
	BindPW        string        // its password
	StartTLS      bool          // StartTLS on ldap:// connections
	FilterUser    string        // accounts: the entry whose mail is the key
	FilterAlias   string        // aliases: entries whose mail receives mail for the key
	FilterGroup   string        // groups: the same, for group addresses
	FilterDomain  string        // managed domains: any entry answering means managed
	FilterSenders string        // extra owners of a sender address ("" for none)
	FilterLogin   string        // maps a login (uid or address) to its account entry
	Timeout       time.Duration // connect, bind and search time limit
	CacheTTL      time.Duration // how long an answer is reused; 0 disables the cache
}

// DMS's defaults (docker-mailserver's mailserver.env and start-mailserver),
// plus the login filter, mailgate's own.
const (
	DefaultLDAPFilterUser   = "(&(mail=%s)(mailEnabled=TRUE))"
	DefaultLDAPFilterAlias  = "(&(mailAlias=%s)(mailEnabled=TRUE))"
	DefaultLDAPFilterGroup  = "(&(mailGroupMember=%s)(mailEnabled=TRUE))"
	DefaultLDAPFilterDomain = "(&(|(mail=*@%s)(mailalias=*@%s)(mailGroupMember=*@%s))(mailEnabled=TRUE))"
	DefaultLDAPFilterLogin  = "(&(|(mail=%s)(uid=%s))(mailEnabled=TRUE))"
)

// dmsEnv maps docker-mailserver environment names to settings.
// RELAY_HOST/RELAY_PORT are handled separately (two variables, one setting).
var dmsEnv = map[string]string{
	"OVERRIDE_HOSTNAME":          "hostname",
	"SPOOF_PROTECTION":           "spoof_protection",
	"POSTMASTER_ADDRESS":         "postmaster_address",
	"ACCOUNT_PROVISIONER":        "account_provisioner",
	"DEFAULT_RELAY_HOST":         "relay_host",
	"POSTFIX_MESSAGE_SIZE_LIMIT": "message_size_limit",
	"LDAP_SERVER_HOST":           "ldap_server_host",
	"LDAP_SEARCH_BASE":           "ldap_search_base",
	"LDAP_BIND_DN":               "ldap_bind_dn",
	"LDAP_BIND_PW":               "ldap_bind_pw",
	"LDAP_START_TLS":             "ldap_start_tls",
	"LDAP_QUERY_FILTER_USER":     "ldap_query_filter_user",
	"LDAP_QUERY_FILTER_ALIAS":    "ldap_query_filter_alias",
	"LDAP_QUERY_FILTER_GROUP":    "ldap_query_filter_group",
	"LDAP_QUERY_FILTER_DOMAIN":   "ldap_query_filter_domain",
	"LDAP_QUERY_FILTER_SENDERS":  "ldap_query_filter_senders",
}

// Env looks up an environment variable; os.LookupEnv in production.
type Env func(name string) (string, bool)

// Load computes the effective settings from the configuration directory, the
// environment and the flag overrides (setting name → value).
func Load(configDir string, env Env, flags map[string]string) (*Settings, error) {
	path := filepath.Join(configDir, FileName)
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		data, err = nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading settings: %w", err)
	}
	return parse(path, data, env, flags)
}

// parse is Load with the content of mailgate.toml (nil when there is none).
func parse(path string, data []byte, env Env, flags map[string]string) (*Settings, error) {
	if env == nil {
		env = os.LookupEnv
	}
	raw := map[string]string{}
	origin := map[string]string{}
	set := func(name, value, from string) {
		raw[name] = value
		origin[name] = from
	}

	// mailgate.toml
	if data != nil {
		var doc map[string]any
		if _, err := toml.Decode(string(data), &doc); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		keys := make([]string, 0, len(doc))
		for k := range doc {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if !known(k) {
				return nil, fmt.Errorf("%s: unknown setting %q (known: %s)", path, k, strings.Join(Names, ", "))
			}
			v, err := tomlString(doc[k])
			if err != nil {
				return nil, fmt.Errorf("%s: setting %s: %w", path, k, err)
			}
			set(k, v, FileName)
		}
	}

	// docker-mailserver names, then mailgate's own.
	for _, dms := range sortedKeys(dmsEnv) {
		if v, ok := env(dms); ok && v != "" {
			set(dmsEnv[dms], v, "env "+dms)
		}
	}
	if h, ok := env("RELAY_HOST"); ok && h != "" {
		port := "25"
		if p, ok := env("RELAY_PORT"); ok && p != "" {
			port = p
		}
		set("relay_host", h+":"+port, "env RELAY_HOST/RELAY_PORT")
	}
	for _, name := range Names {
		envName := "MAILGATE_" + strings.ToUpper(name)
		if v, ok := env(envName); ok {
			set(name, v, "env "+envName)
		}
	}
	for _, name := range sortedKeys(flags) {
		if !known(name) {
			return nil, fmt.Errorf("unknown setting %q (known: %s)", name, strings.Join(Names, ", "))
		}
		set(name, flags[name], "flag")
	}
	return build(raw, origin)
}

func build(raw, origin map[string]string) (*Settings, error) {
	s := &Settings{
		RecipientDelimiter: "+",
		SpoofProtection:    true,
		NullSender:         "refuse",
		HeaderFrom:         "owned",
		AccountProvisioner: "file",
		MessageSizeLimit:   25 << 20,
		// Postfix's defaults where it has one: smtpd_client_connection_count_limit,
		// smtpd_recipient_limit, smtpd_timeout, maximal_queue_lifetime.
		MaxConnections:      1000,
		MaxConnectionsPerIP: 50,
		MaxRecipients:       1000,
		SMTPTimeout:         300 * time.Second,
		DataTimeout:         10 * time.Minute,
		QueueLifetime:       5 * 24 * time.Hour,
		QueueBackoffMin:     300 * time.Second,  // minimal_backoff_time
		QueueBackoffMax:     4000 * time.Second, // maximal_backoff_time
		LDAP: LDAP{
			FilterUser:   DefaultLDAPFilterUser,
			FilterAlias:  DefaultLDAPFilterAlias,
			FilterGroup:  DefaultLDAPFilterGroup,
			FilterDomain: DefaultLDAPFilterDomain,
			FilterLogin:  DefaultLDAPFilterLogin,
			Timeout:      5 * time.Second,
			CacheTTL:     30 * time.Second,
		},
		Origin: map[string]string{},
	}
	for _, n := range Names {
		s.Origin[n] = "default"
		if o, ok := origin[n]; ok {
			s.Origin[n] = o
		}
	}
	var errs []error
	bad := func(name string, err error) {
		errs = append(errs, fmt.Errorf("setting %s (from %s): %w", name, s.Origin[name], err))
	}

	hostname, ok := raw["hostname"]
	if !ok {
		h, err := os.Hostname()
		if err != nil || h == "" {
			h = "localhost"
		}
		hostname = h
	}
	if d, err := address.ParseDomain(hostname); err != nil {
		bad("hostname", err)
	} else {
		s.Hostname = d
	}

	if v, ok := raw["recipient_delimiter"]; ok {
		if err := checkDelimiters(v); err != nil {
			bad("recipient_delimiter", err)
		} else {
			s.RecipientDelimiter = v
		}
	}

	pm, ok := raw["postmaster_address"]
	if !ok {
		pm = "postmaster@" + parentDomain(s.Hostname)
	}
	if a, err := address.Parse(pm, address.Options{}); err != nil {
		bad("postmaster_address", err)
	} else {
		s.PostmasterAddress = a.String()
	}

	if v, ok := raw["spoof_protection"]; ok {
		b, err := parseBool(v)
		if err != nil {
			bad("spoof_protection", err)
		}
		s.SpoofProtection = b
	}
	if v, ok := raw["null_sender"]; ok {
		if err := oneOf(v, "refuse", "allow"); err != nil {
			bad("null_sender", err)
		}
		s.NullSender = v
	}
	if v, ok := raw["header_from"]; ok {
		if err := oneOf(v, "owned", "envelope", "off"); err != nil {
			bad("header_from", err)
		}
		s.HeaderFrom = v
	}
	if v, ok := raw["excluded_domains"]; ok {
		for _, f := range splitList(v) {
			d, err := address.ParseDomain(f)
			if err != nil {
				bad("excluded_domains", err)
				continue
			}
			s.ExcludedDomains = append(s.ExcludedDomains, d)
		}
	}
	if v, ok := raw["account_provisioner"]; ok {
		v = strings.ToLower(v) // DMS writes FILE / LDAP
		if err := oneOf(v, "file", "ldap", "postgres"); err != nil {
			bad("account_provisioner", err)
		}
		s.AccountProvisioner = v
	}
	if v, ok := raw["message_size_limit"]; ok {
		n, err := parseSize(v)
		if err != nil {
			bad("message_size_limit", err)
		}
		s.MessageSizeLimit = n
	}
	if v, ok := raw["relay_host"]; ok && v != "" {
		hp, err := parseRelayHost(v)
		if err != nil {
			bad("relay_host", err)
		}
		s.RelayHost = hp
	}
	for _, c := range []struct {
		name string
		dst  *int
	}{
		{"max_connections", &s.MaxConnections},
		{"max_connections_per_ip", &s.MaxConnectionsPerIP},
		{"max_recipients", &s.MaxRecipients},
	} {
		if v, ok := raw[c.name]; ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil || n < 1 || n > 1_000_000 {
				bad(c.name, fmt.Errorf("%q is not a count between 1 and 1000000", v))
				continue
			}
			*c.dst = n
		}
	}
	for _, d := range []struct {
		name string
		dst  *time.Duration
	}{
		{"smtp_timeout", &s.SMTPTimeout},
		{"data_timeout", &s.DataTimeout},
		{"queue_lifetime", &s.QueueLifetime},
		{"queue_backoff_min", &s.QueueBackoffMin},
		{"queue_backoff_max", &s.QueueBackoffMax},
	} {
		if v, ok := raw[d.name]; ok {
			t, err := parseDuration(v)
			if err != nil {
				bad(d.name, err)
				continue
			}
			*d.dst = t
		}
	}
	buildSources(s, raw, bad)
	if s.QueueBackoffMax < s.QueueBackoffMin {
		bad("queue_backoff_max", fmt.Errorf("%s is shorter than queue_backoff_min %s", s.QueueBackoffMax, s.QueueBackoffMin))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return s, nil
}

// parseDuration accepts Go durations ("90s", "1h30m") and, as Postfix does, a
// number with one of the units s, m, h, d, w ("5d"); a bare number is seconds.
// The result must be positive.
func parseDuration(v string) (time.Duration, error) {
	t := strings.TrimSpace(v)
	bad := fmt.Errorf("%q is not a positive duration (e.g. 300s, 10m, 5d)", v)
	if t == "" {
		return 0, bad
	}
	unit := time.Second
	switch t[len(t)-1] {
	case 'd':
		unit, t = 24*time.Hour, t[:len(t)-1]
	case 'w':
		unit, t = 7*24*time.Hour, t[:len(t)-1]
	}
	if n, err := strconv.ParseInt(t, 10, 64); err == nil {
		if n <= 0 || n > int64(100*365*24*time.Hour/unit) {
			return 0, bad
		}
		return time.Duration(n) * unit, nil
	}
	if unit != time.Second {
		return 0, bad
	}
	d, err := time.ParseDuration(t)
	if err != nil || d <= 0 {
		return 0, bad
	}
	return d, nil
}

// Values returns the effective values as text, keyed by setting name.
func (s *Settings) Values() map[string]string {
	return map[string]string{
		"hostname":                  s.Hostname,
		"recipient_delimiter":       s.RecipientDelimiter,
		"postmaster_address":        s.PostmasterAddress,
		"spoof_protection":          strconv.FormatBool(s.SpoofProtection),
		"null_sender":               s.NullSender,
		"header_from":               s.HeaderFrom,
		"excluded_domains":          strings.Join(s.ExcludedDomains, ","),
		"account_provisioner":       s.AccountProvisioner,
		"message_size_limit":        strconv.FormatInt(s.MessageSizeLimit, 10),
		"relay_host":                s.RelayHost,
		"max_connections":           strconv.Itoa(s.MaxConnections),
		"max_connections_per_ip":    strconv.Itoa(s.MaxConnectionsPerIP),
		"max_recipients":            strconv.Itoa(s.MaxRecipients),
		"smtp_timeout":              s.SMTPTimeout.String(),
		"data_timeout":              s.DataTimeout.String(),
		"queue_lifetime":            s.QueueLifetime.String(),
		"queue_backoff_min":         s.QueueBackoffMin.String(),
		"queue_backoff_max":         s.QueueBackoffMax.String(),
		"database_url":              redactURL(s.DatabaseURL),
		"ldap_server_host":          s.LDAP.ServerHost,
		"ldap_search_base":          s.LDAP.SearchBase,
		"ldap_bind_dn":              s.LDAP.BindDN,
		"ldap_bind_pw":              redact(s.LDAP.BindPW),
		"ldap_start_tls":            strconv.FormatBool(s.LDAP.StartTLS),
		"ldap_query_filter_user":    s.LDAP.FilterUser,
		"ldap_query_filter_alias":   s.LDAP.FilterAlias,
		"ldap_query_filter_group":   s.LDAP.FilterGroup,
		"ldap_query_filter_domain":  s.LDAP.FilterDomain,
		"ldap_query_filter_senders": s.LDAP.FilterSenders,
		"ldap_query_filter_login":   s.LDAP.FilterLogin,
		"ldap_timeout":              s.LDAP.Timeout.String(),
		"ldap_cache_ttl":            s.LDAP.CacheTTL.String(),
	}
}

// IsExcluded reports whether a canonical domain is in excluded_domains.
func (s *Settings) IsExcluded(domain string) bool {
	for _, d := range s.ExcludedDomains {
		if d == domain {
			return true
		}
	}
	return false
}

func known(name string) bool {
	for _, n := range Names {
		if n == name {
			return true
		}
	}
	return false
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func tomlString(v any) (string, error) {
	switch x := v.(type) {
	case string:
		return x, nil
	case bool:
		return strconv.FormatBool(x), nil
	case int64:
		return strconv.FormatInt(x, 10), nil
	case []any:
		parts := make([]string, 0, len(x))
		for _, e := range x {
			s, ok := e.(string)
			if !ok {
				return "", fmt.Errorf("list elements must be strings, got %T", e)
			}
			parts = append(parts, s)
		}
		return strings.Join(parts, ","), nil
	default:
		return "", fmt.Errorf("unsupported value type %T", v)
	}
}

// parentDomain is the host name without its first label (DMS's DOMAINNAME),
// or the host name itself when it has a single label.
func parentDomain(host string) string {
	if i := strings.IndexByte(host, '.'); i >= 0 && i+1 < len(host) {
		return host[i+1:]
	}
	return host
}

func checkDelimiters(v string) error {
	if v == "" {
		return errors.New("must not be empty")
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		// A delimiter must be a printable ASCII character that may occur in a
		// dot-atom local part (RFC 5322 §3.2.3 atext), and not '.'.
		if c <= ' ' || c >= 0x7f || strings.IndexByte("()<>[]:;@\\,\".", c) >= 0 {
			return fmt.Errorf("%q is not a usable delimiter character (printable atext, not '.')", string(c))
		}
	}
	return nil
}

func parseBool(v string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "1", "true", "yes", "on":
		return true, nil
	case "0", "false", "no", "off":
		return false, nil
	}
	return false, fmt.Errorf("%q is not a boolean (1/0, true/false, yes/no, on/off)", v)
}

func oneOf(v string, allowed ...string) error {
	for _, a := range allowed {
		if v == a {
			return nil
		}
	}
	return fmt.Errorf("%q is not one of %s", v, strings.Join(allowed, ", "))
}

func splitList(v string) []string {
	return strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' })
}

// parseSize accepts a byte count, optionally with a K/M/G (or KiB/MiB/GiB)
// suffix meaning powers of 1024.
func parseSize(v string) (int64, error) {
	t := strings.TrimSpace(v)
	mult := int64(1)
	for _, suf := range []struct {
		s string
		m int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}} {
		if strings.HasSuffix(t, suf.s) {
			t, mult = strings.TrimSuffix(t, suf.s), suf.m
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || n > (1<<40)/mult {
		return 0, fmt.Errorf("%q is not a size in bytes (suffix K, M or G allowed; 0 for no limit)", v)
	}
	return n * mult, nil
}

// parseRelayHost accepts "host", "host:port", "[host]:port" (the Postfix and
// DMS notation, where brackets suppress MX lookups) and returns "host:port".
func parseRelayHost(v string) (string, error) {
	host, port := v, "25"
	if strings.HasPrefix(host, "[") {
		end := strings.IndexByte(host, ']')
		if end < 0 {
			return "", fmt.Errorf("%q: missing ']'", v)
		}
		rest := host[end+1:]
		host = host[1:end]
		if rest != "" {
			if !strings.HasPrefix(rest, ":") {
				return "", fmt.Errorf("%q: unexpected text after ']'", v)
			}
			port = rest[1:]
		}
	} else if i := strings.LastIndexByte(host, ':'); i >= 0 {
		host, port = host[:i], host[i+1:]
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 {
		return "", fmt.Errorf("%q: bad port %q", v, port)
	}
	if host == "" {
		return "", fmt.Errorf("%q: empty host", v)
	}
	if h, err := address.ParseDomain(host); err == nil {
		host = h
	} else if !isIPLiteral(host) {
		return "", fmt.Errorf("%q: bad host: %w", v, err)
	}
	if strings.Contains(host, ":") {
		return "[" + host + "]:" + strconv.Itoa(p), nil
	}
	return host + ":" + strconv.Itoa(p), nil
}

func isIPLiteral(h string) bool { return net.ParseIP(h) != nil }
