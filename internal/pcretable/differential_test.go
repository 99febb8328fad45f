package pcretable

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// The differential corpus lives in testdata/differential/*.txtar. Each
// archive holds tables and their keys:
//
//	-- NAME.cf --     a pcre table, verbatim except that "<CR>" stands for a
//	                  carriage return and a final "<NOEOL>" removes the
//	                  last newline
//	-- NAME.keys --   one lookup key per line ("<EMPTY>" is the empty key,
//	                  "<TAB>" a tab)
//	-- NAME.want --   what Postfix answered, "key\tvalue" per found key, with
//	                  "<TAB>", "<CR>" and "<EMPTY>" as above
//	                  (regenerate with: go test -run TestDifferential -update)
//
// With postmap installed, every (table, key) pair is looked up with
// "postmap -q - pcre:FILE" and with Lookup, and the answers must be equal
// byte for byte (and equal to the recorded .want). Without postmap the
// recorded answers are used (under CI=true a missing postmap is a failure).
//
// testdata/invalid/*.txtar hold tables that must be rejected. Each table's
// leading comment lines say what is expected:
//
//	# want LINE: TEXT     Parse must return an error "postfix-regexp.cf:LINE: ...TEXT..."
//	# postfix: warns      Postfix must warn, and every line it names must be
//	                      among our error lines
//	# postfix: accepts    Postfix accepts it silently (a deliberate rejection:
//	                      a construct Go cannot evaluate identically)

var update = flag.Bool("update", false, "rewrite the .want sections of the differential corpus from postmap")

type txtarFile struct {
	name string
	data []byte
}

// parseTxtar reads a minimal txtar archive: "-- NAME --" lines start files.
func parseTxtar(data []byte) (comment []byte, files []txtarFile) {
	lines := bytes.SplitAfter(data, []byte("\n"))
	cur := -1
	for _, l := range lines {
		t := bytes.TrimRight(l, "\n")
		if bytes.HasPrefix(t, []byte("-- ")) && bytes.HasSuffix(t, []byte(" --")) && len(t) > 6 {
			files = append(files, txtarFile{name: string(t[3 : len(t)-3])})
			cur = len(files) - 1
			continue
		}
		if cur < 0 {
			comment = append(comment, l...)
		} else {
			files[cur].data = append(files[cur].data, l...)
		}
	}
	return comment, files
}

func formatTxtar(comment []byte, files []txtarFile) []byte {
	var b bytes.Buffer
	b.Write(comment)
	for _, f := range files {
		fmt.Fprintf(&b, "-- %s --\n", f.name)
		b.Write(f.data)
		if len(f.data) > 0 && f.data[len(f.data)-1] != '\n' {
			b.WriteByte('\n')
		}
	}
	return b.Bytes()
}

func decodeTable(data []byte) []byte {
	data = bytes.ReplaceAll(data, []byte("<CR>"), []byte("\r"))
	if bytes.HasSuffix(data, []byte("<NOEOL>\n")) {
		data = data[:len(data)-len("<NOEOL>\n")]
	}
	return data
}

func decodeKeys(data []byte) []string {
	var keys []string
	for _, l := range strings.Split(strings.TrimSuffix(string(data), "\n"), "\n") {
		if l == "<EMPTY>" {
			l = ""
		}
		keys = append(keys, strings.ReplaceAll(l, "<TAB>", "\t"))
	}
	return keys
}

type diffCase struct {
	archive string
	name    string
	table   []byte
	keys    []string
	want    map[string]string // recorded Postfix answers, nil if absent
	wantIdx int               // index of the .want file in the archive, -1
}

func loadDiffCorpus(t *testing.T) (map[string][]txtarFile, map[string][]byte, []*diffCase) {
	paths, err := filepath.Glob("testdata/differential/*.txtar")
	if err != nil || len(paths) == 0 {
		t.Fatalf("no differential corpus: %v", err)
	}
	archives := map[string][]txtarFile{}
	comments := map[string][]byte{}
	var cases []*diffCase
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		comment, files := parseTxtar(data)
		archives[p], comments[p] = files, comment
		byName := map[string]*diffCase{}
		var order []string
		for i, f := range files {
			base, ext := strings.TrimSuffix(f.name, filepath.Ext(f.name)), filepath.Ext(f.name)
			c := byName[base]
			if c == nil {
				c = &diffCase{archive: p, name: base, wantIdx: -1}
				byName[base] = c
				order = append(order, base)
			}
			switch ext {
			case ".cf":
				c.table = decodeTable(f.data)
			case ".keys":
				c.keys = decodeKeys(f.data)
			case ".want":
				c.wantIdx = i
				c.want = map[string]string{}
				for _, l := range strings.Split(strings.TrimSuffix(string(f.data), "\n"), "\n") {
					if l == "" {
						continue
					}
					k, v, ok := strings.Cut(l, "\t")
					if !ok {
						t.Fatalf("%s: %s: bad want line %q", p, f.name, l)
					}
					if k == "<EMPTY>" {
						k = ""
					}
					c.want[strings.ReplaceAll(k, "<TAB>", "\t")] = strings.NewReplacer("<CR>", "\r", "<TAB>", "\t").Replace(v)
				}
			default:
				t.Fatalf("%s: unexpected file %s", p, f.name)
			}
		}
		for _, n := range order {
			c := byName[n]
			if c.table == nil || c.keys == nil {
				t.Fatalf("%s: %s needs a .cf and a .keys section", p, n)
			}
			cases = append(cases, c)
		}
	}
	return archives, comments, cases
}

func TestDifferential(t *testing.T) {
	archives, comments, cases := loadDiffCorpus(t)
	var pm *postmap
	if *update || os.Getenv("CI") == "true" {
		pm = needPostmap(t)
	} else if _, err := lookPostmap(); err == nil {
		pm = needPostmap(t)
	} else {
		t.Logf("postmap not installed: comparing with the recorded Postfix answers only")
	}
	dir := t.TempDir()
	pairs := 0
	for ci, c := range cases {
		tab, err := Parse("postfix-regexp.cf", c.table)
		if err != nil {
			t.Errorf("%s: %s: Parse: %v", c.archive, c.name, err)
			continue
		}
		got := map[string]string{}
		for _, k := range c.keys {
			if m, ok := tab.Lookup(k); ok {
				got[k] = m.Result
			}
			// The index must agree with sequential evaluation.
			m1, ok1 := tab.Lookup(k)
			m2, ok2 := tab.lookupSequential(k)
			if ok1 != ok2 || m1 != m2 {
				t.Errorf("%s: %s: key %q: indexed %v %+v, sequential %v %+v", c.archive, c.name, k, ok1, m1, ok2, m2)
			}
		}
		pairs += len(c.keys)
		if pm != nil {
			f := filepath.Join(dir, fmt.Sprintf("t%d.cf", ci))
			if err := os.WriteFile(f, c.table, 0o644); err != nil {
				t.Fatal(err)
			}
			res, stderr, err := pm.query(f, c.keys)
			if err != nil {
				t.Errorf("%s: %s: %v", c.archive, c.name, err)
				continue
			}
			if s := dropXWarnings(stderr); s != "" {
				t.Errorf("%s: %s: Postfix warns about a table we accept:\n%s", c.archive, c.name, s)
			}
			pf := map[string]string{}
			for i, v := range res {
				pf[c.keys[i]] = v
			}
			for _, k := range c.keys {
				pv, pok := pf[k]
				gv, gok := got[k]
				if pok != gok || pv != gv {
					t.Errorf("%s: %s: key %q: postmap found=%v %q, Lookup found=%v %q", c.archive, c.name, k, pok, pv, gok, gv)
				}
			}
			if *update {
				var b strings.Builder
				for _, k := range c.keys {
					if v, ok := pf[k]; ok {
						if k == "" {
							k = "<EMPTY>"
						}
						enc := strings.NewReplacer("\r", "<CR>", "\t", "<TAB>")
						fmt.Fprintf(&b, "%s\t%s\n", enc.Replace(k), enc.Replace(v))
					}
				}
				files := archives[c.archive]
				if c.wantIdx >= 0 {
					files[c.wantIdx].data = []byte(b.String())
				} else {
					files = append(files, txtarFile{name: c.name + ".want", data: []byte(b.String())})
					c.wantIdx = len(files) - 1
					archives[c.archive] = files
				}
				continue
			}
		}
		if c.want == nil {
			t.Errorf("%s: %s: no recorded .want (run go test -run TestDifferential -update with postmap installed)", c.archive, c.name)
			continue
		}
		for _, k := range c.keys {
			wv, wok := c.want[k]
			gv, gok := got[k]
			if wok != gok || wv != gv {
				t.Errorf("%s: %s: key %q: recorded Postfix answer found=%v %q, Lookup found=%v %q", c.archive, c.name, k, wok, wv, gok, gv)
			}
		}
	}
	if *update {
		for p, files := range archives {
			// Keep .want sections right after their .keys section.
			sortSections(files)
			if err := os.WriteFile(p, formatTxtar(comments[p], files), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Logf("%d tables, %d (table, key) pairs", len(cases), pairs)
	if pairs < 200 {
		t.Errorf("differential corpus has only %d pairs, want at least 200", pairs)
	}
}

// sortSections orders sections by case (in first appearance order), then
// .cf, .keys, .want.
func sortSections(files []txtarFile) {
	first := map[string]int{}
	for i, f := range files {
		base := strings.TrimSuffix(f.name, filepath.Ext(f.name))
		if _, ok := first[base]; !ok {
			first[base] = i
		}
	}
	rank := map[string]int{".cf": 0, ".keys": 1, ".want": 2}
	sort.SliceStable(files, func(i, j int) bool {
		bi := strings.TrimSuffix(files[i].name, filepath.Ext(files[i].name))
		bj := strings.TrimSuffix(files[j].name, filepath.Ext(files[j].name))
		if first[bi] != first[bj] {
			return first[bi] < first[bj]
		}
		return rank[filepath.Ext(files[i].name)] < rank[filepath.Ext(files[j].name)]
	})
}

var (
	wantRE    = regexp.MustCompile(`(?m)^# want (\d+): (.*)$`)
	postfixRE = regexp.MustCompile(`(?m)^# postfix: (warns|accepts)\s*$`)
)

func TestInvalidCorpus(t *testing.T) {
	paths, err := filepath.Glob("testdata/invalid/*.txtar")
	if err != nil || len(paths) == 0 {
		t.Fatalf("no invalid corpus: %v", err)
	}
	var pm *postmap
	if os.Getenv("CI") == "true" {
		pm = needPostmap(t)
	} else if _, err := lookPostmap(); err == nil {
		pm = needPostmap(t)
	}
	dir := t.TempDir()
	n := 0
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		_, files := parseTxtar(data)
		for fi, f := range files {
			n++
			table := decodeTable(f.data)
			name := p + ": " + f.name
			wants := wantRE.FindAllSubmatch(f.data, -1)
			pfm := postfixRE.FindSubmatch(f.data)
			if len(wants) == 0 || pfm == nil {
				t.Errorf("%s: needs '# want LINE: TEXT' and '# postfix: warns|accepts' lines", name)
				continue
			}
			tab, perr := Parse("postfix-regexp.cf", table)
			if perr == nil || tab != nil {
				t.Errorf("%s: Parse accepted an invalid table", name)
				continue
			}
			ourLines := map[int]bool{}
			var list []error
			if j, ok := perr.(interface{ Unwrap() []error }); ok {
				list = j.Unwrap()
			} else {
				list = []error{perr}
			}
			for _, e := range list {
				var pe *ParseError
				if !errors.As(e, &pe) {
					t.Errorf("%s: error %v is not a *ParseError", name, e)
					continue
				}
				if pe.File != "postfix-regexp.cf" {
					t.Errorf("%s: error names file %q", name, pe.File)
				}
				ourLines[pe.Line] = true
			}
			for _, w := range wants {
				prefix := "postfix-regexp.cf:" + string(w[1]) + ": "
				found := false
				for _, e := range list {
					if s := e.Error(); strings.HasPrefix(s, prefix) && strings.Contains(s, string(w[2])) {
						found = true
					}
				}
				if !found {
					t.Errorf("%s: want an error %q...%q, got:\n%v", name, prefix, w[2], perr)
				}
			}
			if pm == nil {
				continue
			}
			file := filepath.Join(dir, fmt.Sprintf("inv%d.cf", fi))
			if err := os.WriteFile(file, table, 0o644); err != nil {
				t.Fatal(err)
			}
			_, stderr, err := pm.query(file, []string{"a", "user@example.com", "x"})
			if err != nil {
				t.Errorf("%s: %v", name, err)
				continue
			}
			stderr = dropXWarnings(stderr)
			switch string(pfm[1]) {
			case "warns":
				if stderr == "" {
					t.Errorf("%s: marked 'postfix: warns' but postmap printed no warning", name)
				}
				pfLines := map[int]bool{}
				for _, l := range warningLines(stderr) {
					pfLines[l] = true
					if !ourLines[l] {
						t.Errorf("%s: Postfix warns about line %d, we report no error there:\n%s\nours:\n%v", name, l, stderr, perr)
					}
				}
				// Conversely every expected error line is one Postfix warns
				// about, unless its warning names no line (readllines).
				for _, w := range wants {
					l, _ := strconv.Atoi(string(w[1]))
					if !pfLines[l] && !strings.Contains(stderr, "logical line must not start with whitespace") {
						t.Errorf("%s: we expect an error at line %d but Postfix does not warn about it:\n%s", name, l, stderr)
					}
				}
			case "accepts":
				if stderr != "" {
					t.Errorf("%s: marked 'postfix: accepts' but postmap warns:\n%s", name, stderr)
				}
			}
		}
	}
	t.Logf("%d invalid tables", n)
}
