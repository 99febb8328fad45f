// Package dirgen writes synthetic docker-mailserver configuration directories
// of a given size, for benchmarks (go test -bench and bench/ scripts).
package dirgen

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
)

// Size says how many entries of each kind to write.
type Size struct {
	Accounts int
	Aliases  int
	Grants   int
	Regexps  int
	Domains  int // accounts and aliases are spread over this many domains
	// CatchAlls is how many domains (d0, d1, …) get a catch-all alias
	// "@dI.example" → the first account of that domain.
	CatchAlls int
}

// Hash is a real SHA512-CRYPT hash (of "mypassword") used for every account.
const Hash = "{SHA512-CRYPT}$6$xhk2X0AAfBxG3KDc$rq9ul79FovObaVCGkZD8Acvv76FIYVxhOS999buqpC38n4US0ZKBZKt9Z6nFQJX2ZBKy6FOId3hQRBXNk7tQg/"

// Domain returns the name of domain i.
func Domain(i int) string { return fmt.Sprintf("d%d.example", i) }

// Account returns the address of account i.
func (s Size) Account(i int) string { return fmt.Sprintf("user%d@%s", i, Domain(i%s.Domains)) }

// Alias returns the address of alias i; its targets are accounts i and i+1.
func (s Size) Alias(i int) string { return fmt.Sprintf("alias%d@%s", i, Domain(i%s.Domains)) }

// GrantSender returns the sender of grant i (an external address), granted
// to account i.
func (s Size) GrantSender(i int) string { return fmt.Sprintf("noreply%d@ext%d.example", i, i%100) }

// RegexpKey returns an address that regexp rule i matches (and only it).
func (s Size) RegexpKey(i, n int) string { return fmt.Sprintf("r%d-%d@%s", i, n, Domain(i%s.Domains)) }

// CatchAll returns an address in domain i that is neither an account nor an
// alias nor matched by a regexp rule: with i < CatchAlls it is delivered by
// the domain's catch-all, otherwise it is unknown.
func (s Size) CatchAll(i, n int) string { return fmt.Sprintf("nobody%d@%s", n, Domain(i%s.Domains)) }

// Write writes the configuration files into dir.
func Write(dir string, s Size) error {
	if s.Domains <= 0 {
		s.Domains = 1
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	files := []struct {
		name string
		n    int
		line func(i int) string
	}{
		{"postfix-accounts.cf", s.Accounts, func(i int) string { return s.Account(i) + "|" + Hash }},
		{"postfix-virtual.cf", s.Aliases + min(s.CatchAlls, s.Domains), func(i int) string {
			if i >= s.Aliases {
				d := i - s.Aliases
				return "@" + Domain(d) + " " + s.Account(d%max(s.Accounts, 1))
			}
			return s.Alias(i) + " " + s.Account(i%max(s.Accounts, 1)) + "," + s.Account((i+1)%max(s.Accounts, 1))
		}},
		{"postfix-send-as.cf", s.Grants, func(i int) string { return s.GrantSender(i) + " " + s.Account(i%max(s.Accounts, 1)) }},
		{"postfix-regexp.cf", s.Regexps, func(i int) string {
			return fmt.Sprintf("/^r%d-[0-9]+@d%d\\.example$/ %s", i, i%s.Domains, s.Account(i%max(s.Accounts, 1)))
		}},
	}
	for _, f := range files {
		if err := writeLines(filepath.Join(dir, f.name), f.n, f.line); err != nil {
			return err
		}
	}
	return nil
}

func writeLines(path string, n int, line func(int) string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	for i := 0; i < n; i++ {
		w.WriteString(line(i))
		w.WriteByte('\n')
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return f.Close()
}
