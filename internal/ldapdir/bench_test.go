package ldapdir

import (
	"slices"
	"testing"
	"time"
)

// latencies records every operation's duration and reports p50 and p99.
type latencies []time.Duration

func (l *latencies) time(f func()) {
	start := time.Now()
	f()
	*l = append(*l, time.Since(start))
}

func (l latencies) report(b *testing.B) {
	if len(l) == 0 {
		return
	}
	slices.Sort(l)
	b.ReportMetric(float64(l[len(l)/2].Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(l[len(l)*99/100].Nanoseconds()), "p99-ns")
}

func benchSources(b *testing.B, run func(b *testing.B, s *Source)) {
	in := needLDAP(b)
	for _, bc := range []struct {
		name string
		ttl  time.Duration
	}{
		{"nocache", 0},
		{"cache", time.Minute},
	} {
		b.Run(bc.name, func(b *testing.B) {
			cfg := in.testConfig()
			cfg.CacheTTL = bc.ttl
			run(b, newSource(b, cfg))
		})
	}
}

func BenchmarkAccount(b *testing.B) {
	benchSources(b, func(b *testing.B, s *Source) {
		a := addr(b, "some.user@localhost.localdomain")
		var lat latencies
		for b.Loop() {
			lat.time(func() {
				if _, ok, err := s.Account(a); !ok || err != nil {
					b.Fatalf("Account = %v, %v", ok, err)
				}
			})
		}
		lat.report(b)
	})
}

func BenchmarkAliases(b *testing.B) {
	benchSources(b, func(b *testing.B, s *Source) {
		k := key(b, "postmaster@localhost.localdomain")
		var lat latencies
		for b.Loop() {
			lat.time(func() {
				if ts, err := s.Aliases(k); len(ts) != 1 || err != nil {
					b.Fatalf("Aliases = %v, %v", ts, err)
				}
			})
		}
		lat.report(b)
	})
}

// BenchmarkAccountParallel: lookups from many goroutines share the pool.
func BenchmarkAccountParallel(b *testing.B) {
	benchSources(b, func(b *testing.B, s *Source) {
		a := addr(b, "some.user@localhost.localdomain")
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, ok, err := s.Account(a); !ok || err != nil {
					b.Errorf("Account = %v, %v", ok, err)
					return
				}
			}
		})
	})
}
