package pcretable

import (
	"math/rand/v2"
	"strings"
	"testing"
)

var propChunks = []string{"user", "USER", "@", "dom", "ain", ".example", "a", "B", "1", "x", "é", "admin", "-", "@dom"}

var propPieces = []string{
	".*", "[0-9]+", "(a|b)", "(?:user|admin)", "(dom)?", "[a-z]*", `\.`, "^", "$", `\b`,
	"(?i:USER)", "(?-i:user)", "u?ser", "(?:ain)+", "x{0,2}", "[^@]+", "(?:@dom|@x)",
}

func propPattern(r *rand.Rand) string {
	var b strings.Builder
	for n := 1 + r.IntN(4); n > 0; n-- {
		if r.IntN(2) == 0 {
			c := propChunks[r.IntN(len(propChunks))]
			if c == ".example" {
				c = `\.example`
			}
			b.WriteString(c)
		} else {
			b.WriteString(propPieces[r.IntN(len(propPieces))])
		}
	}
	if r.IntN(8) == 0 {
		b.WriteString("|" + propChunks[r.IntN(len(propChunks))])
	}
	return b.String()
}

func propFlags(r *rand.Rand) string {
	return []string{"", "", "", "i", "A", "iA"}[r.IntN(6)]
}

func propTable(r *rand.Rand) string {
	var b strings.Builder
	depth := 0
	for n := 1 + r.IntN(30); n > 0; n-- {
		switch x := r.IntN(10); {
		case x == 0:
			b.WriteString("if ")
			if r.IntN(4) == 0 {
				b.WriteString("!")
			}
			b.WriteString("/" + propPattern(r) + "/" + propFlags(r) + "\n")
			depth++
		case x == 1 && depth > 0:
			b.WriteString("endif\n")
			depth--
		default:
			if r.IntN(6) == 0 {
				b.WriteString("!")
			}
			b.WriteString("/" + propPattern(r) + "/" + propFlags(r) + " r" + string(rune('a'+r.IntN(26))) + "\n")
		}
	}
	for ; depth > 0; depth-- {
		b.WriteString("endif\n")
	}
	return b.String()
}

func propKey(r *rand.Rand) string {
	var b strings.Builder
	for n := r.IntN(7); n > 0; n-- {
		b.WriteString(propChunks[r.IntN(len(propChunks))])
	}
	return b.String()
}

// TestIndexMatchesSequential checks that the index never changes an answer:
// for random rule sets and keys, Lookup equals rule-by-rule evaluation.
func TestIndexMatchesSequential(t *testing.T) {
	r := rand.New(rand.NewPCG(42, 1))
	tables, n := 0, 1500
	if testing.Short() {
		n = 200
	}
	matched, indexed, total := 0, 0, 0
	for i := 0; i < n; i++ {
		src := propTable(r)
		tab, err := Parse("p.cf", []byte(src))
		if err != nil {
			continue // e.g. a generated quantifier after an assertion
		}
		tables++
		indexed += tab.Len() - len(tab.index.always)
		total += tab.Len()
		for k := 0; k < 60; k++ {
			key := propKey(r)
			m1, ok1 := tab.Lookup(key)
			m2, ok2 := tab.lookupSequential(key)
			if ok1 != ok2 || m1 != m2 {
				t.Fatalf("table:\n%s\nkey %q: indexed %+v %v, sequential %+v %v", src, key, m1, ok1, m2, ok2)
			}
			if ok1 {
				matched++
			}
		}
	}
	if tables < n/2 || matched == 0 || indexed < total/2 {
		t.Fatalf("generator too weak: %d tables parsed, %d matches", tables, matched)
	}
	t.Logf("%d tables, %d of %d rules indexed, %d matching lookups", tables, indexed, total, matched)
}
