package ldapdir

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/internal/directory"
)

// StartTLS and ldaps:// against the real slapd (test/ldap/instance.sh gives it a
// self-signed certificate for 127.0.0.1): the server's certificate is
// verified against the system's CAs, which Go reads from SSL_CERT_FILE when
// it is set — the way to trust a private CA. Searches and AUTH binds both go
// through TLS.
func TestTLS(t *testing.T) {
	in := needLDAP(t)
	if in.caFile == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("the test slapd has no certificate (openssl missing?)")
		}
		t.Skip("the test slapd has no certificate (openssl missing)")
	}
	// The system pool is loaded once per process, at its first use: no
	// other test of this package uses TLS.
	t.Setenv("SSL_CERT_FILE", in.caFile)
	cfg := in.defaultConfig()
	cfg.StartTLS = true
	cfg.CacheTTL = 0
	s := newSource(t, cfg)
	if _, ok, err := s.Account(addr(t, "some.user@localhost.localdomain")); err != nil || !ok {
		t.Fatalf("Account over StartTLS: %v, %v", ok, err)
	}
	if a, err := s.Authenticate("some.user", "secret"); err != nil || a.String() != "some.user@localhost.localdomain" {
		t.Fatalf("Authenticate over StartTLS: %v, %v", a, err)
	}
	if _, err := s.Authenticate("some.user", "wrong"); !errors.Is(err, directory.ErrBadCredentials) {
		t.Errorf("wrong password over StartTLS: %v", err)
	}

	// ldaps://: TLS from the first byte, on the next port.
	tcfg := in.defaultConfig()
	tcfg.ServerHost, tcfg.CacheTTL = in.ldapsURL, 0
	if _, ok, err := newSource(t, tcfg).Account(addr(t, "some.user@localhost.localdomain")); err != nil || !ok {
		t.Fatalf("Account over ldaps://: %v, %v", ok, err)
	}

	// The certificate names 127.0.0.1 only: through "localhost" it is
	// refused, a temporary failure naming the handshake, never a lookup in
	// clear text.
	cfg.ServerHost = strings.Replace(cfg.ServerHost, "127.0.0.1", "localhost", 1)
	bad := newSource(t, cfg)
	_, _, err := bad.Account(addr(t, "some.user@localhost.localdomain"))
	if !directory.IsTemp(err) || !strings.Contains(err.Error(), "StartTLS") {
		t.Errorf("StartTLS to a name the certificate does not hold: %v", err)
	}
}
