package queue

import (
	"bytes"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkEnqueue measures durable Enqueue throughput (4 KiB messages,
// fsync on) with 1, 16 and 64 concurrent callers; msgs/fsync shows the
// group commit at work.
func BenchmarkEnqueue(b *testing.B) {
	msg := bytes.Repeat([]byte("0123456789abcde\n"), 256) // 4 KiB
	for _, callers := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("callers=%d", callers), func(b *testing.B) {
			q := open(b, filepath.Join(b.TempDir(), "queue"), Options{})
			env := Envelope{From: "a@example.org", To: []string{"b@remote.example"}}
			syncs0 := q.syncs.Load()
			var next atomic.Int64
			var wg sync.WaitGroup
			b.SetBytes(int64(len(msg)))
			b.ResetTimer()
			start := time.Now()
			for range callers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for next.Add(1) <= int64(b.N) {
						if _, err := q.Enqueue(env, bytes.NewReader(msg)); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			el := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/el.Seconds(), "msgs/s")
			b.ReportMetric(float64(b.N)/float64(q.syncs.Load()-syncs0), "msgs/fsync")
		})
	}
}
