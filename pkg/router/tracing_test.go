package router

import (
	"context"
	"log/slog"
	"strconv"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/junction-fhir/junction/pkg/adapter"
	"github.com/junction-fhir/junction/pkg/audit"
	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/fault"
	"github.com/junction-fhir/junction/pkg/route"
	"github.com/junction-fhir/junction/pkg/store"
)

// tracedOut is scripted, also noting the span each send was made in.
type tracedOut struct {
	scripted
	mu    sync.Mutex
	spans []trace.SpanContext
}

func (o *tracedOut) Send(ctx context.Context, d *adapter.Delivery) (adapter.Receipt, error) {
	o.mu.Lock()
	o.spans = append(o.spans, trace.SpanContextFromContext(ctx))
	o.mu.Unlock()
	return o.scripted.Send(ctx, d)
}

func attrOf(s sdktrace.ReadOnlySpan, key string) (attribute.Value, bool) {
	for _, a := range s.Attributes() {
		if string(a.Key) == key {
			return a.Value, true
		}
	}
	return attribute.Value{}, false
}

// TestDeliverSpans: a delivery's span is a child of the context its
// outbound message carries, each attempt is a client span under it with
// its number and outcome, and the deliver span ends with its fate: an
// error status for an attempt moved to its lane to be retried (it was
// left unset) and for a dead letter.
func TestDeliverSpans(t *testing.T) {
	const parentTrace, parentSpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	tests := []struct {
		name         string
		script       []error
		maxAttempts  int
		deferRetry   bool
		replay       string
		wantOutcome  string
		wantError    bool
		wantAttempts []codes.Code
	}{
		{"delivered first time", nil, 3, false, "", "delivered", false, []codes.Code{codes.Unset}},
		{"delivered after retries", []error{unavailable(), unavailable()}, 3, false, "", "delivered", false, []codes.Code{codes.Error, codes.Error, codes.Unset}},
		{"retries used up", []error{unavailable(), unavailable()}, 2, false, "", "dead_lettered", true, []codes.Code{codes.Error, codes.Error}},
		{"moved to its lane", []error{unavailable()}, 3, true, "", "retrying", true, []codes.Code{codes.Error}},
		{"a replay", nil, 3, false, "01REPLAYGEN.42", "delivered", false, []codes.Code{codes.Unset}},
		{"refused", []error{&fault.Error{Code: fault.CodeDestRejected, Class: fault.Permanent, Msg: "fhir: server answered 400"}}, 3, false, "", "dead_lettered", true, []codes.Code{codes.Error}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := tracetest.NewSpanRecorder()
			tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
			r, _ := deliveryRouter(t)
			r.o.Tracer = tp.Tracer("test")
			out := &tracedOut{scripted: scripted{errs: tc.script}}
			d := &Destination{Name: "ehr", Out: out,
				Retry: Retry{MaxAttempts: tc.maxAttempts, Initial: time.Millisecond, Max: time.Millisecond, Multiplier: 1, Timeout: time.Second}}
			h := outboundHeader("01AAAAAAAAAAAAAAAAAAAAAAAA")
			h.Set(envelope.HeaderTraceParent, "00-"+parentTrace+"-"+parentSpan+"-01")
			if tc.replay != "" {
				h.Set(envelope.HeaderReplay, tc.replay)
			}
			_, _, err := sendPayload(t.Context(), r, d, h, []byte("payload"), 7, attempts{}, tc.deferRetry)
			if tc.deferRetry != (err != nil) {
				t.Fatalf("sendPayload: %v", err)
			}
			var deliver sdktrace.ReadOnlySpan
			var tries []sdktrace.ReadOnlySpan
			for _, s := range rec.Ended() {
				switch s.Name() {
				case "deliver":
					deliver = s
				case "deliver.attempt":
					tries = append(tries, s)
				}
			}
			if deliver == nil {
				t.Fatal("no deliver span")
			}
			if p := deliver.Parent(); p.TraceID().String() != parentTrace || p.SpanID().String() != parentSpan {
				t.Errorf("deliver span's parent %s/%s, want %s/%s", p.TraceID(), p.SpanID(), parentTrace, parentSpan)
			}
			if v, _ := attrOf(deliver, attrOutcome); v.AsString() != tc.wantOutcome {
				t.Errorf("deliver outcome %q, want %q", v.AsString(), tc.wantOutcome)
			}
			if v, _ := attrOf(deliver, attrReplay); v.AsString() != tc.replay {
				t.Errorf("deliver span's replay %q, want %q", v.AsString(), tc.replay)
			}
			if got := deliver.Status().Code == codes.Error; got != tc.wantError {
				t.Errorf("deliver status %v, want error %v", deliver.Status(), tc.wantError)
			}
			if len(tries) != len(tc.wantAttempts) {
				t.Fatalf("%d attempt spans, want %d", len(tries), len(tc.wantAttempts))
			}
			for i, s := range tries {
				if s.SpanKind() != trace.SpanKindClient {
					t.Errorf("attempt %d kind %v, want client", i+1, s.SpanKind())
				}
				if s.Parent().SpanID() != deliver.SpanContext().SpanID() {
					t.Errorf("attempt %d is not the deliver span's child", i+1)
				}
				if v, _ := attrOf(s, "junction.message_id"); v.AsString() != "01AAAAAAAAAAAAAAAAAAAAAAAA" {
					t.Errorf("attempt %d names message %q", i+1, v.AsString())
				}
				if v, _ := attrOf(s, attrAttempt); v.AsInt64() != int64(i+1) {
					t.Errorf("attempt span %d says attempt %d", i+1, v.AsInt64())
				}
				if s.Status().Code != tc.wantAttempts[i] {
					t.Errorf("attempt %d status %v, want %v", i+1, s.Status().Code, tc.wantAttempts[i])
				}
				if i < len(out.spans) && out.spans[i].SpanID() != s.SpanContext().SpanID() {
					t.Errorf("attempt %d was sent outside its span", i+1)
				}
			}
		})
	}
}

// TestAnnotateRoute: a route span says what routing decided, as events
// named by the audit records and an outcome, with ids and codes only.
func TestAnnotateRoute(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name        string
		ev          *evaluation
		wantOutcome string
		wantEvents  []string
		wantError   bool
	}{
		{"queued", &evaluation{recs: []audit.Record{{Time: at, Event: audit.Translated, Outcome: "ok"}, {Time: at, Event: audit.Matched, Outcome: "matched"}, {Time: at, Event: audit.Consent, Destination: "ehr", Outcome: "permit"}},
			deliveries: []route.Delivery{{Destination: "ehr"}}}, "queued", []string{"translated", "matched", "consent"}, false},
		{"consent denied", &evaluation{recs: []audit.Record{{Time: at, Event: audit.Matched, Outcome: "matched"}, {Time: at, Event: audit.Consent, Destination: "ehr", Outcome: "deny"}}},
			"consent_denied", []string{"matched", "consent"}, false},
		{"filtered", &evaluation{recs: []audit.Record{{Time: at, Event: audit.Filtered, Outcome: "filtered", Code: "match"}}}, "filtered", []string{"filtered"}, false},
		{"type not taken", &evaluation{recs: []audit.Record{{Time: at, Event: audit.Filtered, Outcome: "not-taken"}}}, "not_taken", []string{"filtered"}, false},
		{"failed", &evaluation{fail: fault.New(fault.CodeInternal, "translation failed")}, "failed", nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := tracetest.NewSpanRecorder()
			tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
			_, span := tp.Tracer("test").Start(t.Context(), "route")
			annotateRoute(span, tc.ev)
			span.End()
			s := rec.Ended()[0]
			if v, _ := attrOf(s, attrOutcome); v.AsString() != tc.wantOutcome {
				t.Errorf("outcome %q, want %q", v.AsString(), tc.wantOutcome)
			}
			var names []string
			for _, e := range s.Events() {
				names = append(names, e.Name)
				if !e.Time.Equal(at) {
					t.Errorf("event %s at %v, want the record's time %v", e.Name, e.Time, at)
				}
			}
			if len(names) != len(tc.wantEvents) {
				t.Errorf("events %v, want %v", names, tc.wantEvents)
			} else {
				for i := range names {
					if names[i] != tc.wantEvents[i] {
						t.Errorf("events %v, want %v", names, tc.wantEvents)
						break
					}
				}
			}
			if got := s.Status().Code == codes.Error; got != tc.wantError {
				t.Errorf("status %v, want error %v", s.Status(), tc.wantError)
			}
		})
	}
}

// TestIngestSpan: storing a message is a producer span under the receive
// span, naming the stored message (a resend's original) and its outcome,
// while the message carries on the receive span's context for routing.
func TestIngestSpan(t *testing.T) {
	// Written one at a time, so a resend is known at once (group commit
	// recognises it later, answering as for the first).
	cfg := store.DefaultConfig()
	cfg.GroupCommit = false
	st, err := store.Open(t.Context(), cfg, t.TempDir(), nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	ing := NewIngester(st, slog.New(slog.DiscardHandler), nil, nil)
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	var first string
	for i, want := range []string{"stored", "duplicate"} {
		t.Run(want, func(t *testing.T) {
			ctx, recv := tp.Tracer("test").Start(t.Context(), "mllp.receive")
			env := &envelope.Envelope{ID: "01TRACE" + strconv.Itoa(i), Source: "pas", MessageType: "ADT^A01", ControlID: "CTL1", DedupeKey: "PAS|RX1|CTL1",
				ContentType: envelope.ContentTypeHL7v2, Raw: []byte("MSH|^~\\&|PAS|RX1|||20260101||ADT^A01|CTL1|P|2.4\r")}
			res, err := ing.Ingest(ctx, env)
			recv.End()
			if err != nil {
				t.Fatal(err)
			}
			if i == 0 {
				first = res.ID
			}
			var span sdktrace.ReadOnlySpan
			for _, s := range rec.Ended() {
				if s.Name() == "ingest" && s.Parent().SpanID() == recv.SpanContext().SpanID() {
					span = s
				}
			}
			if span == nil {
				t.Fatal("no ingest span under the receive span")
			}
			if span.SpanKind() != trace.SpanKindProducer {
				t.Errorf("kind %v, want producer", span.SpanKind())
			}
			if v, _ := attrOf(span, attrOutcome); v.AsString() != want {
				t.Errorf("outcome %q, want %q", v.AsString(), want)
			}
			if v, _ := attrOf(span, "junction.message_id"); v.AsString() != first {
				t.Errorf("message id %q, want the stored one %q", v.AsString(), first)
			}
			if wantTP := "00-" + recv.SpanContext().TraceID().String() + "-" + recv.SpanContext().SpanID().String() + "-01"; env.TraceParent != wantTP {
				t.Errorf("message carries %q, want the receive span's %q", env.TraceParent, wantTP)
			}
		})
	}
}
