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
	root := slog.New(h)
	pas := Floodable(root.With("component", "pas"))
	lab := Floodable(root).With("adapter", "pathology")
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
			if _, ok := m[floodKey]; ok {
				t.Fatalf("the marking attribute was written: %s", l)
			}
			got = append(got, m)
		}
		out.Reset()
		return got
	}
	// A flood of one refusal on one input: the burst is written, the
	// rest dropped.
	for range 100 {
		pas.Warn("message rejected", "reason", "hl7.invalid", "conn", 7)
	}
	// The same refusal on another input, other messages, errors, debug
	// lines and loggers not marked floodable are not held back by it.
	lab.Warn("message rejected", "reason", "hl7.invalid")
	pas.Warn("input refused")
	pas.Error("store unavailable")
	pas.Debug("mllp connection opened")
	for range 30 {
		root.Warn("dead-lettered", "message_id", "01TEST")
	}
	got := lines()
	if want := LogBurst + 4 + 30; len(got) != want {
		t.Fatalf("wrote %d lines, want %d", len(got), want)
	}
	for _, m := range got {
		if _, ok := m["suppressed"]; ok {
			t.Fatalf("a line within the burst says lines were suppressed: %v", m)
		}
	}
	// A second later one more is written, saying how many were dropped.
	now = now.Add(time.Second)
	pas.Warn("message rejected", "reason", "hl7.invalid")
	pas.Warn("message rejected", "reason", "hl7.invalid")
	got = lines()
	if len(got) != 1 || got[0]["suppressed"] != float64(100-LogBurst) || got[0]["component"] != "pas" {
		t.Fatalf("after a second: %v, want one line with suppressed %d", got, 100-LogBurst)
	}
	// Quiet for long enough, the burst is back.
	now = now.Add(time.Minute)
	for range LogBurst {
		pas.Info("message rejected")
	}
	if got = lines(); len(got) != LogBurst || got[0]["suppressed"] != float64(1) {
		t.Fatalf("after a quiet minute: %d lines, first %v; want %d, the first saying 1 suppressed", len(got), got[0], LogBurst)
	}
	if !h.Enabled(context.Background(), slog.LevelDebug) {
		t.Error("Enabled does not follow the wrapped handler")
	}
}

// TestRateLimitedForgetsQuietest: many distinct keys do not give a
// message being limited a fresh burst.
func TestRateLimitedForgetsQuietest(t *testing.T) {
	var out bytes.Buffer
	h := RateLimited(slog.NewTextHandler(&out, nil)).(*rateLimited)
	now := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	h.st.now = func() time.Time { now = now.Add(time.Microsecond); return now }
	log := Floodable(slog.New(h))
	for i := range maxLimitedKeys * 2 {
		log.Warn("refused", "input", i)
		for range LogBurst + 1 {
			log.Warn("flood")
		}
	}
	if n := strings.Count(out.String(), "msg=flood"); n != LogBurst {
		t.Fatalf("the flooding message was written %d times, want %d", n, LogBurst)
	}
}
