package adapter

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/telemetry"
)

// quarantineHost is a Host whose Quarantine keeps what it was given.
type quarantineHost struct {
	kept     []byte
	received int
	err      error
}

func (h *quarantineHost) Ingest(context.Context, *envelope.Envelope) (IngestResult, error) {
	return IngestResult{}, errors.New("not used")
}

func (h *quarantineHost) Quarantine(_ context.Context, _ string, raw []byte, received int, _ string) (string, error) {
	if h.err != nil {
		return "", h.err
	}
	h.kept, h.received = append([]byte(nil), raw...), received
	return "01QUARANTINEID", nil
}

func (h *quarantineHost) Partition(string) int { return 0 }
func (h *quarantineHost) NewID() string        { return "id" }

func TestQuarantineNamesTheEntryInTheLog(t *testing.T) {
	raw := append([]byte("MSH|^~\\&|PAS|RXA|"), bytes.Repeat([]byte("9990000018"), MaxQuarantineBytes/10+5)...)
	tests := []struct {
		name    string
		err     error
		wantID  string
		wantMsg string
		count   float64
	}{
		{"kept", nil, "01QUARANTINEID", "input quarantined", 1},
		{"store refused", errors.New("store unavailable"), "", "quarantine failed", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			log := slog.New(slog.NewJSONHandler(&buf, nil))
			m := telemetry.NewMetrics(prometheus.NewRegistry())
			h := &quarantineHost{err: tt.err}
			id := Quarantine(context.Background(), h, log, m, "pas", raw, "hl7_unparseable")
			if id != tt.wantID {
				t.Errorf("id = %q, want %q", id, tt.wantID)
			}
			var line map[string]any
			if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
				t.Fatalf("log %q: %v", buf.String(), err)
			}
			if line["msg"] != tt.wantMsg {
				t.Errorf("log msg = %v, want %q", line["msg"], tt.wantMsg)
			}
			if tt.wantID != "" {
				if line["quarantine_id"] != tt.wantID {
					t.Errorf("log quarantine_id = %v, want %q", line["quarantine_id"], tt.wantID)
				}
				if len(h.kept) != MaxQuarantineBytes || h.received != len(raw) {
					t.Errorf("kept %d of %d bytes, want %d of %d", len(h.kept), h.received, MaxQuarantineBytes, len(raw))
				}
			}
			if strings.Contains(buf.String(), "9990000018") || strings.Contains(buf.String(), "RXA") {
				t.Errorf("log holds the input: %s", buf.String())
			}
			if got := testutil.ToFloat64(m.Quarantined.WithLabelValues("pas")); got != tt.count {
				t.Errorf("quarantined count = %v, want %v", got, tt.count)
			}
		})
	}
}
