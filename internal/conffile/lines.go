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
	"bytes"
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

// SplitLines returns the logical lines of a table file. Blank lines and lines
// whose first non-space character is '#' are skipped; a CR before LF is part
// of the line ending. With continuation (Postfix table files, as postmap reads
// them), a line that starts with white space continues the previous logical
// line; the physical lines are joined with a single space. Without it, such a
// line is reported as an error by the caller (see Line.Indented).
func SplitLines(file string, data []byte, continuation bool) ([]Line, []Diag) {
	var out []Line
	var diags []Diag
	num := 0
	for len(data) > 0 {
		num++
		var raw []byte
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			raw, data = data[:i], data[i+1:]
		} else {
			raw, data = data, nil
		}
		raw = bytes.TrimSuffix(raw, []byte{'\r'})
		text := string(raw)
		trimmed := strings.TrimLeft(text, " \t")
		if trimmed == "" || trimmed[0] == '#' {
			continue
		}
		if trimmed != text {
			if continuation && len(out) > 0 {
				out[len(out)-1].Text += " " + trimmed
				continue
			}
			diags = append(diags, Diag{Pos{file, num}, Error, "line starts with white space (a continuation line with nothing to continue)"})
			continue
		}
		out = append(out, Line{Num: num, Text: text})
	}
	return out, diags
}
