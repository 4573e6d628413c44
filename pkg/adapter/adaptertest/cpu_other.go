//go:build !unix

package adaptertest

import (
	"testing"
	"time"
)

// ProcessCPU is not measured on this platform.
func ProcessCPU() time.Duration { return 0 }

// ReportCPU reports nothing on this platform.
func ReportCPU(*testing.B, time.Duration) {}
