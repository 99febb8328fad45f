package cli

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/term"

	"github.com/mailgate/mailgate/internal/address"
	"github.com/mailgate/mailgate/internal/confedit"
	"github.com/mailgate/mailgate/internal/conffile"
	"github.com/mailgate/mailgate/internal/passwd"
)

// Management commands (SPEC §7): every argument is validated before
// anything is written; edits run under the configuration directory's lock and
// replace each file atomically (package confedit).

func init() {
	register(&command{
		path: "email add", args: []string{"ADDRESS"}, optArgs: []string{"PASSWORD"},
		summary: "add an account (password from stdin when omitted)",
		help: `The password is hashed as {SHA512-CRYPT}. Without PASSWORD it is read from
standard input: one line for scripts, or a prompt without echo on a
terminal. The address is stored in canonical form (lowercase, IDNA A-label).`,
		run: runEmailAdd,
	})
	register(&command{
		path: "email update", args: []string{"ADDRESS"}, optArgs: []string{"PASSWORD"},
		summary: "change the password of an account (the third field is kept)",
		run:     runEmailUpdate,
	})
	register(&command{
		path: "email del", args: []string{"ADDRESS"}, optArgs: []string{"ADDRESS…"}, variadic: true,
		flags:   []flagSpec{{"y", "", "also remove the mailbox directory under the data directory"}},
		summary: "delete accounts, and remove them from alias targets and send-as grants",
		help: `Every ADDRESS must be an account: if one is not, nothing is changed. The
lines changed in postfix-virtual.cf, postfix-send-as.cf and the access files
are listed. With -y the mailbox directory DATA/mail/DOMAIN/LOCAL is removed.`,
		run: runEmailDel,
	})
	register(&command{
		path: "email list", flags: []flagSpec{jsonFlag},
		summary: "list the accounts",
		run:     runEmailList,
	})
	for _, op := range []string{"add", "del"} {
		op := op
		register(&command{
			path: "email restrict " + op, args: []string{"send|receive", "ADDRESS"},
			summary: map[string]string{"add": "forbid ADDRESS to send or to receive", "del": "lift a send or receive restriction"}[op],
			help: `send: postfix-send-access.cf — the address may not be used as a sender, and an
account listed there may not send at all. receive: postfix-receive-access.cf
— mail to the address is refused (554 5.7.1).`,
			run: func(c *ctx) int { return runRestrict(c, op) },
		})
	}
	register(&command{
		path: "email restrict list", args: []string{"send|receive"}, flags: []flagSpec{jsonFlag},
		summary: "list the restricted addresses",
		run:     runRestrictList,
	})
	register(&command{
		path: "alias add", args: []string{"ALIAS", "RECIPIENT[,RECIPIENT…]"},
		summary: "add recipients to an alias (ALIAS is an address or @domain)",
		help: `Recipients are added to the alias's existing line, or a new line is written.
An address may be both an account and an alias: "alias add u@d u@d,me@x.example"
keeps a copy in u@d's mailbox and forwards.`,
		run: runAliasAdd,
	})
	register(&command{
		path: "alias del", args: []string{"ALIAS", "RECIPIENT"},
		summary: "remove one recipient from an alias (the line goes with its last one)",
		run:     runAliasDel,
	})
	register(&command{
		path: "alias list", flags: []flagSpec{jsonFlag},
		summary: "list the aliases and their recipients",
		run:     runAliasList,
	})
	register(&command{
		path: "sender add", args: []string{"SENDER", "LOGIN[,LOGIN…]"},
		summary: "let logins send as SENDER (an address or @domain)",
		help: `Writes postfix-send-as.cf. A grant affects sending only: it does not route
mail and makes no domain managed.`,
		run: runSenderAdd,
	})
	register(&command{
		path: "sender del", args: []string{"SENDER", "LOGIN"},
		summary: "withdraw a send-as grant",
		run:     runSenderDel,
	})
	register(&command{
		path: "sender list", flags: []flagSpec{jsonFlag},
		summary: "list the send-as grants",
		run:     runSenderList,
	})
}

// fail prints a message and returns the failure exit status.
func (c *ctx) fail(format string, args ...any) int {
	fmt.Fprintf(c.Stderr, "mailgate: %s: %s\n", c.cmd.path, fmt.Sprintf(format, args...))
	return ExitFail
}

// addrArg validates an address argument (SPEC §1). It says when the input
// was normalized.
func (c *ctx) addrArg(name, s string) (address.Address, bool) {
	if !strings.Contains(s, "@") {
		c.fail("%s %q has no domain part (expected user@domain)", name, s)
		return address.Address{}, false
	}
	a, err := address.Parse(s, address.Options{UTF8Local: true})
	if err == nil {
		err = conffile.CheckWritable(a)
	}
	if err != nil {
		c.fail("%s: %v", name, err)
		return address.Address{}, false
	}
	if a.String() != s {
		fmt.Fprintf(c.Stdout, "note: %s normalized to %s\n", s, a)
	}
	return a, true
}

// accountArg is addrArg plus the rules of a mailbox name: the local part
// becomes a directory name under DATA/mail/DOMAIN/.
func (c *ctx) accountArg(s string) (address.Address, bool) {
	a, ok := c.addrArg("ADDRESS", s)
	if !ok {
		return a, false
	}
	if err := conffile.CheckMailboxName(a); err != nil {
		c.fail("ADDRESS: %v", err)
		return a, false
	}
	return a, true
}

// keyArg validates an alias or sender key: an address or @domain.
func (c *ctx) keyArg(name, s string) (conffile.Key, bool) {
	if !strings.Contains(s, "@") {
		c.fail("%s %q has no domain part (expected user@domain or @domain)", name, s)
		return conffile.Key{}, false
	}
	k, err := conffile.ParseKey(s, false)
	if err == nil && !k.IsCatchAll() {
		err = conffile.CheckWritable(address.Address{Local: k.Local, Domain: k.Domain})
	}
	if err != nil {
		c.fail("%s: %v", name, err)
		return k, false
	}
	if k.String() != s {
		fmt.Fprintf(c.Stdout, "note: %s normalized to %s\n", s, k)
	}
	return k, true
}

// listArg validates a comma-separated list of addresses.
func (c *ctx) listArg(name, s string) ([]address.Address, bool) {
	var out []address.Address
	seen := map[address.Address]bool{}
	for _, part := range strings.Split(s, ",") {
		if part == "" {
			c.fail("%s %q has an empty element", name, s)
			return nil, false
		}
		a, ok := c.addrArg(name, part)
		if !ok {
			return nil, false
		}
		if !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	return out, true
}

// edit runs fn with the lock held on the documents named, then saves the
// changed ones and reports the changes.
func (c *ctx) edit(names []string, fn func(docs map[string]*confedit.Doc) ([]confedit.Change, error)) int {
	return c.editThen(names, fn, nil)
}

// editThen is edit, then runs after (if not nil) with the lock still held.
// With account_provisioner = postgres, the edit is one transaction of the
// database (pgstore.Store.Edit), and after runs once it is committed.
func (c *ctx) editThen(names []string, fn func(docs map[string]*confedit.Doc) ([]confedit.Change, error), after func() error) int {
	if pg, ok := c.usesPostgres(); !ok {
		return ExitFail
	} else if pg {
		return c.editStore(names, fn, after)
	}
	unlock, err := confedit.Lock(c.global.configDir)
	if err != nil {
		return c.fail("%v", err)
	}
	defer unlock()
	docs := map[string]*confedit.Doc{}
	for _, n := range names {
		perm := os.FileMode(0o644)
		if n == conffile.AccountsFile {
			perm = 0o600
		}
		d, err := confedit.ReadDoc(c.global.configDir, n, perm)
		if err != nil {
			return c.fail("%v", err)
		}
		docs[n] = d
	}
	changes, err := fn(docs)
	if err != nil {
		return c.fail("%v", err)
	}
	for _, n := range names {
		if err := docs[n].Save(); err != nil {
			return c.fail("%v", err)
		}
	}
	return c.finishEdit(changes, after)
}

// finishEdit reports the changes of a saved (or committed) edit, then runs
// after, if any.
func (c *ctx) finishEdit(changes []confedit.Change, after func() error) int {
	for _, ch := range changes {
		fmt.Fprintln(c.Stdout, ch)
	}
	if after != nil {
		if err := after(); err != nil {
			return c.fail("%v", err)
		}
	}
	return ExitOK
}

// password returns the password argument, or reads it from standard input:
// one line (without its line ending) from a pipe, or twice without echo from
// a terminal.
func (c *ctx) password() (string, bool) {
	if len(c.args) > 1 {
		if err := passwd.Check(c.args[1]); err != nil {
			c.fail("PASSWORD: %v", err)
			return "", false
		}
		return c.args[1], true
	}
	if f, ok := c.Stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprint(c.Stderr, "Password: ")
		p1, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(c.Stderr)
		if err != nil {
			c.fail("reading the password: %v", err)
			return "", false
		}
		fmt.Fprint(c.Stderr, "Repeat: ")
		p2, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(c.Stderr)
		if err != nil || string(p1) != string(p2) {
			c.fail("the passwords differ")
			return "", false
		}
		return c.checkedPassword(string(p1))
	}
	if c.Stdin == nil {
		c.fail("missing argument PASSWORD (and no standard input)")
		return "", false
	}
	r := bufio.NewReader(io.LimitReader(c.Stdin, passwd.MaxLength+3))
	line, err := r.ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		c.fail("reading the password from standard input: %v", err)
		return "", false
	}
	if rest, _ := r.ReadString(0); rest != "" {
		c.fail("standard input holds more than one line: give the password alone")
		return "", false
	}
	line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
	if line == "" {
		c.fail("missing password: give it as an argument or on standard input")
		return "", false
	}
	return c.checkedPassword(line)
}

func (c *ctx) checkedPassword(p string) (string, bool) {
	if err := passwd.Check(p); err != nil {
		c.fail("%v", err)
		return "", false
	}
	return p, true
}

// accountsInLDAP refuses, with a message, the account commands when the
// accounts live in LDAP (account_provisioner = ldap): mailgate does not write
// the LDAP directory, and postfix-accounts.cf is ignored then.
func (c *ctx) accountsInLDAP() bool {
	s, ok := c.storeSettings()
	if !ok {
		return true
	}
	if s.AccountProvisioner == "ldap" {
		c.fail("the accounts are in LDAP (account_provisioner = ldap, %s): manage them there", s.LDAP.ServerHost)
		return true
	}
	return false
}

func runEmailAdd(c *ctx) int {
	if c.accountsInLDAP() {
		return ExitFail
	}
	a, ok := c.accountArg(c.args[0])
	return c.setPassword(a, ok, confedit.AddAccount)
}

func runEmailUpdate(c *ctx) int {
	if c.accountsInLDAP() {
		return ExitFail
	}
	a, ok := c.addrArg("ADDRESS", c.args[0])
	return c.setPassword(a, ok, confedit.UpdateAccount)
}

// setPassword reads and hashes the password, then writes it with op
// (AddAccount or UpdateAccount).
func (c *ctx) setPassword(a address.Address, ok bool, op func(*confedit.Doc, address.Address, string) ([]confedit.Change, error)) int {
	if !ok {
		return ExitFail
	}
	p, ok := c.password()
	if !ok {
		return ExitFail
	}
	hash, err := passwd.Hash(p)
	if err != nil {
		return c.fail("%v", err)
	}
	return c.edit([]string{conffile.AccountsFile}, func(d map[string]*confedit.Doc) ([]confedit.Change, error) {
		return op(d[conffile.AccountsFile], a, hash)
	})
}

func runEmailDel(c *ctx) int {
	if c.accountsInLDAP() {
		return ExitFail
	}
	var addrs []address.Address
	var dirs []string
	seen := map[address.Address]bool{}
	for _, s := range c.args {
		a, ok := c.addrArg("ADDRESS", s)
		if !ok {
			return ExitFail
		}
		if seen[a] {
			continue
		}
		seen[a] = true
		addrs = append(addrs, a)
		if c.flags["y"] == "true" {
			// Every mailbox path is checked before anything changes.
			dir, err := mailboxDir(c.global.dataDir, a)
			if err != nil {
				return c.fail("%v", err)
			}
			dirs = append(dirs, dir)
		}
	}
	files := []string{conffile.VirtualFile, conffile.SendAsFile, conffile.SendAccessFile, conffile.ReceiveAccessFile, conffile.AccountsFile}
	return c.editThen(files, func(d map[string]*confedit.Doc) ([]confedit.Change, error) {
		var changes []confedit.Change
		// Accounts first, so that a missing one stops everything before any
		// file is written (edit saves only after fn returns).
		for _, a := range addrs {
			ch, err := confedit.DeleteAccount(d[conffile.AccountsFile], a)
			if err != nil {
				return nil, err
			}
			changes = append(changes, ch...)
		}
		for _, a := range addrs {
			changes = append(changes, confedit.RemoveItemEverywhere(d[conffile.VirtualFile], a, true)...)
			changes = append(changes, confedit.RemoveItemEverywhere(d[conffile.SendAsFile], a, false)...)
			for _, f := range []string{conffile.SendAccessFile, conffile.ReceiveAccessFile} {
				if ch, err := confedit.DeleteRestriction(d[f], a); err == nil {
					changes = append(changes, ch...)
				}
			}
		}
		return changes, nil
	}, func() error {
		// With the lock still held: no command can re-create the account
		// in between.
		var errs []error
		for _, dir := range dirs {
			if err := os.RemoveAll(dir); err != nil {
				errs = append(errs, fmt.Errorf("removing mailbox %s: %w", dir, err))
				continue
			}
			fmt.Fprintf(c.Stdout, "removed mailbox directory %s\n", dir)
		}
		return errors.Join(errs...)
	})
}

// mailboxDir is DATA/mail/DOMAIN/LOCAL (the docker-mailserver layout),
// refusing any name that could leave DATA/mail.
func mailboxDir(dataDir string, a address.Address) (string, error) {
	if err := conffile.CheckMailboxName(a); err != nil {
		return "", err
	}
	root := filepath.Join(dataDir, "mail")
	dir := filepath.Join(root, a.Domain, a.Local)
	if rel, err := filepath.Rel(root, dir); err != nil || strings.HasPrefix(rel, "..") || strings.Count(rel, string(filepath.Separator)) != 1 {
		return "", fmt.Errorf("mailbox path of %s leaves %s", a, root)
	}
	return dir, nil
}

func runEmailList(c *ctx) int {
	if c.accountsInLDAP() || !c.load() {
		return ExitFail
	}
	type row struct {
		Address        string   `json:"address"`
		Aliases        []string `json:"aliases"`
		SendRestricted bool     `json:"send_restricted"`
		RecvRestricted bool     `json:"receive_restricted"`
		PasswordScheme string   `json:"password_scheme"`
		Line           int      `json:"line"`
	}
	aliasesOf := map[string][]string{}
	for k, al := range c.snap.Aliases {
		for _, t := range al.Targets {
			aliasesOf[t.Address.String()] = append(aliasesOf[t.Address.String()], k.String())
		}
	}
	rows := []row{}
	for a, acc := range c.snap.Accounts {
		al := aliasesOf[a.String()]
		sort.Strings(al)
		if al == nil {
			al = []string{}
		}
		_, sr := c.snap.SendRestrict[a]
		_, rr := c.snap.RecvRestrict[a]
		rows = append(rows, row{a.String(), al, sr, rr, acc.Scheme(), acc.Pos.Line})
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].Address < rows[j].Address })
	if c.json() {
		c.printJSON(rows)
		return ExitOK
	}
	for _, r := range rows {
		line := r.Address
		if len(r.Aliases) > 0 {
			line += "\taliases: " + strings.Join(r.Aliases, ",")
		}
		if r.SendRestricted {
			line += "\t[send restricted]"
		}
		if r.RecvRestricted {
			line += "\t[receive restricted]"
		}
		fmt.Fprintln(c.Stdout, line)
	}
	return ExitOK
}

func restrictFile(c *ctx, kind string) (string, bool) {
	switch kind {
	case "send":
		return conffile.SendAccessFile, true
	case "receive":
		return conffile.ReceiveAccessFile, true
	}
	fmt.Fprintf(c.Stderr, "mailgate: %s: %q: expected send or receive\n\n%s", c.cmd.path, kind, c.cmd.usage())
	return "", false
}

func runRestrict(c *ctx, op string) int {
	file, ok := restrictFile(c, c.args[0])
	if !ok {
		return ExitUsage
	}
	a, ok := c.addrArg("ADDRESS", c.args[1])
	if !ok {
		return ExitFail
	}
	return c.edit([]string{file}, func(d map[string]*confedit.Doc) ([]confedit.Change, error) {
		if op == "add" {
			return confedit.AddRestriction(d[file], a)
		}
		return confedit.DeleteRestriction(d[file], a)
	})
}

func runRestrictList(c *ctx) int {
	if _, ok := restrictFile(c, c.args[0]); !ok {
		return ExitUsage
	}
	if !c.load() {
		return ExitFail
	}
	m := c.snap.SendRestrict
	if c.args[0] == "receive" {
		m = c.snap.RecvRestrict
	}
	out := []string{}
	for a := range m {
		out = append(out, a.String())
	}
	sort.Strings(out)
	if c.json() {
		c.printJSON(out)
		return ExitOK
	}
	for _, a := range out {
		fmt.Fprintln(c.Stdout, a)
	}
	return ExitOK
}

// listFile describes a "key item[,item…]" file edited by alias and sender.
type listFile struct {
	file          string
	keyArg, item  string // argument names, for messages
	bareKeysAllow bool   // postfix-virtual.cf may hold bare keys (read, never written)
}

var (
	aliasFile  = listFile{conffile.VirtualFile, "ALIAS", "RECIPIENT", true}
	senderFile = listFile{conffile.SendAsFile, "SENDER", "LOGIN", false}
)

// runListEdit is alias/sender add (items: a comma-separated list) and del
// (one item).
func runListEdit(c *ctx, f listFile, add bool) int {
	k, ok := c.keyArg(f.keyArg, c.args[0])
	if !ok {
		return ExitFail
	}
	var items []address.Address
	if add {
		items, ok = c.listArg(f.item, c.args[1])
	} else {
		var a address.Address
		a, ok = c.addrArg(f.item, c.args[1])
		items = []address.Address{a}
	}
	if !ok {
		return ExitFail
	}
	return c.edit([]string{f.file}, func(d map[string]*confedit.Doc) ([]confedit.Change, error) {
		if add {
			return confedit.AddToList(d[f.file], k, items, f.bareKeysAllow)
		}
		return confedit.RemoveFromList(d[f.file], k, items[0], f.bareKeysAllow)
	})
}

func runAliasAdd(c *ctx) int  { return runListEdit(c, aliasFile, true) }
func runAliasDel(c *ctx) int  { return runListEdit(c, aliasFile, false) }
func runSenderAdd(c *ctx) int { return runListEdit(c, senderFile, true) }
func runSenderDel(c *ctx) int { return runListEdit(c, senderFile, false) }

type listRow struct {
	Key     string   `json:"key"`
	Targets []string `json:"targets"`
	Lines   []string `json:"lines"`
}

func (c *ctx) printList(rows []listRow) int {
	sort.Slice(rows, func(i, j int) bool { return rows[i].Key < rows[j].Key })
	if c.json() {
		c.printJSON(rows)
		return ExitOK
	}
	for _, r := range rows {
		fmt.Fprintf(c.Stdout, "%s\t%s\n", r.Key, strings.Join(r.Targets, ","))
	}
	return ExitOK
}

func runAliasList(c *ctx) int {
	if !c.load() {
		return ExitFail
	}
	rows := []listRow{}
	for k, al := range c.snap.Aliases {
		r := listRow{Key: k.String()}
		for _, t := range al.Targets {
			r.Targets = append(r.Targets, t.Address.String())
		}
		for _, p := range al.Lines {
			r.Lines = append(r.Lines, p.String())
		}
		rows = append(rows, r)
	}
	return c.printList(rows)
}

func runSenderList(c *ctx) int {
	if !c.load() {
		return ExitFail
	}
	rows := []listRow{}
	for k, grants := range c.snap.SendAs {
		r := listRow{Key: k.String()}
		for _, g := range grants {
			r.Targets = append(r.Targets, g.Login)
			r.Lines = append(r.Lines, g.Pos.String())
		}
		rows = append(rows, r)
	}
	return c.printList(rows)
}
