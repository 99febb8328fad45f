package maildir

import (
	"bytes"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkDeliver measures durable delivery throughput of 4 KiB messages
// (fsync of the file and of new/ each time) with 1 and 16 concurrent
// deliveries, and DeliverAll to 8 mailboxes at once (one read of the body,
// concurrent fsyncs).
func BenchmarkDeliver(b *testing.B) {
	msg := bytes.Repeat([]byte("0123456789abcd\r\n"), 256) // 4 KiB
	for _, par := range []int{1, 16} {
		b.Run(fmt.Sprintf("parallel=%d", par), func(b *testing.B) {
			s, _ := openStore(b)
			mbs := []string{"a@example.org", "b@example.org", "c@example.org", "d@example.org"}
			var next atomic.Int64
			var wg sync.WaitGroup
			b.SetBytes(int64(len(msg)))
			b.ResetTimer()
			start := time.Now()
			for w := range par {
				wg.Add(1)
				go func() {
					defer wg.Done()
					mb := mustAddr(b, mbs[w%len(mbs)])
					for next.Add(1) <= int64(b.N) {
						if _, err := s.Deliver(mb, Headers{Sender: "x@remote.example"}, bytes.NewReader(msg)); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
		})
	}
	b.Run("DeliverAll=8", func(b *testing.B) {
		s, _ := openStore(b)
		var targets []Target
		for i := range 8 {
			targets = append(targets, Target{Mailbox: mustAddr(b, fmt.Sprintf("u%d@example.org", i))})
		}
		b.SetBytes(int64(len(msg)) * 8)
		b.ResetTimer()
		start := time.Now()
		for range b.N {
			for _, r := range s.DeliverAll("x@remote.example", targets, bytes.NewReader(msg), int64(len(msg))) {
				if r.Err != nil {
					b.Fatal(r.Err)
				}
			}
		}
		b.ReportMetric(float64(b.N*8)/time.Since(start).Seconds(), "msgs/s")
	})
}
