// Package cli implements the mailgate command line (SPEC §7): argument
// parsing, the command table, and the human and JSON renderings of the
// answers that package policy gives. cmd/mailgate only calls Main.
//
// Exit status: 0 success or allowed, 1 denied or failed (a message on stderr
// says what and why), 2 usage error (the message names the problem, then the
// usage of the command concerned).
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strings"

	"github.com/mailgate/mailgate/internal/directory"
	"github.com/mailgate/mailgate/internal/dirsource"
	"github.com/mailgate/mailgate/internal/settings"
)

// Exit codes.
const (
	ExitOK    = 0
	ExitFail  = 1
	ExitUsage = 2
)

// Env is the process environment of a command.
type Env struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	Getenv settings.Env // os.LookupEnv in production
}

// flagSpec describes a command flag.
type flagSpec struct {
	name  string // without dashes
	value string // "" for a boolean flag, else the value's name
	help  string
}

// command is a leaf of the command tree.
type command struct {
	path     string // "check send"
	args     []string
	optArgs  []string // optional trailing positional arguments
	variadic bool     // the last optional argument repeats
	flags    []flagSpec
	summary  string
	help     string
	run      func(c *ctx) int
}

// ctx is what a running command sees.
type ctx struct {
	Env
	global  globalOpts
	cmd     *command
	args    []string
	flags   map[string]string
	snap    *directory.Snapshot
	setting *settings.Settings
	src     *dirsource.Source // the directory source: opened on first use, closed by Main
}

type globalOpts struct {
	configDir string
	dataDir   string
	set       map[string]string
}

var jsonFlag = flagSpec{"json", "", "print the answer as JSON"}

// commands is the command table; group usage is derived from it.
var commands []*command

func register(c *command) { commands = append(commands, c) }

const globalUsage = `usage: mailgate [--config-dir DIR] [--data-dir DIR] [--set NAME=VALUE]… COMMAND …

Global options:
  --config-dir DIR     configuration directory (default ./config, or $MAILGATE_CONFIG_DIR)
  --data-dir DIR       data directory (default ./data, or $MAILGATE_DATA_DIR)
  --set NAME=VALUE     override a setting (highest precedence; repeatable)
  -h, --help           show this help

The directory (accounts, aliases, grants, restrictions) is read from and
written to the files of --config-dir, or to PostgreSQL when
account_provisioner = postgres (database_url); see 'mailgate import --help'.

Commands:
`

// usageError is a wrong invocation: exit 2 with the message and a usage text.
type usageError struct {
	msg   string
	usage string
}

func (e *usageError) Error() string { return e.msg }

// Main runs the command line and returns the exit status.
func Main(args []string, env Env) int {
	if env.Getenv == nil {
		env.Getenv = os.LookupEnv
	}
	c, err := parse(args, env)
	if err != nil {
		var ue *usageError
		if errors.As(err, &ue) {
			if ue.msg != "" {
				fmt.Fprintf(env.Stderr, "mailgate: %s\n\n", ue.msg)
				fmt.Fprint(env.Stderr, ue.usage)
				return ExitUsage
			}
			fmt.Fprint(env.Stdout, ue.usage) // --help
			return ExitOK
		}
		fmt.Fprintf(env.Stderr, "mailgate: %v\n", err)
		return ExitUsage
	}
	code := c.cmd.run(c)
	if c.src != nil {
		c.src.Close()
	}
	return code
}

func parse(args []string, env Env) (*ctx, error) {
	g := globalOpts{set: map[string]string{}}
	if v, ok := env.Getenv("MAILGATE_CONFIG_DIR"); ok && v != "" {
		g.configDir = v
	} else {
		g.configDir = "./config"
	}
	if v, ok := env.Getenv("MAILGATE_DATA_DIR"); ok && v != "" {
		g.dataDir = v
	} else {
		g.dataDir = "./data"
	}
	// Global options come before the command.
	i := 0
	for ; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") {
			break
		}
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		switch name {
		case "h", "help":
			return nil, &usageError{usage: topUsage()}
		case "config-dir", "data-dir", "set":
			if !hasVal {
				if i+1 >= len(args) {
					return nil, &usageError{fmt.Sprintf("option --%s needs a value", name), topUsage()}
				}
				i++
				val = args[i]
			}
			switch name {
			case "config-dir":
				g.configDir = val
			case "data-dir":
				g.dataDir = val
			case "set":
				k, v, ok := strings.Cut(val, "=")
				if !ok || k == "" {
					return nil, &usageError{fmt.Sprintf("--set %q: expected NAME=VALUE", val), topUsage()}
				}
				g.set[k] = v
			}
		default:
			return nil, &usageError{fmt.Sprintf("unknown option %q", a), topUsage()}
		}
	}
	rest := args[i:]
	if len(rest) == 0 {
		return nil, &usageError{"missing command", topUsage()}
	}
	// Find the longest command path that prefixes rest.
	var cmd *command
	depth := 0
	for _, c := range commands {
		p := strings.Fields(c.path)
		if len(p) <= len(rest) && equal(p, rest[:len(p)]) && len(p) > depth {
			cmd, depth = c, len(p)
		}
	}
	if cmd == nil {
		// A known group ("email", "email restrict") without, or with a
		// wrong, subcommand? The longest group that prefixes rest.
		n := 0
		for k := 1; k <= len(rest); k++ {
			if len(groupCommands(strings.Join(rest[:k], " "))) > 0 {
				n = k
			}
		}
		if n > 0 {
			group := strings.Join(rest[:n], " ")
			if len(rest) == n {
				return nil, &usageError{fmt.Sprintf("%s: missing subcommand", group), groupUsage(group)}
			}
			if rest[n] == "-h" || rest[n] == "--help" {
				return nil, &usageError{usage: groupUsage(group)}
			}
			return nil, &usageError{fmt.Sprintf("unknown command %q", strings.Join(rest[:n+1], " ")), groupUsage(group)}
		}
		return nil, &usageError{fmt.Sprintf("unknown command %q", rest[0]), topUsage()}
	}
	c := &ctx{Env: env, global: g, cmd: cmd, flags: map[string]string{}}
	var pos []string
	toks := rest[depth:]
	for j := 0; j < len(toks); j++ {
		t := toks[j]
		if t == "--" {
			pos = append(pos, toks[j+1:]...)
			break
		}
		if !strings.HasPrefix(t, "-") || t == "-" {
			pos = append(pos, t)
			continue
		}
		name, val, hasVal := strings.Cut(strings.TrimLeft(t, "-"), "=")
		if name == "h" || name == "help" {
			return nil, &usageError{usage: cmd.usage()}
		}
		spec := cmd.flag(name)
		if spec == nil {
			return nil, &usageError{fmt.Sprintf("%s: unknown option %q (use -- before an argument that starts with -)", cmd.path, t), cmd.usage()}
		}
		if spec.value == "" {
			if hasVal {
				return nil, &usageError{fmt.Sprintf("%s: option --%s takes no value", cmd.path, name), cmd.usage()}
			}
			val = "true"
		} else if !hasVal {
			if j+1 >= len(toks) {
				return nil, &usageError{fmt.Sprintf("%s: option --%s needs a value %s", cmd.path, name, spec.value), cmd.usage()}
			}
			j++
			val = toks[j]
		}
		c.flags[name] = val
	}
	if len(pos) < len(cmd.args) {
		return nil, &usageError{fmt.Sprintf("%s: missing argument %s", cmd.path, cmd.args[len(pos)]), cmd.usage()}
	}
	if !cmd.variadic && len(pos) > len(cmd.args)+len(cmd.optArgs) {
		return nil, &usageError{fmt.Sprintf("%s: unexpected argument %q", cmd.path, pos[len(cmd.args)+len(cmd.optArgs)]), cmd.usage()}
	}
	c.args = pos
	return c, nil
}

func equal(a, b []string) bool {
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func (c *command) flag(name string) *flagSpec {
	for i := range c.flags {
		if c.flags[i].name == name {
			return &c.flags[i]
		}
	}
	return nil
}

func (c *command) synopsis() string {
	s := "mailgate " + c.path
	for _, f := range c.flags {
		if f.value != "" {
			s += fmt.Sprintf(" [%s %s]", flagName(f.name), f.value)
		} else {
			s += fmt.Sprintf(" [%s]", flagName(f.name))
		}
	}
	for _, a := range c.args {
		s += " " + a
	}
	for _, a := range c.optArgs {
		s += " [" + a + "]"
	}
	return s
}

func (c *command) usage() string {
	var b strings.Builder
	fmt.Fprintf(&b, "usage: %s\n\n%s\n", c.synopsis(), c.summary)
	if c.help != "" {
		fmt.Fprintf(&b, "\n%s\n", strings.TrimSpace(c.help))
	}
	if len(c.flags) > 0 {
		b.WriteString("\nOptions:\n")
		for _, f := range c.flags {
			n := flagName(f.name)
			if f.value != "" {
				n += " " + f.value
			}
			fmt.Fprintf(&b, "  %-20s %s\n", n, f.help)
		}
	}
	return b.String()
}

// flagName writes a one-letter flag with one dash (-y), others with two.
func flagName(name string) string {
	if len(name) == 1 {
		return "-" + name
	}
	return "--" + name
}

// listLine formats a command in a list: the synopsis, then the summary,
// on the next line when the synopsis is long.
func listLine(c *command) string {
	syn := strings.TrimPrefix(c.synopsis(), "mailgate ")
	if len(syn) > 44 {
		return fmt.Sprintf("  %s\n  %-44s %s\n", syn, "", c.summary)
	}
	return fmt.Sprintf("  %-44s %s\n", syn, c.summary)
}

func groupCommands(group string) []*command {
	var out []*command
	for _, c := range commands {
		if strings.HasPrefix(c.path, group+" ") {
			out = append(out, c)
		}
	}
	return out
}

func groupUsage(group string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "usage: mailgate %s SUBCOMMAND …\n\nSubcommands:\n", group)
	for _, c := range groupCommands(group) {
		b.WriteString(listLine(c))
	}
	return b.String()
}

func topUsage() string {
	var b strings.Builder
	b.WriteString(globalUsage)
	list := append([]*command(nil), commands...)
	sort.SliceStable(list, func(i, j int) bool { return list[i].path < list[j].path })
	for _, c := range list {
		b.WriteString(listLine(c))
	}
	b.WriteString("\nRun 'mailgate COMMAND --help' for the details of a command.\n")
	return b.String()
}

// load computes the settings and the directory snapshot (from the files, or
// from PostgreSQL when account_provisioner = postgres). On failure it prints
// the problems and returns false.
func (c *ctx) load() bool {
	s, err := settings.Load(c.global.configDir, c.Getenv, c.global.set)
	if err != nil {
		fmt.Fprintf(c.Stderr, "mailgate: settings: %v\n", err)
		return false
	}
	c.setting = s
	snap, where, err := c.loadSnapshot(s)
	if err != nil {
		var le *directory.LoadError
		if errors.As(err, &le) {
			for _, d := range le.Diags {
				if d.Severity == 0 {
					fmt.Fprintf(c.Stderr, "mailgate: %s\n", d.Error())
				}
			}
			fmt.Fprintf(c.Stderr, "mailgate: the configuration in %s has errors; run 'mailgate config check'\n", where)
			return false
		}
		fmt.Fprintf(c.Stderr, "mailgate: %v\n", err)
		return false
	}
	c.snap = snap
	return true
}

// loadSnapshot builds the snapshot from the source that
// account_provisioner names (package dirsource, as serve does): the files;
// the files with LDAP asked per lookup; or PostgreSQL. where names the
// source for messages.
func (c *ctx) loadSnapshot(s *settings.Settings) (snap *directory.Snapshot, where string, err error) {
	where = c.global.configDir
	switch s.AccountProvisioner {
	case "postgres":
		store, err := c.openStore()
		if err != nil {
			return nil, "", err
		}
		where = store.String()
	case "ldap":
		where += " and " + s.LDAP.ServerHost
	}
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	snap, err = c.source().Load(ctx)
	return snap, where, err
}

// source is the command's directory source, made on first use; Main closes
// it.
func (c *ctx) source() *dirsource.Source {
	if c.src == nil {
		log := slog.New(slog.NewTextHandler(c.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
		c.src = dirsource.New(c.global.configDir, c.Getenv, c.global.set, log)
	}
	return c.src
}

func (c *ctx) json() bool { return c.flags["json"] == "true" }

func (c *ctx) printJSON(v any) {
	enc := json.NewEncoder(c.Stdout)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}
