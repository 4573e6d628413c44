//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly || solaris || illumos)

package mllp

import "net"

// peekIdle cannot peek without waiting on this platform: connIdle reads
// with a short deadline instead.
func peekIdle(net.Conn) (idle, ok bool) { return false, false }
