package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/mailgate/mailgate/internal/confedit"
	"github.com/mailgate/mailgate/internal/directory"
	"github.com/mailgate/mailgate/internal/pgstore"
	"github.com/mailgate/mailgate/internal/settings"
)

// The PostgreSQL directory (account_provisioner = postgres): the import and
// export commands, and the store behind load and edit.

// storeTimeout bounds one operation of a command on the database.
const storeTimeout = 2 * time.Minute

func init() {
	register(&command{
		path: "import", args: []string{"DIR"}, flags: []flagSpec{jsonFlag},
		summary: "replace the PostgreSQL directory with the files of a DMS config directory",
		help: `Loads DIR (postfix-accounts.cf, postfix-virtual.cf, postfix-regexp.cf,
postfix-send-as.cf, postfix-send-access.cf, postfix-receive-access.cf,
postfix-aliases.cf; each optional) as mailgate loads a configuration
directory, and refuses it when it has errors. Then, in one transaction, the
content of every table is replaced by the lines of its file (a missing file
empties its table; excluded_domains is kept). Lines with the same key are
merged into one row. The running nodes reload at once (LISTEN/NOTIFY).

The database is the setting database_url (MAILGATE_DATABASE_URL); the schema
is created or migrated on first use. With account_provisioner = postgres,
every other command reads the directory from the database, and the email,
alias and sender commands write it (each command is one transaction,
serialized between nodes).`,
		run: runImport,
	})
	register(&command{
		path: "export", args: []string{"DIR"}, flags: []flagSpec{{"force", "", "overwrite the files of a non-empty DIR"}, jsonFlag},
		summary: "write the PostgreSQL directory as the files of a DMS config directory",
		help: `Writes every table of the database (database_url) as its docker-mailserver
file in DIR, one line per row, atomically; postfix-accounts.cf gets mode
0600, and the file of an empty table is not written (with --force, an
existing one is removed). DIR must be empty or not exist, unless --force.
'mailgate import' of the export gives the same directory. excluded_domains
has no file: set those in the settings of a file-based configuration.`,
		run: runExport,
	})
}

// storeSettings loads the settings (once).
func (c *ctx) storeSettings() (*settings.Settings, bool) {
	if c.setting != nil {
		return c.setting, true
	}
	s, err := settings.Load(c.global.configDir, c.Getenv, c.global.set)
	if err != nil {
		fmt.Fprintf(c.Stderr, "mailgate: settings: %v\n", err)
		return nil, false
	}
	c.setting = s
	return s, true
}

// usesPostgres reports whether the directory is in PostgreSQL
// (account_provisioner = postgres); ok is false, after a message, when the
// settings cannot be loaded.
func (c *ctx) usesPostgres() (pg, ok bool) {
	s, ok := c.storeSettings()
	if !ok {
		return false, false
	}
	return s.AccountProvisioner == "postgres", true
}

// openStore opens the database of database_url (once per command, through
// the command's directory source; Main closes it).
func (c *ctx) openStore() (*pgstore.Store, error) {
	s, ok := c.storeSettings()
	if !ok {
		return nil, errors.New("no settings")
	}
	if s.DatabaseURL == "" {
		return nil, errors.New("the setting database_url (MAILGATE_DATABASE_URL) is empty: it must name the PostgreSQL database, e.g. postgres://mailgate@127.0.0.1:5432/mailgate")
	}
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	return c.source().StoreAt(ctx, s.DatabaseURL)
}

// editStore is editThen on the PostgreSQL directory.
func (c *ctx) editStore(names []string, fn func(docs map[string]*confedit.Doc) ([]confedit.Change, error), after func() error) int {
	store, err := c.openStore()
	if err != nil {
		return c.fail("%v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	changes, err := store.Edit(ctx, names, fn)
	if err != nil {
		return c.fail("%v", err)
	}
	return c.finishEdit(changes, after)
}

// printSummary prints what import or export did: head, then the counts.
func (c *ctx) printSummary(head string, sum pgstore.Summary) {
	if c.json() {
		c.printJSON(sum)
		return
	}
	fmt.Fprintf(c.Stdout, "%s:\n%s", head, sum)
}

func runImport(c *ctx) int {
	st, ok := c.storeSettings()
	if !ok {
		return ExitFail
	}
	dir := c.args[0]
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return c.fail("%s is not a directory", dir)
	}
	store, err := c.openStore()
	if err != nil {
		return c.fail("%v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	sum, err := store.Import(ctx, dir, st)
	if err != nil {
		var le *directory.LoadError
		if errors.As(err, &le) {
			for _, d := range le.Diags {
				fmt.Fprintf(c.Stderr, "mailgate: %s: %s\n", d.Severity, d.Error())
			}
			return c.fail("%s has errors: nothing was imported", dir)
		}
		return c.fail("%v", err)
	}
	c.printSummary(fmt.Sprintf("imported %s into %s", dir, store), sum)
	return ExitOK
}

func runExport(c *ctx) int {
	dir := c.args[0]
	if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 && c.flags["force"] != "true" {
		var names []string
		for i, e := range entries {
			if i == 3 {
				names = append(names, "…")
				break
			}
			names = append(names, e.Name())
		}
		return c.fail("%s is not empty (%s): use --force to overwrite its files", dir, strings.Join(names, ", "))
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return c.fail("%v", err)
	}
	store, err := c.openStore()
	if err != nil {
		return c.fail("%v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	sum, err := store.ExportSummary(ctx, dir)
	if err != nil {
		return c.fail("%v", err)
	}
	c.printSummary(fmt.Sprintf("exported %s to %s", store, dir), sum)
	return ExitOK
}
