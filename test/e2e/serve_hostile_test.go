package e2e

// Hostile SMTP clients against `mailgate serve`: each gets its error or its
// timeout, and the server keeps serving everyone else.

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailgate/mailgate/internal/smtpsink"
)

// served checks that a well-behaved client (from 127.0.0.2, another client
// address than the attackers on 127.0.0.1) still gets a message through.
func served(t *testing.T, p *serveProc, marker string) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", p.addr("smtp"))
	if err != nil {
		t.Fatalf("well-behaved client: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	s := &rawSession{t: t, conn: c, r: bufio.NewReader(c)}
	if got := s.read(); !strings.HasPrefix(got, "220") {
		t.Fatalf("well-behaved client greeting: %q", got)
	}
	for _, step := range []struct{ cmd, want string }{
		{"EHLO good.example", "250"},
		{"MAIL FROM:<good@remote.example>", "250"},
		{"RCPT TO:<user1@localhost.localdomain>", "250"},
		{"DATA", "354"},
		{"Subject: " + marker + "\r\n\r\nfine\r\n.", "250"},
		{"QUIT", "221"},
	} {
		if got := s.cmd(step.cmd); !strings.HasPrefix(got, step.want) {
			t.Fatalf("well-behaved client: %q → %q, want %s", step.cmd, got, step.want)
		}
	}
	waitMaildir(t, p.data, "user1@localhost.localdomain", marker, 5*time.Second)
}

func TestServeHostile(t *testing.T) {
	p, _ := serveFixture(t, smtpsink.Options{}, "--set", "smtp_timeout=3s", "--set", "data_timeout=3s")
	inbound := func(t *testing.T) *rawSession {
		s := dialRaw(t, p.addr("smtp"))
		for _, cmd := range []string{"EHLO attacker.example", "MAIL FROM:<a@remote.example>", "RCPT TO:<user1@localhost.localdomain>"} {
			if got := s.cmd(cmd); !strings.HasPrefix(got, "250") {
				t.Fatalf("%s: %q", cmd, got)
			}
		}
		return s
	}

	t.Run("bare LF in DATA", func(t *testing.T) {
		s := inbound(t)
		s.cmd("DATA")
		// The smuggling pattern: a bare-LF "end of data" followed by a
		// second transaction, then the real end.
		got := s.cmd("Subject: smuggle\r\n\r\nx\n.\nMAIL FROM:<evil@remote.example>\r\nRCPT TO:<user1@localhost.localdomain>\r\n.")
		if !strings.HasPrefix(got, "550 5.6.0") {
			t.Errorf("bare LF: want 550 5.6.0, got %q", got)
		}
		served(t, p, "after-bare-lf")
	})

	t.Run("10 MB of header", func(t *testing.T) {
		s := inbound(t)
		s.cmd("DATA")
		w := bufio.NewWriterSize(s.conn, 1<<16)
		line := "X-Filler: " + strings.Repeat("a", 988) + "\r\n"
		for i := 0; i < 10<<20/len(line); i++ {
			w.WriteString(line)
		}
		w.WriteString("Subject: big\r\n\r\nbody\r\n.\r\n")
		if err := w.Flush(); err != nil {
			t.Fatalf("writing the header: %v", err)
		}
		if got := s.read(); !strings.HasPrefix(got, "552 5.3.4") {
			t.Errorf("10 MB header: want 552 5.3.4, got %q", got)
		}
		served(t, p, "after-big-header")
	})

	t.Run("10000 RCPTs", func(t *testing.T) {
		s := inbound(t)
		w := bufio.NewWriter(s.conn)
		for i := 0; i < 10000; i++ {
			fmt.Fprintf(w, "RCPT TO:<alias1+%d@localhost.localdomain>\r\n", i)
		}
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		ok, limited := 0, 0
		for i := 0; i < 10000; i++ {
			got := s.read()
			switch {
			case strings.HasPrefix(got, "250"):
				ok++
			case strings.HasPrefix(got, "452 4.5.3"):
				limited++
			default:
				t.Fatalf("RCPT %d: %q", i, got)
			}
		}
		// One RCPT was sent by inbound(); max_recipients is 1000.
		if ok != 999 || limited != 9001 {
			t.Errorf("10000 RCPTs: %d accepted, %d refused with 452 4.5.3; want 999 and 9001", ok, limited)
		}
		s.cmd("DATA")
		if got := s.cmd("Subject: many\r\n\r\nx\r\n."); !strings.HasPrefix(got, "250") {
			t.Errorf("DATA after 1000 recipients: %q", got)
		}
		served(t, p, "after-many-rcpts")
	})

	t.Run("client stops mid-DATA", func(t *testing.T) {
		s := inbound(t)
		s.cmd("DATA")
		s.conn.Write([]byte("Subject: stalled\r\n\r\npart"))
		start := time.Now()
		s.conn.SetDeadline(time.Now().Add(15 * time.Second))
		got := s.read() // the server gives up after data_timeout
		if time.Since(start) > 10*time.Second {
			t.Errorf("stalled DATA not cut off after %v (%q)", time.Since(start), got)
		}
		if strings.HasPrefix(got, "250") {
			t.Errorf("stalled DATA accepted: %q", got)
		}
		served(t, p, "after-stall")
		for _, f := range maildirFiles(t, p.data, "user1@localhost.localdomain") {
			if b := readFile(t, f); strings.Contains(b, "Subject: stalled") {
				t.Errorf("the stalled message was delivered")
			}
		}
	})

	t.Run("1000 idle connections", func(t *testing.T) {
		var mu sync.Mutex
		replies := map[string]int{}
		var wg sync.WaitGroup
		conns := make(chan net.Conn, 1000)
		for i := 0; i < 1000; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := net.DialTimeout("tcp", p.addr("smtp"), 10*time.Second)
				if err != nil {
					mu.Lock()
					replies["dial error"]++
					mu.Unlock()
					return
				}
				conns <- c
				c.SetDeadline(time.Now().Add(20 * time.Second))
				r := bufio.NewReader(c)
				// Read until the server closes: a 220 then a timeout 421,
				// or an immediate 421 for connections over the limit.
				var last string
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						break
					}
					last = line[:min(len(line), 9)]
				}
				mu.Lock()
				replies[last]++
				mu.Unlock()
			}()
		}
		time.Sleep(500 * time.Millisecond)
		served(t, p, "during-idle-flood")
		wg.Wait()
		close(conns)
		for c := range conns {
			c.Close()
		}
		t.Logf("replies to 1000 idle connections: %v", replies)
		if replies["421 4.4.2"] == 0 || replies["421 4.7.0"] == 0 || replies["421 4.4.2"]+replies["421 4.7.0"] != 1000 {
			t.Errorf("want every idle connection cut off with 421 4.4.2 (timeout) or refused with 421 4.7.0 (limit): %v", replies)
		}
		served(t, p, "after-idle-flood")
	})
}
