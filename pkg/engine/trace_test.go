package engine_test

import (
	"path/filepath"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/junction-fhir/junction/pkg/engine"
	"github.com/junction-fhir/junction/pkg/hl7v2"
)

// TestTraceSpansEveryHop: the receive, route and delivery spans of one
// message share one trace, carried across JetStream in message headers.
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
	byName := map[string]string{}
	waitFor(t, "delivery span", func() bool {
		for _, s := range rec.Ended() {
			byName[s.Name()] = s.SpanContext().TraceID().String()
		}
		return byName["deliver"] != ""
	})
	recv := ""
	for name, id := range byName {
		if name != "route" && name != "deliver" {
			recv = id
		}
	}
	if recv == "" || byName["route"] != recv || byName["deliver"] != recv {
		t.Errorf("spans do not share one trace: %v", byName)
	}
}
