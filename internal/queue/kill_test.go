package queue

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const childEnv = "MAILGATE_QUEUE_KILL_CHILD"

// TestKillChild is the process that TestSIGKILL kills: it enqueues from 8
// goroutines and delivers at the same time, printing "A <id>" after each
// acknowledged Enqueue and "D <id> <rcpt>" for each accepted delivery.
func TestKillChild(t *testing.T) {
	dir := os.Getenv(childEnv)
	if dir == "" {
		t.Skip("only run by TestSIGKILL")
	}
	var out sync.Mutex
	say := func(format string, a ...any) {
		out.Lock()
		fmt.Fprintf(os.Stdout, format+"\n", a...) // one write(2) per line, atomic on a pipe
		out.Unlock()
	}
	d := DelivererFunc(func(ctx context.Context, from string, rcpts []string, body io.Reader) []Result {
		id, _, _ := EnvelopeFromContext(ctx)
		var res []Result
		for _, r := range rcpts {
			if strings.HasPrefix(r, "slow") {
				res = append(res, Result{Rcpt: r, Code: 451})
				continue
			}
			say("D %s %s", id, r)
			res = append(res, Result{Rcpt: r, Code: 250})
		}
		return res
	})
	q, err := Open(dir, Options{Deliverer: d, Logger: quiet(), BackoffBase: time.Hour, SegmentSize: 64 << 10})
	if err != nil {
		say("E %v", err)
		os.Exit(1)
	}
	go q.Run(context.Background())
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				to := []string{fmt.Sprintf("r%d-%d@remote.example", w, i)}
				if i%7 == 0 {
					to = append(to, fmt.Sprintf("slow%d-%d@remote.example", w, i))
				}
				id, err := q.Enqueue(Envelope{From: "a@example.org", To: to}, strings.NewReader(body1+strings.Repeat("x", i%3000)))
				if err != nil {
					say("E %v", err)
					return
				}
				say("A %s %s", id, strings.Join(to, " "))
			}
		}()
	}
	wg.Wait()
}

// TestSIGKILL kills a process enqueueing and delivering twice with SIGKILL,
// then checks that every acknowledged message is still queued or was
// delivered to each of its recipients.
func TestSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	dir := filepath.Join(t.TempDir(), "queue")
	acked := map[string][]string{} // id → recipients
	delivered := map[string]int{}  // "id rcpt" → times
	for round := range 2 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestKillChild$")
		cmd.Env = append(os.Environ(), childEnv+"="+dir)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(stdout)
		n := 0
		killed := false
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			switch {
			case len(f) >= 3 && f[0] == "A":
				acked[f[1]] = f[2:]
				n++
			case len(f) == 3 && f[0] == "D":
				delivered[f[1]+" "+f[2]]++
			case len(f) > 0 && f[0] == "E":
				t.Errorf("child: %s", sc.Text())
			}
			if n >= 250 && !killed {
				cmd.Process.Signal(syscall.SIGKILL)
				killed = true // keep reading what it wrote before dying
			}
		}
		err = cmd.Wait()
		if !killed {
			t.Fatalf("round %d: child ended on its own: %v", round, err)
		}
	}
	// Recover and deliver what is left, with a clock past every back-off.
	var mu sync.Mutex
	d := DelivererFunc(func(ctx context.Context, from string, rcpts []string, body io.Reader) []Result {
		id, _, _ := EnvelopeFromContext(ctx)
		b, _ := io.ReadAll(body)
		var res []Result
		mu.Lock()
		defer mu.Unlock()
		for _, r := range rcpts {
			if !strings.HasPrefix(string(b), body1) {
				t.Errorf("%s: corrupt body", id)
			}
			delivered[id+" "+r]++
			res = append(res, Result{Rcpt: r, Code: 250})
		}
		return res
	})
	later := time.Now().Add(48 * time.Hour)
	q := open(t, dir, Options{Deliverer: d, Now: func() time.Time { return later }})
	q.RunOnce(context.Background())
	if q.Len() != 0 {
		t.Errorf("%d messages left after a full run", q.Len())
	}
	dups := 0
	for id, rcpts := range acked {
		for _, r := range rcpts {
			switch n := delivered[id+" "+r]; {
			case n == 0:
				t.Errorf("acknowledged message %s lost for %s", id, r)
			case n > 1:
				dups++
			}
		}
	}
	t.Logf("%d acknowledged messages, %d deliveries, %d duplicates (at-least-once after a kill)", len(acked), len(delivered), dups)
	if len(acked) < 500 {
		t.Errorf("only %d acknowledged", len(acked))
	}
}
