package directory

import (
	"errors"
	"regexp"
	"strconv"
	"strings"

	"github.com/mailgate/mailgate/internal/conffile"
	"github.com/mailgate/mailgate/internal/settings"
)

// Rendered is a configuration file rendered from another store (PostgreSQL):
// its text in the file's own syntax, and where each line came from.
type Rendered struct {
	Text    string
	Origins []conffile.Pos // Origins[i] is the provenance of line i+1
}

// BuildRendered builds a Snapshot from rendered files, keyed by file name.
// The text goes through the same parsers as the files, so that every source
// means the same; the positions found (of entries and of diagnostics) are
// then replaced by the lines' origins.
func BuildRendered(files map[string]Rendered, s *settings.Settings) (*Snapshot, error) {
	snap, err := build(func(name string) (string, bool, error) {
		r, ok := files[name]
		return r.Text, ok, nil
	}, s)
	origin := func(p *conffile.Pos) {
		r, ok := files[p.File]
		if ok && p.Line >= 1 && p.Line <= len(r.Origins) {
			*p = r.Origins[p.Line-1]
		}
	}
	// Messages name other lines too ("first at postfix-send-as.cf:3").
	text := func(msg string) string {
		return posInText.ReplaceAllStringFunc(msg, func(m string) string {
			file, line, _ := strings.Cut(m, ":")
			p := conffile.Pos{File: file}
			p.Line, _ = strconv.Atoi(line)
			origin(&p)
			return p.String()
		})
	}
	var le *LoadError
	if errors.As(err, &le) {
		for i := range le.Diags {
			origin(&le.Diags[i].Pos)
			le.Diags[i].Msg = text(le.Diags[i].Msg)
		}
	}
	if err != nil {
		return nil, err
	}
	for _, a := range snap.Accounts {
		origin(&a.Pos)
	}
	for _, a := range snap.Aliases {
		for i := range a.Lines {
			origin(&a.Lines[i])
		}
	}
	for _, a := range snap.LocalAliases {
		for i := range a.Lines {
			origin(&a.Lines[i])
		}
	}
	for _, gs := range snap.SendAs {
		for i := range gs {
			origin(&gs[i].Pos)
		}
	}
	for k, p := range snap.SendRestrict {
		origin(&p)
		snap.SendRestrict[k] = p
	}
	for k, p := range snap.RecvRestrict {
		origin(&p)
		snap.RecvRestrict[k] = p
	}
	for i := range snap.Diags {
		origin(&snap.Diags[i].Pos)
		snap.Diags[i].Msg = text(snap.Diags[i].Msg)
	}
	if r, ok := files[conffile.RegexpFile]; ok {
		snap.regexpOrigins = r.Origins
	}
	return snap, nil
}

// posInText finds the "file:line" positions that diagnostics mention.
var posInText = regexp.MustCompile(`postfix-[a-z-]+\.cf:[0-9]+`)

// RegexpPos is the provenance of a line of the regexp aliases.
func (s *Snapshot) RegexpPos(line int) conffile.Pos {
	if line >= 1 && line <= len(s.regexpOrigins) {
		return s.regexpOrigins[line-1]
	}
	return conffile.Pos{File: conffile.RegexpFile, Line: line}
}
