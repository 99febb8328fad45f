package pcretable

import "bytes"

// logicalLine is one logical line of a table, as Postfix's readllines(3)
// assembles it, with trailing white space already trimmed.
type logicalLine struct {
	line int    // number of its first physical line (1-based)
	text string // physical lines concatenated without their newlines
}

// isSpace is Postfix's ISSPACE: ASCII white space (space, \t, \n, \v, \f, \r).
func isSpace(c byte) bool {
	switch c {
	case ' ', '\t', '\n', '\v', '\f', '\r':
		return true
	}
	return false
}

// isAlnum is Postfix's ISALNUM: ASCII letters and digits only.
func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// readLogicalLines splits data into logical lines:
//
//   - a physical line that is empty, white space only, or whose first
//     non-space character is '#' is ignored wherever it occurs (also between
//     a logical line and its continuation);
//   - a physical line that starts with white space continues the current
//     logical line; it is appended without the newline, its leading white
//     space kept;
//   - a continuation line with no logical line to continue is an error
//     (Postfix warns and drops it);
//   - a NUL byte is an error (Postfix would silently truncate the line);
//   - trailing white space of the logical line is removed, so the CR of a
//     CRLF line ending vanishes at the end of a logical line; a CR that ends a
//     physical line which is continued stays inside the logical line, exactly
//     as Postfix keeps it (CR is white space to Postfix).
func readLogicalLines(name string, data []byte) ([]logicalLine, []error) {
	var (
		out     []logicalLine
		errs    []error
		cur     []byte
		curLine int
		orphan  int // line of an orphan continuation being dropped, 0 if none
		lineno  int
	)
	flush := func() {
		if cur != nil {
			out = append(out, logicalLine{line: curLine, text: string(bytes.TrimRightFunc(cur, func(r rune) bool {
				return r < 0x80 && isSpace(byte(r))
			}))})
		}
		cur = nil
	}
	for len(data) > 0 {
		var phys []byte
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			phys, data = data[:i], data[i+1:]
		} else {
			phys, data = data, nil
		}
		lineno++
		if bytes.IndexByte(phys, 0) >= 0 {
			errs = append(errs, &ParseError{File: name, Line: lineno, Msg: "NUL byte in line"})
			continue
		}
		j := 0
		for j < len(phys) && isSpace(phys[j]) {
			j++
		}
		if j == len(phys) || phys[j] == '#' {
			continue // blank or comment line: ignored, does not end a logical line
		}
		if j > 0 { // continuation line
			if cur == nil {
				if orphan == 0 {
					orphan = lineno
					errs = append(errs, &ParseError{File: name, Line: lineno,
						Msg: "continuation line (starts with white space) without a preceding line"})
				}
				continue
			}
			cur = append(cur, phys...)
			continue
		}
		flush()
		orphan = 0
		cur = append([]byte{}, phys...)
		curLine = lineno
	}
	flush()
	return out, errs
}
