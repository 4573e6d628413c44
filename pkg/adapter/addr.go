package adapter

import (
	"errors"
	"fmt"
	"net"
	"strconv"
)

// CheckHostPort checks that addr is host:port with a numeric port from 1
// to 65535, or 0 (any free port) when listen is true: net.SplitHostPort
// alone passes ports such as 99999 or "http", which fail only at start.
// The error says what is wrong without repeating addr.
func CheckHostPort(addr string, listen bool) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return errors.New("must be host:port")
	}
	if !listen && host == "" {
		return errors.New("must be host:port with a host")
	}
	n, err := strconv.Atoi(port)
	low := 1
	if listen {
		low = 0
	}
	if err != nil || n < low || n > 65535 {
		return fmt.Errorf("port %q must be a number from %d to 65535", port, low)
	}
	return nil
}
