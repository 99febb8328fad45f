package dirsource

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/internal/conffile"
	"github.com/mailgate/mailgate/internal/directory"
	"github.com/mailgate/mailgate/internal/pgstore"
	"github.com/mailgate/mailgate/internal/pgstore/pgtest"
	"github.com/mailgate/mailgate/internal/policy"
)

// The same directory in every source: DMS's LDAP test data (test/ldap),
// written as DMS files for the file and PostgreSQL sources.
var dmsFiles = map[string]string{
	conffile.AccountsFile: "some.user@localhost.localdomain|{SHA512-CRYPT}$6$x$y\n" +
		"some.other.user@localhost.otherdomain|{SHA512-CRYPT}$6$x$y\n" +
		"some.user.email@localhost.localdomain|{SHA512-CRYPT}$6$x$y\n",
	conffile.VirtualFile: "postmaster@localhost.localdomain some.user@localhost.localdomain\n" +
		"employees@localhost.localdomain some.user@localhost.localdomain\n" +
		"postmaster@localhost.otherdomain some.other.user@localhost.otherdomain\n",
}

// The operations measured: the questions an SMTP transaction asks.
var ops = []struct {
	name string
	run  func(snap *directory.Snapshot) bool
}{
	{"maysend-self", func(s *directory.Snapshot) bool {
		return policy.MaySend(s, "some.user@localhost.localdomain", "some.user@localhost.localdomain").Allowed
	}},
	{"maysend-alias", func(s *directory.Snapshot) bool {
		return policy.MaySend(s, "some.user@localhost.localdomain", "postmaster@localhost.localdomain").Allowed
	}},
	{"maysend-denied", func(s *directory.Snapshot) bool {
		return !policy.MaySend(s, "some.user@localhost.localdomain", "ldap@localhost.localdomain").Allowed
	}},
	{"route-alias", func(s *directory.Snapshot) bool {
		return policy.Route(s, "employees@localhost.localdomain").Status == policy.Deliver
	}},
	{"route-unknown", func(s *directory.Snapshot) bool {
		return policy.Route(s, "nobody@localhost.localdomain").Status == policy.NotFound
	}},
}

func configDir(b *testing.B, files map[string]string, toml string) string {
	dir := b.TempDir()
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil {
			b.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "mailgate.toml"), []byte("hostname = \"mail.example.test\"\n"+toml), 0o600); err != nil {
		b.Fatal(err)
	}
	return dir
}

func noEnv(string) (string, bool) { return "", false }

// startLDAP starts the throwaway slapd of test/ldap for the benchmark.
func startLDAP(b *testing.B) map[string]string {
	out, err := exec.Command("bash", "../../test/ldap/instance.sh", "start").Output()
	if err != nil {
		if os.Getenv("CI") == "true" {
			b.Fatalf("starting slapd: %v", err)
		}
		b.Skipf("no slapd: %v", err)
	}
	vars := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			vars[k] = strings.Trim(v, "'")
		}
	}
	b.Cleanup(func() { exec.Command("bash", "../../test/ldap/instance.sh", "stop", vars["LDAP_DIR"]).Run() })
	return vars
}

// BenchmarkSources measures MaySend and Route on every directory source
// (docs/performance.md): the file and PostgreSQL sources answer from the
// snapshot in memory; LDAP asks the server for each lookup, or its cache.
// Every case reports p50-ns and p99-ns.
func BenchmarkSources(b *testing.B) {
	ctx := context.Background()
	sources := map[string]func(b *testing.B) *directory.Snapshot{
		"file": func(b *testing.B) *directory.Snapshot {
			return load(b, New(configDir(b, dmsFiles, ""), noEnv, nil, nil))
		},
		"postgres": func(b *testing.B) *directory.Snapshot {
			url := pgtest.DB(b)
			files := configDir(b, dmsFiles, "")
			store, err := pgstore.Open(ctx, url, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer store.Close()
			src := New(configDir(b, nil, ""), noEnv, map[string]string{"account_provisioner": "postgres", "database_url": url}, nil)
			st, err := src.settings()
			if err != nil {
				b.Fatal(err)
			}
			if _, err := store.Import(ctx, files, st); err != nil {
				b.Fatal(err)
			}
			return load(b, src)
		},
	}
	ldapVars := startLDAP(b) // stopped when the whole benchmark ends
	for _, c := range []struct{ name, ttl string }{{"ldap-nocache", "0"}, {"ldap-cache", "60s"}} {
		sources[c.name] = func(b *testing.B) *directory.Snapshot {
			v := ldapVars
			return load(b, New(configDir(b, nil, ""), noEnv, map[string]string{
				"account_provisioner": "ldap", "ldap_server_host": v["LDAP_SERVER_HOST"], "ldap_search_base": v["LDAP_SEARCH_BASE"],
				"ldap_bind_dn": v["LDAP_BIND_DN"], "ldap_bind_pw": v["LDAP_BIND_PW"], "ldap_cache_ttl": c.ttl,
			}, nil))
		}
	}
	for _, name := range []string{"file", "postgres", "ldap-cache", "ldap-nocache"} {
		b.Run("source="+name, func(b *testing.B) {
			snap := sources[name](b)
			for _, op := range ops {
				b.Run("op="+op.name, func(b *testing.B) {
					if !op.run(snap) {
						b.Fatalf("%s on %s: wrong answer", op.name, name)
					}
					durs := make([]time.Duration, 0, b.N)
					b.ResetTimer()
					for i := 0; i < b.N; i++ {
						start := time.Now()
						op.run(snap)
						durs = append(durs, time.Since(start))
					}
					b.StopTimer()
					slices.Sort(durs)
					b.ReportMetric(float64(durs[len(durs)/2].Nanoseconds()), "p50-ns")
					b.ReportMetric(float64(durs[min(len(durs)-1, len(durs)*99/100)].Nanoseconds()), "p99-ns")
				})
			}
		})
	}
}

func load(b *testing.B, src *Source) *directory.Snapshot {
	b.Cleanup(src.Close)
	snap, err := src.Load(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	return snap
}
