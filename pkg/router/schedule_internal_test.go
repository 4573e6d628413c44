package router

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/junction-fhir/junction/pkg/audit"
	"github.com/junction-fhir/junction/pkg/jstest"
	"github.com/junction-fhir/junction/pkg/telemetry"
)

// schedWindow is a window a scheduler asked reconciled.
type schedWindow struct{ Since, Until time.Time }

// schedClock is a settable clock.
type schedClock struct{ now time.Time }

func (c *schedClock) Now() time.Time { return c.now }

// newSched returns a scheduler on js named owner, on clock, every 5m with
// a lag of 15m, whose reconcile is rec, and its metrics.
func newSched(js jetstream.JetStream, owner string, clock *schedClock, rec ReconcileFunc) (*ReconcileScheduler, *telemetry.Metrics) {
	m := telemetry.NewMetrics(prometheus.NewRegistry())
	return NewReconcileScheduler(ScheduleOptions{
		Interval: 5 * time.Minute, Lag: 15 * time.Minute, Routes: map[string][]string{"pas": {"adt"}},
		JS: js, Bulk: func() (jetstream.JetStream, func(), error) { return js, func() {}, nil },
		Owner: owner, Metrics: m, Now: clock.Now, Reconcile: rec,
	}), m
}

// recording is a reconcile that records the windows asked of it and
// finds in each one message unfinished.
func recording(windows *[]schedWindow) ReconcileFunc {
	return func(_ context.Context, _ jetstream.JetStream, _ map[string][]string, since, until time.Time) (audit.Reconciliation, error) {
		*windows = append(*windows, schedWindow{since, until})
		return audit.Reconciliation{Accepted: 1, Pending: []audit.Pending{{ID: "m", Waiting: []string{"route adt"}}}}, nil
	}
}

func runs(m *telemetry.Metrics, outcome string) float64 {
	return testutil.ToFloat64(m.ReconcileRuns.WithLabelValues(outcome))
}

// TestReconcileSchedulerWindows: the scheduler's windows are laid end to
// end, across runs and a restart (a new scheduler, as a new process, on
// the same store), with no gap and no overlap: the first one interval
// long ending lag ago, none while nothing is due, and after a long
// absence at most an hour at a time until caught up.
func TestReconcileSchedulerWindows(t *testing.T) {
	js := jstest.Start(t, "sched-windows")
	t0 := time.Date(2026, 12, 8, 10, 0, 0, 0, time.UTC)
	clock := &schedClock{now: t0}
	var got []schedWindow
	first, m1 := newSched(js, "p1", clock, recording(&got))
	steps := []struct {
		name  string
		s     *ReconcileScheduler
		at    time.Time
		wants []schedWindow // the windows asked so far
	}{
		{"first run", first, t0, []schedWindow{{t0.Add(-20 * time.Minute), t0.Add(-15 * time.Minute)}}},
		{"nothing due at the same time", first, t0, nil},
		{"next interval", first, t0.Add(5 * time.Minute), []schedWindow{{t0.Add(-15 * time.Minute), t0.Add(-10 * time.Minute)}}},
	}
	var want []schedWindow
	for _, st := range steps {
		clock.now = st.at
		if err := st.s.RunOnce(t.Context()); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		want = append(want, st.wants...)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("%s: windows (-want +got):\n%s", st.name, diff)
		}
	}
	// Restarted: a new process remembers nothing but the store.
	restarted, m2 := newSched(js, "p1-again", clock, recording(&got))
	later := t0.Add(3*time.Hour + 5*time.Minute) // away for three hours
	for _, st := range []struct {
		name string
		at   time.Time
		want schedWindow
	}{
		{"after a restart", t0.Add(10 * time.Minute), schedWindow{t0.Add(-10 * time.Minute), t0.Add(-5 * time.Minute)}},
		{"back after three hours: an hour", later, schedWindow{t0.Add(-5 * time.Minute), t0.Add(55 * time.Minute)}},
		{"the next hour", later.Add(5 * time.Minute), schedWindow{t0.Add(55 * time.Minute), t0.Add(115 * time.Minute)}},
		{"the next", later.Add(10 * time.Minute), schedWindow{t0.Add(115 * time.Minute), t0.Add(175 * time.Minute)}},
		{"caught up", later.Add(15 * time.Minute), schedWindow{t0.Add(175 * time.Minute), later}},
	} {
		clock.now = st.at
		if err := restarted.RunOnce(t.Context()); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		want = append(want, st.want)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("%s: windows (-want +got):\n%s", st.name, diff)
		}
	}
	for i := 1; i < len(got); i++ {
		if !got[i].Since.Equal(got[i-1].Until) {
			t.Errorf("window %d starts at %s, the one before ended at %s", i, got[i].Since, got[i-1].Until)
		}
	}
	if r1, r2 := runs(m1, telemetry.ReconcileChecked), runs(m2, telemetry.ReconcileChecked); r1 != 2 || r2 != 5 {
		t.Errorf("checked runs %v and %v, want 2 and 5", r1, r2)
	}
	if u := testutil.ToFloat64(m2.ReconcileUnfinished); u != 5 {
		t.Errorf("unfinished_messages_total after a restart = %v, want 5 (one a window, its own)", u)
	}
}

// TestReconcileSchedulerOneProcessAWindow: of two processes sharing the
// store, one checks each window: the other, running while it checks,
// leaves the window to it; and when a claim lapses (the first took longer
// than its claim) the one that took the window over counts it, while the
// first's record is refused and counted nowhere, so a sum() of the
// counters counts each window once.
func TestReconcileSchedulerOneProcessAWindow(t *testing.T) {
	js := jstest.Start(t, "sched-two")
	t0 := time.Date(2026, 12, 8, 10, 0, 0, 0, time.UTC)
	clock := &schedClock{now: t0}
	var aWins, bWins []schedWindow
	var b *ReconcileScheduler
	var bErr error
	inner := func(advance time.Duration) ReconcileFunc {
		return func(ctx context.Context, js jetstream.JetStream, routes map[string][]string, since, until time.Time) (audit.Reconciliation, error) {
			clock.now = clock.now.Add(advance)
			bErr = b.RunOnce(ctx)
			return recording(&aWins)(ctx, js, routes, since, until)
		}
	}
	for _, tt := range []struct {
		name    string
		advance time.Duration
		aRuns   float64
		bRuns   float64
	}{
		{"while claimed", time.Minute, 1, 0},
		{"after the claim lapsed", reconcileClaim + time.Minute, 0, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			aWins, bWins = nil, nil
			clock.now = clock.now.Add(5 * time.Minute)
			a, ma := newSched(js, "a", clock, inner(tt.advance))
			var mb *telemetry.Metrics
			b, mb = newSched(js, "b", clock, recording(&bWins))
			if err := a.RunOnce(t.Context()); err != nil {
				t.Fatal(err)
			}
			if bErr != nil {
				t.Fatal(bErr)
			}
			if r := runs(ma, telemetry.ReconcileChecked); r != tt.aRuns {
				t.Errorf("a checked %v runs, want %v", r, tt.aRuns)
			}
			if r := runs(mb, telemetry.ReconcileChecked); r != tt.bRuns {
				t.Errorf("b checked %v runs, want %v", r, tt.bRuns)
			}
			if sum := testutil.ToFloat64(ma.ReconcileUnfinished) + testutil.ToFloat64(mb.ReconcileUnfinished); sum != 1 {
				t.Errorf("unfinished_messages_total summed over both = %v, want 1", sum)
			}
			if tt.bRuns == 0 && len(bWins) != 0 {
				t.Errorf("b reconciled %v while a held the window", bWins)
			}
			if tt.bRuns == 1 && (len(bWins) != 1 || len(aWins) != 1 || !bWins[0].Since.Equal(aWins[0].Since)) {
				t.Errorf("b reconciled %v, a %v: want b to take over from where a's window started", bWins, aWins)
			}
		})
	}
}

// TestReconcileSchedulerStoreAway: a run that cannot reconcile (the store
// away) is counted failed, not recorded, and the next run checks the
// same window; a run that cannot reach the checkpoint at all fails the
// same way, without a panic.
func TestReconcileSchedulerStoreAway(t *testing.T) {
	js, stop := jstest.StartIn(t, "sched-away", filepath.Join(t.TempDir(), "js"))
	t0 := time.Date(2026, 12, 8, 10, 0, 0, 0, time.UTC)
	clock := &schedClock{now: t0}
	var got []schedWindow
	fail := true
	s, m := newSched(js, "p", clock, func(ctx context.Context, js jetstream.JetStream, routes map[string][]string, since, until time.Time) (audit.Reconciliation, error) {
		if fail {
			return audit.Reconciliation{}, errors.New("store away")
		}
		return recording(&got)(ctx, js, routes, since, until)
	})
	if err := s.RunOnce(t.Context()); err == nil {
		t.Fatal("a run whose reconcile failed returned no error")
	}
	fail = false
	clock.now = t0.Add(5 * time.Minute)
	if err := s.RunOnce(t.Context()); err != nil {
		t.Fatal(err)
	}
	want := []schedWindow{{t0.Add(-20 * time.Minute), t0.Add(-10 * time.Minute)}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("windows after a failed run (-want +got):\n%s", diff)
	}
	stop()
	clock.now = t0.Add(10 * time.Minute)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := s.RunOnce(ctx); err == nil {
		t.Fatal("a run with the store stopped returned no error")
	}
	if f, c := runs(m, telemetry.ReconcileFailed), runs(m, telemetry.ReconcileChecked); f != 2 || c != 1 {
		t.Errorf("runs failed %v, checked %v; want 2 and 1", f, c)
	}
}

// TestReconcileSchedulerMetrics: a real reconcile of a window holding a
// message delivered, one queued for a destination that has not taken it
// (waiting) and one no route decided (unfinished), beside one received
// after the window, sets the gauges and counters to what it found.
func TestReconcileSchedulerMetrics(t *testing.T) {
	now := time.Now().UTC()
	start, end := now.Add(-time.Hour), now.Add(-time.Minute)
	js := windowStore(t, start, end)
	clock := &schedClock{now: end.Add(15 * time.Minute)}
	m := telemetry.NewMetrics(prometheus.NewRegistry())
	s := NewReconcileScheduler(ScheduleOptions{
		Interval: 59 * time.Minute, Lag: 15 * time.Minute, Routes: map[string][]string{"pas": {"adt"}},
		JS: js, Bulk: func() (jetstream.JetStream, func(), error) { return js, func() {}, nil },
		Owner: "p", Metrics: m, Now: clock.Now,
	})
	if err := s.RunOnce(t.Context()); err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{
		"window_end":                testutil.ToFloat64(m.ReconcileWindowEnd),
		"unfinished_messages_total": testutil.ToFloat64(m.ReconcileUnfinished),
		"runs_total{checked}":       runs(m, telemetry.ReconcileChecked),
		"runs_total{failed}":        runs(m, telemetry.ReconcileFailed),
	}
	for _, st := range telemetry.ReconcileStates {
		got["messages{"+st+"}"] = testutil.ToFloat64(m.ReconcileMessages.WithLabelValues(st))
	}
	want := map[string]float64{
		"window_end":                float64(end.UnixNano()) / 1e9,
		"unfinished_messages_total": 1,
		"runs_total{checked}":       1,
		"runs_total{failed}":        0,
		"messages{accepted}":        3,
		"messages{finished}":        1,
		"messages{waiting}":         1,
		"messages{unfinished}":      1,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("metrics (-want +got):\n%s", diff)
	}
	// Another process on the store reports the same window in its gauges,
	// without checking it again or counting it.
	m2 := telemetry.NewMetrics(prometheus.NewRegistry())
	other := NewReconcileScheduler(ScheduleOptions{
		Interval: 59 * time.Minute, Lag: 15 * time.Minute, JS: js, Owner: "q", Metrics: m2, Now: clock.Now,
		Bulk: func() (jetstream.JetStream, func(), error) { return nil, nil, errors.New("not to be read") },
	})
	if err := other.RunOnce(t.Context()); err != nil {
		t.Fatal(err)
	}
	if g, u := testutil.ToFloat64(m2.ReconcileMessages.WithLabelValues(telemetry.ReconcileUnfinished)), testutil.ToFloat64(m2.ReconcileUnfinished); g != 1 || u != 0 {
		t.Errorf("the other process: messages{unfinished} %v, unfinished_messages_total %v; want 1 and 0", g, u)
	}
}

// TestReconcileSchedulerStopsWithContext: a run under way ends when the
// engine's drain cancels its context, and Run returns, with no failed run
// counted and the window's claim given up for the next process.
func TestReconcileSchedulerStopsWithContext(t *testing.T) {
	js := jstest.Start(t, "sched-stop")
	started := make(chan struct{})
	m := telemetry.NewMetrics(prometheus.NewRegistry())
	s := NewReconcileScheduler(ScheduleOptions{
		Interval: time.Millisecond, Lag: time.Minute, JS: js, Owner: "p", Metrics: m,
		Bulk: func() (jetstream.JetStream, func(), error) { return js, func() {}, nil },
		Reconcile: func(ctx context.Context, _ jetstream.JetStream, _ map[string][]string, _, _ time.Time) (audit.Reconciliation, error) {
			close(started)
			<-ctx.Done()
			return audit.Reconciliation{}, ctx.Err()
		},
	})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	<-started
	cancel()
	<-done
	if f := runs(m, telemetry.ReconcileFailed); f != 0 {
		t.Errorf("runs failed = %v after a drain, want 0", f)
	}
	// The cancelled run gave its claim up: another process takes the
	// window at once rather than after the claim lapses.
	var got []schedWindow
	other := NewReconcileScheduler(ScheduleOptions{
		Interval: time.Millisecond, Lag: time.Minute, JS: js, Owner: "q", Metrics: telemetry.NewMetrics(prometheus.NewRegistry()),
		Bulk: func() (jetstream.JetStream, func(), error) { return js, func() {}, nil }, Reconcile: recording(&got),
	})
	if err := other.RunOnce(t.Context()); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 {
		t.Errorf("another process checked %d windows after the drain, want 1 (the claim given up)", len(got))
	}
}
