package ldapdir

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/mailgate/mailgate/internal/settings"
)

// The DMS test filters (docker-mailserver's LDAP tests), spaces included.
const (
	dmsTestUser    = `(&(mail=%s) (&(objectClass=PostfixBookMailAccount)(mailEnabled=TRUE)) )`
	dmsTestGroup   = `(&(mailGroupMember=%s) (&(objectClass=PostfixBookMailAccount)(mailEnabled=TRUE)) )`
	dmsTestAlias   = `(&(mailAlias=%s) (| (objectClass=PostfixBookMailForward) (&(objectClass=PostfixBookMailAccount)(mailEnabled=TRUE)) ))`
	dmsTestDomain  = `(| (& (|(mail=*@%s) (mailAlias=*@%s) (mailGroupMember=*@%s)) (&(objectClass=PostfixBookMailAccount)(mailEnabled=TRUE)) ) (&(mailAlias=*@%s)(objectClass=PostfixBookMailForward)) )`
	dmsTestSenders = `(| (& (|(mail=%s) (mailAlias=%s) (mailGroupMember=%s)) (&(objectClass=PostfixBookMailAccount)(mailEnabled=TRUE)) ) (&(mailAlias=%s)(objectClass=PostfixBookMailForward)) (userID=some.user.id))`
)

const instanceScript = "../../test/ldap/instance.sh"

// instance is the throwaway slapd of test/ldap/instance.sh, shared by the
// package's tests and started on first use.
type instance struct {
	dir, port, url, base, bindDN, bindPW string
	caFile                               string // the certificate slapd offers for StartTLS ("" without openssl)
	ldapsURL                             string // ldaps:// with the same certificate, on the next port
}

var (
	instOnce    sync.Once
	inst        *instance
	instErr     error
	instMissing bool
)

func TestMain(m *testing.M) {
	code := m.Run()
	if inst != nil {
		if out, err := script("stop", inst.dir); err != nil {
			fmt.Fprintf(os.Stderr, "stopping slapd: %v\n%s", err, out)
		}
	}
	os.Exit(code)
}

// script runs instance.sh with args and returns its stdout.
func script(args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", append([]string{instanceScript}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.ExitCode() == 77 {
			instMissing = true
		}
		return out, fmt.Errorf("instance.sh %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// parseAssignments reads the KEY='value' lines instance.sh prints.
func parseAssignments(out []byte) (map[string]string, error) {
	m := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			continue
		}
		if len(v) < 2 || v[0] != '\'' || v[len(v)-1] != '\'' || strings.Contains(v[1:len(v)-1], "'") {
			return nil, fmt.Errorf("instance.sh: unexpected line %q", sc.Text())
		}
		m[k] = v[1 : len(v)-1]
	}
	for _, k := range []string{"LDAP_DIR", "LDAP_PORT", "LDAP_SERVER_HOST", "LDAP_SEARCH_BASE", "LDAP_BIND_DN", "LDAP_BIND_PW"} {
		if m[k] == "" {
			return nil, fmt.Errorf("instance.sh printed no %s:\n%s", k, out)
		}
	}
	return m, nil
}

// needLDAP returns the shared slapd, starting it on first use. Without
// slapd the test is skipped, or fails when CI=true.
func needLDAP(t testing.TB) *instance {
	t.Helper()
	instOnce.Do(func() {
		if _, err := exec.LookPath("bash"); err != nil {
			instMissing, instErr = true, err
			return
		}
		out, err := script("start")
		if err != nil {
			instErr = err
			return
		}
		m, err := parseAssignments(out)
		if err != nil {
			instErr = err
			return
		}
		inst = &instance{
			dir: m["LDAP_DIR"], port: m["LDAP_PORT"], url: m["LDAP_SERVER_HOST"],
			base: m["LDAP_SEARCH_BASE"], bindDN: m["LDAP_BIND_DN"], bindPW: m["LDAP_BIND_PW"],
			caFile: m["LDAP_CA_FILE"], ldapsURL: m["LDAPS_SERVER_HOST"],
		}
	})
	switch {
	case instErr != nil && instMissing:
		if os.Getenv("CI") == "true" {
			t.Fatalf("slapd is required when CI=true: %v", instErr)
		}
		t.Skipf("slapd not available: %v", instErr)
	case instErr != nil:
		t.Fatalf("starting slapd: %v", instErr)
	}
	return inst
}

// pause stops slapd, keeping its data; resume starts it again.
func (in *instance) pause(t testing.TB) {
	t.Helper()
	if out, err := script("pause", in.dir); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
}

func (in *instance) resume(t testing.TB) {
	t.Helper()
	if out, err := script("resume", in.dir); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
}

// admin returns a connection bound as the rootdn, for changing the data.
func (in *instance) admin(t testing.TB) *ldap.Conn {
	t.Helper()
	c, err := ldap.DialURL(in.url)
	if err != nil {
		t.Fatalf("admin connection: %v", err)
	}
	if err := c.Bind(in.bindDN, in.bindPW); err != nil {
		c.Close()
		t.Fatalf("admin bind: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// defaultConfig is the settings with DMS's default filters.
func (in *instance) defaultConfig() settings.LDAP {
	return settings.LDAP{
		ServerHost:   in.url,
		SearchBase:   in.base,
		BindDN:       in.bindDN,
		BindPW:       in.bindPW,
		FilterUser:   settings.DefaultLDAPFilterUser,
		FilterAlias:  settings.DefaultLDAPFilterAlias,
		FilterGroup:  settings.DefaultLDAPFilterGroup,
		FilterDomain: settings.DefaultLDAPFilterDomain,
		FilterLogin:  settings.DefaultLDAPFilterLogin,
		Timeout:      2 * time.Second,
	}
}

// testConfig is the settings with DMS's test filters.
func (in *instance) testConfig() settings.LDAP {
	c := in.defaultConfig()
	c.FilterUser = dmsTestUser
	c.FilterAlias = dmsTestAlias
	c.FilterGroup = dmsTestGroup
	c.FilterDomain = dmsTestDomain
	c.FilterSenders = dmsTestSenders
	return c
}

// newSource makes a Source that is closed when the test ends.
func newSource(t testing.TB, cfg settings.LDAP) *Source {
	t.Helper()
	s, err := New(cfg, testLogger())
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func testLogger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}
