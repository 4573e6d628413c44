package mllp

import (
	"context"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/junction-fhir/junction/pkg/adapter"
	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/fault"
	"github.com/junction-fhir/junction/pkg/hl7v2"
	transport "github.com/junction-fhir/junction/pkg/mllp"
)

// receiver is a test MLLP receiver built on pkg/mllp.
type receiver struct {
	srv   *transport.Server
	mu    sync.Mutex
	seen  []string // control ids received, in order
	conns map[uint64]bool
}

// startReceiver serves on addr ("127.0.0.1:0" for any port) and answers
// each message with answer(m) (nil for no reply).
func startReceiver(t *testing.T, addr string, answer func(ctx context.Context, m *hl7v2.Message) []byte) *receiver {
	t.Helper()
	r := &receiver{conns: map[uint64]bool{}}
	r.srv = &transport.Server{
		Addr: addr,
		Handler: transport.HandlerFunc(func(ctx context.Context, c *transport.ConnInfo, payload []byte) ([]byte, bool) {
			m, err := hl7v2.Parse(payload)
			if err != nil {
				return hl7v2.BuildRawAck(hl7v2.AckOptions{Text: "unparseable"}), false
			}
			r.mu.Lock()
			r.seen = append(r.seen, m.ControlID())
			r.conns[c.ID] = true
			r.mu.Unlock()
			return answer(ctx, m), false
		}),
	}
	if err := r.srv.Listen(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = r.srv.Serve(context.Background()) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = r.srv.Shutdown(ctx)
	})
	return r
}

func (r *receiver) addr() string { return r.srv.ListenAddr().String() }

func (r *receiver) stats() ([]string, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.seen...), len(r.conns)
}

// ackWith answers code with text in MSA-3 and, when text is given, an
// ERR segment with code 102 (a data type error: the message is wrong).
func ackWith(code hl7v2.AckCode, text string) func(context.Context, *hl7v2.Message) []byte {
	return ackCoded(code, hl7v2.ErrCodeDataType, text)
}

// ackCoded answers code with text and an ERR segment with errCode.
func ackCoded(code hl7v2.AckCode, errCode, text string) func(context.Context, *hl7v2.Message) []byte {
	return func(_ context.Context, m *hl7v2.Message) []byte {
		var errs []hl7v2.AckError
		if text != "" {
			errs = []hl7v2.AckError{{Code: errCode, Text: text}}
		}
		return hl7v2.BuildAck(m, hl7v2.AckOptions{Code: code, Text: text, Errors: errs, App: "RIS"})
	}
}

func newOutbound(t *testing.T, addr string, ackTimeout time.Duration) *Outbound {
	t.Helper()
	cfg := DefaultOutboundConfig()
	cfg.Address = addr
	cfg.AckTimeout = ackTimeout
	cfg.ConnectTimeout = 5 * time.Second
	o, err := NewOutbound(adapter.Settings{Name: "ris"}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = o.Shutdown(context.Background()) })
	return o
}

func v2(ctrl string) *adapter.Delivery {
	return &adapter.Delivery{MessageID: "01TESTID000001", Route: "adt", Destination: "ris", ContentType: envelope.ContentTypeHL7v2,
		Body: []byte(msg(ctrl, "")), IdempotencyKey: "k", Attempt: 1}
}

func TestOutboundAckCodes(t *testing.T) {
	tests := []struct {
		name       string
		answer     func(context.Context, *hl7v2.Message) []byte
		wantStatus string
		transient  bool
		wantCode   fault.Code
		wantDetail string
	}{
		{name: "AA", answer: ackWith(hl7v2.AckAA, ""), wantStatus: "AA"},
		{name: "CA", answer: ackWith(hl7v2.AckCA, ""), wantStatus: "CA"},
		{name: "AE permanent", answer: ackWith(hl7v2.AckAE, "PID-7 invalid date"), wantCode: fault.CodeDestRejected, wantDetail: "PID-7 invalid date"},
		{name: "CE permanent", answer: ackWith(hl7v2.AckCE, "bad"), wantCode: fault.CodeDestRejected, wantDetail: "bad"},
		// A receiver that could not store the message (as Junction's own
		// listener answers when its store is down) says so with 207.
		{name: "CE 207 transient", answer: ackCoded(hl7v2.AckCE, hl7v2.ErrCodeInternal, "message not stored"), transient: true, wantCode: fault.CodeDestRejected, wantDetail: "message not stored"},
		{name: "CE 206 transient", answer: ackCoded(hl7v2.AckCE, hl7v2.ErrCodeRecordLocked, "record locked"), transient: true, wantCode: fault.CodeDestRejected, wantDetail: "record locked"},
		// Many receivers answer any application error AE with 207.
		{name: "AE 207 permanent", answer: ackCoded(hl7v2.AckAE, hl7v2.ErrCodeInternal, "bad date"), wantCode: fault.CodeDestRejected, wantDetail: "bad date"},
		{name: "AR 206 transient", answer: ackCoded(hl7v2.AckAR, hl7v2.ErrCodeRecordLocked, "database down"), transient: true, wantCode: fault.CodeDestRejected, wantDetail: "database down"},
		{name: "CR without ERR transient", answer: ackWith(hl7v2.AckCR, ""), transient: true, wantCode: fault.CodeDestRejected},
		// Many receivers answer content errors AR: resending the same
		// content cannot help.
		{name: "AR 101 permanent", answer: ackCoded(hl7v2.AckAR, hl7v2.ErrCodeRequiredField, "OBX-5 required"), wantCode: fault.CodeDestRejected, wantDetail: "OBX-5 required"},
		{name: "CR 102 permanent", answer: ackCoded(hl7v2.AckCR, hl7v2.ErrCodeDataType, "bad date"), wantCode: fault.CodeDestRejected, wantDetail: "bad date"},
		// A reject saying the receiver never takes such a message (as
		// Junction's own listener answers an unsupported type or an
		// oversized message) is no "not ready now".
		{name: "AR 200 permanent", answer: ackCoded(hl7v2.AckAR, hl7v2.ErrCodeUnsupportedMessageType, "takes ADT only"), wantCode: fault.CodeDestRejected, wantDetail: "takes ADT only"},
		{name: "CR 104 permanent", answer: ackCoded(hl7v2.AckCR, hl7v2.ErrCodeValueTooLong, "message larger than 1048576 bytes"), wantCode: fault.CodeDestRejected, wantDetail: "message larger than 1048576 bytes"},
		{name: "AR 207 transient", answer: ackCoded(hl7v2.AckAR, hl7v2.ErrCodeInternal, "not stored"), transient: true, wantCode: fault.CodeDestRejected, wantDetail: "not stored"},
		// The receiver's ERR says where, and its user message what: both
		// reach the detail, not only ERR-3's text.
		{name: "AE with where and why", answer: func(_ context.Context, m *hl7v2.Message) []byte {
			return []byte("MSH|^~\\&|RIS|RX1|JUNCTION|RX1|20261207010000||ACK^A01^ACK|R1|P|2.5\r" +
				"MSA|AE|" + m.ControlID() + "\rERR||PID^1^3^1|103^Table value not found^HL70357|E||||Hospital number not known to this system\r")
		}, wantCode: fault.CodeDestRejected, wantDetail: "ERR 103 Table value not found at PID-3[1]: Hospital number not known to this system"},
		{name: "wrong MSA-2", answer: func(_ context.Context, m *hl7v2.Message) []byte {
			other, _ := hl7v2.Parse([]byte(msg("SOMEONE-ELSE", "")))
			return hl7v2.BuildAck(other, hl7v2.AckOptions{Code: hl7v2.AckAA})
		}, transient: true, wantCode: fault.CodeDestAckMismatch},
		// MSA-2 must be MSH-10 exactly: the id with more after it is not
		// an echo of it.
		{name: "MSA-2 with another component", answer: func(_ context.Context, m *hl7v2.Message) []byte {
			return []byte("MSH|^~\\&|RIS|RXX01|JUNCTION|RXX01|20250301120000||ACK^A01^ACK|A1|P|2.5\rMSA|AA|" + m.ControlID() + "^EXTRA\r")
		}, transient: true, wantCode: fault.CodeDestAckMismatch},
		{name: "MSA-2 repeated", answer: func(_ context.Context, m *hl7v2.Message) []byte {
			return []byte("MSH|^~\\&|RIS|RXX01|JUNCTION|RXX01|20250301120000||ACK^A01^ACK|A1|P|2.5\rMSA|AA|" + m.ControlID() + "~OTHER\r")
		}, transient: true, wantCode: fault.CodeDestAckMismatch},
		{name: "not an ACK", answer: func(context.Context, *hl7v2.Message) []byte { return []byte("OK") },
			transient: true, wantCode: fault.CodeDestAckMismatch},
		// An MSA-1 that is none of the six codes, or none at all, is no
		// acceptance, whatever MSA-2 echoes.
		{name: "unknown MSA-1", answer: ackWith("OK", ""), transient: true, wantCode: fault.CodeDestAckMismatch},
		{name: "empty MSA-1", answer: func(_ context.Context, m *hl7v2.Message) []byte {
			return []byte("MSH|^~\\&|RIS|RXX01|JUNCTION|RXX01|20250301120000||ACK^A01^ACK|A1|P|2.5\rMSA||" + m.ControlID() + "\r")
		}, transient: true, wantCode: fault.CodeDestAckMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := startReceiver(t, "127.0.0.1:0", tt.answer)
			o := newOutbound(t, r.addr(), 5*time.Second)
			rcpt, err := o.Send(context.Background(), v2("OUT1"))
			if tt.wantStatus != "" {
				if err != nil {
					t.Fatal(err)
				}
				code, ctrl, _, perr := hl7v2.ParseAck([]byte(rcpt.Reply))
				if rcpt.Status != tt.wantStatus || string(code) != tt.wantStatus || ctrl != "OUT1" || perr != nil {
					t.Errorf("receipt %+v", rcpt)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error; receipt %+v", rcpt)
			}
			if fault.IsTransient(err) != tt.transient || fault.CodeOf(err) != tt.wantCode {
				t.Errorf("err = %v (transient %v), want %s transient %v", err, fault.IsTransient(err), tt.wantCode, tt.transient)
			}
			if f := fault.As(err); !strings.Contains(f.Detail, tt.wantDetail) {
				t.Errorf("detail = %q, want %q", f.Detail, tt.wantDetail)
			}
			if tt.wantDetail != "" && strings.Contains(err.Error(), tt.wantDetail) {
				t.Errorf("Error() holds the ACK text: %v", err)
			}
		})
	}
}

func TestOutboundReusesConnectionAndReconnectsAfterMismatch(t *testing.T) {
	var mu sync.Mutex
	wrong := map[string]bool{"M2": true}
	r := startReceiver(t, "127.0.0.1:0", func(_ context.Context, m *hl7v2.Message) []byte {
		mu.Lock()
		defer mu.Unlock()
		if wrong[m.ControlID()] {
			other, _ := hl7v2.Parse([]byte(msg("M1", "")))
			return hl7v2.BuildAck(other, hl7v2.AckOptions{Code: hl7v2.AckAA})
		}
		return hl7v2.BuildAck(m, hl7v2.AckOptions{Code: hl7v2.AckAA})
	})
	o := newOutbound(t, r.addr(), 5*time.Second)
	for _, c := range []string{"M1", "M1b"} {
		if _, err := o.Send(context.Background(), v2(c)); err != nil {
			t.Fatal(err)
		}
	}
	if _, conns := r.stats(); conns != 1 {
		t.Errorf("connections after two sends = %d, want 1", conns)
	}
	if _, err := o.Send(context.Background(), v2("M2")); fault.CodeOf(err) != fault.CodeDestAckMismatch {
		t.Fatalf("err = %v", err)
	}
	mu.Lock()
	delete(wrong, "M2")
	mu.Unlock()
	rcpt, err := o.Send(context.Background(), v2("M2"))
	if err != nil || rcpt.Status != "AA" {
		t.Fatalf("retry: %+v %v", rcpt, err)
	}
	seen, conns := r.stats()
	if diff := cmp.Diff([]string{"M1", "M1b", "M2", "M2"}, seen); diff != "" {
		t.Errorf("received (-want +got):\n%s", diff)
	}
	if conns != 2 {
		t.Errorf("connections = %d, want 2 (a new one after the mismatch)", conns)
	}
}

func TestOutboundNoReplyAndLateReply(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	lateSent := make(chan struct{})
	r := startReceiver(t, "127.0.0.1:0", func(ctx context.Context, m *hl7v2.Message) []byte {
		if m.ControlID() == "SLOW" {
			// Answer only after the sender has given up.
			select {
			case <-release:
			case <-ctx.Done():
			}
			defer once.Do(func() { close(lateSent) })
		}
		return hl7v2.BuildAck(m, hl7v2.AckOptions{Code: hl7v2.AckAA})
	})
	o := newOutbound(t, r.addr(), 100*time.Millisecond)
	_, err := o.Send(context.Background(), v2("SLOW"))
	if !fault.IsTransient(err) || fault.CodeOf(err) != fault.CodeDestUnavailable {
		t.Fatalf("err = %v, want transient %s", err, fault.CodeDestUnavailable)
	}
	close(release)
	<-lateSent
	rcpt, err := o.Send(context.Background(), v2("NEXT"))
	if err != nil {
		t.Fatal(err)
	}
	if _, ctrl, _, _ := hl7v2.ParseAck([]byte(rcpt.Reply)); ctrl != "NEXT" {
		t.Errorf("the next message got the ACK for %q", ctrl)
	}
}

func TestOutboundNoReplyAtAll(t *testing.T) {
	r := startReceiver(t, "127.0.0.1:0", func(context.Context, *hl7v2.Message) []byte { return nil })
	o := newOutbound(t, r.addr(), 100*time.Millisecond)
	_, err := o.Send(context.Background(), v2("SILENT"))
	if !fault.IsTransient(err) || fault.CodeOf(err) != fault.CodeDestUnavailable {
		t.Errorf("err = %v, want transient %s", err, fault.CodeDestUnavailable)
	}
}

func TestOutboundConnectionRefusedThenRecovers(t *testing.T) {
	addr := freeAddr(t)
	o := newOutbound(t, addr, 5*time.Second)
	_, err := o.Send(context.Background(), v2("R1"))
	if !fault.IsTransient(err) || fault.CodeOf(err) != fault.CodeDestUnavailable {
		t.Fatalf("err = %v, want transient %s", err, fault.CodeDestUnavailable)
	}
	startReceiver(t, addr, ackWith(hl7v2.AckAA, ""))
	rcpt, err := o.Send(context.Background(), v2("R1"))
	if err != nil || rcpt.Status != "AA" {
		t.Errorf("after recovery: %+v %v", rcpt, err)
	}
}

func TestOutboundRefusesBadDeliveries(t *testing.T) {
	r := startReceiver(t, "127.0.0.1:0", ackWith(hl7v2.AckAA, ""))
	o := newOutbound(t, r.addr(), time.Second)
	tests := []struct {
		name string
		d    *adapter.Delivery
		want fault.Code
	}{
		{"fhir content", &adapter.Delivery{ContentType: envelope.ContentTypeFHIR, Body: []byte(`{"resourceType":"Bundle"}`)}, fault.CodeConfig},
		{"not hl7", &adapter.Delivery{ContentType: envelope.ContentTypeHL7v2, Body: []byte("hello")}, fault.CodeHL7Parse},
		{"no control id", &adapter.Delivery{ContentType: envelope.ContentTypeHL7v2, Body: []byte("MSH|^~\\&|A|B|C|D|20250101||ADT^A01||P|2.4\r")}, fault.CodeHL7Required},
		{"end block byte", &adapter.Delivery{ContentType: envelope.ContentTypeHL7v2, Body: []byte(msg("EB", "") + "NTE|1||a\x1cb\r")}, fault.CodeFrameInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := o.Send(context.Background(), tt.d)
			if err == nil || fault.IsTransient(err) || fault.CodeOf(err) != tt.want {
				t.Errorf("err = %v, want permanent %s", err, tt.want)
			}
		})
	}
	if seen, _ := r.stats(); len(seen) != 0 {
		t.Errorf("receiver got %v", seen)
	}
}

func TestOutboundShutdown(t *testing.T) {
	r := startReceiver(t, "127.0.0.1:0", ackWith(hl7v2.AckAA, ""))
	o := newOutbound(t, r.addr(), time.Second)
	if _, err := o.Send(context.Background(), v2("S1")); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if err := o.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := o.Send(context.Background(), v2("S2")); !fault.IsTransient(err) {
		t.Errorf("after Shutdown: %v, want a transient fault", err)
	}
}

func TestOutboundSerialisesConcurrentSends(t *testing.T) {
	r := startReceiver(t, "127.0.0.1:0", ackWith(hl7v2.AckAA, ""))
	o := newOutbound(t, r.addr(), 5*time.Second)
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			ctrl := "P" + string(rune('A'+i))
			rcpt, err := o.Send(context.Background(), v2(ctrl))
			if err != nil {
				t.Error(err)
				return
			}
			if _, got, _, _ := hl7v2.ParseAck([]byte(rcpt.Reply)); got != ctrl {
				t.Errorf("send %s got the ACK for %s", ctrl, got)
			}
		}(i)
	}
	wg.Wait()
	if _, conns := r.stats(); conns != 1 {
		t.Errorf("connections = %d, want 1", conns)
	}
}

func TestOutboundConfig(t *testing.T) {
	f := OutboundFactory{}
	if f.Type() != "mllp" {
		t.Errorf("Type = %q", f.Type())
	}
	c, ok := f.NewConfig().(*OutboundConfig)
	if !ok || c.AckTimeout != 30*time.Second || c.ConnectTimeout != 10*time.Second || c.MaxReplyBytes != 1<<20 {
		t.Errorf("defaults = %+v", f.NewConfig())
	}
	tests := []struct {
		name string
		cfg  OutboundConfig
		want []string
	}{
		{"ok", OutboundConfig{Address: "ris.example:2575", AckTimeout: 1, ConnectTimeout: 1, MaxReplyBytes: 1}, nil},
		{"zero", OutboundConfig{}, []string{"address: required", "ack_timeout: must be positive", "connect_timeout: must be positive", "max_reply_bytes: must be positive"}},
		{"bad address and tls", OutboundConfig{Address: "ris.example", AckTimeout: 1, ConnectTimeout: 1, MaxReplyBytes: 1,
			TLS: &OutboundTLSConfig{CA: "/etc/ca.pem", Cert: "file:/c"}}, []string{
			"address: must be host:port", "tls.cert, tls.key: set both or neither",
			"tls.ca: must be a secret reference (file:PATH or env:NAME holding PEM)",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, e := range tt.cfg.Validate() {
				got = append(got, e.Error())
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Validate (-want +got):\n%s", diff)
			}
		})
	}
	if _, err := f.NewOutbound(context.Background(), adapter.Settings{}, &OutboundConfig{}); fault.CodeOf(err) != fault.CodeConfig {
		t.Errorf("invalid config: %v", err)
	}
	if _, err := f.NewOutbound(context.Background(), adapter.Settings{}, 1); fault.CodeOf(err) != fault.CodeConfig {
		t.Errorf("wrong type: %v", err)
	}
	bad := &OutboundConfig{Address: "x:1", AckTimeout: 1, ConnectTimeout: 1, MaxReplyBytes: 1, TLS: &OutboundTLSConfig{CA: "env:JUNCTION_TEST_UNSET_CA"}}
	if _, err := f.NewOutbound(context.Background(), adapter.Settings{Secrets: testSecrets{}}, bad); fault.CodeOf(err) != fault.CodeConfig {
		t.Errorf("unresolvable CA: %v", err)
	}
}

// TestOutboundRedialsIdleClosedConnection: a receiver that closes idle
// connections (Junction's own listener does after idle_timeout) does not
// cost the next delivery an attempt: the sender dials again.
func TestOutboundRedialsIdleClosedConnection(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	srv := &transport.Server{
		Addr:        "127.0.0.1:0",
		IdleTimeout: 100 * time.Millisecond,
		Handler: transport.HandlerFunc(func(ctx context.Context, c *transport.ConnInfo, p []byte) ([]byte, bool) {
			m, _ := hl7v2.Parse(p)
			mu.Lock()
			seen = append(seen, m.ControlID())
			mu.Unlock()
			return hl7v2.BuildAck(m, hl7v2.AckOptions{Code: hl7v2.AckAA}), false
		}),
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(context.Background()) }()
	defer srv.Shutdown(context.Background())
	o := newOutbound(t, srv.ListenAddr().String(), 2*time.Second)
	if _, err := o.Send(context.Background(), v2("IDLE1")); err != nil {
		t.Fatal(err)
	}
	// The receiver closes the idle connection; the test is of the send
	// after that, so wait for it rather than for a guessed time.
	deadline := time.Now().Add(10 * time.Second)
	for srv.ActiveConns() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the receiver did not close the idle connection")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := o.Send(context.Background(), v2("IDLE2")); err != nil {
		t.Errorf("send after the receiver closed an idle connection: %v (receiver saw %v)", err, seen)
	}
}

// TestOutboundReceiverClosingAfterEachAck: a receiver that closes each
// connection after answering one message (as some older interface
// engines do) gets every delivery at the first attempt.
func TestOutboundReceiverClosingAfterEachAck(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func(c net.Conn) {
				defer c.Close()
				r := transport.NewReader(c, 0)
				p, err := r.ReadFrame()
				if err != nil {
					return
				}
				m, _ := hl7v2.Parse(p)
				_ = transport.WriteFrame(c, hl7v2.BuildAck(m, hl7v2.AckOptions{Code: hl7v2.AckAA}))
			}(c)
		}
	}()
	o := newOutbound(t, l.Addr().String(), 2*time.Second)
	failed := 0
	for i := 0; i < 6; i++ {
		if _, err := o.Send(context.Background(), v2("C"+string(rune('0'+i)))); err != nil {
			failed++
			t.Logf("send %d: %v", i, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if failed > 0 {
		t.Errorf("%d of 6 deliveries to a healthy receiver failed", failed)
	}
}

// TestOutboundHonoursMSH15: with accept_ack msh15, a message whose MSH-15
// asks for no answer (NE) is delivered once written, and one answered only
// on error (ER) once ack_timeout passes without an error, while an error
// answered still fails it; with the default, every message waits for its
// answer whatever MSH-15 says.
func TestOutboundHonoursMSH15(t *testing.T) {
	// Answers as MSH-15 asks: nothing for NE, nothing but errors for ER
	// (an ER message whose control id starts "BAD" is refused).
	honour := func(_ context.Context, m *hl7v2.Message) []byte {
		switch m.AcceptAckType() {
		case "NE":
			return nil
		case "ER":
			if strings.HasPrefix(m.ControlID(), "BAD") {
				return hl7v2.BuildAck(m, hl7v2.AckOptions{Code: hl7v2.AckCE, Text: "refused"})
			}
			return nil
		}
		return hl7v2.BuildAck(m, hl7v2.AckOptions{Code: hl7v2.AckCA})
	}
	tests := []struct {
		name, mode, ctrl, msh15 string
		status                  string // "" when the send fails
	}{
		{"NE delivered once written", AcceptAckMSH15, "NE1", "NE", StatusSent},
		{"ER delivered when no error comes", AcceptAckMSH15, "ER1", "ER", StatusSent},
		{"ER answered with an error", AcceptAckMSH15, "BAD1", "ER", ""},
		{"AL waits for the answer", AcceptAckMSH15, "AL1", "AL", "CA"},
		{"NE under the default waits", AcceptAckAlways, "NE2", "NE", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := startReceiver(t, "127.0.0.1:0", honour)
			cfg := DefaultOutboundConfig()
			cfg.Address, cfg.AckTimeout, cfg.ConnectTimeout, cfg.AcceptAck = r.addr(), 200*time.Millisecond, 5*time.Second, tt.mode
			o, err := NewOutbound(adapter.Settings{Name: "ris"}, cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = o.Shutdown(context.Background()) })
			d := v2(tt.ctrl)
			d.Body = []byte(msg(tt.ctrl, "|||"+tt.msh15+"|AL"))
			rc, err := o.Send(context.Background(), d)
			if (err == nil) != (tt.status != "") || rc.Status != tt.status {
				t.Fatalf("Send = %+v, %v; want status %q", rc, err, tt.status)
			}
			// The receiver has it once, and the next message goes through.
			next := v2("NEXT")
			next.Body = []byte(msg("NEXT", "|||AL|AL"))
			if _, err := o.Send(context.Background(), next); err != nil {
				t.Fatalf("next send: %v", err)
			}
			if seen, _ := r.stats(); !slices.Equal(seen, []string{tt.ctrl, "NEXT"}) {
				t.Errorf("receiver saw %v", seen)
			}
		})
	}
	bad := DefaultOutboundConfig()
	bad.Address, bad.AcceptAck = "127.0.0.1:1", "sometimes"
	if errs := bad.Validate(); len(errs) != 1 || !strings.Contains(errs[0].Error(), "accept_ack") {
		t.Errorf("Validate = %v, want an accept_ack error", errs)
	}
}

// TestOutboundPassesOverLateAnswerToNE: a receiver that answers an NE
// message all the same, after the next message is written, does not
// fail the next message: the late answer is passed over.
func TestOutboundPassesOverLateAnswerToNE(t *testing.T) {
	r := startReceiver(t, "127.0.0.1:0", func(_ context.Context, m *hl7v2.Message) []byte {
		if m.AcceptAckType() == "NE" {
			time.Sleep(50 * time.Millisecond)
		}
		return hl7v2.BuildAck(m, hl7v2.AckOptions{Code: hl7v2.AckAA})
	})
	o := msh15Outbound(t, r, "NE1")
	next := v2("NEXT")
	next.Body = []byte(msg("NEXT", "|||AL|AL"))
	rc, err := o.Send(context.Background(), next)
	if err != nil || rc.Status != "AA" {
		t.Fatalf("next send = %+v, %v", rc, err)
	}
	if seen, _ := r.stats(); !slices.Equal(seen, []string{"NE1", "NEXT"}) {
		t.Errorf("receiver saw %v", seen)
	}
}

// TestOutboundTakesAnswerToRepeatedControlID: a message asking for an
// answer whose MSH-10 repeats an earlier NE message's on the connection
// (a sender that reused a control id, or a resend asking for an answer)
// takes the answer echoing it as its own, rather than passing it over
// as the NE message's and waiting out ack_timeout.
func TestOutboundTakesAnswerToRepeatedControlID(t *testing.T) {
	r := startReceiver(t, "127.0.0.1:0", func(_ context.Context, m *hl7v2.Message) []byte {
		if m.AcceptAckType() == "NE" {
			return nil
		}
		return hl7v2.BuildAck(m, hl7v2.AckOptions{Code: hl7v2.AckAA})
	})
	o := msh15Outbound(t, r, "C1")
	al := v2("C1")
	al.Body = []byte(msg("C1", "|||AL|AL"))
	if rc, err := o.Send(context.Background(), al); err != nil || rc.Status != "AA" {
		t.Fatalf("send asking for an answer = %+v, %v; want AA", rc, err)
	}
	if seen, conns := r.stats(); !slices.Equal(seen, []string{"C1", "C1"}) || conns != 1 {
		t.Errorf("receiver saw %v on %d connections, want C1 twice on one", seen, conns)
	}
}

// msh15Outbound returns a sender to r that reads MSH-15 (accept_ack:
// msh15), after it has sent r a message with control id id that asks
// for no answer (MSH-15 NE) and taken it as sent.
func msh15Outbound(t *testing.T, r *receiver, id string) *Outbound {
	t.Helper()
	cfg := DefaultOutboundConfig()
	cfg.Address, cfg.AckTimeout, cfg.ConnectTimeout, cfg.AcceptAck = r.addr(), 2*time.Second, 5*time.Second, AcceptAckMSH15
	o, err := NewOutbound(adapter.Settings{Name: "ris"}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = o.Shutdown(context.Background()) })
	ne := v2(id)
	ne.Body = []byte(msg(id, "|||NE|AL"))
	if rc, err := o.Send(context.Background(), ne); err != nil || rc.Status != StatusSent {
		t.Fatalf("NE send = %+v, %v", rc, err)
	}
	return o
}
