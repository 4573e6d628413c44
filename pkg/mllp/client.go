package mllp

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/junction-fhir/junction/pkg/fault"
)

// Client sends frames over one MLLP connection and reads the replies. It
// is not safe for concurrent use: MLLP pairs each reply with the frame
// before it only if one frame is outstanding at a time, so use one Client
// per goroutine (or guard it with a mutex).
type Client struct {
	nc     net.Conn
	r      *Reader
	wbuf   []byte
	err    error
	closed bool
}

// Dial connects to addr, over TLS if tlsConfig is not nil (the server name
// defaults to addr's host). Replies may hold up to maxReplyBytes
// (DefaultMaxMessageBytes if not positive). ctx bounds the connection and
// the TLS handshake. Errors are transient *fault.Error values with code
// fault.CodeDestUnavailable.
func Dial(ctx context.Context, addr string, tlsConfig *tls.Config, maxReplyBytes int) (*Client, error) {
	d := &net.Dialer{KeepAlive: 30 * time.Second}
	var nc net.Conn
	var err error
	if tlsConfig != nil {
		td := &tls.Dialer{NetDialer: d, Config: tlsConfig}
		nc, err = td.DialContext(ctx, "tcp", addr)
	} else {
		nc, err = d.DialContext(ctx, "tcp", addr)
	}
	if err != nil {
		return nil, fault.Wrap(fault.Transient, fault.CodeDestUnavailable, "mllp dial failed", err)
	}
	r := NewReader(nc, maxReplyBytes)
	r.endCROptional = true
	return &Client{nc: nc, r: r}, nil
}

// Send writes payload as one frame and waits for one reply frame, whose
// payload it returns (the caller owns it). ctx's deadline bounds both the
// write and the wait, and cancelling ctx interrupts them.
//
// After any error the connection is out of step (a late reply would be
// taken for the answer to the next frame), so the Client closes it and
// every later Send returns the same error: dial again. Errors are
// transient *fault.Error values with code fault.CodeDestUnavailable that
// wrap the cause, so errors.Is finds ctx's error, ErrTooLarge or
// ErrInvalidFrame. A payload that cannot be framed (it holds 0x1C) is
// refused without breaking the connection.
func (c *Client) Send(ctx context.Context, payload []byte) ([]byte, error) {
	if c.err != nil {
		return nil, c.err
	}
	if c.closed {
		return nil, fault.New(fault.CodeDestUnavailable, "mllp client is closed")
	}
	if err := ctx.Err(); err != nil {
		return nil, fault.Wrap(fault.Transient, fault.CodeDestUnavailable, "mllp send not started", err)
	}
	buf, err := appendFrame(c.wbuf[:0], payload)
	if err != nil {
		return nil, err
	}
	c.wbuf = buf
	if cap(c.wbuf) > keepBufferBytes {
		defer func() { c.wbuf = nil }()
	}
	dl, _ := ctx.Deadline()
	if err := c.nc.SetDeadline(dl); err != nil {
		return nil, c.fail(ctx, "set deadline", err)
	}
	defer interruptOn(ctx, c.nc.SetDeadline)()
	if _, err := c.nc.Write(buf); err != nil {
		return nil, c.fail(ctx, "write", err)
	}
	reply, err := c.r.ReadFrame()
	if err != nil {
		return nil, c.fail(ctx, "read reply", err)
	}
	return bytes.Clone(reply), nil
}

// Read waits for one more reply frame, within ctx, and returns its
// payload (the caller owns it): after a reply to an earlier frame that
// came late, for the answer to the last. Errors are as Send's.
func (c *Client) Read(ctx context.Context) ([]byte, error) {
	if c.err != nil {
		return nil, c.err
	}
	if c.closed {
		return nil, fault.New(fault.CodeDestUnavailable, "mllp client is closed")
	}
	dl, _ := ctx.Deadline()
	if err := c.nc.SetReadDeadline(dl); err != nil {
		return nil, c.fail(ctx, "set deadline", err)
	}
	defer interruptOn(ctx, c.nc.SetReadDeadline)()
	reply, err := c.r.ReadFrame()
	if err != nil {
		return nil, c.fail(ctx, "read reply", err)
	}
	return bytes.Clone(reply), nil
}

// Write writes payload as one frame and waits for no reply: for a
// message whose MSH-15 asks for none. ctx bounds the write. Errors are
// as Send's.
func (c *Client) Write(ctx context.Context, payload []byte) error {
	if c.err != nil {
		return c.err
	}
	if c.closed {
		return fault.New(fault.CodeDestUnavailable, "mllp client is closed")
	}
	buf, err := appendFrame(c.wbuf[:0], payload)
	if err != nil {
		return err
	}
	c.wbuf = buf
	if cap(c.wbuf) > keepBufferBytes {
		defer func() { c.wbuf = nil }()
	}
	dl, _ := ctx.Deadline()
	if err := c.nc.SetWriteDeadline(dl); err != nil {
		return c.fail(ctx, "set deadline", err)
	}
	if _, err := c.nc.Write(buf); err != nil {
		return c.fail(ctx, "write", err)
	}
	return nil
}

// interruptOn makes the end of ctx interrupt the connection's I/O, by
// setting its deadline (with set) in the past. Call the function it
// returns when the I/O is over: if ctx ended meanwhile, it waits for the
// interruption to finish. Otherwise an interruption that ran late, after
// a reply had come in time, would set its past deadline over the next
// send's and fail that send for nothing.
func interruptOn(ctx context.Context, set func(time.Time) error) (stop func()) {
	done := make(chan struct{})
	stopFunc := context.AfterFunc(ctx, func() {
		defer close(done)
		_ = set(time.Unix(1, 0))
	})
	return func() {
		if !stopFunc() {
			<-done
		}
	}
}

func (c *Client) fail(ctx context.Context, op string, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		err = fmt.Errorf("%w: %w", ctxErr, err)
	} else if dl, ok := ctx.Deadline(); ok && errors.Is(err, os.ErrDeadlineExceeded) && !time.Now().Before(dl) {
		// The connection's deadline passed just before ctx's timer fired.
		err = fmt.Errorf("%w: %w", context.DeadlineExceeded, err)
	}
	c.err = fault.Wrap(fault.Transient, fault.CodeDestUnavailable, "mllp "+op+" failed", err)
	_ = c.nc.Close()
	c.closed = true
	return c.err
}

// Idle reports whether the connection can carry another frame: no error
// so far, and the peer has neither closed it nor sent anything unasked
// since the last reply. A receiver that closes idle connections, or one
// after each reply, has closed it by the time the next frame is due, and
// writing to it would lose that frame's attempt to an EOF; call Idle
// before reusing a connection and dial again when it is false (the
// Client is then closed). It does not wait.
func (c *Client) Idle() bool {
	if c.err != nil || c.closed {
		return false
	}
	if c.r.pendingCR && !c.settleCR() {
		_ = c.Close()
		return false
	}
	if c.r.br.Buffered() == 0 && connIdle(c.nc) {
		return true
	}
	// Closed, reset, or bytes nobody asked for: out of step either way.
	_ = c.Close()
	return false
}

// settleCR reads the carriage return (or line feed, which some
// receivers send in its place) that may follow the last reply's end
// block, waiting at most idleWait for it: it reports false when
// something else came (the connection is out of step). A receiver that
// sent none is not waited for again.
func (c *Client) settleCR() bool {
	c.r.pendingCR = false
	_ = c.nc.SetReadDeadline(time.Now().Add(idleWait))
	b, err := c.r.br.ReadByte()
	_ = c.nc.SetReadDeadline(time.Time{})
	switch {
	case err == nil:
		return b == CarriageReturn || b == '\n'
	case errors.Is(err, os.ErrDeadlineExceeded):
		return true
	}
	return false
}

// idleWait is how long connIdle waits for a connection it cannot peek at
// without waiting (TLS, whose records it must read through the session):
// long enough for a close already sent to be read.
const idleWait = 200 * time.Microsecond

// connIdle reports whether nc is open with nothing to read. A plain TCP
// connection is peeked at without waiting (peekIdle, where the platform
// allows); any other is read with a short deadline, which also lets TLS
// take in records it sends unasked (session tickets).
func connIdle(nc net.Conn) bool {
	if idle, ok := peekIdle(nc); ok {
		return idle
	}
	_ = nc.SetReadDeadline(time.Now().Add(idleWait))
	var b [1]byte
	n, err := nc.Read(b[:])
	_ = nc.SetReadDeadline(time.Time{})
	return n == 0 && errors.Is(err, os.ErrDeadlineExceeded)
}

// RemoteAddr returns the server's address.
func (c *Client) RemoteAddr() net.Addr { return c.nc.RemoteAddr() }

// Close closes the connection. It is safe to call more than once.
func (c *Client) Close() error {
	if c.closed {
		return nil
	}
	c.closed = true
	if err := c.nc.Close(); err != nil {
		return fmt.Errorf("mllp close: %w", err)
	}
	return nil
}
