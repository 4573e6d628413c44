package mllp

import (
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/junction-fhir/junction/pkg/fault"
)

func TestClientSendErrors(t *testing.T) {
	hold := make(chan struct{})
	addr := start(t, &Server{Handler: HandlerFunc(func(ctx context.Context, _ *ConnInfo, p []byte) ([]byte, bool) {
		switch string(p) {
		case "hang":
			select {
			case <-hold:
			case <-ctx.Done():
			}
			return nil, false
		case "big":
			return []byte(strings.Repeat("R", 2000)), false
		}
		return []byte("OK"), false
	})})
	// Registered after start, so it runs before the server's Shutdown.
	t.Cleanup(func() { close(hold) })
	tests := []struct {
		name    string
		payload string
		ctx     func() (context.Context, context.CancelFunc)
		want    error
	}{
		{"deadline", "hang", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 50*time.Millisecond)
		}, context.DeadlineExceeded},
		{"cancel", "hang", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(20*time.Millisecond, cancel)
			return ctx, cancel
		}, context.Canceled},
		{"cancelled before", "x", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx, cancel
		}, context.Canceled},
		{"reply too large", "big", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), testTimeout)
		}, ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Dial(testContext(t), addr, nil, 1000)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			ctx, cancel := tt.ctx()
			defer cancel()
			_, err = c.Send(ctx, []byte(tt.payload))
			if !errors.Is(err, tt.want) {
				t.Fatalf("Send error %v, want %v", err, tt.want)
			}
			if f := fault.As(err); f == nil || f.Code != fault.CodeDestUnavailable || !fault.IsTransient(err) {
				t.Errorf("error %v is not a transient destination fault", err)
			}
			if tt.name == "cancelled before" {
				// Nothing was sent, so the connection is still usable.
				if _, err := c.Send(testContext(t), []byte("x")); err != nil {
					t.Errorf("Send after a refused start: %v", err)
				}
				return
			}
			if _, err2 := c.Send(testContext(t), []byte("x")); err2 == nil {
				t.Error("Send after a failed Send succeeded on an out-of-step connection")
			}
		})
	}
}

func TestClientUnframeablePayload(t *testing.T) {
	addr := start(t, &Server{Handler: echo})
	c := dial(t, addr, nil)
	if _, err := c.Send(testContext(t), []byte("a\x1cb")); !errors.Is(err, ErrInvalidFrame) {
		t.Fatalf("Send error %v, want ErrInvalidFrame", err)
	}
	if got, err := c.Send(testContext(t), []byte("ok")); err != nil || string(got) != "ACK:ok" {
		t.Errorf("Send after refusing a payload: %q, %v", got, err)
	}
}

func TestClientDialFailure(t *testing.T) {
	s := &Server{Addr: "127.0.0.1:0", Handler: echo}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	addr := s.ListenAddr().String()
	if err := s.Shutdown(testContext(t)); err != nil {
		t.Fatal(err)
	}
	_, err := Dial(testContext(t), addr, nil, 0)
	if f := fault.As(err); f == nil || f.Code != fault.CodeDestUnavailable || !fault.IsTransient(err) {
		t.Errorf("Dial error %v, want a transient destination fault", err)
	}
}

func TestClientCloseTwice(t *testing.T) {
	c := dial(t, start(t, &Server{Handler: echo}), nil)
	for i := range 2 {
		if err := c.Close(); err != nil {
			t.Errorf("Close %d: %v", i+1, err)
		}
	}
	if _, err := c.Send(testContext(t), []byte("x")); err == nil {
		t.Error("Send after Close succeeded")
	}
}

// TestClientIdle: a connection is idle while open with nothing unread,
// and not once the peer has closed it or sent bytes nobody asked for,
// over TCP (peeked at) and over any other net.Conn (read briefly).
func TestClientIdle(t *testing.T) {
	for _, wrap := range []struct {
		name string
		conn func(net.Conn) net.Conn
	}{
		{"tcp", func(c net.Conn) net.Conn { return c }},
		{"other conn", func(c net.Conn) net.Conn { return struct{ net.Conn }{c} }},
	} {
		for _, tt := range []struct {
			name string
			peer func(net.Conn)
			want bool
		}{
			{"open", func(net.Conn) {}, true},
			{"closed by the peer", func(c net.Conn) { _ = c.Close() }, false},
			{"bytes unasked", func(c net.Conn) { _, _ = c.Write([]byte("\x0bMSH|\x1c\r")) }, false},
		} {
			t.Run(wrap.name+"/"+tt.name, func(t *testing.T) {
				addr, accepted := listenOnce(t)
				nc, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				c := &Client{nc: wrap.conn(nc), r: NewReader(nc, 0)}
				defer c.Close()
				peer := <-accepted
				defer peer.Close()
				tt.peer(peer)
				if got := idleOnceArrived(c, tt.want); got != tt.want {
					t.Errorf("Idle() = %v, want %v", got, tt.want)
				}
				if !tt.want && !c.closed {
					t.Error("a connection found out of step was not closed")
				}
			})
		}
	}
}

// TestClientIdleAfterDeadline: a connection quiet for longer than the
// deadline its last send set is still idle, not judged dead.
func TestClientIdleAfterDeadline(t *testing.T) {
	addr := start(t, &Server{Handler: HandlerFunc(func(context.Context, *ConnInfo, []byte) ([]byte, bool) { return []byte("OK"), false })})
	c, err := Dial(context.Background(), addr, nil, 1000)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	_, err = c.Send(ctx, []byte("x"))
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if !c.Idle() {
		t.Error("an open, quiet connection was judged dead once its last deadline passed")
	}
}

// TestClientReplyWithoutCarriageReturn: a receiver that ends its ACK with
// the end block alone, or with a line feed after it, is answered at
// once, not timed out (which would deliver the message twice), and the
// connection stays usable whether a carriage return (or line feed)
// follows late or never; anything else after the reply still puts the
// connection out of step.
func TestClientReplyWithoutCarriageReturn(t *testing.T) {
	tests := []struct {
		name     string
		end      string // sent by the receiver after the first reply's end block
		after    string // sent by the receiver after the first reply
		wantIdle bool
	}{
		{"no carriage return", "", "", true},
		{"late carriage return", "", "\r", true},
		{"line feed in its place", "\n", "", true},
		{"late line feed in its place", "", "\n", true},
		{"late bytes unasked", "", "X", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr, accepted := listenOnce(t)
			c, err := Dial(testContext(t), addr, nil, 1000)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			peer := <-accepted
			defer peer.Close()
			go func() {
				r := NewReader(peer, 0)
				if _, err := r.ReadFrame(); err != nil {
					return
				}
				_, _ = peer.Write([]byte("\x0bACK1\x1c" + tt.end))
			}()
			// A client waiting for a carriage return would wait out this
			// deadline and fail.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			reply, err := c.Send(ctx, []byte("MSG1"))
			if err != nil || string(reply) != "ACK1" {
				t.Fatalf("Send = %q, %v; want ACK1", reply, err)
			}
			if tt.after != "" {
				_, _ = peer.Write([]byte(tt.after))
				if tt.wantIdle {
					// Time for the carriage return to arrive, so Idle
					// sees it (were it slower, the Send below still must
					// settle it).
					time.Sleep(20 * time.Millisecond)
				}
			}
			if got := idleOnceArrived(c, tt.wantIdle); got != tt.wantIdle {
				t.Fatalf("Idle() = %v, want %v", got, tt.wantIdle)
			}
			if !tt.wantIdle {
				return
			}
			go func() {
				r := NewReader(peer, 0)
				if _, err := r.ReadFrame(); err != nil {
					return
				}
				_, _ = peer.Write([]byte("\x0bACK2\x1c\r"))
			}()
			if reply, err := c.Send(ctx, []byte("MSG2")); err != nil || string(reply) != "ACK2" {
				t.Errorf("second Send = %q, %v; want ACK2", reply, err)
			}
		})
	}
}

// listenOnce listens on a loopback port, closed when the test ends, and
// hands over the first connection accepted.
func listenOnce(t *testing.T) (string, <-chan net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	accepted := make(chan net.Conn, 1)
	go func() {
		if c, err := l.Accept(); err == nil {
			accepted <- c
		}
	}()
	return l.Addr().String(), accepted
}

// idleOnceArrived returns c.Idle(), waiting, when the answer expected is
// false, for what the peer sent (a close, bytes) to arrive: up to 5 s
// for Idle to turn false, so a slow machine is not taken for a bug.
func idleOnceArrived(c *Client, want bool) bool {
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := c.Idle()
		if got == want || want || time.Now().After(deadline) {
			return got
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// lateConn is a connection whose replies come at once, and on which
// setting a deadline in the past (the client's interruption when its
// context ends) takes a while, as when its goroutine is scheduled late.
type lateConn struct {
	net.Conn
	// onRead is called before each read returns its reply, with the
	// read's number from 1.
	onRead func(n int)
	reads  int

	mu       sync.Mutex
	deadline time.Time
}

func (c *lateConn) Write(b []byte) (int, error) { return len(b), nil }

func (c *lateConn) Read(b []byte) (int, error) {
	c.reads++
	c.onRead(c.reads)
	c.mu.Lock()
	dl := c.deadline
	c.mu.Unlock()
	if !dl.IsZero() && dl.Before(time.Now()) {
		return 0, os.ErrDeadlineExceeded
	}
	return copy(b, "\x0bACK\x1c\r"), nil
}

func (c *lateConn) setDeadline(t time.Time) error {
	if !t.IsZero() && t.Before(time.Now()) {
		time.Sleep(50 * time.Millisecond)
	}
	c.mu.Lock()
	c.deadline = t
	c.mu.Unlock()
	return nil
}

func (c *lateConn) SetDeadline(t time.Time) error     { return c.setDeadline(t) }
func (c *lateConn) SetReadDeadline(t time.Time) error { return c.setDeadline(t) }
func (c *lateConn) Close() error                      { return nil }

// TestClientInterruptionDoesNotOutliveSend: a send whose context ends
// just as its reply arrives returns the reply, and the interruption its
// context's end set off is over by then, rather than landing on the next
// send's deadline and failing it for nothing.
func TestClientInterruptionDoesNotOutliveSend(t *testing.T) {
	for _, tc := range []struct {
		name string
		op   func(c *Client, ctx context.Context) ([]byte, error)
	}{
		{"send", func(c *Client, ctx context.Context) ([]byte, error) { return c.Send(ctx, []byte("MSG")) }},
		{"read", func(c *Client, ctx context.Context) ([]byte, error) { return c.Read(ctx) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			nc := &lateConn{}
			nc.onRead = func(n int) {
				switch n {
				case 1:
					cancel() // the first send's context ends as its reply comes
				case 2:
					time.Sleep(100 * time.Millisecond) // the second's reply takes a moment
				}
			}
			r := NewReader(nc, 0)
			r.endCROptional = true
			c := &Client{nc: nc, r: r}
			if _, err := tc.op(c, ctx); err != nil {
				t.Fatalf("first: %v", err)
			}
			ctx2, cancel2 := context.WithTimeout(context.Background(), testTimeout)
			defer cancel2()
			if got, err := tc.op(c, ctx2); err != nil || string(got) != "ACK" {
				t.Fatalf("second = %q, %v; want ACK, the first's interruption spent", got, err)
			}
		})
	}
}
