package pcretable

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// patGen generates random PCRE patterns over a small alphabet, mixing
// constructs that must agree with Go and constructs that must be rejected.
type patGen struct {
	r     *rand.Rand
	depth int
	small bool // capture-semantics mode: alphabet {a, b}, many groups and quantifiers
}

var smallAtoms = []string{"a", "b", "a", "b", ".", "[ab]", "ab", "ba", "^", "$", `\b`, "(?:)", "()"}

var genAtoms = []string{
	"a", "b", "A", "@", `\.`, ".", "-", "x", "é", `\xe9`, `\x41`, `\101`, " ",
	"[ab]", "[^a]", "[a-c]", "[[:alpha:]]", "[[:upper:]]", "[^[:lower:]]", `[\d.]`, `[\w-]`,
	`[.-@]`, "[é]", `[\xe0-\xff]`, `[^\x80-\xff]`, `[a-c-e]`, `[]a]`, `[^]a]`, `[\]]`, `[\b]`, `[\s]`, `[\S]`,
	`[A-z]`, `[Z-a]`, `[--@]`, `[\x00-\x7f]`, "[k]", "[s]",
	`\d`, `\w`, `\s`, `\W`, `\S`, `\D`, `\-`, `\@`, `\e`, `\t`,
	"]", "}", "{", "a{,2}", "{a", `\Qa.b\E`, `\Q\E`, `\E`,
}

var genRejects = []string{
	`\1`, `(?=a)`, `(?!a)`, `(?<=a)`, `(?>a)`, `a*+`, `\Z`, `\K`, `\G`, `(?#c)`, `\v`, `\h`, `\p{L}`,
	`(?x)`, `\R`, `(*UTF)`, `(?|a)`, `a{1001}`, `\x{100}`, `[[.a.]]`, `(?<1a>a)`, `^*`, `\b+`, `\c`,
}

func (g *patGen) atom() string {
	r := g.r.IntN(100)
	if g.small {
		if r < 50 || g.depth > 3 {
			return smallAtoms[g.r.IntN(len(smallAtoms))]
		}
		g.depth++
		defer func() { g.depth-- }()
		inner := g.alt()
		if g.r.IntN(4) == 0 {
			return "(?:" + inner + ")"
		}
		return "(" + inner + ")"
	}
	switch {
	case r < 55 || g.depth > 3:
		return genAtoms[g.r.IntN(len(genAtoms))]
	case r < 58:
		return genRejects[g.r.IntN(len(genRejects))]
	case r < 68:
		return "^"
	case r < 74:
		return "$"
	case r < 77:
		return `\b`
	case r < 78:
		return `\B`
	default:
		g.depth++
		defer func() { g.depth-- }()
		inner := g.alt()
		switch g.r.IntN(8) {
		case 0:
			return "(?:" + inner + ")"
		case 1:
			return "(?i:" + inner + ")"
		case 2:
			return "(?-i:" + inner + ")"
		case 3:
			return "(?<n" + strconv.Itoa(g.r.IntN(1000)) + ">" + inner + ")"
		default:
			return "(" + inner + ")"
		}
	}
}

var genQuants = []string{"*", "+", "?", "*?", "+?", "??", "{2}", "{0,2}", "{1,}", "{1,3}?", "{0}", "{0,1}"}

func (g *patGen) piece() string {
	a := g.atom()
	if g.r.IntN(3) == 0 || g.small && g.r.IntN(2) == 0 {
		a += genQuants[g.r.IntN(len(genQuants))]
	}
	return a
}

func (g *patGen) seq() string {
	n := g.r.IntN(4)
	var b strings.Builder
	for i := 0; i <= n; i++ {
		if g.r.IntN(12) == 0 {
			b.WriteString([]string{"(?i)", "(?-i)", "(?s)", "(?U)", "(?m)"}[g.r.IntN(5)])
		}
		b.WriteString(g.piece())
	}
	return b.String()
}

func (g *patGen) alt() string {
	s := g.seq()
	for g.r.IntN(4) == 0 || g.small && g.r.IntN(3) == 0 {
		s += "|" + g.seq()
	}
	return s
}

func (g *patGen) flags() string {
	var b strings.Builder
	for _, f := range "imsAEUX" {
		if g.r.IntN(5) == 0 {
			b.WriteRune(f)
		}
	}
	return b.String()
}

var keyAlphabet = []string{"a", "a", "a", "b", "b", "A", "B", "@", ".", "-", "x", "é", "É", "k", "s", " ", "_", "1", "]", "{", "ÿ"}

func randKey(r *rand.Rand) string {
	n := r.IntN(8)
	var b strings.Builder
	for i := 0; i < n; i++ {
		b.WriteString(keyAlphabet[r.IntN(len(keyAlphabet))])
	}
	return b.String()
}

// TestDifferentialRandom compares random patterns with Postfix. The number
// of patterns is PCRETABLE_RANDOM (default 150), the seed PCRETABLE_SEED.
func TestDifferentialRandom(t *testing.T) {
	pm := needPostmap(t)
	n := 150
	if v, err := strconv.Atoi(os.Getenv("PCRETABLE_RANDOM")); err == nil {
		n = v
	}
	if testing.Short() {
		n = 30
	}
	seed := uint64(1)
	if v, err := strconv.ParseUint(os.Getenv("PCRETABLE_SEED"), 10, 64); err == nil {
		seed = v
	}
	dir := t.TempDir()
	type job struct {
		id   int
		file string
		keys []string
	}
	var (
		mu                          sync.Mutex
		accepted, rejected, pfRejct int
		failures                    int
	)
	jobs := make(chan job)
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				data, _ := os.ReadFile(j.file)
				tab, perr := Parse("r.cf", data)
				res, stderr, err := pm.query(j.file, j.keys)
				mu.Lock()
				if err != nil {
					t.Errorf("%s: %v", data, err)
					mu.Unlock()
					continue
				}
				if perr != nil {
					rejected++
					if stderr == "" {
						pfRejct++
						if os.Getenv("PCRETABLE_VERBOSE") != "" {
							t.Logf("we reject, Postfix accepts: %s  (%v)", strings.TrimSpace(string(data)), perr)
						}
					}
					mu.Unlock()
					continue
				}
				accepted++
				stderr = dropXWarnings(stderr)
				if stderr != "" {
					failures++
					t.Errorf("we accept, Postfix warns:\n%s%s", data, stderr)
					mu.Unlock()
					continue
				}
				for ki, k := range j.keys {
					want, wantOK := res[ki]
					got, gotOK := tab.Lookup(k)
					if wantOK != gotOK || got.Result != want {
						failures++
						t.Errorf("table %q key %q: Postfix %v %q, we %v %q", strings.TrimSpace(string(data)), k, wantOK, want, gotOK, got.Result)
					}
				}
				mu.Unlock()
			}
		}()
	}
	r := rand.New(rand.NewPCG(seed, 7))
	for i := 0; i < n; i++ {
		g := &patGen{r: r, small: i%2 == 1}
		pat := g.alt()
		neg := r.IntN(10) == 0
		line := "/" + strings.ReplaceAll(pat, "/", `\/`) + "/" + g.flags()
		if neg {
			line = "!" + line + " NEG"
		} else {
			// Reference as many groups as the pattern may have; the
			// surplus is trimmed below using our own parse when possible.
			line += " R"
			if tab, err := Parse("x", []byte(line+"\n")); err == nil {
				ng := tab.rules[0].re.NumSubexp()
				for k := 1; k <= ng && k <= 9; k++ {
					line += fmt.Sprintf("[$%d]", k)
				}
			}
		}
		f := filepath.Join(dir, fmt.Sprintf("r%d.cf", i))
		if err := os.WriteFile(f, []byte(line+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		keys := map[string]bool{}
		for len(keys) < 25 {
			if g.small {
				k := ""
				for n := r.IntN(8); n > 0; n-- {
					k += string("ab"[r.IntN(2)])
				}
				keys[k] = true
				if len(keys) >= 1<<7 {
					break
				}
				continue
			}
			keys[randKey(r)] = true
		}
		var ks []string
		for k := range keys {
			ks = append(ks, k)
		}
		jobs <- job{id: i, file: f, keys: ks}
	}
	close(jobs)
	wg.Wait()
	t.Logf("%d patterns: %d accepted, %d rejected (%d of them accepted by Postfix), %d mismatches", n, accepted, rejected, pfRejct, failures)
}

// dropXWarnings removes Postfix's warning about the obsolete X flag, which
// this package accepts as the no-op it is with PCRE2.
func dropXWarnings(stderr string) string {
	var keep []string
	for _, l := range strings.SplitAfter(stderr, "\n") {
		if l != "" && !strings.Contains(l, `ignoring obsolete regexp option "X"`) {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "")
}
