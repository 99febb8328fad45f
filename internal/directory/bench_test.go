package directory

// BenchmarkLoad measures Load over a generated directory (see
// docs/performance.md and bench/engine.sh):
//
//	go test -run '^$' -bench Load ./internal/directory
//	MAILGATE_BENCH_LARGE=1 go test -run '^$' -bench Load -benchtime 3x ./internal/directory   # also 1M + 1M
//
// Besides ns/op, B/op and allocs/op it reports live-MB: the heap still in use
// after a collection with the snapshot alive. Peak RSS of a whole process is
// measured by bench/load.sh.

import (
	"os"
	"runtime"
	"testing"

	"github.com/mailgate/mailgate/internal/dirgen"
	"github.com/mailgate/mailgate/internal/settings"
)

func BenchmarkLoad(b *testing.B) {
	sizes := []struct {
		name  string
		size  dirgen.Size
		large bool
	}{
		{"100k", dirgen.Size{Accounts: 100_000, Aliases: 100_000, Grants: 10_000, Regexps: 1_000, Domains: 100, CatchAlls: 50}, false},
		{"1M", dirgen.Size{Accounts: 1_000_000, Aliases: 1_000_000, Grants: 10_000, Regexps: 1_000, Domains: 100, CatchAlls: 50}, true},
	}
	for _, sz := range sizes {
		if sz.large && os.Getenv("MAILGATE_BENCH_LARGE") != "1" {
			continue
		}
		// The parent benchmark runs once: generate here, iterate in b.Run.
		dir := b.TempDir()
		if err := dirgen.Write(dir, sz.size); err != nil {
			b.Fatal(err)
		}
		s, err := settings.Load(dir, func(string) (string, bool) { return "", false },
			map[string]string{"hostname": "mail.example.test"})
		if err != nil {
			b.Fatal(err)
		}
		b.Run("size="+sz.name, func(b *testing.B) {
			b.ReportAllocs()
			var snap *Snapshot
			for range b.N {
				snap, err = Load(dir, s)
				if err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			if len(snap.Accounts) != sz.size.Accounts || len(snap.Aliases) != sz.size.Aliases+sz.size.CatchAlls {
				b.Fatalf("loaded %d accounts and %d aliases", len(snap.Accounts), len(snap.Aliases))
			}
			snap = nil
			runtime.GC()
			var before runtime.MemStats
			runtime.ReadMemStats(&before)
			snap, _ = Load(dir, s)
			runtime.GC()
			var after runtime.MemStats
			runtime.ReadMemStats(&after)
			runtime.KeepAlive(snap)
			b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/(1<<20), "live-MB")
		})
	}
}
