package confedit

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Doc is a configuration file held as physical lines for editing.
type Doc struct {
	Name    string // file name inside the directory
	path    string
	lines   []string // without line endings
	crlf    bool     // the file uses CRLF line endings
	changed bool
	perm    os.FileMode
}

// Entry is a logical line of a Doc: the physical lines First..Last (0-based)
// and their text, joined as conffile reads them.
type Entry struct {
	First, Last int
	Text        string
}

// Line is the 1-based number of the entry's first line, for messages.
func (e Entry) Line() int { return e.First + 1 }

// ReadDoc reads a file of dir; a missing file is an empty Doc.
func ReadDoc(dir, name string, perm os.FileMode) (*Doc, error) {
	d := &Doc{Name: name, path: filepath.Join(dir, name), perm: perm}
	data, err := os.ReadFile(d.path)
	if errors.Is(err, os.ErrNotExist) {
		return d, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", name, err)
	}
	text := string(data)
	d.crlf = strings.Contains(text, "\r\n")
	text = strings.TrimSuffix(text, "\n")
	if text == "" && len(data) == 0 {
		return d, nil
	}
	for _, l := range strings.Split(text, "\n") {
		d.lines = append(d.lines, strings.TrimSuffix(l, "\r"))
	}
	return d, nil
}

// Entries returns the logical lines, skipping blank and comment lines; with
// continuation a line that starts with white space belongs to the entry
// before it (the rules of conffile.SplitLines).
func (d *Doc) Entries(continuation bool) []Entry {
	var out []Entry
	for i, l := range d.lines {
		trimmed := strings.TrimLeft(l, " \t")
		if trimmed == "" || trimmed[0] == '#' {
			continue
		}
		if trimmed != l && continuation && len(out) > 0 {
			out[len(out)-1].Last = i
			out[len(out)-1].Text += " " + trimmed
			continue
		}
		out = append(out, Entry{First: i, Last: i, Text: l})
	}
	return out
}

// Append adds a line at the end of the file.
func (d *Doc) Append(line string) {
	d.lines = append(d.lines, line)
	d.changed = true
}

// Replace replaces the physical lines of e by one line. Entries obtained
// before are invalid afterwards.
func (d *Doc) Replace(e Entry, line string) {
	d.lines = append(d.lines[:e.First], append([]string{line}, d.lines[e.Last+1:]...)...)
	d.changed = true
}

// Delete removes the physical lines of e. Entries obtained before are
// invalid afterwards.
func (d *Doc) Delete(e Entry) {
	d.lines = append(d.lines[:e.First], d.lines[e.Last+1:]...)
	d.changed = true
}

// Changed reports whether the Doc was modified.
func (d *Doc) Changed() bool { return d.changed }

// Bytes renders the Doc with its line endings and a final newline.
func (d *Doc) Bytes() []byte {
	if len(d.lines) == 0 {
		return nil
	}
	eol := "\n"
	if d.crlf {
		eol = "\r\n"
	}
	return []byte(strings.Join(d.lines, eol) + eol)
}

// Save writes the Doc atomically when it was modified.
func (d *Doc) Save() error {
	if !d.changed {
		return nil
	}
	if err := WriteFile(d.path, d.Bytes(), d.perm); err != nil {
		return err
	}
	d.changed = false
	return nil
}
