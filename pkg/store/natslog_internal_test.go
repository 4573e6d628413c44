package store

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/junction-fhir/junction/pkg/logtest"
)

// TestNATSLogWithholdsProtocol: a client's protocol error, as the server
// logs it, quotes the bytes where parsing failed, which can be a
// message's payload; the line logged keeps the error and withholds them.
func TestNATSLogWithholdsProtocol(t *testing.T) {
	var logs logtest.Buffer
	l := natsLog{log: slog.New(slog.NewJSONHandler(&logs, nil))}
	const payload = "PID|1||9990000018^^^NHS^NH"
	tests := []struct {
		name string
		log  func(string, ...any)
	}{
		{"error", l.Errorf},
		{"warning", l.Warnf},
		{"fatal", l.Fatalf},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.log("%s parser ERROR, state=%d, i=%d: proto='%s...'", "Client", 31, 12, payload)
		})
	}
	got := logs.String()
	if strings.Contains(got, "9990000018") {
		t.Errorf("logged the protocol snippet: %s", got)
	}
	if strings.Count(got, "parser ERROR") != len(tests) {
		t.Errorf("logged %q, want each line's error kept", got)
	}
}
