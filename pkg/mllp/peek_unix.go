//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly || solaris || illumos

package mllp

import (
	"errors"
	"net"
	"syscall"
	"time"
)

// peekIdle reports, for a plain TCP connection, whether it is open with
// nothing to read, by peeking at its socket without waiting; ok is false
// for any other connection.
func peekIdle(nc net.Conn) (idle, ok bool) {
	tc, isTCP := nc.(*net.TCPConn)
	if !isTCP {
		return false, false
	}
	// A deadline an earlier Send left, now past, would fail the peek.
	if err := tc.SetReadDeadline(time.Time{}); err != nil {
		return false, true
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return false, false
	}
	var perr error
	var b [1]byte
	err = rc.Read(func(fd uintptr) bool {
		_, _, perr = syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return true // one attempt: never wait
	})
	if err != nil {
		return false, true
	}
	switch {
	case errors.Is(perr, syscall.EAGAIN) || errors.Is(perr, syscall.EWOULDBLOCK):
		return true, true // open, nothing sent
	default:
		return false, true // closed (nothing to peek), reset, or bytes unasked
	}
}
