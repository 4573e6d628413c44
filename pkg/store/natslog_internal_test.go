package store

import (
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/junction-fhir/junction/pkg/logtest"
)

// TestNATSLogWithholdsProtocol: a client's protocol error, as the server
// logs it, quotes the bytes where parsing failed, which can be a
// message's payload; the line logged keeps the error and withholds them.
func TestNATSLogWithholdsProtocol(t *testing.T) {
	var logs logtest.Buffer
	l := newNATSLog(slog.New(slog.NewJSONHandler(&logs, nil)))
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

// TestNATSLogHoldsBackRepeats: a warning or error the server repeats (a
// write failing on a full disk, once per message) is logged once per
// natsLogEvery for its format and level, the next line counting those
// held back; other formats and levels are not held back by it.
func TestNATSLogHoldsBackRepeats(t *testing.T) {
	var logs logtest.Buffer
	l := newNATSLog(slog.New(slog.NewJSONHandler(&logs, nil)))
	now := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	l.now = func() time.Time { return now }
	const full = "JetStream resource limits exceeded for server: %s"
	for range 1000 {
		l.Errorf(full, "disk")
	}
	l.Warnf(full, "disk")
	l.Errorf("Error writing msg block: %v", "no space left on device")
	now = now.Add(natsLogEvery)
	l.Errorf(full, "disk")

	type entry struct {
		Level    string `json:"level"`
		Said     string `json:"said"`
		Repeated int    `json:"repeated"`
	}
	var lines []entry
	for line := range strings.SplitSeq(strings.TrimSpace(logs.String()), "\n") {
		var e entry
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		lines = append(lines, e)
	}
	want := []struct {
		level    string
		said     string
		repeated int
	}{
		{"ERROR", "JetStream resource limits exceeded for server: disk", 0},
		{"WARN", "JetStream resource limits exceeded for server: disk", 0},
		{"ERROR", "Error writing msg block: no space left on device", 0},
		{"ERROR", "JetStream resource limits exceeded for server: disk", 999},
	}
	if len(lines) != len(want) {
		t.Fatalf("%d lines logged, want %d:\n%s", len(lines), len(want), logs.String())
	}
	for i, w := range want {
		if g := lines[i]; g.Level != w.level || g.Said != w.said || g.Repeated != w.repeated {
			t.Errorf("line %d = %+v, want %+v", i, g, w)
		}
	}
}
