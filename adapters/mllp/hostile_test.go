package mllp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/junction-fhir/junction/pkg/corpustest"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/junction-fhir/junction/pkg/adapter"
	"github.com/junction-fhir/junction/pkg/fault"
	"github.com/junction-fhir/junction/pkg/hl7v2"
	transport "github.com/junction-fhir/junction/pkg/mllp"
)

// readReplyThenClose reads what the server sends on nc until it closes the
// connection, and returns the frames it sent. An error other than EOF or
// a reset (the server closing with unread input) fails the test.
func readReplyThenClose(t *testing.T, nc net.Conn) [][]byte {
	t.Helper()
	_ = nc.SetReadDeadline(time.Now().Add(15 * time.Second))
	r := transport.NewReader(nc, 1<<20)
	var frames [][]byte
	for {
		p, err := r.ReadFrame()
		if err != nil {
			if err != io.EOF && !isReset(err) {
				t.Fatalf("reading replies: %v (after %d frames)", err, len(frames))
			}
			return frames
		}
		frames = append(frames, bytes.Clone(p))
	}
}

// TestHostileEndlessFrame sends a 50 MB frame that never ends. The server
// must cut it once past max_message_bytes, answer AR, close the
// connection, and not buffer the 50 MB: the bytes allocated meanwhile stay
// within a few times the limit.
func TestHostileEndlessFrame(t *testing.T) {
	const limit = 1 << 20
	const attack = 50 << 20
	f := startInbound(t, func(c *InboundConfig) { c.MaxMessageBytes = limit })
	nc, err := net.Dial("tcp", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()

	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)

	// The sender writes from one reused buffer, so it allocates nothing.
	var written atomic.Int64
	writeErr := make(chan error, 1)
	go func() {
		chunk := bytes.Repeat([]byte("A"), 64<<10)
		header := []byte("\x0bMSH|^~\\&|PAS|RXX01|JUNCTION|RXX01|20250301120000||ADT^A01|BIG1|P|2.4\rNTE|1||")
		n, err := nc.Write(header)
		written.Add(int64(n))
		for err == nil && written.Load() < attack {
			_ = nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
			n, err = nc.Write(chunk)
			written.Add(int64(n))
		}
		writeErr <- err
	}()
	frames := readReplyThenClose(t, nc)
	werr := <-writeErr
	runtime.ReadMemStats(&after)
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("sender wrote %d bytes before the connection was cut (%v); %d bytes allocated", written.Load(), werr, alloc)

	if werr == nil || written.Load() >= attack {
		t.Errorf("the sender wrote all %d bytes: the server read the whole frame", written.Load())
	}
	var ne net.Error
	if errors.As(werr, &ne) && ne.Timeout() {
		t.Errorf("the sender's write timed out rather than being refused: the server stopped reading but kept the connection")
	}
	if len(frames) != 1 {
		t.Fatalf("got %d reply frames, want one AR", len(frames))
	}
	code, _, text, err := hl7v2.ParseAck(frames[0])
	if err != nil || code != hl7v2.AckAR || !strings.Contains(text, fmt.Sprintf("larger than %d bytes", limit)) {
		t.Errorf("reply %q: %s %q %v, want AR saying the message is too large", frames[0], code, text, err)
	}
	// ERR 104 (value too long), not 207, which says resend later.
	if !bytes.Contains(frames[0], []byte("ERR|^^^104&")) {
		t.Errorf("reply %q: want ERR code 104", frames[0])
	}
	if want := uint64(4*limit + 2<<20); alloc > want {
		t.Errorf("allocated %d bytes while refusing the frame, want at most %d (4x the limit + 2 MiB)", alloc, want)
	}
	stored, q := f.host.snapshot()
	if len(stored) != 0 {
		t.Errorf("stored %d", len(stored))
	}
	if len(q) != 1 || len(q[0].raw) != adapter.MaxQuarantineBytes || q[0].reason != string(fault.CodeFrameTooLarge) {
		t.Errorf("quarantined %d entries, want the first %d bytes as %s", len(q), adapter.MaxQuarantineBytes, fault.CodeFrameTooLarge)
	}
	waitForConns(t, f, 0)
}

// waitForConns waits until the listener has n open connections.
func waitForConns(t *testing.T, f *inboundFixture, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for f.in.srv.ActiveConns() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections open, want %d", f.in.srv.ActiveConns(), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestHostileFraming sends broken framing on one connection. Frames before
// the break are acknowledged and stored; the break is answered with an AR
// (no control id, since no message was read) and the connection closed,
// so nothing after it is taken as a message.
func TestHostileFraming(t *testing.T) {
	frame := func(ctrl string) string { return "\x0b" + msg(ctrl, "") + "\x1c\r" }
	tests := []struct {
		name       string
		wire       string
		wantAcks   []hl7v2.AckCode // in order; the last one may be the AR for the break
		wantStored []string        // control ids
		wantReason fault.Code      // "" when nothing is rejected
	}{
		{"frame without start block", msg("NOSB", "") + "\x1c\r", []hl7v2.AckCode{hl7v2.AckAR}, nil, fault.CodeFrameInvalid},
		{"end block alone", "\x1c\r", []hl7v2.AckCode{hl7v2.AckAR}, nil, fault.CodeFrameInvalid},
		{"garbage between frames", frame("G1") + "garbage" + frame("G2"), []hl7v2.AckCode{hl7v2.AckAA, hl7v2.AckAR}, []string{"G1"}, fault.CodeFrameInvalid},
		{"binary between frames", frame("B1") + "\x00\x00\xff\xfe" + frame("B2"), []hl7v2.AckCode{hl7v2.AckAA, hl7v2.AckAR}, []string{"B1"}, fault.CodeFrameInvalid},
		{"second frame without start block", frame("S1") + msg("S2", "") + "\x1c\r" + frame("S3"), []hl7v2.AckCode{hl7v2.AckAA, hl7v2.AckAR}, []string{"S1"}, fault.CodeFrameInvalid},
		{"end block followed by garbage", "\x0b" + msg("E1", "") + "\x1cX" + frame("E2"), []hl7v2.AckCode{hl7v2.AckAR}, nil, fault.CodeFrameInvalid},
		{"HTTP request", "POST /fhir HTTP/1.1\r\nHost: x\r\n\r\n", []hl7v2.AckCode{hl7v2.AckAR}, nil, fault.CodeFrameInvalid},
		{"TLS hello to a plain listener", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", []hl7v2.AckCode{hl7v2.AckAR}, nil, fault.CodeFrameInvalid},
		// Controls: whitespace between frames is tolerated.
		{"CR LF between frames", frame("W1") + "\r\n \t" + frame("W2"), []hl7v2.AckCode{hl7v2.AckAA, hl7v2.AckAA}, []string{"W1", "W2"}, ""},
		{"empty frame", "\x0b\x1c\r" + frame("Z1"), []hl7v2.AckCode{hl7v2.AckAR, hl7v2.AckAA}, []string{"Z1"}, fault.CodeHL7Parse},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := startInbound(t, nil)
			nc := dialRaw(t, f.addr, 0, tt.wire)
			var frames [][]byte
			if tt.wantReason == "" || tt.wantReason == fault.CodeHL7Parse {
				// The connection stays open: read the expected replies.
				_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
				r := transport.NewReader(nc, 1<<20)
				for range tt.wantAcks {
					p, err := r.ReadFrame()
					if err != nil {
						t.Fatalf("reading replies: %v", err)
					}
					frames = append(frames, bytes.Clone(p))
				}
			} else {
				frames = readReplyThenClose(t, nc)
			}
			var codes []hl7v2.AckCode
			for _, p := range frames {
				code, _, _, err := hl7v2.ParseAck(p)
				if err != nil {
					t.Fatalf("reply %q is not an ACK: %v", p, err)
				}
				codes = append(codes, code)
			}
			if !slices.Equal(codes, tt.wantAcks) {
				t.Errorf("acks %v, want %v", codes, tt.wantAcks)
			}
			stored, _ := f.host.snapshot()
			var ctrls []string
			for _, e := range stored {
				ctrls = append(ctrls, e.ControlID)
			}
			if !slices.Equal(ctrls, tt.wantStored) {
				t.Errorf("stored %v, want %v", ctrls, tt.wantStored)
			}
			if tt.wantReason != "" {
				if got := testutil.ToFloat64(f.m.Rejected.WithLabelValues("pas", string(tt.wantReason))); got != 1 {
					t.Errorf("rejected{%s} = %v", tt.wantReason, got)
				}
			}
			if tt.wantReason != "" && tt.wantReason != fault.CodeHL7Parse {
				waitForConns(t, f, 0)
			}
		})
	}
}

// percentile returns the p-th percentile (0-100) of sorted durations.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted)-1) * p / 100)
	return sorted[i]
}

// sendFor sends ADT messages on c until stop is closed and returns the
// latency of each acknowledgement. Every message must be answered AA for
// its own control id.
func sendFor(t *testing.T, c *transport.Client, prefix string, stop <-chan struct{}) []time.Duration {
	t.Helper()
	var lat []time.Duration
	for i := 0; ; i++ {
		select {
		case <-stop:
			return lat
		default:
		}
		ctrl := fmt.Sprintf("%s%06d", prefix, i)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		start := time.Now()
		reply, err := c.Send(ctx, []byte(msg(ctrl, "")))
		d := time.Since(start)
		cancel()
		if err != nil {
			t.Errorf("message %s: %v", ctrl, err)
			return lat
		}
		code, got, _, err := hl7v2.ParseAck(reply)
		if err != nil || code != hl7v2.AckAA || got != ctrl {
			t.Errorf("message %s answered %s for %q (%v)", ctrl, code, got, err)
			return lat
		}
		lat = append(lat, d)
	}
}

// TestHostileSlowConnections opens many connections that each send one
// byte per interval, half of them inside a frame (a start block, then
// payload bytes) and half between frames (carriage returns), while a real
// sender sends ADT messages on its own connection. The real sender must
// get an AA for every message; the slow connections must be closed by the
// read timeout (inside a frame) or the idle timeout (between frames), and
// the listener must never hold more than max_connections.
//
// 1,000 slow connections (100 under -short), one byte every 500 ms, read
// timeout 2 s, idle timeout 3 s. JUNCTION_HOSTILE_SLOW_CONNS changes the
// count. The real sender's ACK latency is logged, without the attack and
// under it; it is a figure for RELIABILITY.md, not asserted.
func TestHostileSlowConnections(t *testing.T) {
	slow := 1000
	if testing.Short() {
		slow = 100
	}
	if s := os.Getenv("JUNCTION_HOSTILE_SLOW_CONNS"); s != "" {
		if _, err := fmt.Sscan(s, &slow); err != nil {
			t.Fatalf("JUNCTION_HOSTILE_SLOW_CONNS: %v", err)
		}
	}
	const (
		interval    = 500 * time.Millisecond
		readTimeout = 2 * time.Second
		idleTimeout = 3 * time.Second
	)
	f := startInbound(t, func(c *InboundConfig) {
		c.ReadTimeout = readTimeout
		c.IdleTimeout = idleTimeout
		c.MaxConnections = slow // with the real sender, one more than allowed
	})

	// The real sender connects first and keeps its connection.
	real := dial(t, f.addr)
	baseStop := make(chan struct{})
	time.AfterFunc(time.Second, func() { close(baseStop) })
	baseline := sendFor(t, real, "BASE", baseStop)

	// Watch the number of open connections.
	var most atomic.Int64
	watchDone := make(chan struct{})
	watchStop := make(chan struct{})
	go func() {
		defer close(watchDone)
		for {
			most.Store(max(most.Load(), int64(f.in.srv.ActiveConns())))
			select {
			case <-watchStop:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	type result struct {
		inFrame  bool
		refused  bool // closed before its second byte
		lifetime time.Duration
		err      error
	}
	// The real sender sends from before the first slow connection opens
	// until every one has been dealt with: a sender left idle for
	// EvictIdleAfter while the listener is full may be closed for a new
	// connection, by design (it was owed no reply and reconnects), and
	// opening 1,000 connections on a busy machine can take that long.
	attackStop := make(chan struct{})
	latCh := make(chan []time.Duration, 1)
	var sender sync.WaitGroup
	sender.Go(func() { latCh <- sendFor(t, real, "LIVE", attackStop) })
	stopSender := sync.OnceFunc(func() { close(attackStop) })
	defer func() {
		// Also when a Fatalf ends the test early: the sender must not log
		// after it.
		stopSender()
		sender.Wait()
	}()

	results := make(chan result, slow)
	var ready sync.WaitGroup
	var dialed []net.Conn
	for i := range slow {
		nc, err := net.Dial("tcp", f.addr)
		if err != nil {
			t.Fatalf("dialling slow connection %d: %v", i, err)
		}
		dialed = append(dialed, nc)
		ready.Add(1)
		go func(nc net.Conn, inFrame bool) {
			start := time.Now()
			first := byte('\r')
			if inFrame {
				first = transport.StartBlock
			}
			buf := make([]byte, 1)
			for n := 0; ; n++ {
				b := first
				if n > 0 && inFrame {
					b = 'M'
				}
				_, err := nc.Write([]byte{b})
				if n == 0 {
					ready.Done()
				}
				if err != nil {
					results <- result{inFrame: inFrame, refused: n <= 1, lifetime: time.Since(start), err: err}
					return
				}
				_ = nc.SetReadDeadline(time.Now().Add(interval))
				_, err = nc.Read(buf)
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					continue
				}
				if time.Since(start) > time.Minute {
					err = errors.New("still open after a minute")
				}
				// The server sent something or closed the connection.
				results <- result{inFrame: inFrame, refused: n == 0, lifetime: time.Since(start), err: err}
				return
			}
		}(nc, i%2 == 0)
	}
	defer func() {
		for _, nc := range dialed {
			_ = nc.Close()
		}
	}()
	ready.Wait()
	var during runtime.MemStats
	runtime.ReadMemStats(&during)

	var got []result
	timeout := time.After(readTimeout + idleTimeout + 30*time.Second)
	for len(got) < slow {
		select {
		case r := <-results:
			got = append(got, r)
		case <-timeout:
			stopSender()
			t.Fatalf("only %d of %d slow connections closed", len(got), slow)
		}
	}
	stopSender()
	latencies := <-latCh
	close(watchStop)
	<-watchDone

	var refused, readClosed, idleClosed int
	var readLife, idleLife []time.Duration
	for _, r := range got {
		switch {
		case r.refused:
			refused++
		case r.inFrame:
			readClosed++
			readLife = append(readLife, r.lifetime)
		default:
			idleClosed++
			idleLife = append(idleLife, r.lifetime)
		}
		if r.err != nil && r.err != io.EOF && !isReset(r.err) {
			t.Errorf("slow connection ended with %v, want closed by the server", r.err)
		}
	}
	slices.Sort(readLife)
	slices.Sort(idleLife)
	slices.Sort(baseline)
	slices.Sort(latencies)
	heapPerConn := (int64(during.HeapInuse+during.StackInuse) - int64(before.HeapInuse+before.StackInuse)) / int64(slow)
	t.Logf("slow connections: %d, refused at the cap: %d, cut by read timeout: %d (after %v..%v), by idle timeout: %d (after %v..%v); most open at once: %d",
		slow, refused, readClosed, first(readLife), last(readLife), idleClosed, first(idleLife), last(idleLife), most.Load())
	t.Logf("heap+stack per slow connection (both ends, one process): %d bytes", heapPerConn)
	t.Logf("real sender without attack: %d messages, ACK p50 %v p99 %v", len(baseline), percentile(baseline, 50), percentile(baseline, 99))
	t.Logf("real sender under attack:   %d messages, ACK p50 %v p99 %v max %v", len(latencies), percentile(latencies, 50), percentile(latencies, 99), last(latencies))

	if len(latencies) == 0 {
		t.Error("the real sender sent nothing under attack")
	}
	if readClosed == 0 || idleClosed == 0 {
		t.Errorf("read-timeout closes %d, idle-timeout closes %d: want both kinds", readClosed, idleClosed)
	}
	if got := most.Load(); got > int64(slow) {
		t.Errorf("%d connections open at once, over max_connections %d", got, slow)
	}
	// Each open connection may cost its 16 KiB read buffer, goroutines and
	// socket state on both ends; 128 KiB is far above that and far below
	// what buffering input would take.
	if heapPerConn > 128<<10 {
		t.Errorf("%d bytes of heap and stack per slow connection", heapPerConn)
	}
	stored, _ := f.host.snapshot()
	if len(stored) != len(baseline)+len(latencies) {
		t.Errorf("stored %d, want %d", len(stored), len(baseline)+len(latencies))
	}
	waitForConns(t, f, 1)
}

func first(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	return d[0]
}

func last(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	return d[len(d)-1]
}

// corporaDir is the shared third-party corpora: ../shared/corpora from the
// repository root.
var corporaDir = filepath.Join("..", "..", "..", "shared", "corpora")

// corpusHL7 returns the HL7 v2 sample messages of the corpora, or none,
// with a log line, when the corpora are absent.
func corpusHL7(tb testing.TB) [][]byte {
	tb.Helper()
	var out [][]byte
	for _, dir := range []string{"ms-fhir-converter", "hapi-hl7v2"} {
		_ = filepath.WalkDir(filepath.Join(corporaDir, dir), func(path string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.EqualFold(filepath.Ext(path), ".hl7") {
				return nil
			}
			if b, err := os.ReadFile(path); err == nil {
				out = append(out, b)
			}
			return nil
		})
	}
	if len(out) == 0 {
		corpustest.Note(tb, "no HL7 v2 messages under %s; fuzzing without corpus seeds", corporaDir)
	}
	return out
}

// FuzzInboundWire feeds a byte stream through the MLLP framer and the
// listener's handler, as one connection would: every frame read is
// answered with a parseable ACK, framing errors are typed, and nothing
// read exceeds the limit.
func FuzzInboundWire(f *testing.F) {
	for _, b := range corpusHL7(f) {
		f.Add(append(append([]byte{transport.StartBlock}, b...), transport.EndBlock, transport.CarriageReturn))
		f.Add(b)
	}
	f.Add([]byte("\x0b" + msg("F1", "") + "\x1c\r\r\n\x0b" + msg("F2", "|||AL|NE") + "\x1c\r"))
	f.Add([]byte("\x0b" + msg("F3", "") + "\x1c\rjunk\x0b\x1c\r"))
	f.Add([]byte("\x0b\x0b\x1c\x1c\r"))
	const limit = 4096
	cfg := DefaultInboundConfig()
	cfg.MaxMessageBytes = limit
	in, err := NewInbound(adapter.Settings{}, newFakeHost(), cfg, pidKey)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, wire []byte) {
		r := transport.NewReader(bytes.NewReader(wire), limit)
		for {
			p, err := r.ReadFrame()
			if len(p) > limit {
				t.Fatalf("read %d bytes past the %d limit", len(p), limit)
			}
			var reply []byte
			switch {
			case err == io.EOF:
				return
			case err == nil:
				reply, _ = in.ServeMLLP(context.Background(), &transport.ConnInfo{}, bytes.Clone(p))
			case errors.Is(err, transport.ErrTooLarge), errors.Is(err, transport.ErrInvalidFrame):
				reply = in.onFrameError(context.Background(), &transport.ConnInfo{}, err, p)
			case errors.Is(err, io.ErrUnexpectedEOF):
				return
			default:
				t.Fatalf("unexpected error %v", err)
			}
			code, _, _, perr := hl7v2.ParseAck(reply)
			if perr != nil || !code.Valid() {
				t.Fatalf("reply %q is not an ACK: %v", reply, perr)
			}
			if bytes.IndexByte(reply, transport.EndBlock) >= 0 {
				t.Fatalf("reply %q holds an end block and cannot be framed", reply)
			}
			if err != nil {
				if code != hl7v2.AckAR && code != hl7v2.AckCR {
					t.Fatalf("framing error answered %s", code)
				}
				return
			}
		}
	})
}
