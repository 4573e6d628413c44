package engine

import (
	"crypto/tls"
	"net"
	"net/http"
	"sync"
)

// connLimit bounds the connections an HTTP listener holds open. At the
// bound, a new connection takes the place of an idle keep-alive one,
// which is closed (a client reusing it dials again, as it does when a
// server's idle timeout ends one); with none idle, the new connection is
// closed as it arrives. Connections still sending their first request are
// bounded in time by the server's read_header_timeout, so a slow sender
// holds a place for that long at most.
type connLimit struct {
	net.Listener
	max int
	// refused is called for each connection closed as it arrived.
	refused func()

	mu   sync.Mutex
	open map[*limitedConn]bool
	idle map[*limitedConn]bool
}

func newConnLimit(ln net.Listener, max int, refused func()) *connLimit {
	return &connLimit{Listener: ln, max: max, refused: refused, open: map[*limitedConn]bool{}, idle: map[*limitedConn]bool{}}
}

// Accept returns the next connection the limit admits.
func (l *connLimit) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		l.mu.Lock()
		var evict *limitedConn
		if len(l.open) >= l.max {
			for ic := range l.idle {
				evict = ic
				break
			}
			if evict == nil {
				l.mu.Unlock()
				_ = c.Close()
				l.refused()
				continue
			}
			l.forget(evict)
		}
		lc := &limitedConn{Conn: c, l: l}
		l.open[lc] = true
		l.mu.Unlock()
		if evict != nil {
			_ = evict.Conn.Close()
		}
		return lc, nil
	}
}

// forget drops c from the limit's accounts; l.mu is held.
func (l *connLimit) forget(c *limitedConn) {
	delete(l.open, c)
	delete(l.idle, c)
}

// connState is the http.Server's ConnState hook: it tells the limit which
// connections are idle between requests.
func (l *connLimit) connState(c net.Conn, st http.ConnState) {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	lc, ok := c.(*limitedConn)
	if !ok {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	switch st {
	case http.StateIdle:
		if l.open[lc] {
			l.idle[lc] = true
		}
	case http.StateActive:
		delete(l.idle, lc)
	case http.StateClosed, http.StateHijacked:
		l.forget(lc)
	}
}

// limitedConn is a connection connLimit admitted.
type limitedConn struct {
	net.Conn
	l    *connLimit
	once sync.Once
}

// Close closes the connection and frees its place.
func (c *limitedConn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		c.l.forget(c)
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}
