package engine

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"
)

// TestConnLimit: at the bound, a new connection takes an idle keep-alive
// connection's place, and with none idle it is closed as it arrives and
// counted; a place is free again once a connection closes.
func TestConnLimit(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var refused atomic.Int64
	limit := newConnLimit(ln, 2, func() { refused.Add(1) })
	srv := &http.Server{
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") }),
		ConnState:         limit.connState,
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() { _ = srv.Serve(limit) }()
	defer srv.Close()
	addr := ln.Addr().String()

	dial := func() net.Conn {
		t.Helper()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		t.Cleanup(func() { c.Close() })
		return c
	}
	// get sends one keep-alive request on c and reports whether it was
	// answered.
	get := func(c net.Conn) bool {
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			return false
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
	// closed reports whether the server closed c (a read ends other than
	// by timing out).
	closed := func(c net.Conn) bool {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err := c.Read(make([]byte, 1))
		var ne net.Error
		return err != nil && !(errors.As(err, &ne) && ne.Timeout())
	}
	waitIdle := func(n int) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			limit.mu.Lock()
			idle := len(limit.idle)
			limit.mu.Unlock()
			if idle == n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d idle connections, want %d", idle, n)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	// Two connections, each idle after a request: the bound is reached.
	a, b := dial(), dial()
	if !get(a) || !get(b) {
		t.Fatal("requests within the bound not answered")
	}
	waitIdle(2)
	// A third takes an idle one's place.
	c := dial()
	if !get(c) {
		t.Fatal("a new connection was not admitted in an idle one's place")
	}
	if refused.Load() != 0 {
		t.Errorf("refused %d, want 0", refused.Load())
	}
	evicted := 0
	for _, old := range []net.Conn{a, b} {
		if !get(old) {
			evicted++
		}
	}
	if evicted != 1 {
		t.Errorf("%d idle connections closed for the new one, want 1", evicted)
	}

	// Connections still sending their first request are not idle: with
	// the bound held by them, a new one is closed as it arrives.
	d, e := dial(), dial()
	_, _ = io.WriteString(d, "GET / HTTP/1.1\r\n")
	_, _ = io.WriteString(e, "GET / HTTP/1.1\r\n")
	deadline := time.Now().Add(5 * time.Second)
	for refused.Load() == 0 && time.Now().Before(deadline) {
		f := dial()
		if !closed(f) {
			t.Fatal("a connection over the bound, none idle, was not closed")
		}
	}
	if refused.Load() == 0 {
		t.Fatal("no connection counted as refused")
	}
}
