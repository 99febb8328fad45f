package pgstore

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

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

// BenchmarkLoad builds a snapshot from a database of n accounts and n
// aliases: what every node does on each change (LISTEN/NOTIFY). Besides the
// time on the node it reports server-cpu-ms: the CPU time the PostgreSQL
// server spent per load (from /proc), the figure that says how many nodes
// one server can follow (docs/performance.md).
func BenchmarkLoad(b *testing.B) {
	for _, n := range []int{10000, 100000} {
		b.Run(fmt.Sprintf("entries=%d", n), func(b *testing.B) {
			s := open(b, pgtest.DB(b))
			st := testSettings(b)
			ctx := context.Background()
			if _, err := s.Import(ctx, largeDir(b, n), st); err != nil {
				b.Fatal(err)
			}
			pid := postmasterPID(b)
			b.ReportAllocs()
			cpu0 := serverCPU(pid)
			for b.Loop() {
				snap, err := s.Load(ctx, st)
				if err != nil {
					b.Fatal(err)
				}
				if len(snap.Accounts) != n || len(snap.Aliases) != n {
					b.Fatalf("%d accounts, %d aliases", len(snap.Accounts), len(snap.Aliases))
				}
			}
			if cpu0 >= 0 {
				b.ReportMetric(float64((serverCPU(pid)-cpu0).Microseconds())/1000/float64(b.N), "server-cpu-ms")
			}
		})
	}
}

// postmasterPID is the pid of the shared cluster's server.
func postmasterPID(b *testing.B) int {
	data, err := os.ReadFile(filepath.Join(pgtest.Shared(b).Dir, "data", "postmaster.pid"))
	if err != nil {
		return -1
	}
	pid, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(data), "\n", 2)[0]))
	if err != nil {
		return -1
	}
	return pid
}

// serverCPU is the user+system CPU time of a server and its children (the
// backends), from /proc; -1 when unknown.
func serverCPU(pid int) time.Duration {
	if pid <= 0 {
		return -1
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return -1
	}
	var ticks int64
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// Fields after the command name (which is in parentheses).
		i := strings.LastIndexByte(string(stat), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+1:]))
		if len(f) < 13 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		if p != pid && ppid != pid {
			continue
		}
		u, _ := strconv.ParseInt(f[11], 10, 64)
		s, _ := strconv.ParseInt(f[12], 10, 64)
		ticks += u + s
	}
	return time.Duration(ticks) * time.Second / 100 // USER_HZ
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
