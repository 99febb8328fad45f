package e2e

// No acknowledged message is lost: 500 messages from 8 concurrent clients
// while the server is killed with SIGKILL twice; after the last restart,
// every message that got 250 is found in a Maildir or at the relay host.

import (
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/mailgate/mailgate/internal/smtpsink"
)

func TestServeKillNoLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("long test")
	}
	// The relay host is down until after the first kill, so that remote
	// messages sit in the queue across a crash and a restart.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sinkAddr := l.Addr().String()
	l.Close()
	var sink *smtpsink.Sink
	cfg := configDir(t, nil)
	data := filepath.Join(t.TempDir(), "data")
	args := []string{"--relay-host", sinkAddr, "--set", "queue_backoff_min=1s", "--set", "queue_backoff_max=2s"}
	var cur atomic.Pointer[serveProc]
	cur.Store(startServe(t, cfg, data, nil, args...))
	ports := map[string]string{}
	for _, n := range []string{"smtp", "submission", "submissions"} {
		ports[n] = cur.Load().addr(n)
	}

	const total, clients = 500, 8
	var next atomic.Int64
	var acked sync.Map // marker → "local" or "remote"
	var nAcked, nFailed atomic.Int64
	send := func(i int) error {
		marker := fmt.Sprintf("kill-test-%04d", i)
		remote := i%2 == 1
		var c *smtp.Client
		var err error
		if remote {
			c, err = smtp.DialTLS(ports["submissions"], &tls.Config{InsecureSkipVerify: true})
		} else {
			c, err = smtp.Dial(ports["smtp"])
		}
		if err != nil {
			return err
		}
		defer c.Close()
		c.CommandTimeout, c.SubmissionTimeout = 10*time.Second, 10*time.Second
		from, to := "sender@remote.example", "user1@localhost.localdomain"
		if remote {
			if err := c.Auth(sasl.NewPlainClient("", "user1@localhost.localdomain", fixturePassword)); err != nil {
				return err
			}
			from, to = "user1@localhost.localdomain", "someone@remote.example"
		}
		msg := "From: <" + from + ">\r\nSubject: " + marker + "\r\n\r\nbody of " + marker + "\r\n"
		if err := c.SendMail(from, []string{to}, strings.NewReader(msg)); err != nil {
			return err
		}
		// SendMail returned after the 250 to the final dot: acknowledged.
		if remote {
			acked.Store(marker, "remote")
		} else {
			acked.Store(marker, "local")
		}
		nAcked.Add(1)
		c.Quit()
		return nil
	}
	var wg sync.WaitGroup
	for w := 0; w < clients; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= total {
					return
				}
				// A message that failed (server down) is retried until it
				// is acknowledged, like a real client.
				for attempt := 0; ; attempt++ {
					if send(i) == nil {
						break
					}
					nFailed.Add(1)
					if attempt > 200 {
						t.Errorf("message %d never acknowledged", i)
						return
					}
					time.Sleep(50 * time.Millisecond)
				}
			}
		}()
	}
	// Kill twice, while the load is running, then restart on the same ports.
	for k, at := range []int64{total / 4, total / 2} {
		for nAcked.Load() < at {
			time.Sleep(5 * time.Millisecond)
		}
		cur.Load().kill()
		t.Logf("SIGKILL %d after %d acknowledged messages", k+1, nAcked.Load())
		if k == 0 {
			if sink, err = smtpsink.Start(smtpsink.Options{Addr: sinkAddr}); err != nil {
				t.Fatal(err)
			}
			defer sink.Close()
		}
		time.Sleep(200 * time.Millisecond)
		cur.Store(startServe(t, cfg, data, ports, args...))
	}
	wg.Wait()
	t.Logf("%d acknowledged, %d failed attempts (server down) retried", nAcked.Load(), nFailed.Load())

	// Every acknowledged message arrives; count the copies.
	want := map[string]string{}
	acked.Range(func(k, v any) bool { want[k.(string)] = v.(string); return true })
	if len(want) != total {
		t.Errorf("%d messages acknowledged, want %d", len(want), total)
	}
	markerRE := regexp.MustCompile(`Subject: (kill-test-\d{4})`)
	var copies map[string]int
	deadline := time.Now().Add(60 * time.Second)
	for {
		copies = map[string]int{}
		for _, f := range maildirFiles(t, data, "user1@localhost.localdomain") {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if m := markerRE.FindSubmatch(b); m != nil {
				copies[string(m[1])]++
			}
		}
		for _, m := range sink.Messages() {
			if mm := markerRE.FindSubmatch(m.Data); mm != nil {
				copies[string(mm[1])]++
			}
		}
		missing := 0
		for k := range want {
			if copies[k] == 0 {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			var list []string
			for k, where := range want {
				if copies[k] == 0 {
					list = append(list, k+"("+where+")")
				}
			}
			t.Fatalf("%d acknowledged messages lost: %v", missing, list)
		}
		time.Sleep(200 * time.Millisecond)
	}
	dups := 0
	for _, n := range copies {
		if n > 1 {
			dups += n - 1
		}
	}
	t.Logf("all %d acknowledged messages delivered; %d duplicate copies (messages delivered again after a kill between delivery and its record)", len(want), dups)
	cur.Load().stop()
}
