package settings

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// buildSources reads the settings of the LDAP and PostgreSQL directory
// sources and checks that the chosen account_provisioner has what it needs.
func buildSources(s *Settings, raw map[string]string, bad func(string, error)) {
	if v, ok := raw["database_url"]; ok {
		v = strings.TrimSpace(v)
		if v != "" {
			if err := checkDatabaseURL(v); err != nil {
				bad("database_url", err)
			}
		}
		s.DatabaseURL = v
	}
	l := &s.LDAP
	for _, f := range []struct {
		name string
		dst  *string
	}{
		{"ldap_search_base", &l.SearchBase},
		{"ldap_bind_dn", &l.BindDN},
		{"ldap_bind_pw", &l.BindPW},
	} {
		if v, ok := raw[f.name]; ok {
			*f.dst = v
		}
	}
	if v, ok := raw["ldap_server_host"]; ok && strings.TrimSpace(v) != "" {
		u, err := ldapURL(v)
		if err != nil {
			bad("ldap_server_host", err)
		}
		l.ServerHost = u
	}
	if v, ok := raw["ldap_start_tls"]; ok {
		b, err := parseBool(v)
		if err != nil {
			bad("ldap_start_tls", err)
		}
		l.StartTLS = b
	}
	for _, f := range []struct {
		name     string
		dst      *string
		optional bool
	}{
		{"ldap_query_filter_user", &l.FilterUser, false},
		{"ldap_query_filter_alias", &l.FilterAlias, true},
		{"ldap_query_filter_group", &l.FilterGroup, true},
		{"ldap_query_filter_domain", &l.FilterDomain, true},
		{"ldap_query_filter_senders", &l.FilterSenders, true},
		{"ldap_query_filter_login", &l.FilterLogin, false},
	} {
		v, ok := raw[f.name]
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		if v == "" && f.optional {
			*f.dst = ""
			continue
		}
		if err := checkFilterTemplate(v); err != nil {
			bad(f.name, err)
			continue
		}
		*f.dst = v
	}
	if v, ok := raw["ldap_timeout"]; ok {
		t, err := parseDuration(v)
		if err != nil {
			bad("ldap_timeout", err)
		}
		l.Timeout = t
	}
	if v, ok := raw["ldap_cache_ttl"]; ok {
		if strings.TrimSpace(v) == "0" {
			l.CacheTTL = 0
		} else if t, err := parseDuration(v); err != nil {
			bad("ldap_cache_ttl", fmt.Errorf("%w, or 0 to disable the cache", err))
		} else {
			l.CacheTTL = t
		}
	}

	switch s.AccountProvisioner {
	case "postgres":
		if s.DatabaseURL == "" {
			bad("account_provisioner", errors.New("postgres needs database_url (MAILGATE_DATABASE_URL)"))
		}
	case "ldap":
		if l.ServerHost == "" {
			bad("account_provisioner", errors.New("ldap needs ldap_server_host (LDAP_SERVER_HOST)"))
		}
		if l.SearchBase == "" {
			bad("account_provisioner", errors.New("ldap needs ldap_search_base (LDAP_SEARCH_BASE)"))
		}
	}
}

// checkDatabaseURL accepts a postgres:// or postgresql:// URL, or a
// key=value connection string as libpq takes.
func checkDatabaseURL(v string) error {
	if strings.Contains(v, "://") {
		u, err := url.Parse(v)
		if err != nil {
			return fmt.Errorf("not a URL: %w", err)
		}
		if u.Scheme != "postgres" && u.Scheme != "postgresql" {
			return fmt.Errorf("scheme %q: expected postgres:// or postgresql://", u.Scheme)
		}
		return nil
	}
	if !strings.Contains(v, "=") {
		return fmt.Errorf("%q is neither a postgres:// URL nor key=value pairs", v)
	}
	return nil
}

// ldapURL accepts what DMS accepts in LDAP_SERVER_HOST: a URL, or a host
// name (with an optional port) taken as ldap://.
func ldapURL(v string) (string, error) {
	v = strings.TrimSpace(v)
	if !strings.Contains(v, "://") {
		v = "ldap://" + v
	}
	u, err := url.Parse(v)
	if err != nil {
		return "", fmt.Errorf("not an LDAP URL: %w", err)
	}
	if u.Scheme != "ldap" && u.Scheme != "ldaps" {
		return "", fmt.Errorf("scheme %q: expected ldap:// or ldaps://", u.Scheme)
	}
	if u.Host == "" {
		return "", fmt.Errorf("%q has no host", v)
	}
	if u.Path != "" && u.Path != "/" {
		return "", fmt.Errorf("%q: a path is not supported, give the base in ldap_search_base", v)
	}
	return u.Scheme + "://" + u.Host, nil
}

// checkFilterTemplate checks that a filter template is parenthesized and
// balanced; the LDAP source compiles it fully when it starts.
func checkFilterTemplate(v string) error {
	if !strings.HasPrefix(v, "(") || !strings.HasSuffix(v, ")") {
		return fmt.Errorf("%q: a filter must be enclosed in parentheses", v)
	}
	depth := 0
	for i := 0; i < len(v); i++ {
		switch v[i] {
		case '\\':
			i++
		case '(':
			depth++
		case ')':
			depth--
			if depth < 0 {
				return fmt.Errorf("%q: unbalanced parentheses", v)
			}
		}
	}
	if depth != 0 {
		return fmt.Errorf("%q: unbalanced parentheses", v)
	}
	return nil
}

// redact hides a secret in printed settings.
func redact(v string) string {
	if v == "" {
		return ""
	}
	return "(set, hidden)"
}

// redactURL hides the password of a connection string.
func redactURL(v string) string {
	if v == "" {
		return ""
	}
	if u, err := url.Parse(v); err == nil && strings.Contains(v, "://") {
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
		}
		q := u.Query()
		if q.Has("password") {
			q.Set("password", "xxxxx")
			u.RawQuery = q.Encode()
		}
		return u.String()
	}
	var out []string
	for _, f := range strings.Fields(v) {
		if strings.HasPrefix(strings.ToLower(f), "password=") {
			f = "password=xxxxx"
		}
		out = append(out, f)
	}
	return strings.Join(out, " ")
}
