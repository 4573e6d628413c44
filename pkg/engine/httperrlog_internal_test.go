package engine

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/junction-fhir/junction/pkg/telemetry"
)

// TestHTTPErrorWriter: failed TLS handshakes, each from another port,
// become one rate-limited message without the port; other server errors
// are written as they come.
func TestHTTPErrorWriter(t *testing.T) {
	var out bytes.Buffer
	root := slog.New(telemetry.RateLimited(slog.NewTextHandler(&out, nil)))
	w := httpErrorWriter{log: root, flood: telemetry.Floodable(root.With("component", "http"))}
	for i := range 100 {
		fmt.Fprintf(w, "http: TLS handshake error from 10.1.2.3:%d: EOF\n", 40000+i)
	}
	fmt.Fprintf(w, "http: Accept error: too many open files; retrying in 5ms\n")
	got := out.String()
	if n := strings.Count(got, `msg="http tls handshake failed"`); n != telemetry.LogBurst {
		t.Errorf("handshake failures written %d times, want %d:\n%s", n, telemetry.LogBurst, got)
	}
	if strings.Contains(got, "10.1.2.3:40") || !strings.Contains(got, "remote_ip=10.1.2.3") || !strings.Contains(got, "error=EOF") {
		t.Errorf("handshake line does not name the address without its port, and the error:\n%s", got)
	}
	if !strings.Contains(got, `msg="http: Accept error: too many open files; retrying in 5ms"`) {
		t.Errorf("another server error was not written as it came:\n%s", got)
	}
}
