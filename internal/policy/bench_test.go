package policy

// Benchmarks of MaySend and Route over generated directories (see
// docs/performance.md and bench/engine.sh).
//
//	go test -run '^$' -bench . -benchtime 200000x ./internal/policy
//	MAILGATE_BENCH_LARGE=1 go test -run '^$' -bench . ./internal/policy   # also 1M accounts + 1M aliases
//
// Besides ns/op, B/op and allocs/op every case reports p50-ns and p99-ns: the
// median and 99th percentile of individually timed calls. The inputs cycle
// through benchInputs different addresses spread over the whole directory, so
// that map lookups are not served from a warm cache line.

import (
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailgate/mailgate/internal/directory"
	"github.com/mailgate/mailgate/internal/dirgen"
	"github.com/mailgate/mailgate/internal/settings"
)

// benchSizes are the directories benchmarked; the large one only with
// MAILGATE_BENCH_LARGE=1. "100k-noregexp" has no postfix-regexp.cf: it
// shows what the literal entries cost without the regexp lookups that rule 2
// adds to every address of a managed domain.
var benchSizes = []struct {
	name  string
	size  dirgen.Size
	large bool
}{
	{"100k", dirgen.Size{Accounts: 100_000, Aliases: 100_000, Grants: 10_000, Regexps: 1_000, Domains: 100, CatchAlls: 50}, false},
	{"100k-noregexp", dirgen.Size{Accounts: 100_000, Aliases: 100_000, Grants: 10_000, Regexps: 0, Domains: 100, CatchAlls: 50}, false},
	{"1M", dirgen.Size{Accounts: 1_000_000, Aliases: 1_000_000, Grants: 10_000, Regexps: 1_000, Domains: 100, CatchAlls: 50}, true},
}

const benchInputs = 1 << 16

// benchSnaps caches one snapshot per size for the whole process: generating
// and loading a directory takes longer than benchmarking a case.
var benchSnaps sync.Map // name → func() (*directory.Snapshot, error)

func benchSnapshot(b *testing.B, name string, size dirgen.Size) *directory.Snapshot {
	b.Helper()
	f, _ := benchSnaps.LoadOrStore(name, sync.OnceValues(func() (*directory.Snapshot, error) {
		return generate(size)
	}))
	snap, err := f.(func() (*directory.Snapshot, error))()
	if err != nil {
		b.Fatal(err)
	}
	return snap
}

// generate writes a directory of the given size into a temporary directory,
// loads it and removes the files again.
func generate(size dirgen.Size) (*directory.Snapshot, error) {
	dir, err := os.MkdirTemp("", "mailgate-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	if err := dirgen.Write(dir, size); err != nil {
		return nil, err
	}
	s, err := settings.Load(dir, func(string) (string, bool) { return "", false },
		map[string]string{"hostname": "mail.example.test"})
	if err != nil {
		return nil, err
	}
	return directory.Load(dir, s)
}

// withExtDirs inserts "+ext" before the @ of addr.
func withExtDirs(addr, ext string) string {
	local, domain, _ := strings.Cut(addr, "@")
	return local + "+" + ext + "@" + domain
}

type sendCase struct {
	name    string
	input   func(s dirgen.Size, r *rand.Rand) (login, sender string)
	allowed bool
	rule    string
}

var sendCases = []sendCase{
	{"account-self", func(s dirgen.Size, r *rand.Rand) (string, string) {
		a := s.Account(r.IntN(s.Accounts))
		return a, a
	}, true, RuleAccount},
	{"alias-member", func(s dirgen.Size, r *rand.Rand) (string, string) {
		i := r.IntN(s.Aliases)
		return s.Account((i + r.IntN(2)) % s.Accounts), s.Alias(i)
	}, true, RuleAlias},
	{"send-as", func(s dirgen.Size, r *rand.Rand) (string, string) {
		i := r.IntN(s.Grants)
		return s.Account(i % s.Accounts), s.GrantSender(i)
	}, true, RuleSendAs},
	{"extension", func(s dirgen.Size, r *rand.Rand) (string, string) {
		a := s.Account(r.IntN(s.Accounts))
		return a, withExtDirs(a, fmt.Sprintf("tag%d", r.IntN(1000)))
	}, true, RuleExtension},
	{"regexp", func(s dirgen.Size, r *rand.Rand) (string, string) {
		i := r.IntN(s.Regexps)
		return s.Account(i % s.Accounts), s.RegexpKey(i, r.IntN(100000))
	}, true, RuleRegexp},
	{"denied", func(s dirgen.Size, r *rand.Rand) (string, string) {
		i := r.IntN(s.Accounts)
		return s.Account(i), s.Account((i + 1 + r.IntN(s.Accounts-1)) % s.Accounts)
	}, false, RuleNotOwned},
}

type routeCase struct {
	name   string
	input  func(s dirgen.Size, r *rand.Rand) string
	status RouteStatus
	rule   string // the first rule of the first destination's chain
}

var routeCases = []routeCase{
	{"account", func(s dirgen.Size, r *rand.Rand) string { return s.Account(r.IntN(s.Accounts)) }, Deliver, RuleAccount},
	{"alias", func(s dirgen.Size, r *rand.Rand) string { return s.Alias(r.IntN(s.Aliases)) }, Deliver, RuleAlias},
	{"extension", func(s dirgen.Size, r *rand.Rand) string {
		return withExtDirs(s.Account(r.IntN(s.Accounts)), fmt.Sprintf("tag%d", r.IntN(1000)))
	}, Deliver, RuleExtension},
	{"catch-all", func(s dirgen.Size, r *rand.Rand) string {
		return s.CatchAll(r.IntN(s.CatchAlls), r.IntN(1_000_000))
	}, Deliver, RuleCatchAll},
	{"regexp", func(s dirgen.Size, r *rand.Rand) string {
		return s.RegexpKey(r.IntN(s.Regexps), r.IntN(100000))
	}, Deliver, RuleRegexp},
	{"unknown", func(s dirgen.Size, r *rand.Rand) string {
		return s.CatchAll(s.CatchAlls+r.IntN(s.Domains-s.CatchAlls), r.IntN(1_000_000))
	}, NotFound, ""},
}

func BenchmarkMaySend(b *testing.B) {
	for _, sz := range benchSizes {
		if sz.large && os.Getenv("MAILGATE_BENCH_LARGE") != "1" {
			continue
		}
		for _, c := range sendCases {
			if c.rule == RuleRegexp && sz.size.Regexps == 0 {
				continue
			}
			b.Run("size="+sz.name+"/case="+c.name, func(b *testing.B) {
				snap := benchSnapshot(b, sz.name, sz.size)
				r := rand.New(rand.NewPCG(1, 2))
				logins := make([]string, benchInputs)
				senders := make([]string, benchInputs)
				for i := range logins {
					logins[i], senders[i] = c.input(sz.size, r)
				}
				for i := range 100 {
					d := MaySend(snap, logins[i], senders[i])
					if d.Allowed != c.allowed || d.Rule != c.rule {
						b.Fatalf("MaySend(%s, %s) = %v %s, want %v %s", logins[i], senders[i], d.Allowed, d.Rule, c.allowed, c.rule)
					}
				}
				timed(b, func(i int) { MaySend(snap, logins[i], senders[i]) })
			})
		}
	}
}

func BenchmarkRoute(b *testing.B) {
	for _, sz := range benchSizes {
		if sz.large && os.Getenv("MAILGATE_BENCH_LARGE") != "1" {
			continue
		}
		for _, c := range routeCases {
			if c.rule == RuleRegexp && sz.size.Regexps == 0 {
				continue
			}
			b.Run("size="+sz.name+"/case="+c.name, func(b *testing.B) {
				snap := benchSnapshot(b, sz.name, sz.size)
				r := rand.New(rand.NewPCG(1, 2))
				rcpts := make([]string, benchInputs)
				for i := range rcpts {
					rcpts[i] = c.input(sz.size, r)
				}
				for i := range 100 {
					res := Route(snap, rcpts[i])
					rule := ""
					if len(res.Destinations) > 0 {
						rule = res.Destinations[0].Chain[0].Rule
					}
					if res.Status != c.status || rule != c.rule {
						b.Fatalf("Route(%s) = %s %s, want %s %s", rcpts[i], res.Status, rule, c.status, c.rule)
					}
				}
				timed(b, func(i int) { Route(snap, rcpts[i]) })
			})
		}
	}
}

// timed runs call(i % benchInputs) b.N times, timing every call, and reports
// the median and 99th percentile as p50-ns and p99-ns.
func timed(b *testing.B, call func(i int)) {
	b.Helper()
	durs := make([]time.Duration, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		t0 := time.Now()
		call(i % benchInputs)
		durs[i] = time.Since(t0)
	}
	b.StopTimer()
	slices.Sort(durs)
	b.ReportMetric(float64(durs[len(durs)/2].Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(durs[min(len(durs)-1, len(durs)*99/100)].Nanoseconds()), "p99-ns")
}
