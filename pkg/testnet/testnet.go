// Package testnet holds network fixtures for tests.
package testnet

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Silent returns the address of a loopback TCP listener that accepts
// connections and never answers on them, as a hung receiver or collector
// does. It and its connections close when the test ends.
func Silent(tb testing.TB) string {
	tb.Helper()
	return listen(tb, func(net.Conn, func(net.Conn)) {}, nil)
}

// listen starts a loopback TCP listener that hands each connection it
// accepts to handle, with a function that closes another connection
// when the test ends too; it, and every connection, close then, after
// onClose. It returns the listener's address.
func listen(tb testing.TB, handle func(c net.Conn, track func(net.Conn)), onClose func()) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	track := func(c net.Conn) {
		mu.Lock()
		defer mu.Unlock()
		conns = append(conns, c)
	}
	tb.Cleanup(func() {
		if onClose != nil {
			onClose()
		}
		_ = l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			track(c)
			handle(c, track)
		}
	}()
	return l.Addr().String()
}

// Proxy forwards loopback TCP connections to a target. After Freeze it
// holds every connection open and passes nothing on either way, as a
// server stopped with SIGSTOP or cut off by a partition does.
type Proxy struct {
	addr   string
	frozen atomic.Bool
	done   chan struct{}
}

// NewProxy starts a Proxy to target. It and its connections close when
// the test ends.
func NewProxy(tb testing.TB, target string) *Proxy {
	tb.Helper()
	p := &Proxy{done: make(chan struct{})}
	p.addr = listen(tb, func(in net.Conn, track func(net.Conn)) {
		out, err := net.Dial("tcp", target)
		if err != nil {
			_ = in.Close()
			return
		}
		track(out)
		go p.pipe(in, out)
		go p.pipe(out, in)
	}, func() { close(p.done) })
	return p
}

// Addr is the proxy's address.
func (p *Proxy) Addr() string { return p.addr }

// Freeze stops the proxy passing anything on, for good.
func (p *Proxy) Freeze() { p.frozen.Store(true) }

// pipe copies from src to dst until either fails, holding what it read
// while the proxy is frozen.
func (p *Proxy) pipe(src, dst net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		for p.frozen.Load() {
			select {
			case <-p.done:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
