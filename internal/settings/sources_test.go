package settings

import (
	"strings"
	"testing"
	"time"
)

// docker-mailserver's LDAP variables work unchanged.
func TestLDAPFromDMSEnvironment(t *testing.T) {
	s, err := Load(t.TempDir(), envOf(
		"ACCOUNT_PROVISIONER", "LDAP",
		"LDAP_SERVER_HOST", "ldap.example.test",
		"LDAP_SEARCH_BASE", "ou=users,dc=example,dc=test",
		"LDAP_BIND_DN", "cn=admin,dc=example,dc=test",
		"LDAP_BIND_PW", "secret",
		"LDAP_START_TLS", "yes",
		"LDAP_QUERY_FILTER_SENDERS", "(|(mail=%s)(userID=some.user.id))",
		"MAILGATE_LDAP_CACHE_TTL", "0",
	), map[string]string{"hostname": "mail.example.test"})
	if err != nil {
		t.Fatal(err)
	}
	l := s.LDAP
	if s.AccountProvisioner != "ldap" || l.ServerHost != "ldap://ldap.example.test" || l.SearchBase != "ou=users,dc=example,dc=test" ||
		l.BindDN != "cn=admin,dc=example,dc=test" || l.BindPW != "secret" || !l.StartTLS ||
		l.FilterSenders != "(|(mail=%s)(userID=some.user.id))" || l.FilterUser != DefaultLDAPFilterUser ||
		l.CacheTTL != 0 || l.Timeout != 5*time.Second {
		t.Errorf("LDAP settings: %+v", l)
	}
	v := s.Values()
	if v["ldap_bind_pw"] == "secret" || v["ldap_cache_ttl"] != "0s" {
		t.Errorf("values: bind pw %q, cache %q", v["ldap_bind_pw"], v["ldap_cache_ttl"])
	}
}

func TestSourceSettingErrors(t *testing.T) {
	for _, c := range []struct {
		set  map[string]string
		want string
	}{
		{map[string]string{"account_provisioner": "sql"}, "account_provisioner"},
		{map[string]string{"account_provisioner": "postgres"}, "needs database_url"},
		{map[string]string{"account_provisioner": "ldap", "ldap_search_base": "dc=x"}, "needs ldap_server_host"},
		{map[string]string{"account_provisioner": "ldap", "ldap_server_host": "ldap://h"}, "needs ldap_search_base"},
		{map[string]string{"ldap_server_host": "http://h"}, "expected ldap:// or ldaps://"},
		{map[string]string{"ldap_server_host": "ldap://h/dc=x"}, "ldap_search_base"},
		{map[string]string{"ldap_query_filter_user": "mail=%s"}, "parentheses"},
		{map[string]string{"ldap_query_filter_alias": "(&(mail=%s)"}, "unbalanced"},
		{map[string]string{"ldap_cache_ttl": "-1s"}, "or 0 to disable"},
		{map[string]string{"database_url": "mysql://h/db"}, "postgres://"},
		{map[string]string{"database_url": "just words"}, "key=value"},
	} {
		c.set["hostname"] = "mail.example.test"
		_, err := Load(t.TempDir(), envOf(), c.set)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v, want %q", c.set, err, c.want)
		}
	}
}

func TestDatabaseURLRedacted(t *testing.T) {
	for in, want := range map[string]string{
		"postgres://mg:topsecret@127.0.0.1:5432/mailgate?sslmode=disable": "postgres://mg:xxxxx@127.0.0.1:5432/mailgate?sslmode=disable",
		"host=127.0.0.1 user=mg password=topsecret dbname=mailgate":       "host=127.0.0.1 user=mg password=xxxxx dbname=mailgate",
		"postgres://127.0.0.1/mailgate":                                   "postgres://127.0.0.1/mailgate",
	} {
		s, err := Load(t.TempDir(), envOf("MAILGATE_DATABASE_URL", in, "ACCOUNT_PROVISIONER", "postgres"), map[string]string{"hostname": "mail.example.test"})
		if err != nil {
			t.Fatal(err)
		}
		if s.DatabaseURL != in || s.Values()["database_url"] != want {
			t.Errorf("%q: stored %q, shown %q, want %q", in, s.DatabaseURL, s.Values()["database_url"], want)
		}
	}
}
