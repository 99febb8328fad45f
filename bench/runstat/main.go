// Command runstat runs a command and reports its wall time and peak resident
// set size (getrusage ru_maxrss of the child), as GNU time -v would:
//
//	runstat [-q] COMMAND [ARG…]
//
// It prints one line to stderr:
//
//	wall_ms=… maxrss_kb=… user_ms=… sys_ms=… status=…
//
// With -q the command's standard output is discarded. runstat exits with the
// command's exit status.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
	"time"
)

func main() {
	args := os.Args[1:]
	quiet := len(args) > 0 && args[0] == "-q"
	if quiet {
		args = args[1:]
	}
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "usage: runstat [-q] COMMAND [ARG…]")
		os.Exit(2)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if quiet {
		cmd.Stdout = io.Discard
	}
	start := time.Now()
	err := cmd.Run()
	wall := time.Since(start)
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		fmt.Fprintln(os.Stderr, "runstat:", err)
		os.Exit(127)
	}
	ru, _ := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	var maxrss int64
	if ru != nil {
		maxrss = ru.Maxrss // kilobytes on Linux
	}
	code := cmd.ProcessState.ExitCode()
	fmt.Fprintf(os.Stderr, "wall_ms=%d maxrss_kb=%d user_ms=%d sys_ms=%d status=%d\n",
		wall.Milliseconds(), maxrss, cmd.ProcessState.UserTime().Milliseconds(), cmd.ProcessState.SystemTime().Milliseconds(), code)
	os.Exit(code)
}
