package mllp

import (
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/junction-fhir/junction/pkg/budget"
	"github.com/junction-fhir/junction/pkg/fault"
)

// Server defaults.
const (
	// DefaultAddr is the address a Server listens on when Addr is empty:
	// the IANA port for HL7 over MLLP.
	DefaultAddr = ":2575"
	// DefaultReadTimeout bounds the receipt of one frame.
	DefaultReadTimeout = 30 * time.Second
	// DefaultIdleTimeout bounds the wait for the next frame.
	DefaultIdleTimeout = 5 * time.Minute
	// DefaultEvictIdleAfter is how long a connection must have been idle
	// to be closed for a new one when the server is full.
	DefaultEvictIdleAfter = time.Second
	// DefaultEvictSlowFrameAfter is how long a frame must have been
	// arriving for its connection to be closed for a new one when the
	// server is full and no connection is idle.
	DefaultEvictSlowFrameAfter = 5 * time.Second
	// DefaultHandshakeTimeout bounds a TLS handshake (or ReadTimeout,
	// when shorter).
	DefaultHandshakeTimeout = 10 * time.Second
	// DefaultMaxBufferedBytes is the default budget of a listener's
	// frames beyond FreeFrameBytes each: 128 MiB.
	DefaultMaxBufferedBytes = 128 << 20
	// DefaultWriteTimeout bounds the writing of one reply.
	DefaultWriteTimeout = 10 * time.Second
)

// Why a connection was refused, as OnRefused is told.
const (
	// RefusedFull: MaxConns connections were open and none could make
	// room.
	RefusedFull = "too_many_connections"
	// RefusedHostFull: MaxConnsPerHost connections from its host were
	// open and none of them could make room.
	RefusedHostFull = "too_many_connections_from_host"
)

// ConnInfo describes a connection to a Server.
type ConnInfo struct {
	// ID numbers the server's connections from 1.
	ID uint64
	// Remote is the peer's address.
	Remote net.Addr
	// TLS reports whether the connection uses TLS.
	TLS bool
	// PeerCertificates are the certificates the TLS peer presented, leaf
	// first, if any.
	PeerCertificates []*x509.Certificate
}

// Handler handles one frame and returns the reply frame payload (nil for
// no reply) and whether to close the connection after writing it.
//
// The server calls a connection's handler for one frame at a time, in
// order, and reads the next frame only after the reply is written. The
// payload belongs to the handler, which may keep it. The context is
// cancelled when the server gives up waiting in Shutdown.
type Handler interface {
	ServeMLLP(ctx context.Context, c *ConnInfo, payload []byte) (reply []byte, closeConn bool)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, c *ConnInfo, payload []byte) ([]byte, bool)

// ServeMLLP calls f.
func (f HandlerFunc) ServeMLLP(ctx context.Context, c *ConnInfo, payload []byte) ([]byte, bool) {
	return f(ctx, c, payload)
}

// Server accepts MLLP connections and hands each frame to Handler. Set
// its fields before calling Listen or Serve and do not change them after.
// Its zero value, given a Handler, listens on DefaultAddr.
type Server struct {
	// Addr is the TCP address to listen on, such as "127.0.0.1:0";
	// DefaultAddr if empty.
	Addr string
	// Handler is called for every frame; required.
	Handler Handler
	// MaxMessageBytes limits a frame's payload; DefaultMaxMessageBytes if
	// not positive.
	MaxMessageBytes int
	// ReadTimeout is the longest time to receive one whole frame once its
	// start block has arrived; DefaultReadTimeout if zero, none if
	// negative. The TLS handshake is bounded by it too.
	ReadTimeout time.Duration
	// IdleTimeout closes a connection idle between frames this long;
	// DefaultIdleTimeout if zero, none if negative.
	IdleTimeout time.Duration
	// WriteTimeout bounds the writing of one reply; DefaultWriteTimeout if
	// zero, none if negative.
	WriteTimeout time.Duration
	// MaxBufferedBytes bounds the bytes the frames being read on all
	// connections hold together beyond FreeFrameBytes each;
	// DefaultMaxBufferedBytes if zero, no bound if negative. A frame that
	// would need more is refused with an error wrapping ErrBusy.
	MaxBufferedBytes int64
	// MaxConns limits the number of open connections; 0 means no limit.
	// A connection over the limit closes another to make room, the first
	// found of: the one whose TLS handshake has been running longest, if
	// for EvictIdleAfter (a handshake on a working link takes
	// milliseconds, and a client without a certificate must not hold a
	// place); the one idle longest that has sent no frame yet, if for
	// EvictIdleAfter; the one idle between frames longest, if for
	// EvictIdleAfter; the one whose frame has been arriving longest, if
	// for EvictSlowFrameAfter. Idle or trickling senders cannot lock out
	// others, and connections opened and left silent go before senders
	// that have spoken; the one closed reconnects when it next sends, and
	// was owed no reply. Otherwise the new connection is closed as soon
	// as it is accepted.
	MaxConns int
	// EvictIdleAfter is how long a connection must have been idle to be
	// closed for a new one when MaxConns are open; DefaultEvictIdleAfter
	// if zero, never if negative.
	EvictIdleAfter time.Duration
	// EvictSlowFrameAfter is how long a frame must have been arriving for
	// its connection to be closed for a new one when MaxConns are open
	// and none is idle (slow senders cannot lock others out either);
	// DefaultEvictSlowFrameAfter if zero, never if negative.
	EvictSlowFrameAfter time.Duration
	// MaxConnsPerHost limits the open connections from one remote IP
	// address; 0 means no limit. A connection over it closes another of
	// the same host's to make room, chosen as for MaxConns, or is closed
	// as soon as it is accepted. One busy or misbehaving host cannot then
	// take every place MaxConns allows. Senders behind one NAT share a
	// host's places.
	MaxConnsPerHost int
	// OnRefused, if set, is called for each connection closed because
	// MaxConns, or MaxConnsPerHost from its host, were open, just before
	// it is closed, with RefusedFull or RefusedHostFull, so the refusal
	// can be counted.
	OnRefused func(c *ConnInfo, why string)
	// OnEvicted, if set, is called for each idle connection closed to
	// admit a new one.
	OnEvicted func(c *ConnInfo)
	// OnConns, if set, is called with the number of open connections
	// whenever it changes.
	OnConns func(open int)
	// TLSConfig, if set, makes the server accept TLS only.
	TLSConfig *tls.Config
	// Logger receives connection events, with the connection id and remote
	// address only, never payloads. Nil discards them.
	Logger *slog.Logger
	// OnFrameError, if set, is called when a frame is invalid, too large or
	// incomplete, with an error wrapping ErrInvalidFrame, ErrTooLarge or
	// ErrIncompleteFrame and the part of the payload read so far (possibly
	// nil), before the connection is closed. It may return a reply payload
	// to send first, such as a reject ACK, or nil; for a peer that closed
	// inside a frame (the error wraps io.ErrUnexpectedEOF too) the reply is
	// not sent.
	OnFrameError func(ctx context.Context, c *ConnInfo, err error, partial []byte) []byte

	// budget is made from MaxBufferedBytes when serving starts.
	budget *budget.Bytes

	mu    sync.Mutex
	ln    net.Listener
	conns map[*serverConn]struct{}
	// hosts counts open connections by remote host, with MaxConnsPerHost.
	hosts    map[netip.Addr]int
	shutting bool
	// stopped is closed when shutdown begins.
	stopped chan struct{}
	serving bool
	baseCtx context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	nextID  atomic.Uint64
	active  atomic.Int64
	// reportMu serialises OnConns calls.
	reportMu sync.Mutex
}

type serverConn struct {
	nc   net.Conn
	info ConnInfo
	// host is the remote IP address (the zero Addr when not TCP).
	host netip.Addr
	// busy is set while a frame is being handled and its reply written;
	// guarded by Server.mu.
	busy bool
	// idleSince is when the connection last went idle between frames
	// (Unix nanoseconds), 0 while a frame is being read or handled.
	idleSince atomic.Int64
	// frameSince is when the start block of the frame being read arrived
	// (Unix nanoseconds), 0 outside a frame.
	frameSince atomic.Int64
	// handshakeSince is when the connection was accepted (Unix
	// nanoseconds) while its TLS handshake runs, else 0.
	handshakeSince atomic.Int64
	// spoke is set once a frame has been read on the connection.
	spoke atomic.Bool
	// evicted is set, under Server.mu, when the connection is closed for
	// a new one: a frame it read meanwhile is not handled.
	evicted bool
}

func (s *Server) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.New(slog.DiscardHandler)
}

func duration(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// deadline returns the time d from now, or no deadline if d is negative.
func deadline(d time.Duration) time.Time {
	if d < 0 {
		return time.Time{}
	}
	return time.Now().Add(d)
}

// Listen binds the server's address, so that ListenAddr reports the real
// address (useful with port 0) before Serve is called.
func (s *Server) Listen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.listenLocked()
}

func (s *Server) listenLocked() error {
	if s.shutting {
		return fault.New(fault.CodeConfig, "mllp server is shut down")
	}
	if s.ln != nil {
		return fault.New(fault.CodeConfig, "mllp server is already listening")
	}
	if s.Handler == nil {
		return fault.New(fault.CodeConfig, "mllp server has no handler")
	}
	addr := s.Addr
	if addr == "" {
		addr = DefaultAddr
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fault.Wrap(fault.Permanent, fault.CodeConfig, "mllp listen failed", err)
	}
	if s.TLSConfig != nil {
		ln = tls.NewListener(ln, s.TLSConfig)
	}
	s.ln = ln
	return nil
}

// ListenAddr returns the address the server listens on, or nil before
// Listen.
func (s *Server) ListenAddr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// ActiveConns returns the number of open connections.
func (s *Server) ActiveConns() int { return int(s.active.Load()) }

// Serve accepts connections until Shutdown is called or ctx is done, and
// serves each on its own goroutine. It calls Listen first if that has not
// been done. It returns nil when stopped by Shutdown or ctx, at once if
// the server was already shut down, and an error if it cannot listen.
//
// When ctx is done Serve stops as if Shutdown had been called, without
// waiting: in-flight handlers still finish and write their replies. Call
// Shutdown to wait for them. Handlers get a context that keeps ctx's
// values but not its cancellation; it is cancelled only when Shutdown
// gives up waiting.
func (s *Server) Serve(ctx context.Context) error {
	s.mu.Lock()
	if s.shutting {
		s.mu.Unlock()
		return nil
	}
	if s.serving {
		s.mu.Unlock()
		return fault.New(fault.CodeConfig, "mllp server is already serving")
	}
	if s.ln == nil {
		if err := s.listenLocked(); err != nil {
			s.mu.Unlock()
			return err
		}
	}
	s.serving = true
	if s.MaxBufferedBytes >= 0 {
		s.budget = budget.New(cmp.Or(s.MaxBufferedBytes, DefaultMaxBufferedBytes))
	}
	if s.stopped == nil {
		s.stopped = make(chan struct{})
	}
	stopped := s.stopped
	s.baseCtx, s.cancel = context.WithCancel(context.WithoutCancel(ctx))
	ln := s.ln
	s.mu.Unlock()

	log := s.logger()
	// Debug: an adapter using the server logs where it listens itself.
	log.Debug("mllp server listening", "addr", ln.Addr().String(), "tls", s.TLSConfig != nil)
	stop := context.AfterFunc(ctx, s.beginShutdown)
	defer stop()

	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.isShutting() {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fault.Wrap(fault.Transient, fault.CodeInternal, "mllp listener closed", err)
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			log.Warn("mllp accept failed", "error", err.Error(), "retry_in", backoff.String())
			select {
			case <-time.After(backoff):
			case <-stopped:
			}
			continue
		}
		backoff = 0
		s.startConn(nc)
	}
}

func (s *Server) isShutting() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.shutting
}

func (s *Server) startConn(nc net.Conn) {
	_, isTLS := nc.(*tls.Conn)
	c := &serverConn{nc: nc, info: ConnInfo{ID: s.nextID.Add(1), Remote: nc.RemoteAddr(), TLS: isTLS}}
	if a, ok := nc.RemoteAddr().(*net.TCPAddr); ok {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			c.host = ip.Unmap()
		}
	}
	// Idle from its accept, in accept order, unless a TLS handshake
	// comes first.
	if isTLS {
		c.handshakeSince.Store(time.Now().UnixNano())
	} else {
		c.idleSince.Store(time.Now().UnixNano())
	}
	log := s.logger()
	s.mu.Lock()
	if s.shutting {
		s.mu.Unlock()
		_ = nc.Close()
		return
	}
	victim, why, refused := s.makeRoomLocked(c)
	if refused != "" {
		s.mu.Unlock()
		log.Warn("mllp connection refused: too many connections", "why", refused, "conn", c.info.ID, "remote", remote(c.info.Remote), "max_conns", s.MaxConns, "max_conns_per_host", s.MaxConnsPerHost)
		if s.OnRefused != nil {
			// Counted before the peer sees the close, so a sender (or a
			// test) that sees it finds the refusal counted.
			s.OnRefused(&c.info, refused)
		}
		_ = nc.Close()
		return
	}
	if victim != nil {
		// Its goroutine finishes when the close wakes its read; a frame
		// it read meanwhile is not handled (setBusy), so it is owed no
		// reply.
		victim.evicted = true
		s.removeLocked(victim)
	}
	if s.conns == nil {
		s.conns = make(map[*serverConn]struct{})
		s.hosts = make(map[netip.Addr]int)
	}
	s.conns[c] = struct{}{}
	s.hosts[c.host]++
	s.wg.Add(1)
	s.active.Add(1)
	ctx := s.baseCtx
	s.mu.Unlock()
	if victim != nil {
		// Not on the accept loop: closing a TLS connection may wait.
		go func() { _ = victim.nc.Close() }()
		log.Info("mllp connection closed for a new one", "why", why, "conn", victim.info.ID, "remote", remote(victim.info.Remote), "new_conn", c.info.ID, "max_conns", s.MaxConns, "max_conns_per_host", s.MaxConnsPerHost)
		if s.OnEvicted != nil {
			s.OnEvicted(&victim.info)
		}
	}
	s.reportConns()
	go s.serveConn(ctx, c)
}

// reportConns gives OnConns the number of open connections. Calls are
// serialised and each reads the count afresh, so the last one made after
// a change reports the count as it stands, whatever order they ran in.
func (s *Server) reportConns() {
	if s.OnConns == nil {
		return
	}
	s.reportMu.Lock()
	defer s.reportMu.Unlock()
	s.OnConns(int(s.active.Load()))
}

// makeRoomLocked decides whether the new connection c may open: it
// returns the connection to close to make room for it and why, or, when
// none can make room, why c is refused (RefusedHostFull or RefusedFull).
// A host at MaxConnsPerHost makes room from its own connections only; one
// closed there leaves the total as it was. s.mu is held.
func (s *Server) makeRoomLocked(c *serverConn) (victim *serverConn, why, refused string) {
	now := time.Now()
	if s.MaxConnsPerHost > 0 && s.hosts[c.host] >= s.MaxConnsPerHost {
		if victim, why = s.idlestLocked(now, &c.host); victim == nil {
			return nil, "", RefusedHostFull
		}
		return victim, why + ", same host", ""
	}
	if s.MaxConns > 0 && len(s.conns) >= s.MaxConns {
		if victim, why = s.idlestLocked(now, nil); victim == nil {
			return nil, "", RefusedFull
		}
	}
	return victim, why, ""
}

// removeLocked forgets the open connection c. s.mu is held.
func (s *Server) removeLocked(c *serverConn) {
	delete(s.conns, c)
	if n := s.hosts[c.host]; n > 1 {
		s.hosts[c.host] = n - 1
	} else {
		delete(s.hosts, c.host)
	}
}

// idlestLocked returns the connection to close for a new one, in the
// order MaxConns gives, and why it was chosen (handshake, silent, idle,
// slow frame), or nil; with host, only that host's connections are
// considered. s.mu is held.
func (s *Server) idlestLocked(now time.Time, host *netip.Addr) (*serverConn, string) {
	idleAfter := duration(s.EvictIdleAfter, DefaultEvictIdleAfter)
	slowAfter := duration(s.EvictSlowFrameAfter, DefaultEvictSlowFrameAfter)
	// The oldest candidate of each kind, by the time it became one.
	var shaking, silent, idle, slow oldest
	for c := range s.conns {
		if c.busy || (host != nil && c.host != *host) {
			continue
		}
		if idleAfter > 0 {
			shaking.offer(c, c.handshakeSince.Load(), now, idleAfter)
			if since := c.idleSince.Load(); !c.spoke.Load() {
				silent.offer(c, since, now, idleAfter)
			} else {
				idle.offer(c, since, now, idleAfter)
			}
		}
		if slowAfter > 0 {
			slow.offer(c, c.frameSince.Load(), now, slowAfter)
		}
	}
	for _, o := range []struct {
		oldest
		why string
	}{{shaking, "tls handshake unfinished"}, {silent, "silent since opened"}, {idle, "idle"}, {slow, "slow frame"}} {
		if o.c != nil {
			return o.c, o.why
		}
	}
	return nil, ""
}

// oldest keeps the connection that has been in some state longest.
type oldest struct {
	c     *serverConn
	since int64
}

// offer considers c, in the state since (Unix nanoseconds; 0: not in it),
// if it has been for at least after.
func (o *oldest) offer(c *serverConn, since int64, now time.Time, after time.Duration) {
	if since != 0 && now.Sub(time.Unix(0, since)) >= after && (o.c == nil || since < o.since) {
		o.c, o.since = c, since
	}
}

func remote(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

// wasEvicted reports whether c was closed for a new connection.
func (s *Server) wasEvicted(c *serverConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return c.evicted
}

// setBusy marks c busy (true) or idle (false). It reports false if the
// server is shutting down, in which case c must not start new work.
func (s *Server) setBusy(c *serverConn, busy bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	c.busy = busy
	return !s.shutting && !c.evicted
}

func (s *Server) serveConn(ctx context.Context, c *serverConn) {
	ctx, cancel := context.WithCancel(ctx)
	log := s.logger().With("conn", c.info.ID, "remote", remote(c.info.Remote))
	frames := 0
	reason := "closed by peer"
	defer func() {
		cancel()
		_ = c.nc.Close()
		s.mu.Lock()
		if !c.evicted {
			s.removeLocked(c)
		}
		s.mu.Unlock()
		s.active.Add(-1)
		s.reportConns()
		log.Debug("mllp connection closed", "reason", reason, "frames", frames)
		s.wg.Done()
	}()
	log.Debug("mllp connection opened", "tls", c.info.TLS)

	readTimeout := duration(s.ReadTimeout, DefaultReadTimeout)
	idleTimeout := duration(s.IdleTimeout, DefaultIdleTimeout)
	writeTimeout := duration(s.WriteTimeout, DefaultWriteTimeout)

	if tc, ok := c.nc.(*tls.Conn); ok {
		hs := DefaultHandshakeTimeout
		if readTimeout > 0 && readTimeout < hs {
			hs = readTimeout
		}
		_ = tc.SetDeadline(deadline(hs))
		if err := tc.HandshakeContext(ctx); err != nil {
			reason = "tls handshake failed"
			if s.wasEvicted(c) {
				// Closed for a new connection, said when it was.
				return
			}
			log.Warn("mllp tls handshake failed", "error", err.Error())
			return
		}
		c.handshakeSince.Store(0)
		_ = tc.SetDeadline(time.Time{})
		c.info.PeerCertificates = tc.ConnectionState().PeerCertificates
	}

	r := NewReader(c.nc, s.MaxMessageBytes)
	// Some senders end a frame with the end block alone, or start the
	// next straight after it: the payload is whole at the end block, and
	// waiting for a carriage return that never comes would answer it
	// only at the read timeout, with "resend later", for ever.
	r.endCROptional = true
	r.budget = s.budget
	defer r.Release()
	r.onStart = func() {
		c.idleSince.Store(0)
		c.frameSince.Store(time.Now().UnixNano())
		_ = c.nc.SetReadDeadline(deadline(readTimeout))
	}
	if c.idleSince.Load() == 0 {
		c.idleSince.Store(time.Now().UnixNano())
	}
	var wbuf []byte
	write := func(payload []byte) bool {
		var err error
		if wbuf, err = appendFrame(wbuf[:0], payload); err != nil {
			reason = "invalid reply"
			log.Error("mllp reply cannot be framed", "error", err.Error())
			return false
		}
		_ = c.nc.SetWriteDeadline(deadline(writeTimeout))
		if _, err := c.nc.Write(wbuf); err != nil {
			reason = "write failed"
			log.Warn("mllp reply write failed", "error", err.Error())
			return false
		}
		if cap(wbuf) > keepBufferBytes {
			wbuf = nil
		}
		return true
	}

	for {
		_ = c.nc.SetReadDeadline(deadline(idleTimeout))
		frame, err := r.ReadFrame()
		if err != nil {
			reason = s.readFailure(ctx, log, c, r, err, frame, write)
			return
		}
		frames++
		c.spoke.Store(true)
		c.frameSince.Store(0)
		if !s.setBusy(c, true) {
			reason = "server shutting down or connection closed for another"
			return
		}
		reply, closeConn, ok := s.handle(ctx, log, c, bytes.Clone(frame))
		if !ok {
			reason = "handler panicked"
			return
		}
		if reply != nil && !write(reply) {
			return
		}
		if closeConn {
			reason = "closed by handler"
			return
		}
		if !s.setBusy(c, false) {
			reason = "server shutting down"
			return
		}
		c.idleSince.Store(time.Now().UnixNano())
	}
}

// readFailure logs a failed read, gives OnFrameError its chance to reply,
// and returns the reason to close.
func (s *Server) readFailure(ctx context.Context, log *slog.Logger, c *serverConn, r *Reader, err error, partial []byte, write func([]byte) bool) string {
	var ne net.Error
	switch {
	case s.wasEvicted(c):
		// Closed for a new connection, said when it was.
		return "closed for a new connection"
	case errors.Is(err, io.EOF):
		return "closed by peer"
	case errors.Is(err, io.ErrUnexpectedEOF):
		log.Warn("mllp connection closed inside a frame", "bytes", len(partial))
		// Nobody is left to answer, but what came is counted and kept.
		if s.OnFrameError != nil && s.setBusy(c, true) {
			s.OnFrameError(ctx, &c.info, fmt.Errorf("%w: %w", ErrIncompleteFrame, err), partial)
		}
		return "closed by peer inside a frame"
	case errors.Is(err, ErrTooLarge), errors.Is(err, ErrInvalidFrame), errors.Is(err, ErrBusy):
		reason := "invalid frame"
		switch {
		case errors.Is(err, ErrTooLarge):
			reason = "frame too large"
		case errors.Is(err, ErrBusy):
			reason = "frame refused: the listener's buffer budget is held by other frames"
		}
		log.Warn("mllp "+reason, "error", err.Error())
		if s.OnFrameError != nil && s.setBusy(c, true) {
			if reply := s.OnFrameError(ctx, &c.info, err, partial); reply != nil {
				write(reply)
			}
		}
		return reason
	case errors.As(err, &ne) && ne.Timeout(), errors.Is(err, os.ErrDeadlineExceeded):
		if r.InFrame() {
			log.Warn("mllp read timeout inside a frame", "bytes", len(partial))
			if s.OnFrameError != nil && s.setBusy(c, true) {
				if reply := s.OnFrameError(ctx, &c.info, fmt.Errorf("%w: nothing more within the read timeout: %w", ErrIncompleteFrame, err), partial); reply != nil {
					write(reply)
				}
			}
			return "read timeout"
		}
		return "idle timeout"
	case s.isShutting():
		return "server shutting down"
	default:
		log.Warn("mllp read failed", "error", err.Error())
		if r.InFrame() && s.OnFrameError != nil && s.setBusy(c, true) {
			// A reset inside a frame: the sender has gone as with a close,
			// and what came is counted and kept the same way.
			s.OnFrameError(ctx, &c.info, fmt.Errorf("%w: %w: %w", ErrIncompleteFrame, io.ErrUnexpectedEOF, err), partial)
		}
		return "read failed"
	}
}

// handle calls the handler, turning a panic into ok == false.
func (s *Server) handle(ctx context.Context, log *slog.Logger, c *serverConn, payload []byte) (reply []byte, closeConn, ok bool) {
	defer func() {
		if p := recover(); p != nil {
			log.Error("mllp handler panicked", "panic", fmt.Sprintf("%T", p))
			reply, closeConn, ok = nil, true, false
		}
	}()
	reply, closeConn = s.Handler.ServeMLLP(ctx, &c.info, payload)
	return reply, closeConn, true
}

// beginShutdown stops accepting and closes every connection that is not
// handling a frame; busy ones close after writing their reply.
func (s *Server) beginShutdown() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutting {
		return
	}
	s.shutting = true
	if s.stopped != nil {
		close(s.stopped)
	}
	if s.ln != nil {
		_ = s.ln.Close()
	}
	for c := range s.conns {
		if !c.busy {
			_ = c.nc.Close()
		}
	}
}

// Shutdown stops accepting connections, closes idle ones, lets in-flight
// handlers finish and write their replies, then closes their connections.
// It returns nil once every connection is closed, or ctx.Err() if ctx is
// done first, in which case it closes the remaining connections and
// cancels the handlers' context without waiting for them to return.
// Shutdown is idempotent and safe to call without Listen or Serve.
func (s *Server) Shutdown(ctx context.Context) error {
	s.beginShutdown()
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		for c := range s.conns {
			_ = c.nc.Close()
		}
		if s.cancel != nil {
			s.cancel()
		}
		s.mu.Unlock()
		return ctx.Err()
	}
}
