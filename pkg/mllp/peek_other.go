//go:build !unix

package mllp

import "net"

// peekIdle cannot peek without waiting on this platform: connIdle reads
// with a short deadline instead.
func peekIdle(net.Conn) (idle, ok bool) { return false, false }
