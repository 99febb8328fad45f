//go:build !unix

package header

// cpuTime is not available here; benchmarks report 0.
func cpuTime() int64 { return 0 }
