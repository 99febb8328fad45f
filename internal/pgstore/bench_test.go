package pgstore

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/internal/confedit"
	"github.com/mailgate/mailgate/internal/conffile"
	"github.com/mailgate/mailgate/internal/pgstore/pgtest"
)

// largeDir writes a directory of n accounts and n aliases over 100 domains.
func largeDir(b *testing.B, n int) string {
	dir := b.TempDir()
	var acc, virt strings.Builder
	for i := range n {
		fmt.Fprintf(&acc, "user%d@d%d.example|{SHA512-CRYPT}$6$salt%d$hashhashhashhashhashhashhashhash\n", i, i%100, i)
		fmt.Fprintf(&virt, "alias%d@d%d.example user%d@d%d.example,ext%d@outside.example\n", i, i%100, i, i%100, i)
	}
	for name, text := range map[string]string{conffile.AccountsFile: acc.String(), conffile.VirtualFile: virt.String()} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil {
			b.Fatal(err)
		}
	}
	return dir
}

// BenchmarkLoad builds a snapshot from a database of 10k accounts and 10k
// aliases.
func BenchmarkLoad(b *testing.B) {
	s := open(b, pgtest.DB(b))
	st := testSettings(b)
	ctx := context.Background()
	if _, err := s.Import(ctx, largeDir(b, 10000), st); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		snap, err := s.Load(ctx, st)
		if err != nil {
			b.Fatal(err)
		}
		if len(snap.Accounts) != 10000 || len(snap.Aliases) != 10000 {
			b.Fatalf("%d accounts, %d aliases", len(snap.Accounts), len(snap.Aliases))
		}
	}
}

// BenchmarkEdit is one alias added to a directory of 10k accounts and aliases.
func BenchmarkEdit(b *testing.B) {
	s := open(b, pgtest.DB(b))
	st := testSettings(b)
	ctx := context.Background()
	if _, err := s.Import(ctx, largeDir(b, 10000), st); err != nil {
		b.Fatal(err)
	}
	i := 0
	for b.Loop() {
		i++
		line := fmt.Sprintf("bench%d@d1.example user1@d1.example", i)
		if _, err := s.Edit(ctx, []string{conffile.VirtualFile}, func(d map[string]*confedit.Doc) ([]confedit.Change, error) {
			d[conffile.VirtualFile].Append(line)
			return nil, nil
		}); err != nil {
			b.Fatal(err)
		}
	}
}
