package engine

import (
	"crypto/tls"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// connLimit bounds the connections an HTTP listener holds open. At the
// bound, a new connection takes the place of an idle keep-alive one,
// which is closed (a client reusing it dials again, as it does when a
// server's idle timeout ends one), or else of the one that has sent
// nothing longest, if for silentAfter: a client sends its request (or
// its TLS hello) as soon as it connects, so connections opened and left
// silent, which anyone can open by the thousand, cannot hold every place
// and lock out probes, scrapes and posts. With none of either, the new
// connection is closed as it arrives. Connections still sending their
// first request are bounded in time by the server's read_header_timeout,
// so a slow sender holds a place for that long at most.
type connLimit struct {
	net.Listener
	max int
	// refused is called for each connection closed as it arrived.
	refused func()
	// silentAfter is how long a connection must have sent nothing for a
	// new one to take its place (defaultSilentAfter; tests shorten it).
	silentAfter time.Duration

	mu   sync.Mutex
	open map[*limitedConn]bool
	idle map[*limitedConn]bool
}

// defaultSilentAfter is how long a connection must have sent nothing
// for a new one to take its place at the bound.
const defaultSilentAfter = time.Second

func newConnLimit(ln net.Listener, max int, refused func()) *connLimit {
	return &connLimit{Listener: ln, max: max, refused: refused, silentAfter: defaultSilentAfter, open: map[*limitedConn]bool{}, idle: map[*limitedConn]bool{}}
}

// Accept returns the next connection the limit admits.
func (l *connLimit) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		now := time.Now()
		l.mu.Lock()
		var evict *limitedConn
		if len(l.open) >= l.max {
			for ic := range l.idle {
				evict = ic
				break
			}
			if evict == nil {
				evict = l.silentLocked(now)
			}
			if evict == nil {
				l.mu.Unlock()
				// Counted before the client sees the close, so one that
				// sees it finds the refusal counted.
				l.refused()
				_ = c.Close()
				continue
			}
			l.forget(evict)
		}
		lc := &limitedConn{Conn: c, l: l, accepted: now}
		l.open[lc] = true
		l.mu.Unlock()
		if evict != nil {
			_ = evict.Conn.Close()
		}
		return lc, nil
	}
}

// silentLocked returns the open connection that has sent nothing
// longest, if for silentAfter, or nil; l.mu is held.
func (l *connLimit) silentLocked(now time.Time) *limitedConn {
	var oldest *limitedConn
	for c := range l.open {
		if c.spoke.Load() || now.Sub(c.accepted) < l.silentAfter {
			continue
		}
		if oldest == nil || c.accepted.Before(oldest.accepted) {
			oldest = c
		}
	}
	return oldest
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
	// accepted is when the listener took the connection.
	accepted time.Time
	// spoke is set once a byte has been read from the connection.
	spoke atomic.Bool
}

// Read reads from the connection, noting that the client has spoken.
func (c *limitedConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 && !c.spoke.Load() {
		c.spoke.Store(true)
	}
	return n, err
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
