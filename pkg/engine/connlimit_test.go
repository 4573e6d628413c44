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

// TestConnLimitEvictsSilent: at the bound, with no connection idle, a new
// connection takes the place of one that has sent nothing for
// silentAfter (so connections opened and left silent cannot lock every
// client out), and is closed as it arrives while they are younger.
func TestConnLimitEvictsSilent(t *testing.T) {
	for _, tc := range []struct {
		name        string
		silentAfter time.Duration
		admitted    bool
	}{
		{"silent long enough", 50 * time.Millisecond, true},
		{"silent too briefly", time.Hour, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			var refused atomic.Int64
			limit := newConnLimit(ln, 2, func() { refused.Add(1) })
			limit.silentAfter = tc.silentAfter
			srv := &http.Server{
				Handler:           http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") }),
				ConnState:         limit.connState,
				ReadHeaderTimeout: 10 * time.Second,
			}
			go func() { _ = srv.Serve(limit) }()
			defer srv.Close()
			dial := func() net.Conn {
				t.Helper()
				c, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					t.Fatal(err)
				}
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				t.Cleanup(func() { c.Close() })
				return c
			}
			// Two connections that send nothing hold the bound.
			silent := []net.Conn{dial(), dial()}
			deadline := time.Now().Add(5 * time.Second)
			for {
				limit.mu.Lock()
				n := len(limit.open)
				limit.mu.Unlock()
				if n == 2 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%d connections admitted, want 2", n)
				}
				time.Sleep(5 * time.Millisecond)
			}
			time.Sleep(100 * time.Millisecond)
			c := dial()
			_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if got := err == nil && resp.StatusCode == http.StatusOK; got != tc.admitted {
				t.Fatalf("new connection answered %v (err %v), want %v", got, err, tc.admitted)
			}
			if err == nil {
				resp.Body.Close()
			}
			if got := refused.Load() == 0; got != tc.admitted {
				t.Errorf("refused %d, admitted %v", refused.Load(), tc.admitted)
			}
			closed := 0
			for _, s := range silent {
				_ = s.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
				_, err := s.Read(make([]byte, 1))
				var ne net.Error
				if err != nil && !(errors.As(err, &ne) && ne.Timeout()) {
					closed++
				}
			}
			if want := map[bool]int{true: 1, false: 0}[tc.admitted]; closed != want {
				t.Errorf("%d silent connections closed for the new one, want %d", closed, want)
			}
		})
	}
}
