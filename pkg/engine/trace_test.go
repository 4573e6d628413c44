package engine_test

import (
	"path/filepath"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/junction-fhir/junction/pkg/engine"
	"github.com/junction-fhir/junction/pkg/hl7v2"
)

// TestTraceSpansEveryHop: the receive, route and delivery spans of one
// message share one trace, carried across JetStream in message headers;
// the delivery is the child of the route span that queued it (in the
// batch pipeline it was the receive span's), each attempt a client span
// under it; every span names the message by one attribute; and each
// route span says what became of the message on its route.
func TestTraceSpansEveryHop(t *testing.T) { forPipelines(t, testTraceSpansEveryHop) }

func testTraceSpansEveryHop(t *testing.T, pipe string) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	routes, _ := filepath.Abs("../../routes")
	e, dir := startEngineOpts(t, routes, pipe, engine.Options{Tracer: tp.Tracer("test")})
	if code, _ := send(t, mllpAddr(t, e), adt("A01", "TR0001", "9990000018^^^NHS^NH")); code != hl7v2.AckAA {
		t.Fatalf("ack %s", code)
	}
	waitFiles(t, filepath.Join(dir, "out", "fhir-store"), 1)
	var spans []sdktrace.ReadOnlySpan
	waitFor(t, "delivery span", func() bool {
		spans = rec.Ended()
		for _, s := range spans {
			if s.Name() == "deliver" {
				return true
			}
		}
		return false
	})
	attr := func(s sdktrace.ReadOnlySpan, key string) string {
		for _, a := range s.Attributes() {
			if string(a.Key) == key {
				return a.Value.String()
			}
		}
		return ""
	}
	var recv, deliver, attempt sdktrace.ReadOnlySpan
	routeSpans := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range spans {
		switch s.Name() {
		case "route":
			routeSpans[attr(s, "junction.route")] = s
		case "deliver":
			deliver = s
		case "deliver.attempt":
			attempt = s
		default:
			if s.SpanKind() == trace.SpanKindServer {
				recv = s
			}
		}
	}
	store, dq := routeSpans["adt-to-fhir-store"], routeSpans["adt-data-quality"]
	if recv == nil || store == nil || dq == nil || deliver == nil || attempt == nil {
		t.Fatalf("missing spans: receive %v, routes %v, deliver %v, attempt %v", recv != nil, len(routeSpans), deliver != nil, attempt != nil)
	}
	id := recv.SpanContext().TraceID()
	for _, s := range []sdktrace.ReadOnlySpan{store, dq, deliver, attempt} {
		if s.SpanContext().TraceID() != id {
			t.Errorf("%s span in trace %s, want %s", s.Name(), s.SpanContext().TraceID(), id)
		}
	}
	if store.Parent().SpanID() != recv.SpanContext().SpanID() {
		t.Errorf("route span is not the receive span's child")
	}
	if deliver.Parent().SpanID() != store.SpanContext().SpanID() {
		t.Errorf("deliver span's parent %s, want the route span %s", deliver.Parent().SpanID(), store.SpanContext().SpanID())
	}
	if attempt.Parent().SpanID() != deliver.SpanContext().SpanID() || attempt.SpanKind() != trace.SpanKindClient {
		t.Errorf("attempt span: parent %s kind %v, want the deliver span %s, client", attempt.Parent().SpanID(), attempt.SpanKind(), deliver.SpanContext().SpanID())
	}
	msg := attr(recv, "junction.message_id")
	if msg == "" {
		t.Error("receive span has no junction.message_id")
	}
	for _, s := range []sdktrace.ReadOnlySpan{store, dq, deliver, attempt} {
		if got := attr(s, "junction.message_id"); got != msg {
			t.Errorf("%s span junction.message_id %q, want %q", s.Name(), got, msg)
		}
	}
	for _, c := range []struct {
		s    sdktrace.ReadOnlySpan
		want string
	}{{store, "queued"}, {dq, "filtered"}, {deliver, "delivered"}} {
		if got := attr(c.s, "junction.outcome"); got != c.want {
			t.Errorf("%s span (%s) outcome %q, want %q", c.s.Name(), attr(c.s, "junction.route"), got, c.want)
		}
	}
}
