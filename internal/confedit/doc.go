package confedit

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/mailgate/mailgate/internal/conffile"
)

// Doc is a configuration file being edited. The original text is kept as
// it is; edits are recorded as splices of whole lines and applied when the
// file is written, so that an edit of a large file touches little memory
// and every untouched byte (comments, blank lines, order, line endings) is
// written back unchanged.
type Doc struct {
	Name     string // file name inside the directory
	path     string
	text     string
	eol      string   // the file's line ending: "\n" or "\r\n"
	edits    []splice // non-overlapping, in the order made
	appended []string
	dirty    bool // changed since read or saved
	perm     os.FileMode
}

type splice struct {
	start, end int // byte range of whole physical lines in text
	repl       string
}

// Entry is a logical line: its physical lines span text[Start:End]
// (including the final line ending), its first line is number Num (from 1),
// and Text is the line, with continuation lines joined as conffile reads them.
type Entry struct {
	Start, End int
	Num        int
	Text       string
	Raw        string // the physical lines as written, without the final line ending
}

// Line is the 1-based number of the entry's first line, for messages.
func (e Entry) Line() int { return e.Num }

// ReadDoc reads a file of dir; a missing file is an empty Doc.
func ReadDoc(dir, name string, perm os.FileMode) (*Doc, error) {
	d := &Doc{Name: name, path: filepath.Join(dir, name), perm: perm, eol: "\n"}
	text, err := conffile.ReadString(d.path)
	if errors.Is(err, os.ErrNotExist) {
		return d, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", name, err)
	}
	d.text = text
	if i := strings.IndexByte(text, '\n'); i > 0 && text[i-1] == '\r' {
		d.eol = "\r\n"
	}
	return d, nil
}

// NewDoc is a Doc of text that is not a file (a table rendered from
// PostgreSQL in the files' syntax); it cannot be saved, only read back with
// Bytes.
func NewDoc(name, text string) *Doc {
	return &Doc{Name: name, text: text, eol: "\n"}
}

// Each calls fn for every logical line, skipping blank and comment lines;
// with continuation a line that starts with white space belongs to the entry
// before it (the rules of conffile.SplitLines). fn returns false to stop.
func (d *Doc) Each(continuation bool, fn func(Entry) bool) {
	d.flush()
	var cur Entry
	have := false
	num := 0
	for pos := 0; pos < len(d.text); {
		num++
		end := strings.IndexByte(d.text[pos:], '\n')
		next := len(d.text)
		if end >= 0 {
			end += pos
			next = end + 1
		} else {
			end = len(d.text)
		}
		line := strings.TrimSuffix(d.text[pos:end], "\r")
		trimmed := strings.TrimLeft(line, " \t")
		switch {
		case trimmed == "" || trimmed[0] == '#':
		case trimmed != line && continuation && have:
			cur.End = next
			cur.Text += " " + trimmed
			cur.Raw = strings.TrimSuffix(strings.TrimSuffix(d.text[cur.Start:next], "\n"), "\r")
		default:
			if have && !fn(cur) {
				return
			}
			cur = Entry{Start: pos, End: next, Num: num, Text: line, Raw: line}
			have = true
		}
		pos = next
	}
	if have {
		fn(cur)
	}
}

// Entries returns every logical line (see Each).
func (d *Doc) Entries(continuation bool) []Entry {
	var out []Entry
	d.Each(continuation, func(e Entry) bool { out = append(out, e); return true })
	return out
}

// flush applies the pending edits to the text, so that a scan sees them.
// Entries obtained before are invalid afterwards. A single edit per command
// (the usual case) never flushes: its file is written once, from the
// original text and the splice.
func (d *Doc) flush() {
	if len(d.edits) > 0 || len(d.appended) > 0 {
		d.text = string(d.Bytes())
		d.edits, d.appended = nil, nil
	}
}

// Append adds a line at the end of the file.
func (d *Doc) Append(line string) {
	d.appended = append(d.appended, line)
	d.dirty = true
}

// Replace replaces the physical lines of e by one line.
func (d *Doc) Replace(e Entry, line string) {
	d.edits = append(d.edits, splice{e.Start, e.End, line + d.eol})
	d.dirty = true
}

// Delete removes the physical lines of e.
func (d *Doc) Delete(e Entry) {
	d.edits = append(d.edits, splice{e.Start, e.End, ""})
	d.dirty = true
}

// Changed reports whether the Doc was modified.
func (d *Doc) Changed() bool { return d.dirty }

// WriteTo writes the edited file.
func (d *Doc) WriteTo(w io.Writer) (int64, error) {
	bw := bufio.NewWriterSize(w, 256<<10)
	edits := append([]splice(nil), d.edits...)
	sort.Slice(edits, func(i, j int) bool { return edits[i].start < edits[j].start })
	var n int64
	write := func(s string) {
		k, _ := bw.WriteString(s)
		n += int64(k)
	}
	pos := 0
	for _, e := range edits {
		write(d.text[pos:e.start])
		write(e.repl)
		pos = e.end
	}
	write(d.text[pos:])
	if len(d.appended) > 0 && len(d.text) > 0 && !strings.HasSuffix(d.text, "\n") {
		write(d.eol)
	}
	for _, l := range d.appended {
		write(l)
		write(d.eol)
	}
	return n, bw.Flush()
}

// Bytes renders the Doc as WriteTo does.
func (d *Doc) Bytes() []byte {
	var b bytes.Buffer
	d.WriteTo(&b)
	return b.Bytes()
}

// Save writes the Doc atomically when it was modified.
func (d *Doc) Save() error {
	if !d.Changed() {
		return nil
	}
	if d.path == "" {
		return fmt.Errorf("%s is not a file and cannot be saved", d.Name)
	}
	if err := writeFile(d.path, d.perm, func(w io.Writer) error {
		_, err := d.WriteTo(w)
		return err
	}); err != nil {
		return err
	}
	d.dirty = false // the splices stay pending until a scan needs them applied
	return nil
}
