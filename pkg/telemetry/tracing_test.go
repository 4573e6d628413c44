package telemetry_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"

	"github.com/junction-fhir/junction/pkg/telemetry"
)

func TestOTLPConfigured(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		want bool
	}{
		{"nothing set", nil, false},
		{"endpoint", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, true},
		{"traces endpoint", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4317"}, true},
		{"both", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4317", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://b:4317"}, true},
		{"empty values", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": ""}, false},
		{"metrics endpoint only", map[string]string{"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://collector:4317"}, false},
		{"other otel settings only", map[string]string{"OTEL_SERVICE_NAME": "junction", "OTEL_EXPORTER_OTLP_HEADERS": "a=b"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			getenv := func(k string) string { return tc.env[k] }
			if got := telemetry.OTLPConfigured(getenv); got != tc.want {
				t.Errorf("OTLPConfigured = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestExportDisabled(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		want bool
	}{
		{"nothing set", nil, false},
		{"sdk disabled", map[string]string{"OTEL_SDK_DISABLED": "true"}, true},
		{"sdk disabled in capitals", map[string]string{"OTEL_SDK_DISABLED": "TRUE"}, true},
		{"sdk enabled", map[string]string{"OTEL_SDK_DISABLED": "false"}, false},
		{"only true is true", map[string]string{"OTEL_SDK_DISABLED": "1"}, false},
		{"exporter none", map[string]string{"OTEL_TRACES_EXPORTER": "none"}, true},
		{"exporter otlp", map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := telemetry.ExportDisabled(func(k string) string { return tc.env[k] }); got != tc.want {
				t.Errorf("ExportDisabled = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestNewTracingDisabled: OTEL_SDK_DISABLED or OTEL_TRACES_EXPORTER=none
// exports nothing even with an endpoint set.
func TestNewTracingDisabled(t *testing.T) {
	for _, tc := range []struct{ name, key, value string }{
		{"sdk disabled", "OTEL_SDK_DISABLED", "true"},
		{"exporter none", "OTEL_TRACES_EXPORTER", "none"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clearOTLP(t)
			var mu sync.Mutex
			posts := 0
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				posts++
				mu.Unlock()
				w.WriteHeader(http.StatusOK)
			}))
			defer srv.Close()
			t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", srv.URL)
			t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
			t.Setenv(tc.key, tc.value)
			tr, err := telemetry.NewTracing(t.Context(), "test", telemetry.TraceExport{}, nil)
			if err != nil {
				t.Fatal(err)
			}
			_, span := tr.Tracer.Start(t.Context(), "hop")
			if span.IsRecording() {
				t.Error("span is recording with the SDK disabled")
			}
			span.End()
			if err := tr.Shutdown(t.Context()); err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
			mu.Lock()
			defer mu.Unlock()
			if posts != 0 {
				t.Errorf("the collector received %d exports", posts)
			}
		})
	}
}

// TestExportFailuresRateLimited: a collector that is down fails every
// export, several a second under load; the warnings are rate limited
// (LogBurst at once), not one line each.
func TestExportFailuresRateLimited(t *testing.T) {
	clearOTLP(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+unusedAddr(t))
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
	var buf bytes.Buffer
	log := slog.New(telemetry.RateLimited(slog.NewJSONHandler(&buf, nil)))
	defer otel.SetErrorHandler(otel.ErrorHandlerFunc(func(error) {}))
	tr, err := telemetry.NewTracing(t.Context(), "test", telemetry.TraceExport{}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		defer cancel()
		_ = tr.Shutdown(ctx)
	}()
	for range 200 {
		otel.Handle(errors.New("traces export: connection refused"))
	}
	lines := bytes.Count(buf.Bytes(), []byte("trace export failed"))
	if lines == 0 || lines > telemetry.LogBurst+1 {
		t.Errorf("%d warnings for 200 failed exports, want 1 to %d", lines, telemetry.LogBurst+1)
	}
}

// clearOTLP unsets the variables that turn on export for this test.
func clearOTLP(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "")
	t.Setenv("OTEL_SDK_DISABLED", "")
	t.Setenv("OTEL_TRACES_EXPORTER", "")
}

func TestOTLPProtocol(t *testing.T) {
	for _, tc := range []struct {
		name    string
		env     map[string]string
		want    string
		wantErr bool
	}{
		{"unset is gRPC", nil, "grpc", false},
		{"grpc", map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "grpc", false},
		{"http", map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, "http/protobuf", false},
		{"traces setting wins", map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"}, "http/protobuf", false},
		{"json is not supported", map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := telemetry.OTLPProtocol(func(k string) string { return tc.env[k] })
			if got != tc.want || (err != nil) != tc.wantErr {
				t.Errorf("OTLPProtocol = %q, %v; want %q, error %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

// TestNewTracingHTTP checks that with http/protobuf spans reach an
// OTLP/HTTP collector, under the service name OTEL_SERVICE_NAME gives,
// whether the standard variables or the config file's tracing section
// name the collector.
func TestNewTracingHTTP(t *testing.T) {
	for _, from := range []string{"variables", "file"} {
		t.Run(from, func(t *testing.T) {
			clearOTLP(t)
			var mu sync.Mutex
			var bodies [][]byte
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				if r.URL.Path == "/v1/traces" && r.Header.Get("Content-Type") == "application/x-protobuf" {
					mu.Lock()
					bodies = append(bodies, b)
					mu.Unlock()
				}
				w.WriteHeader(http.StatusOK)
			}))
			defer srv.Close()
			var file telemetry.TraceExport
			if from == "variables" {
				t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", srv.URL)
				t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
			} else {
				file = telemetry.TraceExport{Endpoint: srv.URL + "/v1/traces", Protocol: "http/protobuf"}
			}
			t.Setenv("OTEL_SERVICE_NAME", "junction-trust-a")
			tr, err := telemetry.NewTracing(t.Context(), "test", file, nil)
			if err != nil {
				t.Fatal(err)
			}
			_, span := tr.Tracer.Start(t.Context(), "mllp.receive")
			span.End()
			if err := tr.Shutdown(t.Context()); err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(bodies) == 0 {
				t.Fatal("the collector received no traces")
			}
			all := bytes.Join(bodies, nil)
			host, err := os.Hostname()
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{"mllp.receive", "junction-trust-a", "host.name", host} {
				if !bytes.Contains(all, []byte(want)) {
					t.Errorf("exported traces do not hold %q", want)
				}
			}
		})
	}
}

func TestNewTracingNoop(t *testing.T) {
	clearOTLP(t)
	tr, err := telemetry.NewTracing(t.Context(), "test", telemetry.TraceExport{}, nil)
	if err != nil {
		t.Fatalf("NewTracing: %v", err)
	}
	if tr.Tracer == nil {
		t.Fatal("Tracer is nil")
	}
	_, span := tr.Tracer.Start(t.Context(), "hop")
	if span.IsRecording() {
		t.Error("no-op span is recording")
	}
	span.End()

	// A trace context that arrived (from NATS headers) is carried on.
	parent := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36},
		SpanID:     trace.SpanID{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7},
		TraceFlags: trace.FlagsSampled,
		Remote:     true,
	})
	ctx, child := tr.Tracer.Start(trace.ContextWithRemoteSpanContext(t.Context(), parent), "hop")
	if got := trace.SpanContextFromContext(ctx).TraceID(); got != parent.TraceID() {
		t.Errorf("child trace id %s, want the parent's %s", got, parent.TraceID())
	}
	child.End()

	if err := tr.Shutdown(t.Context()); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

// unusedAddr returns a loopback address nothing listens on.
func unusedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

func TestNewTracingOTLP(t *testing.T) {
	for _, variable := range []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"} {
		t.Run(variable, func(t *testing.T) {
			clearOTLP(t)
			t.Setenv(variable, "http://"+unusedAddr(t))
			tr, err := telemetry.NewTracing(t.Context(), "test", telemetry.TraceExport{}, nil)
			if err != nil {
				t.Fatalf("NewTracing with nothing listening: %v (the exporter should connect lazily)", err)
			}
			ctx, span := tr.Tracer.Start(t.Context(), "hop")
			if !span.IsRecording() {
				t.Error("span is not recording with export configured")
			}
			sc := trace.SpanContextFromContext(ctx)
			if !sc.IsValid() || !sc.IsSampled() {
				t.Errorf("span context %+v: want a valid, sampled one", sc)
			}
			_, child := tr.Tracer.Start(ctx, "child")
			if got := child.SpanContext().TraceID(); got != sc.TraceID() {
				t.Errorf("child trace id %s, want %s", got, sc.TraceID())
			}
			child.End()
			span.End()

			// Nothing listens, so flushing the span may fail; Shutdown must
			// still return once its context ends.
			sctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
			defer cancel()
			err = tr.Shutdown(sctx)
			t.Logf("Shutdown with no collector: %v", err)
		})
	}
}

// TestExportSettings: the config file's tracing section exports spans
// when no standard variable names an endpoint; a variable wins over it,
// the endpoint and the protocol each.
func TestExportSettings(t *testing.T) {
	file := telemetry.TraceExport{Endpoint: "http://collector:4318/v1/traces", Protocol: "http/protobuf"}
	tests := []struct {
		name         string
		env          map[string]string
		file         telemetry.TraceExport
		wantEndpoint string
		wantProto    string
		wantEnabled  bool
		wantErr      bool
	}{
		{"nothing", nil, telemetry.TraceExport{Protocol: "grpc"}, "", "", false, false},
		{"file", nil, file, "http://collector:4318/v1/traces", "http/protobuf", true, false},
		{"file, default protocol", nil, telemetry.TraceExport{Endpoint: "http://collector:4317"}, "http://collector:4317", "grpc", true, false},
		{"variables alone", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://env:4317"}, telemetry.TraceExport{}, "", "grpc", true, false},
		{"endpoint variable wins", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://env:4318/v1/traces"}, file, "", "http/protobuf", true, false},
		{"protocol variable wins", map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, file, "http://collector:4318/v1/traces", "grpc", true, false},
		{"bad file protocol", nil, telemetry.TraceExport{Endpoint: "http://collector:4317", Protocol: "http/json"}, "", "", false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			endpoint, proto, enabled, err := telemetry.ExportSettings(func(k string) string { return tc.env[k] }, tc.file)
			if endpoint != tc.wantEndpoint || proto != tc.wantProto || enabled != tc.wantEnabled || (err != nil) != tc.wantErr {
				t.Errorf("ExportSettings = %q, %q, %v, %v; want %q, %q, %v, error %v", endpoint, proto, enabled, err, tc.wantEndpoint, tc.wantProto, tc.wantEnabled, tc.wantErr)
			}
		})
	}
}
