package router

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestPacer: a pacer sleeps, after each paceEvery messages, idle times as
// long as it worked since its last sleep; a nil pacer never sleeps; a
// sleep ended by the context ends the read with its error.
func TestPacer(t *testing.T) {
	type step struct {
		work time.Duration // time passing before the step
		n    int
	}
	for _, tt := range []struct {
		name   string
		idle   float64
		steps  []step
		sleeps []time.Duration
	}{
		{"under paceEvery", 3, []step{{0, 1}, {time.Second, paceEvery - 2}}, nil},
		{"one message at a time", 3, []step{{0, 1}, {10 * time.Millisecond, paceEvery - 1}, {5 * time.Millisecond, paceEvery}},
			[]time.Duration{30 * time.Millisecond, 15 * time.Millisecond}},
		{"a batch past paceEvery", 1, []step{{0, 2 * paceEvery}}, []time.Duration{0}},
		{"batches", 0.5, []step{{0, 300}, {40 * time.Millisecond, 300}, {20 * time.Millisecond, 300}, {20 * time.Millisecond, 300}},
			[]time.Duration{20 * time.Millisecond, 20 * time.Millisecond}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			now := time.Date(2026, 12, 8, 10, 0, 0, 0, time.UTC)
			var slept []time.Duration
			p := &pacer{idle: tt.idle, now: func() time.Time { return now },
				sleep: func(_ context.Context, d time.Duration) error { slept = append(slept, d); now = now.Add(d); return nil }}
			for _, s := range tt.steps {
				now = now.Add(s.work)
				if err := p.step(t.Context(), s.n); err != nil {
					t.Fatal(err)
				}
			}
			if diff := cmp.Diff(tt.sleeps, slept); diff != "" {
				t.Errorf("sleeps (-want +got):\n%s", diff)
			}
		})
	}
	t.Run("nil", func(t *testing.T) {
		var p *pacer
		if err := p.step(t.Context(), 10*paceEvery); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		p := newPacer(3)
		if err := p.step(ctx, paceEvery); !errors.Is(err, context.Canceled) {
			t.Errorf("step = %v, want context.Canceled", err)
		}
	})
}
