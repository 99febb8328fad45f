package conffile

import (
	"io"
	"os"
	"strings"
)

// ReadString reads a file into a string with a single copy (os.ReadFile and
// a conversion would hold a large file twice). The parsers keep substrings
// of it.
func ReadString(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	var b strings.Builder
	if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
		b.Grow(int(fi.Size()) + 1)
	}
	_, err = io.Copy(&b, f)
	return b.String(), err
}
