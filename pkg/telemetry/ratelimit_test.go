package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestRateLimited(t *testing.T) {
	var out bytes.Buffer
	h := RateLimited(slog.NewJSONHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug})).(*rateLimited)
	now := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	h.st.now = func() time.Time { return now }
	log := slog.New(h).With("adapter", "pas")
	lines := func() []map[string]any {
		t.Helper()
		var got []map[string]any
		for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
			if l == "" {
				continue
			}
			var m map[string]any
			if err := json.Unmarshal([]byte(l), &m); err != nil {
				t.Fatal(err)
			}
			got = append(got, m)
		}
		out.Reset()
		return got
	}
	// A flood of one message: the burst is written, the rest dropped.
	for range 100 {
		log.Warn("message rejected", "reason", "hl7.invalid")
	}
	// Another message, errors and debug lines are not held back by it.
	log.Warn("input refused")
	log.Error("store unavailable")
	log.Debug("mllp connection opened")
	got := lines()
	if len(got) != LogBurst+3 {
		t.Fatalf("wrote %d lines, want %d", len(got), LogBurst+3)
	}
	for _, m := range got {
		if _, ok := m["suppressed"]; ok {
			t.Fatalf("a line within the burst says lines were suppressed: %v", m)
		}
	}
	// A second later one more is written, saying how many were dropped.
	now = now.Add(time.Second)
	log.Warn("message rejected", "reason", "hl7.invalid")
	log.Warn("message rejected", "reason", "hl7.invalid")
	got = lines()
	if len(got) != 1 || got[0]["suppressed"] != float64(100-LogBurst) || got[0]["adapter"] != "pas" {
		t.Fatalf("after a second: %v, want one line with suppressed %d", got, 100-LogBurst)
	}
	// Quiet for long enough, the burst is back.
	now = now.Add(time.Minute)
	for range LogBurst {
		log.Info("message rejected")
	}
	if got = lines(); len(got) != LogBurst || got[0]["suppressed"] != float64(1) {
		t.Fatalf("after a quiet minute: %d lines, first %v; want %d, the first saying 1 suppressed", len(got), got[0], LogBurst)
	}
	if !h.Enabled(context.Background(), slog.LevelDebug) {
		t.Error("Enabled does not follow the wrapped handler")
	}
}
