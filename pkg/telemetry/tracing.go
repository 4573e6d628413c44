package telemetry

import (
	"context"
	"fmt"
	"os"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Tracing is the engine's tracer and how to stop it.
type Tracing struct {
	Tracer   trace.Tracer
	provider *sdktrace.TracerProvider
}

// OTLPConfigured reports whether the standard OTEL_EXPORTER_OTLP_*
// variables ask for trace export.
func OTLPConfigured(getenv func(string) string) bool {
	return getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

// NewTracing exports spans over OTLP/gRPC when the standard environment
// variables are set, and otherwise keeps a no-op tracer (spans still carry
// trace context across NATS headers).
func NewTracing(ctx context.Context, version string) (*Tracing, error) {
	if !OTLPConfigured(os.Getenv) {
		return &Tracing{Tracer: noop.NewTracerProvider().Tracer("junction")}, nil
	}
	exp, err := otlptracegrpc.New(ctx)
	if err != nil {
		return nil, fmt.Errorf("creating OTLP exporter: %w", err)
	}
	res := resource.NewSchemaless(semconv.ServiceName("junction"), semconv.ServiceVersion(version))
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	return &Tracing{Tracer: tp.Tracer("junction"), provider: tp}, nil
}

// Shutdown flushes and stops export.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t.provider == nil {
		return nil
	}
	return t.provider.Shutdown(ctx)
}
