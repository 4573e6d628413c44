package router

import (
	"testing"
	"time"
)

func TestLogLimiter(t *testing.T) {
	l := newLogLimiter(10 * time.Second)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	steps := []struct {
		key  string
		at   time.Duration
		ok   bool
		held int
	}{
		{"ehr", 0, true, 0},
		{"ehr", time.Second, false, 0},
		{"ris", time.Second, true, 0}, // keys are apart
		{"ehr", 2 * time.Second, false, 0},
		{"ehr", 10 * time.Second, true, 2},
		{"ehr", 21 * time.Second, true, 0},
	}
	for i, s := range steps {
		ok, held := l.allow(s.key, t0.Add(s.at))
		if ok != s.ok || held != s.held {
			t.Errorf("step %d (%s at %v): allow = %v, %d; want %v, %d", i, s.key, s.at, ok, held, s.ok, s.held)
		}
	}
}
