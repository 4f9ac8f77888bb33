//go:build unix

package store_test

import (
	"syscall"
	"time"
)

// processCPU returns the CPU time the test process has used, user and
// system, so that benchmarks can tell the client's cost from the server's.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
