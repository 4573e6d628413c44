//go:build unix

package adaptertest

import (
	"syscall"
	"testing"
	"time"
)

// ProcessCPU returns the user and system CPU time the process has used.
func ProcessCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// ReportCPU reports the process CPU time per operation since start (a
// ProcessCPU reading) as cpu-ns/op. On a shared machine it is steadier
// than ns/op, which also counts the time other processes held the core;
// with -cpu=1 it includes the garbage collector's work.
func ReportCPU(b *testing.B, start time.Duration) {
	if start > 0 && b.N > 0 {
		b.ReportMetric(float64(ProcessCPU()-start)/float64(b.N), "cpu-ns/op")
	}
}
