//go:build unix

package header

import "syscall"

// cpuTime returns the CPU time (user + system) used by the process so far, in
// nanoseconds. Benchmarks report it per operation because wall-clock figures
// are meaningless on a shared machine.
func cpuTime() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
