package pcretable

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// postmap runs the real Postfix postmap(1) for the differential tests.
type postmap struct {
	bin  string
	conf string // directory holding a minimal main.cf
}

var (
	postmapOnce sync.Once
	postmapBin  string
	postmapErr  error
)

// needPostmap returns a postmap runner, or skips the test when postmap is
// not installed. Under CI=true a missing postmap fails the test instead.
func needPostmap(t testing.TB) *postmap {
	t.Helper()
	postmapOnce.Do(func() { postmapBin, postmapErr = lookPostmap() })
	if postmapErr != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true but %v", postmapErr)
		}
		t.Skipf("skipping differential test: %v", postmapErr)
	}
	conf := t.TempDir()
	// A minimal configuration so that postmap works on a machine where
	// /etc/postfix/main.cf does not exist. It is empty on purpose: with
	// compatibility_level 0, smtputf8_enable is off, so Postfix neither
	// refuses non-UTF-8 keys nor non-UTF-8 results and PCRE's plain byte
	// semantics are compared (see the package documentation).
	if err := os.WriteFile(filepath.Join(conf, "main.cf"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	pm := &postmap{bin: postmapBin, conf: conf}
	// Check that the pcre map type is available.
	f := filepath.Join(conf, "probe.cf")
	if err := os.WriteFile(f, []byte("/^probe$/ ok\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	res, stderr, err := pm.query(f, []string{"probe"})
	if err != nil || res[0] != "ok" {
		msg := fmt.Sprintf("postmap cannot query pcre tables (is postfix-pcre installed?): %v %s", err, stderr)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return pm
}

// lookPostmap finds postmap: $PCRETABLE_POSTMAP if set, else in PATH or in
// the usual sbin directories (which a non-root PATH may lack).
func lookPostmap() (string, error) {
	if p := os.Getenv("PCRETABLE_POSTMAP"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("PCRETABLE_POSTMAP: %v", err)
		}
		return p, nil
	}
	for _, cand := range []string{"postmap", "/usr/sbin/postmap", "/usr/local/sbin/postmap"} {
		if p, err := exec.LookPath(cand); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("postmap not found (install postfix and postfix-pcre)")
}

// query looks up every key with "postmap -q - pcre:FILE" (keys containing
// a tab, which would make that output ambiguous, with "postmap -q KEY"). It
// returns, per key index, the value of the found keys; absent keys are not
// in the map. No key may contain a newline.
func (pm *postmap) query(file string, keys []string) (map[int]string, string, error) {
	abs, err := filepath.Abs(file)
	if err != nil {
		return nil, "", err
	}
	res := map[int]string{}
	var (
		in      bytes.Buffer
		batch   []int // indices of the keys in the batch
		stderrs strings.Builder
	)
	for i, k := range keys {
		if strings.Contains(k, "\n") {
			return nil, "", fmt.Errorf("key %q contains a newline", k)
		}
		if strings.Contains(k, "\t") {
			out, stderr, found, err := pm.run(abs, nil, "-q", k)
			stderrs.WriteString(stderr)
			if err != nil {
				return nil, stderrs.String(), err
			}
			if found {
				res[i] = strings.TrimSuffix(out, "\n")
			}
			continue
		}
		in.WriteString(k)
		in.WriteByte('\n')
		batch = append(batch, i)
	}
	out, stderr, _, err := pm.run(abs, &in, "-q", "-")
	stderrs.WriteString(stderr)
	if err != nil {
		return nil, stderrs.String(), err
	}
	lines := strings.Split(out, "\n")
	if len(lines) > 0 && lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	// Output lines are "key\tvalue" for found keys, in input order. A value
	// cannot contain a newline (a logical line has none).
	li := 0
	for _, ki := range batch {
		k := keys[ki]
		if li < len(lines) && strings.HasPrefix(lines[li], k+"\t") {
			res[ki] = lines[li][len(k)+1:]
			li++
		}
	}
	if li != len(lines) {
		return nil, stderrs.String(), fmt.Errorf("could not attribute postmap output line %q", lines[li])
	}
	return res, stderrs.String(), nil
}

// run runs postmap -c CONF ARGS... pcre:FILE; found is false for exit
// status 1 (not found).
func (pm *postmap) run(file string, stdin *bytes.Buffer, args ...string) (stdout, stderr string, found bool, err error) {
	args = append([]string{"-c", pm.conf}, args...)
	args = append(args, "pcre:"+file)
	cmd := exec.Command(pm.bin, args...)
	if stdin != nil {
		cmd.Stdin = stdin
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	found = err == nil
	if ee, ok := err.(*exec.ExitError); ok && ee.ExitCode() == 1 {
		err = nil
	}
	if err != nil {
		err = fmt.Errorf("postmap: %v: %s", err, errb.String())
	}
	return out.String(), errb.String(), found, err
}

var warnLineRE = regexp.MustCompile(`, line (\d+):`)

// warningLines returns the line numbers named in postmap's warnings.
func warningLines(stderr string) []int {
	var out []int
	for _, m := range warnLineRE.FindAllStringSubmatch(stderr, -1) {
		n, _ := strconv.Atoi(m[1])
		out = append(out, n)
	}
	return out
}
