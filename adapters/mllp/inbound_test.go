package mllp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/junction-fhir/junction/pkg/adapter"
	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/fault"
	"github.com/junction-fhir/junction/pkg/hl7v2"
	"github.com/junction-fhir/junction/pkg/logtest"
	transport "github.com/junction-fhir/junction/pkg/mllp"
	"github.com/junction-fhir/junction/pkg/telemetry"
	"github.com/junction-fhir/junction/pkg/tlsconf/tlstest"
)

type inboundFixture struct {
	in   *Inbound
	host *fakeHost
	m    *telemetry.Metrics
	addr string
}

func pidKey(m *hl7v2.Message) string { return m.Get("PID-3.1") }

func startInbound(t *testing.T, mutate func(*InboundConfig)) *inboundFixture {
	t.Helper()
	return startInboundLogged(t, mutate, nil)
}

// startInboundLogged is startInbound logging to log (nil: the default).
func startInboundLogged(t *testing.T, mutate func(*InboundConfig), log *slog.Logger) *inboundFixture {
	t.Helper()
	cfg := DefaultInboundConfig()
	cfg.Listen = "127.0.0.1:0"
	if mutate != nil {
		mutate(&cfg)
	}
	m := telemetry.NewMetrics(prometheus.NewRegistry())
	host := newFakeHost()
	in, err := NewInbound(adapter.Settings{Name: "pas", Logger: log, Metrics: m, Secrets: testSecrets{}}, host, cfg, pidKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := in.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := in.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return &inboundFixture{in: in, host: host, m: m, addr: in.Addr().String()}
}

func dial(t *testing.T, addr string) *transport.Client {
	t.Helper()
	c, err := transport.Dial(context.Background(), addr, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func send(t *testing.T, c *transport.Client, payload string) (hl7v2.AckCode, string, string, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	reply, err := c.Send(ctx, []byte(payload))
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	code, ctrl, text, err := hl7v2.ParseAck(reply)
	if err != nil {
		t.Fatalf("ParseAck(%q): %v", reply, err)
	}
	return code, ctrl, text, reply
}

func TestInboundAcknowledges(t *testing.T) {
	tests := []struct {
		name     string
		payload  string
		wantCode hl7v2.AckCode
	}{
		{"original mode AA", msg("MSG0001", ""), hl7v2.AckAA},
		{"enhanced mode CA", msg("MSG0002", "|||AL|NE"), hl7v2.AckCA},
		// MSH-15 and 16 as the HL7 null, as senders that null every
		// unvalued field send them: not valued, so original mode.
		{"null MSH-15 and 16 original mode AA", msg("MSG0004", `|||""|""`), hl7v2.AckAA},
		{"CRLF and BOM kept", "\xEF\xBB\xBF" + strings.ReplaceAll(msg("MSG0003", ""), "\r", "\r\n"), hl7v2.AckAA},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := startInbound(t, nil)
			c := dial(t, f.addr)
			code, ctrl, _, reply := send(t, c, tt.payload)
			parsed, err := hl7v2.Parse([]byte(tt.payload))
			if err != nil {
				t.Fatal(err)
			}
			if code != tt.wantCode || ctrl != parsed.ControlID() {
				t.Errorf("ack %s for %q, want %s for %q", code, ctrl, tt.wantCode, parsed.ControlID())
			}
			ack, _ := hl7v2.Parse(reply)
			if got := ack.SendingApp(); got != "JUNCTION" {
				t.Errorf("ACK MSH-3 = %q, want JUNCTION", got)
			}
			stored, _ := f.host.snapshot()
			if len(stored) != 1 {
				t.Fatalf("stored %d", len(stored))
			}
			e := stored[0]
			got := []any{e.ID, e.Source, e.ContentType, e.MessageType, e.ControlID, e.Sender, e.DedupeKey, e.Partition}
			want := []any{"01TESTID000001", "pas", envelope.ContentTypeHL7v2, "ADT^A01", parsed.ControlID(), "PAS|RXX01",
				"PAS|RXX01|" + parsed.ControlID(), f.host.Partition("9990000018")}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("envelope (-want +got):\n%s", diff)
			}
			if !bytes.Equal(e.Raw, []byte(tt.payload)) {
				t.Errorf("Raw changed:\n got %q\nwant %q", e.Raw, tt.payload)
			}
			if e.ReceivedAt.IsZero() {
				t.Error("ReceivedAt unset")
			}
			if got := testutil.ToFloat64(f.m.Acks.WithLabelValues("pas", string(tt.wantCode))); got != 1 {
				t.Errorf("acks{%s} = %v", tt.wantCode, got)
			}
			if got := testutil.ToFloat64(f.m.Received.WithLabelValues("pas")); got != 1 {
				t.Errorf("received = %v", got)
			}
			if n := testutil.CollectAndCount(f.m.AckLatency); n != 1 {
				t.Errorf("ack latency series = %d", n)
			}
		})
	}
}

func TestInboundDuplicate(t *testing.T) {
	for _, extra := range []string{"", "|||AL|NE"} {
		t.Run("msh15="+extra, func(t *testing.T) {
			f := startInbound(t, nil)
			c := dial(t, f.addr)
			first, _, _, _ := send(t, c, msg("DUP1", extra))
			second, ctrl, _, _ := send(t, c, msg("DUP1", extra))
			if !first.Accepted() || second != first || ctrl != "DUP1" {
				t.Errorf("acks %s then %s (%s)", first, second, ctrl)
			}
			if got := testutil.ToFloat64(f.m.Duplicates.WithLabelValues("pas")); got != 1 {
				t.Errorf("duplicates = %v", got)
			}
			if stored, _ := f.host.snapshot(); len(stored) != 1 {
				t.Errorf("stored %d", len(stored))
			}
		})
	}
}

func TestInboundStoreFailureIsNeverPositive(t *testing.T) {
	storeDown := fault.Wrap(fault.Transient, fault.CodeStoreUnavailable, "store unavailable", errors.New("nats: timeout"))
	// The ingester's refusal while routing is behind (router.max_backlog).
	behind := &fault.Error{Code: fault.CodeBacklog, Class: fault.Transient, Msg: "not stored: over router.max_backlog"}
	tests := []struct {
		name     string
		extra    string
		err      error
		want     hl7v2.AckCode
		wantText string
	}{
		{"original mode AR", "", storeDown, hl7v2.AckAR, notStoredText},
		{"enhanced mode CE", "|||AL|NE", storeDown, hl7v2.AckCE, notStoredText},
		{"backlog original mode AR", "", behind, hl7v2.AckAR, backlogText},
		{"backlog enhanced mode CE", "|||AL|NE", behind, hl7v2.AckCE, backlogText},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := startInbound(t, nil)
			f.host.setErr(tt.err)
			c := dial(t, f.addr)
			code, ctrl, text, reply := send(t, c, msg("FAIL1", tt.extra))
			if code != tt.want || ctrl != "FAIL1" {
				t.Errorf("ack %s for %q, want %s", code, ctrl, tt.want)
			}
			if !strings.Contains(text, tt.wantText) || !bytes.Contains(reply, []byte("207")) {
				t.Errorf("ack text %q / reply %q lacks ERR 207 %q", text, reply, tt.wantText)
			}
			// Once the store is back, the resend is stored and accepted.
			f.host.setErr(nil)
			code, _, _, _ = send(t, c, msg("FAIL1", tt.extra))
			if !code.Accepted() {
				t.Errorf("resend answered %s", code)
			}
			if got := testutil.ToFloat64(f.m.Acks.WithLabelValues("pas", string(tt.want))); got != 1 {
				t.Errorf("acks{%s} = %v", tt.want, got)
			}
		})
	}
}

// TestInboundAcceptOnly checks that a listener told what its translator
// takes refuses other message types before storing them, with the HL7
// code that says why, and keeps taking the rest.
func TestInboundAcceptOnly(t *testing.T) {
	tests := []struct {
		name        string
		payload     string
		wantCode    hl7v2.AckCode
		wantErrCode string
		// wantSaid is the code received, as the ERR text quotes it.
		wantSaid string
	}{
		{"taken", msg("OK1", ""), hl7v2.AckAA, "", ""},
		{"event from EVN-1", strings.Replace(msg("OK2", ""), "ADT^A01^ADT_A01", "ADT", 1), hl7v2.AckAA, "", ""},
		{"unknown event", strings.Replace(msg("EV1", ""), "ADT^A01^ADT_A01", "ADT^A99", 1), hl7v2.AckAR, "201", `"A99"`},
		// Padded, it is not the A01 the list names: the text shows why.
		{"event padded with a space", strings.Replace(msg("EV2", ""), "ADT^A01^ADT_A01", "ADT^A01 ", 1), hl7v2.AckAR, "201", `"A01 "`},
		{"unknown type", strings.Replace(msg("TY1", ""), "ADT^A01^ADT_A01", "ORM^O01", 1), hl7v2.AckAR, "200", `"ORM"`},
		{"unknown type enhanced", strings.Replace(msg("TY2", "|||AL|NE"), "ADT^A01^ADT_A01", "ORM^O01", 1), hl7v2.AckCR, "200", `"ORM"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := startInbound(t, nil)
			f.in.AcceptOnly([]string{"ADT^A01", "ADT^A03"})
			c := dial(t, f.addr)
			code, _, text, reply := send(t, c, tt.payload)
			if code != tt.wantCode {
				t.Fatalf("ack %s, want %s (%q)", code, tt.wantCode, reply)
			}
			stored, q := f.host.snapshot()
			rejected := testutil.ToFloat64(f.m.Rejected.WithLabelValues("pas", string(fault.CodeHL7Unsupported)))
			if tt.wantErrCode == "" {
				if len(stored) != 1 || rejected != 0 || len(q) != 0 {
					t.Errorf("stored %d, rejected %v, quarantined %d; want 1, 0 and 0", len(stored), rejected, len(q))
				}
				return
			}
			// Refused, it is kept for ops (a sender whose MSH-15 forbids
			// the answer would otherwise leave no trace).
			if len(q) != 1 || string(q[0].raw) != tt.payload || q[0].reason != string(fault.CodeHL7Unsupported) {
				t.Errorf("quarantined %+v, want the message with reason %s", q, fault.CodeHL7Unsupported)
			}
			if codes := hl7v2.AckErrorCodes(reply); len(codes) != 1 || codes[0] != tt.wantErrCode {
				t.Errorf("ERR codes %v, want [%s]", codes, tt.wantErrCode)
			}
			if !bytes.Contains(reply, []byte(`ADT\S\A01, ADT\S\A03`)) || !strings.Contains(text, "this listener takes") {
				t.Errorf("reply %q does not say what the listener takes", reply)
			}
			if !strings.Contains(text, " "+tt.wantSaid+"; ") {
				t.Errorf("ERR text %q does not quote what was sent, %s", text, tt.wantSaid)
			}
			if len(stored) != 0 || rejected != 1 {
				t.Errorf("stored %d, rejected %v; want 0 and 1", len(stored), rejected)
			}
		})
	}
}

// TestInboundRelay checks that a listener given relayed types beside its
// translator's (as pas.NewPatientInbound gives them) stores those, a
// "TYPE^*" one for every event of the type, and still refuses the rest.
func TestInboundRelay(t *testing.T) {
	as := func(id, typ string) string { return strings.Replace(msg(id, ""), "ADT^A01^ADT_A01", typ, 1) }
	tests := []struct {
		name        string
		payload     string
		wantCode    hl7v2.AckCode
		wantErrCode string
	}{
		{"translated", msg("OK1", ""), hl7v2.AckAA, ""},
		{"relayed type", as("RL1", "ORM^O01^ORM_O01"), hl7v2.AckAA, ""},
		{"every event of a type", as("RL2", "SIU^S14^SIU_S12"), hl7v2.AckAA, ""},
		{"relayed event listed", as("RL4", "MDM^T02"), hl7v2.AckAA, ""},
		{"another event of that type", as("RL5", "MDM^T04"), hl7v2.AckAR, "201"},
		{"an untranslated ADT event", as("RL6", "ADT^A17^ADT_A17"), hl7v2.AckAR, "201"},
		{"another type", as("RL7", "OML^O21^OML_O21"), hl7v2.AckAR, "200"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := startInbound(t, nil)
			f.in.AcceptOnly([]string{"ADT^A01", "ORM^O01", "SIU^*", "MDM^T02"})
			code, _, _, reply := send(t, dial(t, f.addr), tt.payload)
			if code != tt.wantCode {
				t.Fatalf("ack %s, want %s (%q)", code, tt.wantCode, reply)
			}
			if refused := storedOrKept(t, f, tt.wantErrCode == "", fault.CodeHL7Unsupported); refused {
				if codes := hl7v2.AckErrorCodes(reply); len(codes) != 1 || codes[0] != tt.wantErrCode {
					t.Errorf("ERR codes %v, want [%s]", codes, tt.wantErrCode)
				}
			}
		})
	}
}

// TestInboundRejectTextInMSA3 checks that a reject's text is in MSA-3,
// where senders before v2.4 (and many since) look for it, as well as in
// ERR, for every version before 2.7, which withdrew MSA-3.
func TestInboundRejectTextInMSA3(t *testing.T) {
	tests := []struct {
		version string
		msa3    bool
	}{{"2.3", true}, {"2.4", true}, {"2.5.1", true}, {"2.6", true}, {"2.7", false}, {"2.8.2", false}}
	for _, tt := range tests {
		t.Run(tt.version, func(t *testing.T) {
			f := startInbound(t, nil)
			f.in.AcceptOnly([]string{"ADT^A01"})
			payload := strings.Replace(strings.Replace(msg("V1", ""), "ADT^A01^ADT_A01", "ORM^O01", 1), "|P|2.4", "|P|"+tt.version, 1)
			_, _, _, reply := send(t, dial(t, f.addr), payload)
			ack, err := hl7v2.Parse(reply)
			if err != nil {
				t.Fatalf("reply %q: %v", reply, err)
			}
			msa3 := ack.Segment("MSA").Component(3, 1, 1, 1)
			if got := msa3 != ""; got != tt.msa3 || tt.msa3 && !strings.Contains(msa3, "unsupported message type") {
				t.Errorf("MSA-3 %q, want the reject's text: %v", msa3, tt.msa3)
			}
		})
	}
}

// TestInboundNeverAnswersAnAck checks that an acknowledgement sent to a
// listener (a misdirected answer, or a peer acknowledging what it
// receives) is not answered, so two peers cannot trade rejections without
// end; it is kept for ops and counted, the connection stays open for the
// next message, and an input relaying ACKs takes them as messages.
func TestInboundNeverAnswersAnAck(t *testing.T) {
	ack := "MSH|^~\\&|EPR|RXX01|JUNCTION|RXX01|20250301120000||ACK^A01^ACK|AK1|P|2.4\rMSA|AR|J123\r"
	tests := []struct {
		name      string
		accept    []string
		ack       string
		answered  bool
		wantCode  hl7v2.AckCode
		wantStore bool
	}{
		{"an acknowledgement", []string{"ADT^A01"}, ack, false, "", false},
		{"without an event", []string{"ADT^A01"}, strings.Replace(ack, "ACK^A01^ACK", "ACK", 1), false, "", false},
		{"relayed", []string{"ADT^A01", "ACK^A01"}, ack, true, hl7v2.AckAA, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := startInbound(t, nil)
			f.in.AcceptOnly(tt.accept)
			nc := dialRaw(t, f.addr, 0, "\x0b"+tt.ack+"\x1c\r")
			r := transport.NewReader(nc, 1<<20)
			if tt.answered {
				_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
				reply, err := r.ReadFrame()
				if err != nil {
					t.Fatalf("no reply: %v", err)
				}
				if code, _, _, _ := hl7v2.ParseAck(reply); code != tt.wantCode {
					t.Fatalf("reply %q, want %s", reply, tt.wantCode)
				}
				storedOrKept(t, f, true, "")
				return
			}
			// The next message on the connection is answered, and is the
			// first answer the connection carries.
			if _, err := io.WriteString(nc, "\x0b"+msg("NEXT1", "")+"\x1c\r"); err != nil {
				t.Fatal(err)
			}
			_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
			reply, err := r.ReadFrame()
			if err != nil {
				t.Fatalf("no reply to the next message: %v", err)
			}
			if code, ctrl, _, _ := hl7v2.ParseAck(reply); code != hl7v2.AckAA || ctrl != "NEXT1" {
				t.Fatalf("first reply %q, want AA to NEXT1", reply)
			}
			stored, q := f.host.snapshot()
			if len(stored) != 1 || len(q) != 1 || string(q[0].raw) != tt.ack || q[0].reason != string(fault.CodeHL7Unsupported) {
				t.Errorf("stored %d, quarantined %+v; want the next message stored and the acknowledgement kept as %s", len(stored), q, fault.CodeHL7Unsupported)
			}
			if got := testutil.ToFloat64(f.m.Acks.WithLabelValues("pas", ackNotSent)); got != 1 {
				t.Errorf("acks{%s} = %v, want 1", ackNotSent, got)
			}
			if got := testutil.ToFloat64(f.m.Rejected.WithLabelValues("pas", string(fault.CodeHL7Unsupported))); got != 1 {
				t.Errorf("rejected{%s} = %v, want 1", fault.CodeHL7Unsupported, got)
			}
		})
	}
}

// storedOrKept checks that the one message sent to f was stored, when
// taken, or else quarantined for reason and not stored. It reports
// whether the message was refused, so its answer is worth checking.
func storedOrKept(t *testing.T, f *inboundFixture, taken bool, reason fault.Code) (refused bool) {
	t.Helper()
	stored, q := f.host.snapshot()
	if taken {
		if len(stored) != 1 || len(q) != 0 {
			t.Errorf("stored %d, quarantined %d; want 1 and 0", len(stored), len(q))
		}
		return false
	}
	if len(stored) != 0 || len(q) != 1 || q[0].reason != string(reason) {
		t.Errorf("stored %d, quarantined %+v; want 0, and the message kept as %s", len(stored), q, reason)
	}
	return true
}

// headerRefusal is how a listener answers a message it refuses, before
// storing, for a header field whose value it does not take: the fault it
// keeps the message under, and the one ERR of its ACK.
type headerRefusal struct {
	reason  fault.Code
	errCode string // the ERR's code, from HL7 table 0357
	holds   string // what the reply holds, such as where the ERR points
	says    string // what the ACK's text says
}

// sendHeader sends payload to f and checks that the ACK code is want and,
// unless that is AA, that the message was kept as r's reason rather than
// stored and that the ACK carries r's ERR.
func sendHeader(t *testing.T, f *inboundFixture, payload string, want hl7v2.AckCode, r headerRefusal) {
	t.Helper()
	code, _, text, reply := send(t, dial(t, f.addr), payload)
	if code != want {
		t.Fatalf("ack %s, want %s (%q)", code, want, reply)
	}
	if !storedOrKept(t, f, code == hl7v2.AckAA, r.reason) {
		return
	}
	if codes := hl7v2.AckErrorCodes(reply); len(codes) != 1 || codes[0] != r.errCode ||
		!bytes.Contains(reply, []byte(r.holds)) || !strings.Contains(text, r.says) {
		t.Errorf("reply %q (text %q), want ERR %s with %s saying %q", reply, text, r.errCode, r.holds, r.says)
	}
}

// TestInboundProcessingIDs checks that a listener told the processing ids
// it takes refuses others (a training system pointed at a live feed)
// before storing them, with ERR 202 at MSH-11, and stores the rest.
func TestInboundProcessingIDs(t *testing.T) {
	tests := []struct {
		name     string
		payload  string
		wantCode hl7v2.AckCode
	}{
		{"production", msg("P1", ""), hl7v2.AckAA},
		{"production in lower case", strings.Replace(msg("P2", ""), "|P2|P|", "|P2|p|", 1), hl7v2.AckAA},
		{"training", strings.Replace(msg("T1", ""), "|T1|P|", "|T1|T|", 1), hl7v2.AckAR},
		{"debugging, enhanced mode", strings.Replace(msg("D1", "|||AL|NE"), "|D1|P|", "|D1|D|", 1), hl7v2.AckCR},
		{"none given", strings.Replace(msg("N1", ""), "|N1|P|", "|N1||", 1), hl7v2.AckAR},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := startInbound(t, func(c *InboundConfig) { c.ProcessingIDs = []string{"P"} })
			sendHeader(t, f, tt.payload, tt.wantCode, headerRefusal{fault.CodeHL7Unsupported, hl7v2.ErrCodeUnsupportedProcessingID, "ERR|MSH^1^11^202", "this listener takes P"})
		})
	}
	cfg := DefaultInboundConfig()
	cfg.ProcessingIDs = []string{"P", "X"}
	if errs := cfg.Validate(); len(errs) != 1 || !strings.Contains(errs[0].Error(), `processing_ids[1]: "X"`) {
		t.Errorf("Validate = %v, want processing_ids[1] refused", errs)
	}
}

// TestInboundLongHeaderValues checks that a listener refuses, before
// storing, a message whose control id, sending application or facility or
// type is longer than its limit (the values travel in the store's
// headers, which JetStream bounds), with AR and ERR 104 at that field,
// and takes one at the limit.
func TestInboundLongHeaderValues(t *testing.T) {
	long := func(n int) string { return strings.Repeat("W", n) }
	tests := []struct {
		name  string
		msg   string
		field int // 0: taken
	}{
		{"control id at its limit", msg(long(maxControlID), ""), 0},
		{"control id over", msg(long(maxControlID+1), ""), 10},
		{"control id far over", msg(long(70000), ""), 10},
		{"sending application over", strings.Replace(msg("L1", ""), "|PAS|", "|"+long(maxHeaderValue+1)+"|", 1), 3},
		{"sending facility at its limit", strings.Replace(msg("L1", ""), "|PAS|RXX01|", "|PAS|"+long(maxHeaderValue)+"|", 1), 0},
		{"sending facility over", strings.Replace(msg("L1", ""), "|PAS|RXX01|", "|PAS|"+long(maxHeaderValue+1)+"|", 1), 4},
		{"event over", strings.Replace(msg("L1", ""), "ADT^A01^ADT_A01", "ADT^"+long(maxHeaderValue), 1), 9},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := startInbound(t, nil)
			code, _, text, reply := send(t, dial(t, f.addr), tt.msg)
			want := hl7v2.AckAA
			if tt.field != 0 {
				want = hl7v2.AckAR
			}
			if code != want {
				t.Fatalf("ack %s, want %s (%.300q)", code, want, reply)
			}
			if !storedOrKept(t, f, tt.field == 0, fault.CodeHL7Parse) {
				return
			}
			at := fmt.Sprintf("MSH^1^%d^104", tt.field)
			if !bytes.Contains(reply, []byte(at)) || !strings.Contains(text, "longer than") {
				t.Errorf("reply %.300q (text %q), want ERR 104 at MSH-%d saying it is too long", reply, text, tt.field)
			}
		})
	}
}

// TestInboundMaxSegments checks that a listener refuses, before storing,
// a message of more segments than max_segments, with AR and ERR 104,
// and takes one of that many.
func TestInboundMaxSegments(t *testing.T) {
	for _, tc := range []struct {
		nk1  int
		want hl7v2.AckCode
	}{{6, hl7v2.AckAA}, {7, hl7v2.AckAR}} {
		t.Run(fmt.Sprint(tc.nk1), func(t *testing.T) {
			f := startInbound(t, func(c *InboundConfig) { c.MaxSegments = 10 })
			// msg has 4 segments.
			payload := msg("SEG1", "") + strings.Repeat("NK1|1|TESTKIN^A\r", tc.nk1)
			code, _, text, reply := send(t, dial(t, f.addr), payload)
			if code != tc.want {
				t.Fatalf("%d segments: ack %s, want %s (%q)", 4+tc.nk1, code, tc.want, reply)
			}
			if !storedOrKept(t, f, code == hl7v2.AckAA, fault.CodeHL7TooManySegments) {
				return
			}
			if codes := hl7v2.AckErrorCodes(reply); len(codes) != 1 || codes[0] != hl7v2.ErrCodeValueTooLong || !strings.Contains(text, "more than 10 segments") {
				t.Errorf("reply %q (text %q), want ERR 104 saying the limit", reply, text)
			}
		})
	}
}

// TestInboundWarnsPlainBeyondLoopback checks that a listener reachable
// beyond this machine without TLS, or taking training and debugging
// messages, says so when it starts, and one on loopback does not.
func TestInboundWarnsPlainBeyondLoopback(t *testing.T) {
	for _, tc := range []struct {
		listen string
		warn   bool
	}{{"127.0.0.1:0", false}, {"0.0.0.0:0", true}} {
		t.Run(tc.listen, func(t *testing.T) {
			var logs logtest.Buffer
			startInboundLogged(t, func(c *InboundConfig) { c.Listen = tc.listen }, slog.New(slog.NewJSONHandler(&logs, nil)))
			if got := strings.Contains(logs.String(), "without TLS"); got != tc.warn {
				t.Errorf("warned %t, want %t; logs:\n%s", got, tc.warn, logs.String())
			}
			if got := strings.Contains(logs.String(), "takes every processing id"); got != tc.warn {
				t.Errorf("warned of processing ids %t, want %t; logs:\n%s", got, tc.warn, logs.String())
			}
		})
	}
}

// TestInboundVersions checks that a listener refuses, before storing, a
// message whose MSH-12 names no HL7 v2 version, with ERR 203 at MSH-12,
// and takes every v2 version, with or without its other components.
func TestInboundVersions(t *testing.T) {
	tests := []struct {
		name, version string
		wantCode      hl7v2.AckCode
	}{
		{"2.4", "2.4", hl7v2.AckAA},
		{"2.5.1", "2.5.1", hl7v2.AckAA},
		{"2.3.1", "2.3.1", hl7v2.AckAA},
		{"2.8", "2.8", hl7v2.AckAA},
		{"with internationalisation code", "2.4^GBR", hl7v2.AckAA},
		{"not given", "", hl7v2.AckAA},
		{"the HL7 null", `""`, hl7v2.AckAA},
		{"version 3", "3.0", hl7v2.AckAR},
		{"a letter", "X", hl7v2.AckAR},
		{"major only", "2", hl7v2.AckAR},
		{"2.0", "2.0", hl7v2.AckAR},
		{"2.10", "2.10", hl7v2.AckAR},
		{"a trailing dot", "2.5.", hl7v2.AckAR},
		{"a letter after", "2.3.1CA", hl7v2.AckAR},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := startInbound(t, nil)
			payload := strings.Replace(msg("V1", ""), "|V1|P|2.4", "|V1|P|"+tt.version, 1)
			// The ERR layout follows the version the ACK echoes (ERR-1
			// before 2.5, ERR-2 and ERR-3 after, and for what is neither).
			sendHeader(t, f, payload, tt.wantCode, headerRefusal{fault.CodeHL7Unsupported, hl7v2.ErrCodeUnsupportedVersion, "MSH^1^12", "HL7 v2"})
		})
	}
}

// TestInboundCharsets checks that a listener refuses, before storing, a
// message in a character set no translator decodes, with ERR 103 at
// MSH-18 (acknowledged, it could only be dead-lettered), and takes those
// it can.
func TestInboundCharsets(t *testing.T) {
	tests := []struct {
		name, charset string
		wantCode      hl7v2.AckCode
	}{
		{"none", "", hl7v2.AckAA},
		{"ASCII", "ASCII", hl7v2.AckAA},
		{"Latin-1", "8859/1", hl7v2.AckAA},
		{"UTF-8", "UNICODE UTF-8", hl7v2.AckAA},
		// The HL7 null declares nothing; IANA names for sets it decodes.
		{"null", `""`, hl7v2.AckAA},
		{"ISO-8859-1", "ISO-8859-1", hl7v2.AckAA},
		{"Latin-2", "8859/2", hl7v2.AckAR},
		{"Latin-9", "8859/15", hl7v2.AckAR},
		{"UTF-16", "UNICODE UTF-16", hl7v2.AckAR},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := startInbound(t, nil)
			sendHeader(t, f, msg("CS1", "||||||"+tt.charset), tt.wantCode, headerRefusal{fault.CodeHL7Charset, hl7v2.ErrCodeTableValue, "MSH^1^18", "8859/1"})
		})
	}
}

// TestInboundScreen checks that a listener given a screen refuses, before
// storing, what the screen refuses, with AE (an error in the message's
// content, which HL7 v2 does not answer AR) and its ERR, counted and kept
// for ops, and stores the rest.
func TestInboundScreen(t *testing.T) {
	f := startInbound(t, nil)
	f.in.Screen(func(m *hl7v2.Message) *hl7v2.AckError {
		if m.CountSegments("PV2") == 0 {
			return &hl7v2.AckError{Segment: "PV2", Code: hl7v2.ErrCodeSegmentSequence, Severity: "E", Text: "needs a PV2"}
		}
		return nil
	})
	c := dial(t, f.addr)
	refused := msg("SCR1", "")
	if code, _, text, reply := send(t, c, refused); code != hl7v2.AckAE || text != "needs a PV2" {
		t.Fatalf("ack %s %q, want AE saying what is missing (%q)", code, text, reply)
	}
	taken := msg("SCR2", "") + "PV2|||^Test\r"
	if code, _, _, reply := send(t, c, taken); code != hl7v2.AckAA {
		t.Fatalf("ack %s, want AA (%q)", code, reply)
	}
	stored, q := f.host.snapshot()
	if len(stored) != 1 || len(q) != 1 || string(q[0].raw) != refused || q[0].reason != string(fault.CodeHL7Required) {
		t.Errorf("stored %d, quarantined %+v; want 1, and the refused message with reason %s", len(stored), q, fault.CodeHL7Required)
	}
	if n := testutil.ToFloat64(f.m.Rejected.WithLabelValues("pas", string(fault.CodeHL7Required))); n != 1 {
		t.Errorf("rejected %v, want 1", n)
	}
}

func TestInboundRejects(t *testing.T) {
	tests := []struct {
		name        string
		payload     string
		wantCode    hl7v2.AckCode
		wantErrCode string
		wantReason  fault.Code
	}{
		{"not HL7", "hello, world", hl7v2.AckAR, "", fault.CodeHL7Parse},
		{"no MSH-10", "MSH|^~\\&|PAS|RXX01|JUNCTION|RXX01|20250301120000||ADT^A01||P|2.4\rPID|1\r", hl7v2.AckAR, "101", fault.CodeHL7Required},
		{"no MSH-10 enhanced", "MSH|^~\\&|PAS|RXX01|JUNCTION|RXX01|20250301120000||ADT^A01||P|2.4|||AL|NE\r", hl7v2.AckCR, "101", fault.CodeHL7Required},
		{"no MSH-9", "MSH|^~\\&|PAS|RXX01|JUNCTION|RXX01|20250301120000|||C1|P|2.4\r", hl7v2.AckAR, "101", fault.CodeHL7Required},
		{"two messages in one frame", msg("TWO1", "") + msg("TWO2", ""), hl7v2.AckAR, "100", fault.CodeHL7Parse},
		{"HL7 batch in one frame", "FHS|^~\\&|LAB\rBHS|^~\\&|LAB\r" + msg("BAT1", "") + "BTS|1\rFTS|1\r", hl7v2.AckAR, "200", fault.CodeHL7Parse},
		// A message whose header parses is answered by its MSH-10, in the
		// mode it asks for, though a later segment does not parse.
		{"bad segment name", "MSH|^~\\&|PAS|RXX01|JUNCTION|RXX01|20250301120000||ADT^A01|SEG1|P|2.4\rEVN|A01\rP-D|1\r", hl7v2.AckAR, "", fault.CodeHL7Parse},
		{"bad segment name enhanced", "MSH|^~\\&|PAS|RXX01|JUNCTION|RXX01|20250301120000||ADT^A01|SEG2|P|2.4|||AL|NE\rP-D|1\r", hl7v2.AckCR, "", fault.CodeHL7Parse},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := startInbound(t, nil)
			c := dial(t, f.addr)
			code, ctrl, text, reply := send(t, c, tt.payload)
			if code != tt.wantCode {
				t.Errorf("ack %s, want %s (%q)", code, tt.wantCode, reply)
			}
			if h, err := hl7v2.ParseHeader([]byte(tt.payload)); err == nil && ctrl != h.ControlID() {
				t.Errorf("MSA-2 %q, want MSH-10 %q (%q)", ctrl, h.ControlID(), reply)
			}
			if text == "" {
				t.Error("no error text in the ACK")
			}
			if tt.wantErrCode != "" && !bytes.Contains(reply, []byte("|"+tt.wantErrCode+"^")) && !bytes.Contains(reply, []byte("^"+tt.wantErrCode+"&")) {
				t.Errorf("reply %q lacks ERR code %s", reply, tt.wantErrCode)
			}
			stored, q := f.host.snapshot()
			if len(stored) != 0 {
				t.Errorf("stored %d", len(stored))
			}
			// Every rejected message is kept for ops.
			if len(q) != 1 || string(q[0].raw) != tt.payload || q[0].reason != string(tt.wantReason) || q[0].source != "pas" {
				t.Errorf("quarantined %+v", q)
			}
			if got := testutil.ToFloat64(f.m.Quarantined.WithLabelValues("pas")); got != 1 {
				t.Errorf("quarantined = %v", got)
			}
			if got := testutil.ToFloat64(f.m.Rejected.WithLabelValues("pas", string(tt.wantReason))); got != 1 {
				t.Errorf("rejected{%s} = %v", tt.wantReason, got)
			}
			// The connection stays usable.
			if code, _, _, _ := send(t, c, msg("AFTER", "")); code != hl7v2.AckAA {
				t.Errorf("next message answered %s", code)
			}
		})
	}
}

func TestInboundBadFrames(t *testing.T) {
	big := msg("BIG1", "") + "NTE|1||" + strings.Repeat("x", 4000) + "\r"
	bigEnhanced := msg("BIG2", "|||AL|NE") + "NTE|1||" + strings.Repeat("x", 4000) + "\r"
	// A reply names the message (MSA-2 = MSH-10) when its header was read,
	// so the sender can match it, in the mode the header asks for.
	tests := []struct {
		name       string
		wire       string
		wantReason fault.Code
		wantQ      string // the quarantined bytes, "" for none
		wantCode   hl7v2.AckCode
		wantCtrl   string
		// wantErr is the ERR code: never 207, which tells the sender to
		// resend the same bytes later.
		wantErr string
	}{
		{"too large", "\x0b" + big + "\x1c\r", fault.CodeFrameTooLarge, big[:1024], hl7v2.AckAR, "BIG1", hl7v2.ErrCodeValueTooLong},
		{"too large, enhanced mode", "\x0b" + bigEnhanced + "\x1c\r", fault.CodeFrameTooLarge, bigEnhanced[:1024], hl7v2.AckCR, "BIG2", hl7v2.ErrCodeValueTooLong},
		// What came unframed is kept, up to the next start block.
		{"data outside a frame", "junk\x0b" + msg("X1", "") + "\x1c\r", fault.CodeFrameInvalid, "junk", hl7v2.AckAR, "", hl7v2.ErrCodeSegmentSequence},
		{"end block without CR", "\x0b" + msg("X2", "") + "\x1cZ", fault.CodeFrameInvalid, msg("X2", ""), hl7v2.AckAR, "X2", hl7v2.ErrCodeSegmentSequence},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := startInbound(t, func(c *InboundConfig) { c.MaxMessageBytes = 1024 })
			nc := dialRaw(t, f.addr, 10*time.Second, tt.wire)
			r := transport.NewReader(nc, 1<<20)
			reply, err := r.ReadFrame()
			if err != nil {
				t.Fatalf("no reply: %v", err)
			}
			code, ctrl, _, err := hl7v2.ParseAck(reply)
			if err != nil || code != tt.wantCode || ctrl != tt.wantCtrl {
				t.Errorf("reply %q: code %s ctrl %q err %v, want %s %q", reply, code, ctrl, err, tt.wantCode, tt.wantCtrl)
			}
			if got := hl7v2.AckErrorCodes(reply); !slices.Equal(got, []string{tt.wantErr}) {
				t.Errorf("ERR codes %q, want %s", got, tt.wantErr)
			}
			// The server closes the connection after the reply.
			if _, err := r.ReadFrame(); err != io.EOF && !isReset(err) {
				t.Errorf("after the reply: %v, want EOF", err)
			}
			stored, q := f.host.snapshot()
			if len(stored) != 0 {
				t.Errorf("stored %d", len(stored))
			}
			if tt.wantQ == "" {
				if len(q) != 0 {
					t.Errorf("quarantined %d", len(q))
				}
			} else if len(q) != 1 || string(q[0].raw) != tt.wantQ || q[0].reason != string(tt.wantReason) {
				t.Errorf("quarantined %d entries, want the first %d bytes with reason %s", len(q), len(tt.wantQ), tt.wantReason)
			}
			if got := testutil.ToFloat64(f.m.Rejected.WithLabelValues("pas", string(tt.wantReason))); got != 1 {
				t.Errorf("rejected{%s} = %v", tt.wantReason, got)
			}
			if got := testutil.ToFloat64(f.m.Acks.WithLabelValues("pas", string(tt.wantCode))); got != 1 {
				t.Errorf("acks{%s} = %v", tt.wantCode, got)
			}
		})
	}
}

// TestInboundEndBlockWithoutCR: a sender that ends frames with the end
// block alone, or with a line feed after it, or starts the next frame
// straight after it, has each
// message stored and acknowledged at once, not answered "resend later"
// at the read timeout.
func TestInboundEndBlockWithoutCR(t *testing.T) {
	tests := []struct {
		name string
		wire string
		// then is written once the first reply has come.
		then string
		want []string // control ids acknowledged AA, in order
	}{
		{"end block, then silence", "\x0b" + msg("NOCR1", "") + "\x1c", "", []string{"NOCR1"}},
		{"next frame straight after", "\x0b" + msg("NOCR2", "") + "\x1c\x0b" + msg("NOCR3", "") + "\x1c\r", "", []string{"NOCR2", "NOCR3"}},
		// The first frame's carriage return comes late, before a frame
		// ended properly: it is skipped.
		{"carriage return arriving later", "\x0b" + msg("NOCR4", "") + "\x1c", "\r\x0b" + msg("NOCR5", "") + "\x1c\r", []string{"NOCR4", "NOCR5"}},
		// A line feed in place of the carriage return, in the same write
		// as the end block: answered as it is when it comes later.
		{"line feed after the end block", "\x0b" + msg("NOCR6", "") + "\x1c\n\x0b" + msg("NOCR7", "") + "\x1c\n", "", []string{"NOCR6", "NOCR7"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A read timeout far longer than the test waits: an answer
			// given only at it would fail the test.
			f := startInbound(t, func(c *InboundConfig) { c.ReadTimeout = time.Minute })
			nc := dialRaw(t, f.addr, 10*time.Second, tt.wire)
			r := transport.NewReader(nc, 1<<20)
			for i, want := range tt.want {
				if i == 1 && tt.then != "" {
					if _, err := io.WriteString(nc, tt.then); err != nil {
						t.Fatal(err)
					}
				}
				reply, err := r.ReadFrame()
				code, ctrl, _, perr := hl7v2.ParseAck(reply)
				if err != nil || perr != nil || code != hl7v2.AckAA || ctrl != want {
					t.Fatalf("reply %d %q (%v, %v): code %s ctrl %q, want AA %q", i, reply, err, perr, code, ctrl, want)
				}
			}
			if got := testutil.ToFloat64(f.m.Rejected.WithLabelValues("pas", string(fault.CodeFrameIncomplete))); got != 0 {
				t.Errorf("rejected{%s} = %v, want 0", fault.CodeFrameIncomplete, got)
			}
		})
	}
}

// TestInboundIncompleteFrames checks that a frame cut short is counted and
// quarantined: answered when the sender is still there (after the read
// timeout), not when it closed inside the frame.
func TestInboundIncompleteFrames(t *testing.T) {
	tests := []struct {
		name      string
		wire      string
		close     bool // the sender closes after writing
		wantReply bool
		wantQ     string
	}{
		{"closed inside a frame", "\x0b" + msg("CUT1", ""), true, false, msg("CUT1", "")},
		{"start block, then silence", "\x0b", false, true, ""},
		// A header cut short names no message: MSA-2 stays empty rather
		// than naming a prefix of the control id.
		{"cut inside MSH, then silence", "\x0bMSH|^~\\&|PAS|RXX01|JUNCTION|RXX01|20250301120000||ADT^A01^ADT_A01|CUT12", false, true,
			"MSH|^~\\&|PAS|RXX01|JUNCTION|RXX01|20250301120000||ADT^A01^ADT_A01|CUT12"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := startInbound(t, func(c *InboundConfig) { c.ReadTimeout = 300 * time.Millisecond })
			nc := dialRaw(t, f.addr, 10*time.Second, tt.wire)
			if tt.close {
				_ = nc.(*net.TCPConn).CloseWrite()
			}
			reply, err := transport.NewReader(nc, 1<<20).ReadFrame()
			if tt.wantReply {
				code, ctrl, _, perr := hl7v2.ParseAck(reply)
				wantCtrl := ""
				if h, err := hl7v2.ParseHeader([]byte(tt.wantQ)); err == nil {
					wantCtrl = h.ControlID()
				}
				if err != nil || perr != nil || code != hl7v2.AckAR || ctrl != wantCtrl {
					t.Errorf("reply %q (%v): code %s ctrl %q, want AR %q", reply, err, code, ctrl, wantCtrl)
				}
				// The whole message may be resent: 207, resend later.
				if got := hl7v2.AckErrorCodes(reply); !slices.Equal(got, []string{hl7v2.ErrCodeInternal}) {
					t.Errorf("ERR codes %q, want 207", got)
				}
			} else if err == nil {
				t.Errorf("reply %q to a sender that closed", reply)
			}
			// The handler runs before the connection closes, so by the
			// time the reply or the close is seen it has counted.
			if got := testutil.ToFloat64(f.m.Rejected.WithLabelValues("pas", string(fault.CodeFrameIncomplete))); got != 1 {
				t.Errorf("rejected{%s} = %v, want 1", fault.CodeFrameIncomplete, got)
			}
			_, q := f.host.snapshot()
			switch {
			case tt.wantQ == "" && len(q) != 0:
				t.Errorf("quarantined %d entries of nothing", len(q))
			case tt.wantQ != "" && (len(q) != 1 || string(q[0].raw) != tt.wantQ || q[0].reason != string(fault.CodeFrameIncomplete)):
				t.Errorf("quarantined %+v, want the partial frame", q)
			}
			acks := testutil.ToFloat64(f.m.Acks.WithLabelValues("pas", "AR"))
			if want := map[bool]float64{true: 1, false: 0}[tt.wantReply]; acks != want {
				t.Errorf("acks{AR} = %v, want %v", acks, want)
			}
		})
	}
}

// TestInboundResetInsideFrame checks that a sender resetting the
// connection inside a frame has what it sent counted and kept, as a close
// is.
func TestInboundResetInsideFrame(t *testing.T) {
	f := startInbound(t, nil)
	nc, err := net.Dial("tcp", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(nc, "\x0b"+msg("RST1", "")); err != nil {
		t.Fatal(err)
	}
	// Let the listener read it, then reset (SO_LINGER 0 sends RST).
	deadline := time.Now().Add(5 * time.Second)
	_ = nc.(*net.TCPConn).SetLinger(0)
	time.Sleep(100 * time.Millisecond)
	_ = nc.Close()
	for testutil.ToFloat64(f.m.Rejected.WithLabelValues("pas", string(fault.CodeFrameIncomplete))) != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("rejected{%s} = %v, want 1", fault.CodeFrameIncomplete, testutil.ToFloat64(f.m.Rejected.WithLabelValues("pas", string(fault.CodeFrameIncomplete))))
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The rejection is counted just before the input is kept: wait for
	// the quarantine too.
	for {
		_, q := f.host.snapshot()
		if len(q) == 1 && string(q[0].raw) == msg("RST1", "") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("quarantined %+v, want the partial frame", q)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func isReset(err error) bool {
	var ne *net.OpError
	return errors.As(err, &ne)
}

func TestInboundConcurrentConnections(t *testing.T) {
	f := startInbound(t, nil)
	const conns, per = 16, 5
	var wg sync.WaitGroup
	errs := make(chan error, conns*per)
	for i := 0; i < conns; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			c, err := transport.Dial(context.Background(), f.addr, nil, 0)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			for j := 0; j < per; j++ {
				ctrl := fmt.Sprintf("C%02d-%d", i, j)
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				reply, err := c.Send(ctx, []byte(msg(ctrl, "")))
				cancel()
				if err != nil {
					errs <- err
					return
				}
				code, got, _, err := hl7v2.ParseAck(reply)
				if err != nil || code != hl7v2.AckAA || got != ctrl {
					errs <- fmt.Errorf("message %s: ack %s for %s (%v)", ctrl, code, got, err)
				}
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	stored, _ := f.host.snapshot()
	if len(stored) != conns*per {
		t.Errorf("stored %d, want %d", len(stored), conns*per)
	}
	if got := testutil.ToFloat64(f.m.Acks.WithLabelValues("pas", "AA")); got != conns*per {
		t.Errorf("acks{AA} = %v", got)
	}
}

// TestInboundCountsRefusedConnections checks that a connection over
// max_connections is closed and counted as rejected while the others are
// busy, and admitted in place of one idle long enough.
func TestInboundCountsRefusedConnections(t *testing.T) {
	f := startInbound(t, func(c *InboundConfig) { c.MaxConnections = 1 })
	held := dial(t, f.addr)
	for i := range 2 {
		// Just used, so not idle long enough to be closed for another.
		if code, _, _, _ := send(t, held, msg(fmt.Sprintf("HELD%d", i), "")); code != hl7v2.AckAA {
			t.Fatalf("ack on the held connection: %s", code)
		}
		nc, err := net.Dial("tcp", f.addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := nc.Read(make([]byte, 1)); err == nil {
			t.Errorf("connection over the limit was served (%d bytes read)", n)
		}
		_ = nc.Close()
	}
	deadline := time.Now().Add(5 * time.Second)
	for testutil.ToFloat64(f.m.Rejected.WithLabelValues("pas", "too_many_connections")) != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("rejected{too_many_connections} = %v, want 2", testutil.ToFloat64(f.m.Rejected.WithLabelValues("pas", "too_many_connections")))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := testutil.ToFloat64(f.m.Connections.WithLabelValues("pas")); got != 1 {
		t.Errorf("connections gauge = %v, want 1", got)
	}
	// Idle for a while, the held connection gives way to a new sender.
	time.Sleep(transport.DefaultEvictIdleAfter + 200*time.Millisecond)
	next := dial(t, f.addr)
	if code, _, _, _ := send(t, next, msg("NEXT1", "")); code != hl7v2.AckAA {
		t.Fatalf("ack on the new connection: %s", code)
	}
	if got := testutil.ToFloat64(f.m.Evicted.WithLabelValues("pas")); got != 1 {
		t.Errorf("evicted = %v, want 1", got)
	}
}

// TestInboundLimitsConnectionsPerHost checks that a host at
// max_connections_per_host has a further connection refused, counted by
// its own reason, while another host's messages are still taken.
func TestInboundLimitsConnectionsPerHost(t *testing.T) {
	f := startInbound(t, func(c *InboundConfig) { c.MaxConnections = 10; c.MaxConnectionsPerHost = 1 })
	held := dial(t, f.addr) // from 127.0.0.1
	if code, _, _, _ := send(t, held, msg("HOST1", "")); code != hl7v2.AckAA {
		t.Fatalf("ack on the held connection: %s", code)
	}
	nc, err := net.Dial("tcp", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := nc.Read(make([]byte, 1)); err == nil {
		t.Errorf("a second connection from the host was served (%d bytes read)", n)
	}
	rejected := func() float64 {
		return testutil.ToFloat64(f.m.Rejected.WithLabelValues("pas", "too_many_connections_from_host"))
	}
	deadline := time.Now().Add(5 * time.Second)
	for rejected() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("rejected{too_many_connections_from_host} = %v, want 1", rejected())
		}
		time.Sleep(10 * time.Millisecond)
	}
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
	other, err := d.Dial("tcp", f.addr)
	if err != nil {
		t.Fatalf("dial from another host: %v", err)
	}
	defer other.Close()
	_ = other.SetDeadline(time.Now().Add(5 * time.Second))
	if err := transport.WriteFrame(other, []byte(msg("HOST2", ""))); err != nil {
		t.Fatal(err)
	}
	reply, err := transport.NewReader(other, 0).ReadFrame()
	if err != nil {
		t.Fatalf("another host's message was not answered: %v", err)
	}
	ack, err := hl7v2.Parse(reply)
	if err != nil || ack.Get("MSA-1") != string(hl7v2.AckAA) {
		t.Errorf("another host's message: ack %q (%v), want AA", reply, err)
	}
}

func TestInboundLifecycle(t *testing.T) {
	host := newFakeHost()
	cfg := DefaultInboundConfig()
	cfg.Listen = "127.0.0.1:0"
	in, err := NewInbound(adapter.Settings{}, host, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := in.Shutdown(context.Background()); err != nil {
		t.Errorf("Shutdown without Start: %v", err)
	}
	if err := in.Shutdown(context.Background()); err != nil {
		t.Errorf("second Shutdown: %v", err)
	}
	in2, err := NewInbound(adapter.Settings{}, host, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := in2.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := in2.Start(context.Background()); err == nil {
		t.Error("second Start succeeded")
	}
	addr := in2.Addr().String()
	if err := in2.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Error("still accepting after Shutdown")
	}
}

func TestInboundConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  InboundConfig
		want []string
	}{
		{"defaults", DefaultInboundConfig(), nil},
		{"zero", InboundConfig{}, []string{
			"listen: required", "max_message_bytes: must be positive", "max_segments: must be positive", "read_timeout: must be positive",
			"idle_timeout: must be positive", "max_connections: must be positive",
		}},
		{"bad listen and tls", InboundConfig{Listen: "2575", MaxMessageBytes: 1, MaxSegments: 1, ReadTimeout: 1, IdleTimeout: 1, MaxConnections: 1,
			TLS: &TLSConfig{Cert: "/etc/cert.pem", ClientCA: "-----BEGIN"}}, []string{
			"listen: must be host:port", "tls.key: required",
			"tls.cert: must be a secret reference (file:PATH or env:NAME holding PEM)",
			"tls.client_ca: must be a secret reference (file:PATH or env:NAME holding PEM)",
		}},
		{"negative per-host limit", func() InboundConfig { c := DefaultInboundConfig(); c.MaxConnectionsPerHost = -1; return c }(),
			[]string{"max_connections_per_host: must not be negative (0 means no limit)"}},
		{"listen port out of range", func() InboundConfig { c := DefaultInboundConfig(); c.Listen = "127.0.0.1:99999"; return c }(),
			[]string{`listen: port "99999" must be a number from 0 to 65535`}},
		{"unknown accept_ack", func() InboundConfig { c := DefaultInboundConfig(); c.AcceptAck = "never"; return c }(),
			[]string{`accept_ack: must be "always" or "msh15"`}},
		{"buffer budget below one message", func() InboundConfig { c := DefaultInboundConfig(); c.MaxBufferedBytes = 1000; return c }(),
			[]string{"max_buffered_bytes: must be at least max_message_bytes (1048576), or no message that large could be received"}},
		{"relayed types", func() InboundConfig {
			c := DefaultInboundConfig()
			c.Relay = []string{"ORM^O01", "SIU^*", "orm^o02", "ORM", "SIU^S12", "ORM^O01", "MDM^T02"}
			return c
		}(), []string{
			`relay[2]: "orm^o02" is not a message type with its event, such as ORM^O01, or TYPE^* for every event of one`,
			`relay[3]: "ORM" is not a message type with its event, such as ORM^O01, or TYPE^* for every event of one`,
			`relay[4]: "SIU^S12" overlaps an earlier entry; list one of them`,
			`relay[5]: "ORM^O01" overlaps an earlier entry; list one of them`,
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
	if _, err := NewInbound(adapter.Settings{}, newFakeHost(), InboundConfig{}, nil); fault.CodeOf(err) != fault.CodeConfig {
		t.Errorf("NewInbound with a bad config: %v", err)
	}
}

func TestMutualTLS(t *testing.T) {
	pki := testPKI(t)
	f := startInbound(t, func(c *InboundConfig) {
		c.TLS = &TLSConfig{Cert: "file:" + pki["server.crt"], Key: "file:" + pki["server.key"], ClientCA: "file:" + pki["ca"]}
	})
	t.Setenv("JUNCTION_TEST_CLIENT_KEY", tlstest.Read(t, pki["client.key"]))
	tests := []struct {
		name   string
		tls    *OutboundTLSConfig
		wantOK bool
	}{
		{"client certificate", &OutboundTLSConfig{CA: "file:" + pki["ca"], Cert: "file:" + pki["client.crt"], Key: "env:JUNCTION_TEST_CLIENT_KEY"}, true},
		{"no client certificate", &OutboundTLSConfig{CA: "file:" + pki["ca"]}, false},
		{"untrusted server", &OutboundTLSConfig{Cert: "file:" + pki["client.crt"], Key: "file:" + pki["client.key"]}, false},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := NewOutbound(adapter.Settings{Secrets: testSecrets{}}, OutboundConfig{Address: f.addr, TLS: tt.tls, AckTimeout: 5 * time.Second, ConnectTimeout: 5 * time.Second, MaxReplyBytes: 1 << 20})
			if err != nil {
				t.Fatal(err)
			}
			defer o.Shutdown(context.Background())
			ctrl := fmt.Sprint("TLS", i)
			rcpt, err := o.Send(context.Background(), &adapter.Delivery{ContentType: envelope.ContentTypeHL7v2, Body: []byte(msg(ctrl, ""))})
			if tt.wantOK {
				if err != nil || rcpt.Status != "AA" {
					t.Errorf("receipt %+v, err %v", rcpt, err)
				}
				return
			}
			if err == nil || !fault.IsTransient(err) {
				t.Errorf("err = %v, want a transient fault", err)
			}
		})
	}
	if stored, _ := f.host.snapshot(); len(stored) != 1 {
		t.Errorf("stored %d over TLS, want 1", len(stored))
	}
}

func BenchmarkInboundServeMLLP(b *testing.B) {
	host := newFakeHost()
	cfg := DefaultInboundConfig()
	in, err := NewInbound(adapter.Settings{}, host, cfg, pidKey)
	if err != nil {
		b.Fatal(err)
	}
	payload := []byte(msg("BENCH", ""))
	b.SetBytes(int64(len(payload)))
	for b.Loop() {
		if _, closeConn := in.ServeMLLP(context.Background(), &transport.ConnInfo{}, payload); closeConn {
			b.Fatal("closed")
		}
	}
}

func FuzzInboundServeMLLP(f *testing.F) {
	f.Add([]byte(msg("F1", "")))
	f.Add([]byte(msg("F2", "|||AL|NE")))
	f.Add([]byte("MSH|^~\\&|A|B|||||||\r"))
	f.Add([]byte("hello"))
	in, err := NewInbound(adapter.Settings{}, newFakeHost(), DefaultInboundConfig(), pidKey)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		reply, _ := in.ServeMLLP(context.Background(), &transport.ConnInfo{}, payload)
		code, _, _, err := hl7v2.ParseAck(reply)
		if err != nil || !code.Valid() {
			t.Errorf("reply %q is not an ACK: %v", reply, err)
		}
	})
}

// TestInboundAcceptAckConditions checks that with accept_ack "msh15"
// enhanced-mode senders are answered as their MSH-15 asks (HL7 table
// 0155), that by default every message is answered, and that a message
// left unanswered is still stored.
func TestInboundAcceptAckConditions(t *testing.T) {
	storeDown := fault.Wrap(fault.Transient, fault.CodeStoreUnavailable, "store unavailable", errors.New("nats: timeout"))
	tests := []struct {
		name      string
		cond      string
		policy    string
		storeErr  error
		wantReply hl7v2.AckCode // "" for no reply
		wantClose bool          // the connection closed, nothing answered
	}{
		{"AL stored", "AL", AcceptAckMSH15, nil, hl7v2.AckCA, false},
		{"NE stored", "NE", AcceptAckMSH15, nil, "", false},
		{"NE store down closes", "NE", AcceptAckMSH15, storeDown, "", true},
		{"ER stored", "ER", AcceptAckMSH15, nil, "", false},
		{"ER store down", "ER", AcceptAckMSH15, storeDown, hl7v2.AckCE, false},
		{"SU stored", "SU", AcceptAckMSH15, nil, hl7v2.AckCA, false},
		{"SU store down closes", "SU", AcceptAckMSH15, storeDown, "", true},
		{"undefined condition answered", "XX", AcceptAckMSH15, nil, hl7v2.AckCA, false},
		{"NE by default", "NE", "", nil, hl7v2.AckCA, false},
		{"NE store down by default", "NE", "", storeDown, hl7v2.AckCE, false},
		{"NE with accept_ack always", "NE", AcceptAckAlways, nil, hl7v2.AckCA, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := startInbound(t, func(c *InboundConfig) {
				if tt.policy != "" {
					c.AcceptAck = tt.policy
				}
			})
			f.host.setErr(tt.storeErr)
			nc := dialRaw(t, f.addr, 5*time.Second, "")
			// The message under test, then an original-mode probe that is
			// always answered: the replies up to the probe's show whether
			// the first message was.
			for _, p := range []string{msg("COND1", "|||"+tt.cond+"|NE"), msg("PROBE1", "")} {
				if err := transport.WriteFrame(nc, []byte(p)); err != nil {
					t.Fatal(err)
				}
			}
			r := transport.NewReader(nc, 1<<20)
			if tt.wantClose {
				if reply, err := r.ReadFrame(); err == nil {
					t.Fatalf("answered %q, want the connection closed", reply)
				}
				if got := testutil.ToFloat64(f.m.Acks.WithLabelValues("pas", ackNotSent)); got != 1 {
					t.Errorf("acks{none} = %v, want 1", got)
				}
				return
			}
			var got []string
			for len(got) == 0 || !strings.HasSuffix(got[len(got)-1], " PROBE1") {
				reply, err := r.ReadFrame()
				if err != nil {
					t.Fatalf("after %v: %v", got, err)
				}
				code, ctrl, _, err := hl7v2.ParseAck(reply)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, string(code)+" "+ctrl)
			}
			want := []string{"AA PROBE1"}
			if tt.storeErr != nil {
				want = []string{"AR PROBE1"}
			}
			if tt.wantReply != "" {
				want = append([]string{string(tt.wantReply) + " COND1"}, want...)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("answers (-want +got):\n%s", diff)
			}
			if tt.wantReply == "" {
				if got := testutil.ToFloat64(f.m.Acks.WithLabelValues("pas", ackNotSent)); got != 1 {
					t.Errorf("acks{none} = %v, want 1", got)
				}
			}
			stored, _ := f.host.snapshot()
			if want := map[bool]int{true: 0, false: 2}[tt.storeErr != nil]; len(stored) != want {
				t.Errorf("stored %d, want %d", len(stored), want)
			}
		})
	}
}
