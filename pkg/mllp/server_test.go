package mllp

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/junction-fhir/junction/pkg/logtest"
)

// testTimeout bounds every wait in these tests; it only turns a hang into
// a failure and is never what a test measures.
const testTimeout = 10 * time.Second

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// echo replies "ACK:" and the payload.
var echo = HandlerFunc(func(_ context.Context, _ *ConnInfo, p []byte) ([]byte, bool) {
	return append([]byte("ACK:"), p...), false
})

// start listens on a free local port and serves s until the test ends.
func start(t *testing.T, s *Server) string {
	t.Helper()
	if s.Addr == "" {
		s.Addr = "127.0.0.1:0"
	}
	if err := s.Listen(); err != nil {
		t.Fatalf("Listen: %v", err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(t.Context()) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return s.ListenAddr().String()
}

func dial(t *testing.T, addr string, cfg *tls.Config) *Client {
	t.Helper()
	c, err := Dial(testContext(t), addr, cfg, 0)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// rawConn dials addr without the Client, for tests that break the rules.
func rawConn(t *testing.T, addr string) net.Conn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, testTimeout)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	_ = nc.SetDeadline(time.Now().Add(testTimeout))
	t.Cleanup(func() { _ = nc.Close() })
	return nc
}

// waitClosed reads from nc until the server closes it, failing if that
// does not happen before the test timeout.
func waitClosed(t *testing.T, nc net.Conn) {
	t.Helper()
	_ = nc.SetReadDeadline(time.Now().Add(testTimeout))
	_, err := io.Copy(io.Discard, nc)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("server did not close the connection")
	}
}

// waitFor polls cond until it holds, failing after the test timeout.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	stop := time.Now().Add(testTimeout)
	for !cond() {
		if time.Now().After(stop) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestServerRoundTrip(t *testing.T) {
	var infos []ConnInfo
	var mu sync.Mutex
	addr := start(t, &Server{Handler: HandlerFunc(func(ctx context.Context, c *ConnInfo, p []byte) ([]byte, bool) {
		mu.Lock()
		infos = append(infos, *c)
		mu.Unlock()
		return echo(ctx, c, p)
	})})
	c := dial(t, addr, nil)
	for _, p := range []string{msg1, msg2, "", strings.Repeat("x", 100_000)} {
		got, err := c.Send(testContext(t), []byte(p))
		if err != nil {
			t.Fatalf("Send: %v", err)
		}
		if string(got) != "ACK:"+p {
			t.Errorf("reply %.40q, want %.40q", got, "ACK:"+p)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for _, info := range infos {
		if info.ID != infos[0].ID || info.ID == 0 || info.TLS || info.Remote == nil {
			t.Errorf("conn info %+v", info)
		}
	}
}

func TestServerNoReplyAndClose(t *testing.T) {
	addr := start(t, &Server{Handler: HandlerFunc(func(_ context.Context, _ *ConnInfo, p []byte) ([]byte, bool) {
		switch string(p) {
		case "silent":
			return nil, false
		case "bye":
			return []byte("BYE"), true
		}
		return []byte("OK:" + string(p)), false
	})})
	nc := rawConn(t, addr)
	for _, p := range []string{"silent", "one", "bye", "never"} {
		if err := WriteFrame(nc, []byte(p)); err != nil && p != "never" {
			t.Fatalf("write: %v", err)
		}
	}
	r := NewReader(nc, 0)
	var got []string
	for {
		p, err := r.ReadFrame()
		if err != nil {
			break
		}
		got = append(got, string(p))
	}
	if diff := cmp.Diff([]string{"OK:one", "BYE"}, got); diff != "" {
		t.Errorf("replies (-want +got):\n%s", diff)
	}
}

func TestServerHandlerOwnsPayload(t *testing.T) {
	kept := make(chan []byte, 2)
	addr := start(t, &Server{Handler: HandlerFunc(func(_ context.Context, _ *ConnInfo, p []byte) ([]byte, bool) {
		kept <- p
		return []byte("OK"), false
	})})
	nc := rawConn(t, addr)
	if _, err := nc.Write([]byte(frame("first") + frame("second"))); err != nil {
		t.Fatal(err)
	}
	r := NewReader(nc, 0)
	for range 2 {
		if _, err := r.ReadFrame(); err != nil {
			t.Fatal(err)
		}
	}
	if a, b := <-kept, <-kept; string(a) != "first" || string(b) != "second" {
		t.Errorf("kept payloads %q and %q", a, b)
	}
}

func TestServerConcurrentConnections(t *testing.T) {
	const conns, perConn = 200, 5
	var handled atomic.Int64
	s := &Server{Handler: HandlerFunc(func(ctx context.Context, c *ConnInfo, p []byte) ([]byte, bool) {
		handled.Add(1)
		return echo(ctx, c, p)
	})}
	addr := start(t, s)
	clients := make([]*Client, conns)
	errs := make(chan error, conns)
	var wg sync.WaitGroup
	for i := range conns {
		wg.Go(func() {
			c, err := Dial(testContext(t), addr, nil, 0)
			if err != nil {
				errs <- err
				return
			}
			clients[i] = c
			for j := range perConn {
				p := fmt.Sprintf("MSH|^~\\&|conn %d|msg %d", i, j)
				got, err := c.Send(testContext(t), []byte(p))
				if err != nil {
					errs <- err
					return
				}
				if string(got) != "ACK:"+p {
					errs <- fmt.Errorf("reply %q to %q", got, p)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := s.ActiveConns(); got != conns {
		t.Errorf("ActiveConns = %d with every client connected, want %d", got, conns)
	}
	if got := handled.Load(); got != conns*perConn {
		t.Errorf("handled %d frames, want %d", got, conns*perConn)
	}
	for _, c := range clients {
		if c != nil {
			_ = c.Close()
		}
	}
	waitFor(t, "connections to close", func() bool { return s.ActiveConns() == 0 })
}

func TestServerFramesInOrder(t *testing.T) {
	var seen []string
	var mu sync.Mutex
	addr := start(t, &Server{Handler: HandlerFunc(func(_ context.Context, _ *ConnInfo, p []byte) ([]byte, bool) {
		mu.Lock()
		seen = append(seen, string(p))
		mu.Unlock()
		return p, false
	})})
	nc := rawConn(t, addr)
	var all bytes.Buffer
	var want []string
	for i := range 50 {
		p := fmt.Sprint(i)
		want = append(want, p)
		all.WriteString(frame(p))
	}
	if _, err := nc.Write(all.Bytes()); err != nil {
		t.Fatal(err)
	}
	r := NewReader(nc, 0)
	var got []string
	for range want {
		p, err := r.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, string(p))
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("replies (-want +got):\n%s", diff)
	}
	mu.Lock()
	defer mu.Unlock()
	if diff := cmp.Diff(want, seen); diff != "" {
		t.Errorf("handled (-want +got):\n%s", diff)
	}
}

func TestServerMaxConns(t *testing.T) {
	// Eviction off: a full server refuses.
	s := &Server{Handler: echo, MaxConns: 2, EvictIdleAfter: -1}
	addr := start(t, s)
	a, b := dial(t, addr, nil), dial(t, addr, nil)
	for _, c := range []*Client{a, b} {
		if _, err := c.Send(testContext(t), []byte("hi")); err != nil {
			t.Fatalf("Send: %v", err)
		}
	}
	over := rawConn(t, addr)
	waitClosed(t, over)
	if got := s.ActiveConns(); got != 2 {
		t.Errorf("ActiveConns = %d, want 2", got)
	}
	_ = a.Close()
	waitFor(t, "a connection to close", func() bool { return s.ActiveConns() == 1 })
	c := dial(t, addr, nil)
	if _, err := c.Send(testContext(t), []byte("hi")); err != nil {
		t.Errorf("Send under the limit again: %v", err)
	}
}

// rawConnFrom dials addr from the loopback address local (127.0.0.2, say),
// so one test can be several hosts.
func rawConnFrom(t *testing.T, addr, local string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: testTimeout, LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial from %s: %v", local, err)
	}
	_ = nc.SetDeadline(time.Now().Add(testTimeout))
	t.Cleanup(func() { _ = nc.Close() })
	return nc
}

// echoes sends one frame on nc and reports whether the echo handler
// answered it.
func echoes(nc net.Conn, payload string) bool {
	if err := WriteFrame(nc, []byte(payload)); err != nil {
		return false
	}
	got, err := NewReader(nc, 0).ReadFrame()
	return err == nil && string(got) == "ACK:"+payload
}

// TestServerMaxConnsPerHost checks that one host cannot hold more than
// MaxConnsPerHost connections while others still get in: over the limit
// it closes that host's idlest connection, never another host's even
// when that one has been idle longer, or is refused and counted.
func TestServerMaxConnsPerHost(t *testing.T) {
	var mu sync.Mutex
	var refused []string
	var evicted atomic.Int64
	// EvictIdleAfter long enough that a loaded machine cannot stretch
	// the steps before the refusal below past it (100 ms could).
	s := &Server{Handler: echo, MaxConns: 10, MaxConnsPerHost: 2, EvictIdleAfter: time.Second,
		OnRefused: func(_ *ConnInfo, why string) { mu.Lock(); refused = append(refused, why); mu.Unlock() },
		OnEvicted: func(*ConnInfo) { evicted.Add(1) }}
	addr := start(t, s)
	const hostA, hostB = "127.0.0.1", "127.0.0.2"

	// B goes idle first, so it is the idlest connection of all.
	b := rawConnFrom(t, addr, hostB)
	if !echoes(b, "b") {
		t.Fatal("host B's first connection does not echo")
	}
	a1 := rawConnFrom(t, addr, hostA)
	if !echoes(a1, "a1") {
		t.Fatal("a1 does not echo")
	}
	a2 := rawConnFrom(t, addr, hostA)
	// a2 is mid-frame, so no connection of A's can make room yet.
	if _, err := a2.Write([]byte{StartBlock, 'M', 'S', 'H'}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "three connections", func() bool { return s.ActiveConns() == 3 })
	// a1 has not been idle for EvictIdleAfter: A's third is refused,
	// though the server has room and B is idle.
	waitClosed(t, rawConnFrom(t, addr, hostA))
	mu.Lock()
	if diff := cmp.Diff([]string{RefusedHostFull}, refused); diff != "" {
		t.Errorf("refusals (-want +got):\n%s", diff)
	}
	mu.Unlock()
	// Another host still gets in.
	if !echoes(rawConnFrom(t, addr, hostB), "b2") {
		t.Error("host B was shut out by host A's connections")
	}

	// Once a1 has been idle long enough, A's next closes a1, not B's
	// older idle connection.
	time.Sleep(1200 * time.Millisecond)
	if !echoes(rawConnFrom(t, addr, hostA), "a3") {
		t.Fatal("A's connection after a1 went idle was not admitted")
	}
	if evicted.Load() != 1 {
		t.Errorf("evicted %d, want 1", evicted.Load())
	}
	waitClosed(t, a1)
	if !echoes(b, "b again") {
		t.Error("host B's idle connection was closed for host A's")
	}
	if _, err := a2.Write([]byte("|rest")); err != nil {
		t.Errorf("a2, mid-frame, was closed: %v", err)
	}
	// Closing connections gives their host's places back.
	_ = a2.Close()
	waitFor(t, "a2 to close", func() bool { return s.ActiveConns() == 3 })
	if !echoes(rawConnFrom(t, addr, hostA), "a4") {
		t.Error("host A was refused after one of its connections closed")
	}
}

// TestServerEvictsIdleWhenFull checks that a full server closes the
// connection idle longest to admit a new one, never one mid-frame or
// idle for less than EvictIdleAfter, and says so.
func TestServerEvictsIdleWhenFull(t *testing.T) {
	var evicted atomic.Int64
	var open atomic.Int64
	var logged logtest.Buffer
	s := &Server{Handler: echo, MaxConns: 2, EvictIdleAfter: 100 * time.Millisecond,
		OnEvicted: func(*ConnInfo) { evicted.Add(1) }, OnConns: func(n int) { open.Store(int64(n)) },
		Logger: slog.New(slog.NewTextHandler(&logged, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	addr := start(t, s)
	// oldest sends and goes idle; midFrame starts a frame and stops.
	oldest := dial(t, addr, nil)
	if _, err := oldest.Send(testContext(t), []byte("hi")); err != nil {
		t.Fatal(err)
	}
	midFrame := rawConn(t, addr)
	if _, err := midFrame.Write([]byte{StartBlock, 'M', 'S', 'H'}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "two connections", func() bool { return s.ActiveConns() == 2 && open.Load() == 2 })
	// Too soon: nothing has been idle long enough, so the newcomer is
	// refused.
	waitClosed(t, rawConn(t, addr))
	if evicted.Load() != 0 {
		t.Fatal("evicted a connection idle for less than EvictIdleAfter")
	}
	time.Sleep(150 * time.Millisecond)
	newcomer := dial(t, addr, nil)
	if _, err := newcomer.Send(testContext(t), []byte("let me in")); err != nil {
		t.Fatalf("newcomer: %v", err)
	}
	if evicted.Load() != 1 {
		t.Errorf("evicted %d, want 1", evicted.Load())
	}
	if _, err := oldest.Send(testContext(t), []byte("again")); err == nil {
		t.Error("the idle connection was not the one closed")
	}
	// The one mid-frame is kept, and a fourth is refused: the newcomer is
	// not idle long enough and midFrame never is.
	if _, err := midFrame.Write([]byte("|rest")); err != nil {
		t.Errorf("mid-frame connection closed: %v", err)
	}
	waitClosed(t, rawConn(t, addr))
	waitFor(t, "two open connections", func() bool { return s.ActiveConns() == 2 && open.Load() == 2 })
	// Closing a connection for a new one is the server's own doing, said
	// once at Info: its read failing after is no warning.
	if w := logged.String(); strings.Contains(w, "mllp read failed") {
		t.Errorf("warned of the evicted connection's read:\n%s", w)
	}
}

// TestServerEvictsSilentAndHandshakingFirst checks the order in which a
// full server makes room: a connection whose TLS handshake has not
// finished goes first, then one opened and left silent, and only then a
// sender idle after speaking; so connections opened and left silent, with
// no certificate or no message, cannot push out the senders that use the
// listener.
func TestServerEvictsSilentAndHandshakingFirst(t *testing.T) {
	cert, pool := selfSigned(t)
	client := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
	tests := []struct {
		name string
		tls  bool
	}{{"plain", false}, {"tls", true}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var evicted atomic.Int64
			s := &Server{Handler: echo, MaxConns: 3, EvictIdleAfter: 100 * time.Millisecond,
				OnEvicted: func(*ConnInfo) { evicted.Add(1) }}
			var cfg *tls.Config
			if tt.tls {
				s.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
				cfg = client
			}
			addr := start(t, s)
			// The sender speaks first, so it is the longest idle.
			sender := dial(t, addr, cfg)
			if _, err := sender.Send(testContext(t), []byte("hi")); err != nil {
				t.Fatal(err)
			}
			silent := dial(t, addr, cfg)
			// A plain connection to a TLS listener never finishes its
			// handshake; to a plain one it is silent too.
			never := rawConn(t, addr)
			waitFor(t, "three connections", func() bool { return s.ActiveConns() == 3 })
			time.Sleep(150 * time.Millisecond)
			// The oldest silent connection goes first, but a handshake
			// never finished goes before it.
			order := []any{silent, never}
			if tt.tls {
				order = []any{never, silent}
			}
			for i, gone := range order {
				newcomer := dial(t, addr, cfg)
				if _, err := newcomer.Send(testContext(t), []byte("let me in")); err != nil {
					t.Fatalf("newcomer %d: %v", i, err)
				}
				if evicted.Load() != int64(i+1) {
					t.Fatalf("evicted %d, want %d", evicted.Load(), i+1)
				}
				switch c := gone.(type) {
				case net.Conn:
					waitClosed(t, c)
				case *Client:
					if _, err := c.Send(testContext(t), []byte("still here?")); err == nil {
						t.Fatalf("newcomer %d: the silent connection was not the one closed", i)
					}
				}
				// The newcomer is the new sender, idle for less than
				// EvictIdleAfter when the next one comes.
			}
			if _, err := sender.Send(testContext(t), []byte("again")); err != nil {
				t.Fatalf("the sender that had spoken was closed: %v", err)
			}
		})
	}
}

// TestServerEvictsSlowFrameWhenFull checks that a full server with no
// idle connection closes the one whose frame has been arriving longest,
// once for EvictSlowFrameAfter, so senders trickling frames cannot lock
// others out; a frame arriving for less is kept.
func TestServerEvictsSlowFrameWhenFull(t *testing.T) {
	var evicted atomic.Int64
	s := &Server{Handler: echo, MaxConns: 2, EvictIdleAfter: -1, EvictSlowFrameAfter: 200 * time.Millisecond,
		OnEvicted: func(*ConnInfo) { evicted.Add(1) }}
	addr := start(t, s)
	slowest := rawConn(t, addr)
	if _, err := slowest.Write([]byte{StartBlock, 'M', 'S', 'H'}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	slow := rawConn(t, addr)
	if _, err := slow.Write([]byte{StartBlock, 'M', 'S', 'H'}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "two connections", func() bool { return s.ActiveConns() == 2 })
	// Too soon: neither frame has been arriving long enough.
	waitClosed(t, rawConn(t, addr))
	if evicted.Load() != 0 {
		t.Fatal("evicted a connection whose frame began less than EvictSlowFrameAfter ago")
	}
	time.Sleep(250 * time.Millisecond)
	newcomer := dial(t, addr, nil)
	if got, err := newcomer.Send(testContext(t), []byte("let me in")); err != nil || string(got) != "ACK:let me in" {
		t.Fatalf("newcomer: %q, %v", got, err)
	}
	if evicted.Load() != 1 {
		t.Errorf("evicted %d, want 1", evicted.Load())
	}
	waitClosed(t, slowest)
	if _, err := slow.Write([]byte("|rest")); err != nil {
		t.Errorf("the later slow connection was closed instead: %v", err)
	}
}

func TestServerIdleTimeout(t *testing.T) {
	s := &Server{Handler: echo, IdleTimeout: 50 * time.Millisecond}
	addr := start(t, s)
	c := dial(t, addr, nil)
	idle := rawConn(t, addr)
	waitClosed(t, idle)
	waitFor(t, "idle connections to close", func() bool { return s.ActiveConns() == 0 })
	if _, err := c.Send(testContext(t), []byte("late")); err == nil {
		t.Error("Send on a connection closed for idleness succeeded")
	}
}

func TestServerSlowlorisReadTimeout(t *testing.T) {
	s := &Server{Handler: echo, ReadTimeout: 100 * time.Millisecond, IdleTimeout: time.Minute}
	addr := start(t, s)
	slow := rawConn(t, addr)
	if _, err := slow.Write([]byte{StartBlock, 'M'}); err != nil {
		t.Fatal(err)
	}
	// Others are served while the slow sender holds its connection.
	other := dial(t, addr, nil)
	for i := range 3 {
		if _, err := other.Send(testContext(t), []byte(fmt.Sprint(i))); err != nil {
			t.Fatalf("Send beside a slow sender: %v", err)
		}
	}
	waitClosed(t, slow)
	if _, err := other.Send(testContext(t), []byte("after")); err != nil {
		t.Errorf("Send after the slow sender was cut: %v", err)
	}
}

func TestServerEndlessFrameIsCut(t *testing.T) {
	const limit = 64 << 10
	type frameErr struct {
		err     error
		partial int
	}
	got := make(chan frameErr, 1)
	s := &Server{
		Handler:         echo,
		MaxMessageBytes: limit,
		OnFrameError: func(_ context.Context, _ *ConnInfo, err error, partial []byte) []byte {
			got <- frameErr{err, len(partial)}
			return []byte("MSH|^~\\&|JUNCTION\rMSA|AR|\r")
		},
	}
	addr := start(t, s)
	nc := rawConn(t, addr)
	written := make(chan int64, 1)
	go func() {
		chunk := bytes.Repeat([]byte("A"), 64<<10)
		n, _ := nc.Write([]byte{StartBlock})
		total := int64(n)
		for total < 50<<20 {
			n, err := nc.Write(chunk)
			total += int64(n)
			if err != nil {
				break
			}
		}
		written <- total
	}()
	fe := <-got
	if !errors.Is(fe.err, ErrTooLarge) {
		t.Errorf("OnFrameError got %v, want ErrTooLarge", fe.err)
	}
	if fe.partial != limit {
		t.Errorf("partial payload %d bytes, want %d", fe.partial, limit)
	}
	waitFor(t, "the connection to close", func() bool { return s.ActiveConns() == 0 })
	_ = nc.Close()
	if n := <-written; n >= 50<<20 {
		t.Errorf("the server accepted all %d bytes of an oversized frame", n)
	}
}

func TestServerInvalidFrameReply(t *testing.T) {
	var calls atomic.Int64
	s := &Server{
		Handler: HandlerFunc(func(context.Context, *ConnInfo, []byte) ([]byte, bool) {
			calls.Add(1)
			return []byte("handled"), false
		}),
		OnFrameError: func(_ context.Context, c *ConnInfo, err error, partial []byte) []byte {
			if !errors.Is(err, ErrInvalidFrame) || string(partial) != msg1 || c.ID == 0 {
				return []byte("unexpected")
			}
			return []byte("REJECT")
		},
	}
	addr := start(t, s)
	nc := rawConn(t, addr)
	if _, err := nc.Write([]byte(msg1 + frame(msg2))); err != nil {
		t.Fatal(err)
	}
	r := NewReader(nc, 0)
	p, err := r.ReadFrame()
	if err != nil || string(p) != "REJECT" {
		t.Fatalf("reply %q, %v; want REJECT", p, err)
	}
	if _, err := r.ReadFrame(); err == nil {
		t.Error("connection still open after an invalid frame")
	}
	if calls.Load() != 0 {
		t.Error("handler called after an invalid frame")
	}
}

func TestServerHandlerPanic(t *testing.T) {
	addr := start(t, &Server{Handler: HandlerFunc(func(ctx context.Context, c *ConnInfo, p []byte) ([]byte, bool) {
		if string(p) == "panic" {
			panic("handler bug")
		}
		return echo(ctx, c, p)
	})})
	bad := dial(t, addr, nil)
	if _, err := bad.Send(testContext(t), []byte("panic")); err == nil {
		t.Error("Send to a panicking handler succeeded")
	}
	good := dial(t, addr, nil)
	if got, err := good.Send(testContext(t), []byte("fine")); err != nil || string(got) != "ACK:fine" {
		t.Errorf("Send after a panic: %q, %v", got, err)
	}
}

func TestServerShutdownDrains(t *testing.T) {
	entered := make(chan struct{})
	release := make(chan struct{})
	s := &Server{Addr: "127.0.0.1:0", Handler: HandlerFunc(func(_ context.Context, _ *ConnInfo, p []byte) ([]byte, bool) {
		if string(p) == "slow" {
			close(entered)
			<-release
		}
		return append([]byte("ACK:"), p...), false
	})}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	addr := s.ListenAddr().String()
	served := make(chan error, 1)
	go func() { served <- s.Serve(context.Background()) }()

	idle := dial(t, addr, nil)
	if _, err := idle.Send(testContext(t), []byte("hi")); err != nil {
		t.Fatal(err)
	}
	busy := dial(t, addr, nil)
	reply := make(chan string, 1)
	go func() {
		got, err := busy.Send(testContext(t), []byte("slow"))
		if err != nil {
			reply <- "error: " + err.Error()
			return
		}
		reply <- string(got)
	}()
	<-entered

	shut := make(chan error, 1)
	go func() { shut <- s.Shutdown(testContext(t)) }()
	// Serve returns as soon as the listener is closed.
	if err := <-served; err != nil {
		t.Errorf("Serve: %v", err)
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v while a handler was running", err)
	default:
	}
	if _, err := Dial(testContext(t), addr, nil, 0); err == nil {
		t.Error("Dial succeeded after Shutdown began")
	}
	if _, err := idle.Send(testContext(t), []byte("late")); err == nil {
		t.Error("idle connection still served after Shutdown began")
	}
	close(release)
	if got := <-reply; got != "ACK:slow" {
		t.Errorf("in-flight reply %q, want ACK:slow", got)
	}
	if err := <-shut; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if n := s.ActiveConns(); n != 0 {
		t.Errorf("ActiveConns = %d after Shutdown", n)
	}
	if err := s.Shutdown(testContext(t)); err != nil {
		t.Errorf("second Shutdown: %v", err)
	}
	if err := s.Serve(context.Background()); err != nil {
		t.Errorf("Serve after Shutdown: %v", err)
	}
}

func TestServerShutdownGivesUp(t *testing.T) {
	entered := make(chan struct{})
	cancelled := make(chan struct{})
	s := &Server{Addr: "127.0.0.1:0", Handler: HandlerFunc(func(ctx context.Context, _ *ConnInfo, _ []byte) ([]byte, bool) {
		close(entered)
		<-ctx.Done()
		close(cancelled)
		return nil, false
	})}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.Serve(context.Background()) }()
	c := dial(t, s.ListenAddr().String(), nil)
	go func() { _, _ = c.Send(testContext(t), []byte("stuck")) }()
	<-entered
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Shutdown(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Shutdown = %v, want context.Canceled", err)
	}
	select {
	case <-cancelled:
	case <-testContext(t).Done():
		t.Fatal("handler context not cancelled")
	}
	if err := s.Shutdown(testContext(t)); err != nil {
		t.Errorf("Shutdown after the handler returned: %v", err)
	}
}

func TestServerShutdownWithoutServe(t *testing.T) {
	tests := []struct {
		name   string
		listen bool
	}{
		{"never listened", false},
		{"listened only", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &Server{Addr: "127.0.0.1:0", Handler: echo}
			if tt.listen {
				if err := s.Listen(); err != nil {
					t.Fatal(err)
				}
			}
			for i := range 2 {
				if err := s.Shutdown(testContext(t)); err != nil {
					t.Errorf("Shutdown %d: %v", i+1, err)
				}
			}
			if err := s.Listen(); err == nil {
				t.Error("Listen after Shutdown succeeded")
			}
		})
	}
}

func TestServerServeContextCancel(t *testing.T) {
	s := &Server{Addr: "127.0.0.1:0", Handler: echo}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx) }()
	c := dial(t, s.ListenAddr().String(), nil)
	if _, err := c.Send(testContext(t), []byte("hi")); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-served; err != nil {
		t.Errorf("Serve: %v", err)
	}
	if err := s.Shutdown(testContext(t)); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if _, err := Dial(testContext(t), s.ListenAddr().String(), nil, 0); err == nil {
		t.Error("Dial succeeded after Serve's context ended")
	}
}

func TestServerConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		s    *Server
	}{
		{"no handler", &Server{Addr: "127.0.0.1:0"}},
		{"bad address", &Server{Addr: "127.0.0.1:notaport", Handler: echo}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.s.Serve(testContext(t)); err == nil {
				t.Error("Serve succeeded")
			}
		})
	}
}

// selfSigned returns a server certificate for 127.0.0.1 and a pool that
// trusts it.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "junction test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

func TestServerTLS(t *testing.T) {
	cert, pool := selfSigned(t)
	var sawTLS atomic.Bool
	addr := start(t, &Server{
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		Handler: HandlerFunc(func(ctx context.Context, c *ConnInfo, p []byte) ([]byte, bool) {
			sawTLS.Store(c.TLS)
			return echo(ctx, c, p)
		}),
	})
	c := dial(t, addr, &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})
	got, err := c.Send(testContext(t), []byte(msg1))
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	if string(got) != "ACK:"+msg1 || !sawTLS.Load() {
		t.Errorf("reply %q, TLS %v", got, sawTLS.Load())
	}
	// A plain-text client gets nothing.
	plain := dial(t, addr, nil)
	if _, err := plain.Send(testContext(t), []byte(msg1)); err == nil {
		t.Error("plain-text Send to a TLS server succeeded")
	}
	// An untrusting client fails the handshake.
	if _, err := Dial(testContext(t), addr, &tls.Config{MinVersion: tls.VersionTLS12}, 0); err == nil {
		t.Error("Dial without trusting the certificate succeeded")
	}
}

// TestServerBufferBudget checks that unfinished large frames on some
// connections cannot hold more than the listener's budget: a frame that
// would need more is refused with ErrBusy, while a message within the
// free allowance still goes through, and the budget comes back when the
// connections holding it close.
func TestServerBufferBudget(t *testing.T) {
	busy := make(chan error, 4)
	s := &Server{
		Handler: echo, MaxBufferedBytes: 1 << 20,
		OnFrameError: func(_ context.Context, _ *ConnInfo, err error, _ []byte) []byte {
			busy <- err
			return nil
		},
	}
	addr := start(t, s)
	// Each unfinished 300 KiB frame draws 448 KiB (its buffer doubles to
	// 512 KiB, less the free 64 KiB): two fit in 1 MiB, a third does not.
	partial := append([]byte{StartBlock}, bytes.Repeat([]byte("A"), 300<<10)...)
	var holders []net.Conn
	for range 2 {
		nc := rawConn(t, addr)
		if _, err := nc.Write(partial); err != nil {
			t.Fatal(err)
		}
		holders = append(holders, nc)
	}
	left := func() int64 {
		s.mu.Lock()
		b := s.budget
		s.mu.Unlock()
		return b.Left()
	}
	waitFor(t, "the budget to be drawn", func() bool { return left() == 1<<20-2*448<<10 })
	third := rawConn(t, addr)
	if _, err := third.Write(partial); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-busy:
		if !errors.Is(err, ErrBusy) {
			t.Fatalf("OnFrameError got %v, want ErrBusy", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("a third large frame was not refused")
	}
	waitClosed(t, third)
	// A message within the free allowance is not held up.
	small := dial(t, addr, nil)
	if got, err := small.Send(testContext(t), []byte(msg1)); err != nil || string(got) != "ACK:"+msg1 {
		t.Fatalf("small message while the budget is held: %q, %v", got, err)
	}
	for _, nc := range holders {
		_ = nc.Close()
	}
	waitFor(t, "the budget to come back", func() bool { return left() == 1<<20 })
	big := strings.Repeat("B", 300<<10)
	if got, err := small.Send(testContext(t), []byte(big)); err != nil || string(got) != "ACK:"+big {
		t.Fatalf("large message after the budget came back: %d bytes, %v", len(got), err)
	}
}
