package pcretable

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzParseLookup: Parse and Lookup never panic, every error is a
// *ParseError naming a line of the input, a Lookup answer comes from an
// existing rule, and the index agrees with sequential evaluation.
// Seeds: testdata/fuzz/FuzzParseLookup plus every table of the corpora.
func FuzzParseLookup(f *testing.F) {
	for _, dir := range []string{"testdata/differential", "testdata/invalid"} {
		paths, _ := filepath.Glob(filepath.Join(dir, "*.txtar"))
		for _, p := range paths {
			data, err := os.ReadFile(p)
			if err != nil {
				f.Fatal(err)
			}
			_, files := parseTxtar(data)
			for _, tf := range files {
				if filepath.Ext(tf.name) == ".cf" {
					f.Add(decodeTable(tf.data), "user@example.com")
				}
			}
		}
	}
	f.Fuzz(func(t *testing.T, data []byte, key string) {
		tab, err := Parse("f.cf", data)
		if err != nil {
			if tab != nil {
				t.Fatal("table and error")
			}
			lines := bytes.Count(data, []byte("\n")) + 1
			j, ok := err.(interface{ Unwrap() []error })
			if !ok {
				t.Fatalf("not a joined error: %T", err)
			}
			for _, e := range j.Unwrap() {
				var pe *ParseError
				if !errors.As(e, &pe) || pe.File != "f.cf" || pe.Line < 1 || pe.Line > lines {
					t.Fatalf("bad error %v (%d lines)", e, lines)
				}
			}
			return
		}
		rules := tab.Rules()
		if len(rules) != tab.Len() {
			t.Fatal("Len != len(Rules)")
		}
		for _, k := range []string{key, "user@example.com", ""} {
			m, ok := tab.Lookup(k)
			m2, ok2 := tab.lookupSequential(k)
			if ok != ok2 || m != m2 {
				t.Fatalf("key %q: indexed %+v %v, sequential %+v %v", k, m, ok, m2, ok2)
			}
			if !ok {
				continue
			}
			found := false
			for _, r := range rules {
				if r.Line == m.Line && r.Rule == m.Rule {
					found = true
					if r.Negated && m.Result != tab.rules[indexOfLine(tab, m.Line)].literal {
						t.Fatalf("negated rule result %q", m.Result)
					}
				}
			}
			if !found {
				t.Fatalf("match %+v from no rule", m)
			}
		}
	})
}

func indexOfLine(t *Table, line int) int {
	for i, r := range t.rules {
		if r.line == line {
			return i
		}
	}
	return -1
}
