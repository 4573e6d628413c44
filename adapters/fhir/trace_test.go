package fhir

import (
	"net/http"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/junction-fhir/junction/pkg/adapter"
	"github.com/junction-fhir/junction/pkg/telemetry"
)

// TestInboundTraceParent: a post's W3C trace context is the parent of its
// receive span, so the caller's trace and Junction's are one; without
// one (or with a malformed one) the receive span starts a trace.
func TestInboundTraceParent(t *testing.T) {
	const callerTrace, callerSpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	for _, tc := range []struct {
		name        string
		traceparent string
		wantParent  bool
	}{
		{"caller's context", "00-" + callerTrace + "-" + callerSpan + "-01", true},
		{"no context", "", false},
		{"malformed context", "00-zz-" + callerSpan + "-01", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, rec := tracedFixture(t)
			hdr := map[string]string{}
			if tc.traceparent != "" {
				hdr["Traceparent"] = tc.traceparent
			}
			if res := f.do(http.MethodPost, "/fhir/Patient", "application/fhir+json", readTestdata(t, "patient.json"), hdr); res.Code != http.StatusCreated && res.Code != http.StatusAccepted && res.Code != http.StatusOK {
				t.Fatalf("status %d: %s", res.Code, res.Body)
			}
			var got sdktrace.ReadOnlySpan
			for _, s := range rec.Ended() {
				if s.Name() == "fhir.receive" {
					got = s
				}
			}
			if got == nil {
				t.Fatal("no fhir.receive span")
			}
			if got.SpanKind() != trace.SpanKindServer {
				t.Errorf("span kind %v, want server", got.SpanKind())
			}
			parent := got.Parent()
			if tc.wantParent {
				if parent.TraceID().String() != callerTrace || parent.SpanID().String() != callerSpan || !parent.IsRemote() {
					t.Errorf("parent %s/%s (remote %v), want the caller's %s/%s", parent.TraceID(), parent.SpanID(), parent.IsRemote(), callerTrace, callerSpan)
				}
				if got.SpanContext().TraceID().String() != callerTrace {
					t.Errorf("trace %s, want the caller's %s", got.SpanContext().TraceID(), callerTrace)
				}
			} else if parent.IsValid() {
				t.Errorf("parent %s/%s, want none", parent.TraceID(), parent.SpanID())
			}
		})
	}
}

// TestReceiveSpanNamesStoredMessage: a resend's receive span names the
// stored original, the message the audit trail has, not the id the
// resend was given and never stored under.
func TestReceiveSpanNamesStoredMessage(t *testing.T) {
	f, rec := tracedFixture(t)
	for i := range 2 {
		if res := f.do(http.MethodPost, "/fhir/Patient", "application/fhir+json", readTestdata(t, "patient.json"), map[string]string{"Idempotency-Key": "trace-k1"}); res.Code >= 300 {
			t.Fatalf("post %d: status %d", i+1, res.Code)
		}
	}
	stored := f.host.all()
	if len(stored) != 1 {
		t.Fatalf("stored %d messages, want 1", len(stored))
	}
	spans := rec.Ended()
	if len(spans) != 2 {
		t.Fatalf("%d spans, want 2", len(spans))
	}
	for i, s := range spans {
		t.Run([]string{"first", "resend"}[i], func(t *testing.T) {
			attrs := map[string]string{}
			for _, a := range s.Attributes() {
				attrs[string(a.Key)] = a.Value.String()
			}
			if attrs["junction.message_id"] != stored[0].ID {
				t.Errorf("junction.message_id %q, want the stored message's %q", attrs["junction.message_id"], stored[0].ID)
			}
			if want := []string{"", "true"}[i]; attrs["junction.duplicate"] != want {
				t.Errorf("junction.duplicate %q, want %q", attrs["junction.duplicate"], want)
			}
		})
	}
}

// tracedFixture returns an input with the default settings whose spans
// go to the recorder returned.
func tracedFixture(t *testing.T) (*inboundFixture, *tracetest.SpanRecorder) {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	host := newFakeHost()
	in, err := NewInbound(adapter.Settings{Name: "ehr", Metrics: telemetry.NewMetrics(prometheus.NewRegistry()), Tracer: tp.Tracer("test")}, host, DefaultInboundConfig())
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	for p, h := range in.Routes() {
		mux.Handle(p, h)
	}
	return &inboundFixture{in: in, host: host, mux: mux}, rec
}
