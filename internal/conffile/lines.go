// Package conffile reads docker-mailserver's configuration files (SPEC §2):
// postfix-accounts.cf, postfix-virtual.cf, postfix-send-as.cf,
// postfix-send-access.cf, postfix-receive-access.cf and postfix-aliases.cf.
// (postfix-regexp.cf is read by package pcretable.)
//
// Every entry keeps the file and line it came from, and every problem is a
// Diag naming file:line. The parsers validate every address with package
// address and store it canonical; nothing is trimmed into validity.
package conffile

import (
	"fmt"
	"strings"
)

// Pos is a position in a configuration file.
type Pos struct {
	File string `json:"file"`
	Line int    `json:"line"`
}

func (p Pos) String() string {
	if p.File == "" {
		return "(built-in)"
	}
	if p.Line == 0 {
		return p.File // a source without lines, e.g. "ldap uid=a,ou=users,dc=example,dc=test"
	}
	return fmt.Sprintf("%s:%d", p.File, p.Line)
}

// Severity of a Diag.
type Severity int

const (
	// Error: the line is unusable; a file with errors is not loaded.
	Error Severity = iota
	// Warning: the file loads, but something deserves the operator's attention.
	Warning
)

func (s Severity) String() string {
	if s == Error {
		return "error"
	}
	return "warning"
}

// Diag is a diagnostic about one line of a file.
type Diag struct {
	Pos      Pos
	Severity Severity
	Msg      string
}

func (d Diag) Error() string { return d.Pos.String() + ": " + d.Msg }

// Line is a logical line of a file.
type Line struct {
	Num  int    // number of its first physical line, from 1
	Text string // without the line ending
}

// Data is the content of a configuration file: bytes as read, or a string.
// The parsers keep substrings of it (addresses, hashes), so a string is used
// as it is, and bytes are converted once.
type Data interface{ ~string | ~[]byte }

// SplitLines returns the logical lines of a table file. Blank lines and lines
// whose first non-space character is '#' are skipped; a CR before LF is part
// of the line ending. With continuation (Postfix table files, as postmap reads
// them), a line that starts with white space continues the previous logical
// line; the physical lines are joined with a single space. Without it, such a
// line is reported as an error by the caller (see Line.Indented).
func SplitLines[D Data](file string, data D, continuation bool) ([]Line, []Diag) {
	// At most one conversion for the whole file: every Line.Text (and so
	// every address and hash parsed from it) is a substring of text, instead
	// of a separate allocation per line.
	text := string(data)
	out := make([]Line, 0, strings.Count(text, "\n")+1)
	diags := eachLine(file, text, continuation, func(l Line) { out = append(out, l) })
	return out, diags
}

// eachLine calls yield with each logical line of text (see SplitLines), in
// order, and returns the diagnostics about the lines themselves. The parsers
// use it so that a large file's lines are never all in a slice.
func eachLine(file, text string, continuation bool, yield func(Line)) []Diag {
	var diags []Diag
	var last Line // yielded once the next line shows that it is complete
	have := false
	num := 0
	for len(text) > 0 {
		num++
		var raw string
		if i := strings.IndexByte(text, '\n'); i >= 0 {
			raw, text = text[:i], text[i+1:]
		} else {
			raw, text = text, ""
		}
		raw = strings.TrimSuffix(raw, "\r")
		trimmed := strings.TrimLeft(raw, " \t")
		if trimmed == "" || trimmed[0] == '#' {
			continue
		}
		if trimmed != raw {
			if continuation && have {
				last.Text += " " + trimmed
				continue
			}
			diags = append(diags, Diag{Pos{file, num}, Error, "line starts with white space (a continuation line with nothing to continue)"})
			continue
		}
		if have {
			yield(last)
		}
		last, have = Line{Num: num, Text: raw}, true
	}
	if have {
		yield(last)
	}
	return diags
}
