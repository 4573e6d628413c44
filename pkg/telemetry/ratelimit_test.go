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
	var timers []func()
	h.st.after = func(_ time.Duration, f func()) { timers = append(timers, f) }
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
	// Each run of drops armed one flush; the lines written since took
	// their counts, so the flushes write nothing.
	if len(timers) != 2 {
		t.Fatalf("%d flushes armed, want one for each run of drops (2)", len(timers))
	}
	for _, f := range timers {
		f()
	}
	if got = lines(); len(got) != 0 {
		t.Fatalf("flushes after the counts were written wrote %v", got)
	}
}

// TestRateLimitedFlushesWhenFloodStops: when a flood stops, its last
// dropped line is written once the rate allows, saying how many others
// were dropped, without waiting for another line that may never come.
func TestRateLimitedFlushesWhenFloodStops(t *testing.T) {
	var out bytes.Buffer
	h := RateLimited(slog.NewJSONHandler(&out, nil)).(*rateLimited)
	now := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	h.st.now = func() time.Time { return now }
	type timer struct {
		d time.Duration
		f func()
	}
	var timers []timer
	h.st.after = func(d time.Duration, f func()) { timers = append(timers, timer{d, f}) }
	log := Floodable(slog.New(h)).With("input", "pas")
	for i := range LogBurst + 5 {
		log.Warn("message rejected", "conn", i)
	}
	if n := strings.Count(out.String(), "\n"); n != LogBurst {
		t.Fatalf("wrote %d lines during the flood, want %d", n, LogBurst)
	}
	out.Reset()
	if len(timers) != 1 || timers[0].d != time.Second {
		t.Fatalf("flushes armed %+v, want one, a second away", timers)
	}
	// Fired early (a clock that ran fast), it waits again.
	now = now.Add(500 * time.Millisecond)
	timers[0].f()
	if out.Len() != 0 || len(timers) != 2 || timers[1].d != 500*time.Millisecond {
		t.Fatalf("flush before the rate allows: wrote %q, armed %+v; want nothing, and another half a second away", out.String(), timers)
	}
	now = now.Add(500 * time.Millisecond)
	timers[1].f()
	var m map[string]any
	if err := json.Unmarshal(out.Bytes(), &m); err != nil {
		t.Fatalf("flushed %q: %v", out.String(), err)
	}
	if m["msg"] != "message rejected" || m["conn"] != float64(LogBurst+4) || m["suppressed"] != float64(4) || m["input"] != "pas" {
		t.Fatalf("flushed %v, want the last line dropped (conn %d) saying 4 others were suppressed", m, LogBurst+4)
	}
	out.Reset()
	timers[1].f()
	if out.Len() != 0 {
		t.Fatalf("a second flush wrote %q", out.String())
	}
}

// TestRateLimitedForgetsQuietest: many distinct keys do not give a
// message being limited a fresh burst.
func TestRateLimitedForgetsQuietest(t *testing.T) {
	var out bytes.Buffer
	h := RateLimited(slog.NewTextHandler(&out, nil)).(*rateLimited)
	now := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	h.st.now = func() time.Time { now = now.Add(time.Microsecond); return now }
	h.st.after = func(time.Duration, func()) {} // flushes are not this test's
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
