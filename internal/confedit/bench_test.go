package confedit

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/internal/address"
	"github.com/mailgate/mailgate/internal/conffile"
)

// benchFile writes a file of n "aliasI@example.com userI@example.com" lines.
func benchFile(b *testing.B, n int) string {
	dir := b.TempDir()
	var sb strings.Builder
	for i := 0; i < n; i++ {
		fmt.Fprintf(&sb, "alias%d@d%d.example user%d@d%d.example\n", i, i%100, i, i%100)
	}
	if err := os.WriteFile(filepath.Join(dir, "f.cf"), []byte(sb.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	return dir
}

// BenchmarkAddToList100k: one `alias add` on a 100k-line file without
// process start: read, find the key, render, atomic write with fsyncs.
func BenchmarkAddToList100k(b *testing.B) {
	dir := benchFile(b, 100000)
	k := conffile.Key{Local: "alias50000", Domain: "d0.example"}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		d, err := ReadDoc(dir, "f.cf", 0o644)
		if err != nil {
			b.Fatal(err)
		}
		t := address.Address{Local: fmt.Sprintf("extra%d", i), Domain: "x.example"}
		if _, err := AddToList(d, k, []address.Address{t}, true); err != nil {
			b.Fatal(err)
		}
		if err := d.Save(); err != nil {
			b.Fatal(err)
		}
	}
}
