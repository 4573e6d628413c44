package telemetry

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
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

// ExportDisabled reports whether the standard variables turn trace export
// off whatever the endpoint: OTEL_SDK_DISABLED "true" (any case, the only
// true value the specification allows) or OTEL_TRACES_EXPORTER "none".
// Trace context is still carried on, as the specification asks of
// propagators.
func ExportDisabled(getenv func(string) string) bool {
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") {
		return true
	}
	return strings.EqualFold(strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER")), "none")
}

// OTLPProtocol returns the OTLP transport the standard variables ask for
// (OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, else OTEL_EXPORTER_OTLP_PROTOCOL):
// "grpc" (also when unset, as Junction has always exported) or
// "http/protobuf". Other values are an error.
func OTLPProtocol(getenv func(string) string) (string, error) {
	p := getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	if p == "" {
		p = getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	return checkProtocol(p)
}

// checkProtocol returns the OTLP transport p names: "grpc" (also for
// "") or "http/protobuf". Other values are an error.
func checkProtocol(p string) (string, error) {
	switch p {
	case "", "grpc":
		return "grpc", nil
	case "http/protobuf":
		return p, nil
	}
	return "", fmt.Errorf("OTLP protocol %q is not supported; use grpc or http/protobuf", p)
}

// TraceExport is where the config file asks for spans to be exported
// (its tracing section), for when the standard variables do not say.
type TraceExport struct {
	// Endpoint is the OTLP traces endpoint URL, used as it is (as
	// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is); empty: none.
	Endpoint string
	// Protocol is "grpc" or "http/protobuf"; empty: grpc.
	Protocol string
}

// ExportSettings returns where spans go: the endpoint URL to give the
// exporter ("" when the standard variables name one, which the exporter
// then reads itself, as it does the other standard variables) and the
// protocol, or enabled false when neither the variables nor file ask
// for export. A standard variable wins over the file's setting.
func ExportSettings(getenv func(string) string, file TraceExport) (endpoint, proto string, enabled bool, err error) {
	fromEnv := OTLPConfigured(getenv)
	if !fromEnv && file.Endpoint == "" {
		return "", "", false, nil
	}
	if !fromEnv {
		endpoint = file.Endpoint
	}
	if getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") == "" && getenv("OTEL_EXPORTER_OTLP_PROTOCOL") == "" {
		proto, err = checkProtocol(file.Protocol)
	} else {
		proto, err = OTLPProtocol(getenv)
	}
	if err != nil {
		return "", "", false, err
	}
	return endpoint, proto, true, nil
}

// NewTracing exports spans over OTLP (gRPC or HTTP, as OTLPProtocol says)
// when the standard environment variables are set, or else when file
// names an endpoint (see ExportSettings), and otherwise keeps a no-op
// tracer (spans still carry trace context across NATS headers). The
// service is named "junction" unless OTEL_SERVICE_NAME (or
// OTEL_RESOURCE_ATTRIBUTES) says otherwise. Export failures are logged to
// log, if given. ExportDisabled keeps the no-op tracer however the
// exporter is set.
func NewTracing(ctx context.Context, version string, file TraceExport, log *slog.Logger) (*Tracing, error) {
	if ExportDisabled(os.Getenv) {
		return &Tracing{Tracer: noop.NewTracerProvider().Tracer("junction")}, nil
	}
	endpoint, proto, enabled, err := ExportSettings(os.Getenv, file)
	if err != nil {
		return nil, err
	}
	if !enabled {
		return &Tracing{Tracer: noop.NewTracerProvider().Tracer("junction")}, nil
	}
	var exp sdktrace.SpanExporter
	if proto == "grpc" {
		var opts []otlptracegrpc.Option
		if endpoint != "" {
			opts = append(opts, otlptracegrpc.WithEndpointURL(endpoint))
		}
		exp, err = otlptracegrpc.New(ctx, opts...)
	} else {
		var opts []otlptracehttp.Option
		if endpoint != "" {
			opts = append(opts, otlptracehttp.WithEndpointURL(endpoint))
		}
		exp, err = otlptracehttp.New(ctx, opts...)
	}
	if err != nil {
		return nil, fmt.Errorf("creating OTLP exporter: %w", err)
	}
	res, err := newResource(ctx, version)
	if err != nil {
		return nil, err
	}
	if log != nil {
		// The SDK reports export failures to this process-wide handler;
		// otherwise they go to stderr as plain text. Its errors name the
		// collector, never span contents. A collector that is down fails
		// every batch, several a second under load: rate limited, as
		// RateLimited does floods, the count of lines held back given.
		log := Floodable(log)
		otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
			log.Warn("trace export failed", "protocol", proto, "error", err.Error())
		}))
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	return &Tracing{Tracer: tp.Tracer("junction"), provider: tp}, nil
}

// newResource describes the process: service name "junction", the
// version and the host's name (a pod's name under Kubernetes, so the
// spans of several processes on one store say which made them),
// overridden by OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES.
func newResource(ctx context.Context, version string) (*resource.Resource, error) {
	res, err := resource.New(ctx,
		resource.WithAttributes(semconv.ServiceName("junction"), semconv.ServiceVersion(version)),
		resource.WithHost(),
		resource.WithFromEnv())
	if err != nil {
		return nil, fmt.Errorf("describing the trace resource: %w", err)
	}
	return res, nil
}

// Shutdown flushes and stops export.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t.provider == nil {
		return nil
	}
	return t.provider.Shutdown(ctx)
}
