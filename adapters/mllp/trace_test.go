package mllp

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/junction-fhir/junction/pkg/adapter"
	"github.com/junction-fhir/junction/pkg/telemetry"
)

// TestReceiveSpanNamesStoredMessage: a receive span is a server span
// naming the message by the id the audit trail has, for a resend the
// stored original's (it named the resend's id, never stored).
func TestReceiveSpanNamesStoredMessage(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	host := newFakeHost()
	cfg := DefaultInboundConfig()
	cfg.Listen = "127.0.0.1:0"
	in, err := NewInbound(adapter.Settings{Name: "pas", Metrics: telemetry.NewMetrics(prometheus.NewRegistry()), Tracer: tp.Tracer("test")}, host, cfg, pidKey)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if ack, _ := in.ServeMLLP(t.Context(), nil, []byte(msg("TRACE1", ""))); ack == nil {
			t.Fatalf("send %d: no acknowledgement", i+1)
		}
	}
	stored, _ := host.snapshot()
	if len(stored) != 1 {
		t.Fatalf("stored %d messages, want 1", len(stored))
	}
	spans := rec.Ended()
	if len(spans) != 2 {
		t.Fatalf("%d spans, want 2", len(spans))
	}
	for i, s := range spans {
		t.Run([]string{"first", "resend"}[i], func(t *testing.T) {
			if s.SpanKind() != trace.SpanKindServer {
				t.Errorf("kind %v, want server", s.SpanKind())
			}
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
