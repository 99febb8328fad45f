package pcretable

import (
	"fmt"
	"strings"
	"testing"
)

// benchTable is 1,000 rules of the form the brief describes, one per domain.
func benchTable(tb testing.TB, n int) *Table {
	tb.Helper()
	var b strings.Builder
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "/^user[0-9]+@domain%d\\.example$/ target%d@x\n", i, i)
	}
	tab, err := Parse("postfix-regexp.cf", []byte(b.String()))
	if err != nil {
		tb.Fatal(err)
	}
	return tab
}

func BenchmarkLookup(b *testing.B) {
	tab := benchTable(b, 1000)
	b.Run("hit", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if m, ok := tab.Lookup("user42@domain123.example"); !ok || m.Result != "target123@x" {
				b.Fatal("no hit", m)
			}
		}
	})
	b.Run("hit-last", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, ok := tab.Lookup("user42@domain999.example"); !ok {
				b.Fatal("no hit")
			}
		}
	})
	b.Run("miss", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, ok := tab.Lookup("user42@domain1234.example"); ok {
				b.Fatal("hit")
			}
		}
	})
	b.Run("miss-unrelated", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, ok := tab.Lookup("someone@elsewhere.example.org"); ok {
				b.Fatal("hit")
			}
		}
	})
	b.Run("substitution", func(b *testing.B) {
		var sb strings.Builder
		for i := 0; i < 1000; i++ {
			fmt.Fprintf(&sb, "/^(user[0-9]+)@domain%d\\.example$/ $1@target%d.example\n", i, i)
		}
		tab, err := Parse("postfix-regexp.cf", []byte(sb.String()))
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if m, ok := tab.Lookup("user42@domain123.example"); !ok || m.Result != "user42@target123.example" {
				b.Fatal("no hit", m)
			}
		}
	})
	b.Run("sequential-miss", func(b *testing.B) {
		// For comparison: evaluating every rule, as Postfix does.
		b.ReportAllocs()
		for b.Loop() {
			if _, ok := tab.lookupSequential("user42@domain1234.example"); ok {
				b.Fatal("hit")
			}
		}
	})
}

func BenchmarkParse(b *testing.B) {
	var sb strings.Builder
	for i := 0; i < 1000; i++ {
		fmt.Fprintf(&sb, "/^user[0-9]+@domain%d\\.example$/ target%d@x\n", i, i)
	}
	data := []byte(sb.String())
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse("postfix-regexp.cf", data); err != nil {
			b.Fatal(err)
		}
	}
}

// TestLookupFast checks the ≤ 20 µs budget with a generous margin for slow
// or loaded machines (the race detector makes everything much slower).
func TestLookupFast(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("timing test")
	}
	tab := benchTable(t, 1000)
	res := testing.Benchmark(func(b *testing.B) {
		for b.Loop() {
			tab.Lookup("user42@domain123.example")
			tab.Lookup("user42@domain1234.example")
		}
	})
	if per := res.NsPerOp() / 2; per > 20000 {
		t.Errorf("Lookup takes %d ns with 1,000 rules, want ≤ 20,000", per)
	}
}
