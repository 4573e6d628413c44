//go:build !unix

package pathology

import (
	"testing"
	"time"
)

// processCPU is not measured on this platform.
func processCPU() time.Duration { return 0 }

// reportCPU reports nothing on this platform.
func reportCPU(*testing.B, time.Duration) {}
