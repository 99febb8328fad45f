package settings

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func envOf(kv ...string) Env {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestDefaults(t *testing.T) {
	s, err := Load(t.TempDir(), envOf(), map[string]string{"hostname": "mail.example.org"})
	if err != nil {
		t.Fatal(err)
	}
	if s.Hostname != "mail.example.org" || s.PostmasterAddress != "postmaster@example.org" || !s.SpoofProtection ||
		s.RecipientDelimiter != "+" || s.NullSender != "refuse" || s.HeaderFrom != "owned" ||
		s.AccountProvisioner != "file" || s.MessageSizeLimit != 25<<20 || s.RelayHost != "" {
		t.Errorf("defaults: %+v", s)
	}
	if s.Origin["spoof_protection"] != "default" || s.Origin["hostname"] != "flag" {
		t.Errorf("origins: %v", s.Origin)
	}
}

func TestPrecedence(t *testing.T) {
	dir := t.TempDir()
	toml := "hostname = \"file.example\"\nspoof_protection = false\nexcluded_domains = [\"a.example\", \"B.example\"]\nmessage_size_limit = \"10M\"\n"
	if err := os.WriteFile(filepath.Join(dir, FileName), []byte(toml), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := Load(dir, envOf(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if s.Hostname != "file.example" || s.SpoofProtection || strings.Join(s.ExcludedDomains, ",") != "a.example,b.example" ||
		s.MessageSizeLimit != 10<<20 || s.Origin["hostname"] != FileName {
		t.Errorf("from file: %+v", s)
	}
	s, err = Load(dir, envOf("OVERRIDE_HOSTNAME", "dms.example", "SPOOF_PROTECTION", "1",
		"RELAY_HOST", "smtp.example.net", "RELAY_PORT", "587", "POSTFIX_MESSAGE_SIZE_LIMIT", "1000",
		"ACCOUNT_PROVISIONER", "FILE"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if s.Hostname != "dms.example" || !s.SpoofProtection || s.RelayHost != "smtp.example.net:587" ||
		s.MessageSizeLimit != 1000 || s.Origin["spoof_protection"] != "env SPOOF_PROTECTION" {
		t.Errorf("from DMS env: %+v", s)
	}
	s, err = Load(dir, envOf("OVERRIDE_HOSTNAME", "dms.example", "MAILGATE_HOSTNAME", "mg.example",
		"DEFAULT_RELAY_HOST", "[relay.example]:2525"), map[string]string{"spoof_protection": "no"})
	if err != nil {
		t.Fatal(err)
	}
	if s.Hostname != "mg.example" || s.SpoofProtection || s.RelayHost != "relay.example:2525" {
		t.Errorf("MAILGATE_ and flag precedence: %+v", s)
	}
}

func TestErrors(t *testing.T) {
	cases := []struct {
		file string
		env  []string
		set  map[string]string
		want string
	}{
		{"colour = \"blue\"\n", nil, nil, `unknown setting "colour"`},
		{"hostname = \n", nil, nil, "mailgate.toml"},
		{"", []string{"SPOOF_PROTECTION", "maybe"}, nil, "spoof_protection (from env SPOOF_PROTECTION)"},
		{"", nil, map[string]string{"null_sender": "sometimes"}, "null_sender"},
		{"", nil, map[string]string{"header_from": "x"}, "header_from"},
		{"", nil, map[string]string{"recipient_delimiter": "."}, "recipient_delimiter"},
		{"", nil, map[string]string{"recipient_delimiter": ""}, "recipient_delimiter"},
		{"", nil, map[string]string{"hostname": "bad_host!"}, "hostname"},
		{"", nil, map[string]string{"postmaster_address": "not an address"}, "postmaster_address"},
		{"", nil, map[string]string{"excluded_domains": "ok.example,[1.2.3.4]"}, "excluded_domains"},
		{"", nil, map[string]string{"message_size_limit": "-1"}, "message_size_limit"},
		{"", nil, map[string]string{"relay_host": "host:99999"}, "relay_host"},
		{"", nil, map[string]string{"account_provisioner": "ldap"}, "account_provisioner"},
		{"", nil, map[string]string{"nonsense": "1"}, `unknown setting "nonsense"`},
	}
	for _, c := range cases {
		dir := t.TempDir()
		if c.file != "" {
			os.WriteFile(filepath.Join(dir, FileName), []byte(c.file), 0o644)
		}
		set := map[string]string{"hostname": "h.example"}
		for k, v := range c.set {
			set[k] = v
		}
		_, err := Load(dir, envOf(c.env...), set)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q %v %v: error %v, want %q", c.file, c.env, c.set, err, c.want)
		}
	}
}
