package router

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/junction-fhir/junction/pkg/audit"
	"github.com/junction-fhir/junction/pkg/bucket"
	"github.com/junction-fhir/junction/pkg/jserr"
	"github.com/junction-fhir/junction/pkg/telemetry"
)

// ReconcileBucket is the key-value bucket the scheduled reconcile keeps
// its checkpoint in: where the windows checked so far end, which process
// is checking the next, and what the last one held. Every process
// sharing the store shares it.
const ReconcileBucket = "junction_reconcile"

// reconcileKey is the checkpoint's key in ReconcileBucket.
const reconcileKey = "window"

// Bounds of one scheduled run.
const (
	// maxReconcileWindow is the longest window one run checks: after the
	// engine or the store was away for longer, the runs catch up a
	// window of this length at each interval, so that no run reads a
	// day of traffic at once.
	maxReconcileWindow = time.Hour
	// reconcileClaim is how long a process's claim on the next window
	// holds: a process that stopped while checking it leaves it to
	// another (or to itself, restarted) once the claim has lapsed.
	reconcileClaim = 10 * time.Minute
	// reconcileTimeout bounds one run's reconcile, within its claim.
	reconcileTimeout = reconcileClaim - time.Minute
	// releaseTimeout bounds giving a claim up after a failed run, which
	// may be the drain's cancelling it.
	releaseTimeout = 2 * time.Second
)

// WindowCounts is what one reconciled window held: the messages received
// in [Start, End) by state (see telemetry.ReconcileStates).
type WindowCounts struct {
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
	// Accepted messages were stored and acknowledged.
	Accepted int `json:"accepted"`
	// Finished ones reached a terminal outcome.
	Finished int `json:"finished"`
	// Waiting ones wait for deliveries only: queued for a destination
	// that has not taken them yet (retrying), watched by the delivery
	// queue gauges.
	Waiting int `json:"waiting"`
	// Unfinished ones wait for a route (or in the ingest log): no route
	// decided them by the window's lag, so they are stuck or lost.
	Unfinished int `json:"unfinished"`
}

// reconcileCheckpoint is the value of reconcileKey.
type reconcileCheckpoint struct {
	// End is where the windows checked so far end: the next starts
	// there.
	End time.Time `json:"end"`
	// Claim, while it holds, names the process checking the next window.
	Claim *reconcileClaimOf `json:"claim,omitempty"`
	// Last is what the last window checked held.
	Last *WindowCounts `json:"last,omitempty"`
}

// reconcileClaimOf is a process's claim on the next window.
type reconcileClaimOf struct {
	Owner string    `json:"owner"`
	Until time.Time `json:"until"`
}

// ReconcileFunc reconciles the messages received in [since, until):
// ReconcileWindow, or a stand-in in tests.
type ReconcileFunc func(ctx context.Context, js jetstream.JetStream, routes map[string][]string, since, until time.Time) (audit.Reconciliation, error)

// ScheduleOptions configure a ReconcileScheduler.
type ScheduleOptions struct {
	// Interval is how often a run is tried; Lag is how long after a
	// window ends it is checked, so that its messages have finished.
	Interval, Lag time.Duration
	// Routes maps each source to the routes that read it.
	Routes map[string][]string
	// JS holds the checkpoint bucket, opened with Buckets' policy.
	JS      jetstream.JetStream
	Buckets bucket.Policy
	// Bulk opens a connection for a run's reads of whole streams
	// (store.Store.Bulk), closed by done after the run, so the reads do
	// not queue behind the engine's own traffic.
	Bulk func() (js jetstream.JetStream, done func(), err error)
	// Owner names this process in its claims; it must differ between
	// processes (and between starts of one).
	Owner   string
	Metrics *telemetry.Metrics
	Log     *slog.Logger
	// Now is the clock (time.Now when nil); Reconcile the reconcile
	// (ReconcilePaced when nil).
	Now       func() time.Time
	Reconcile ReconcileFunc
}

// ReconcileScheduler checks, every interval, that each message received
// in the window since the last one it checked, up to Lag ago, reached an
// outcome, and exports what it found (telemetry.Metrics.Reconcile*).
//
// Windows are laid end to end from a checkpoint kept in ReconcileBucket,
// so that across runs, restarts and every process sharing the store each
// message is checked once: a process claims the next window with a
// compare-and-set write, checks it, and records its end and counts with
// another, at the claim's revision, counting them in its metrics only
// then. A process that finds the window claimed by another leaves it; one
// whose claim lapsed while it checked (another took the window over)
// finds its record refused and drops what it found, so the work may be
// done twice but is counted once. The first run on a store starts at one
// interval before the lag: messages received before the schedule was
// first on are not checked by it.
type ReconcileScheduler struct {
	o  ScheduleOptions
	kv jetstream.KeyValue
}

// NewReconcileScheduler returns a scheduler; Run runs it.
func NewReconcileScheduler(o ScheduleOptions) *ReconcileScheduler {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Reconcile == nil {
		o.Reconcile = ReconcilePaced
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	o.Log = o.Log.With("component", "reconcile")
	o.Metrics.ReconcileRuns.WithLabelValues(telemetry.ReconcileChecked).Add(0)
	o.Metrics.ReconcileRuns.WithLabelValues(telemetry.ReconcileFailed).Add(0)
	return &ReconcileScheduler{o: o}
}

// Run tries a run every interval until ctx is done. A run that fails is
// counted, logged and tried again at the next interval.
func (s *ReconcileScheduler) Run(ctx context.Context) {
	t := time.NewTicker(s.o.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := s.RunOnce(ctx); err != nil && ctx.Err() == nil {
			s.o.Log.Warn("scheduled reconcile failed; trying again at the next interval", "error", err.Error(), "interval", s.o.Interval.String())
		}
	}
}

// RunOnce checks the next window when one is due and no other process is
// checking it, and reports the last window checked in the gauges. It
// returns why it could not, having counted a failed run.
func (s *ReconcileScheduler) RunOnce(ctx context.Context) error {
	checked, err := s.runOnce(ctx)
	switch {
	case err != nil && ctx.Err() == nil:
		s.o.Metrics.ReconcileRuns.WithLabelValues(telemetry.ReconcileFailed).Inc()
	case checked:
		s.o.Metrics.ReconcileRuns.WithLabelValues(telemetry.ReconcileChecked).Inc()
	}
	return err
}

func (s *ReconcileScheduler) runOnce(ctx context.Context) (bool, error) {
	if s.kv == nil {
		kv, err := s.o.Buckets.Open(ctx, s.o.JS, jetstream.KeyValueConfig{Bucket: ReconcileBucket, Description: "Junction: the scheduled reconcile's checkpoint", History: 1})
		if err != nil {
			return false, fmt.Errorf("opening bucket %s: %w", ReconcileBucket, err)
		}
		s.kv = kv
	}
	now := s.o.Now()
	cp, rev, err := s.read(ctx)
	if err != nil {
		return false, err
	}
	if rev == 0 {
		cp.End = now.Add(-s.o.Lag - s.o.Interval)
	}
	s.show(cp)
	end := now.Add(-s.o.Lag)
	if !end.After(cp.End) {
		return false, nil
	}
	end = minTime(end, cp.End.Add(maxReconcileWindow))
	if c := cp.Claim; c != nil && c.Owner != s.o.Owner && now.Before(c.Until) {
		return false, nil // another process is checking it
	}
	start := cp.End
	cp.Claim = &reconcileClaimOf{Owner: s.o.Owner, Until: now.Add(reconcileClaim)}
	claimed, err := s.write(ctx, cp, rev)
	if jserr.WrongLastSequence(err) {
		return false, nil // another process claimed it first
	}
	if err != nil {
		return false, err
	}
	began := time.Now()
	counts, err := s.check(ctx, start, end)
	if err != nil {
		// Let the next run (this process's or another's) take it at
		// once, even as the drain begins, but briefly: a claim left
		// behind lapses anyway.
		cp.Claim = nil
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
		defer cancel()
		if _, rerr := s.write(rctx, cp, claimed); rerr != nil && !jserr.WrongLastSequence(rerr) {
			s.o.Log.Debug("could not release the reconcile claim", "error", rerr.Error())
		}
		return false, err
	}
	next := reconcileCheckpoint{End: end, Last: &counts}
	if _, err := s.write(ctx, next, claimed); err != nil {
		if jserr.WrongLastSequence(err) {
			// Our claim lapsed and another process took the window over:
			// its count stands, not ours.
			s.o.Log.Warn("scheduled reconcile took longer than its claim; another process checked the window", "window_start", start, "window_end", end)
			return false, nil
		}
		return false, fmt.Errorf("recording the reconciled window: %w", err)
	}
	s.o.Log.Info("reconcile window checked", "window_start", start, "window_end", end, "accepted", counts.Accepted, "finished", counts.Finished,
		"waiting", counts.Waiting, "unfinished", counts.Unfinished, "took", time.Since(began).Round(time.Millisecond).String())
	s.o.Metrics.ReconcileUnfinished.Add(float64(counts.Unfinished))
	s.show(next)
	if counts.Unfinished > 0 {
		s.o.Log.Error("acknowledged messages with no outcome past the reconcile lag", "window_start", start, "window_end", end,
			"unfinished", counts.Unfinished, "lag", s.o.Lag.String(), "see", "junction audit reconcile --since "+start.UTC().Format(time.RFC3339))
	}
	return true, nil
}

// check reconciles [start, end) on a connection of its own.
func (s *ReconcileScheduler) check(ctx context.Context, start, end time.Time) (WindowCounts, error) {
	ctx, cancel := context.WithTimeout(ctx, reconcileTimeout)
	defer cancel()
	js, done, err := s.o.Bulk()
	if err != nil {
		return WindowCounts{}, err
	}
	defer done()
	rep, err := s.o.Reconcile(ctx, js, s.o.Routes, start, end)
	if err != nil {
		return WindowCounts{}, fmt.Errorf("reconciling: %w", err)
	}
	return windowCounts(rep, start, end), nil
}

// windowCounts counts the messages of rep by state.
func windowCounts(rep audit.Reconciliation, start, end time.Time) WindowCounts {
	c := WindowCounts{Start: start, End: end, Accepted: rep.Accepted, Finished: rep.Accepted - len(rep.Pending)}
	for _, p := range rep.Pending {
		delivery := len(p.Waiting) > 0
		for _, w := range p.Waiting {
			delivery = delivery && strings.HasPrefix(w, "delivery ")
		}
		if delivery {
			c.Waiting++
		} else {
			c.Unfinished++
		}
	}
	return c
}

// show sets the gauges to the checkpoint's last window, when it has one.
func (s *ReconcileScheduler) show(cp reconcileCheckpoint) {
	l := cp.Last
	if l == nil {
		return
	}
	m := s.o.Metrics
	m.ReconcileWindowEnd.Set(float64(l.End.UnixNano()) / 1e9)
	for state, n := range map[string]int{telemetry.ReconcileAccepted: l.Accepted, telemetry.ReconcileFinished: l.Finished,
		telemetry.ReconcileWaiting: l.Waiting, telemetry.ReconcileUnfinished: l.Unfinished} {
		m.ReconcileMessages.WithLabelValues(state).Set(float64(n))
	}
}

// read returns the checkpoint and its revision, 0 when there is none.
func (s *ReconcileScheduler) read(ctx context.Context) (reconcileCheckpoint, uint64, error) {
	var cp reconcileCheckpoint
	e, err := s.kv.Get(ctx, reconcileKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return cp, 0, nil
	}
	if err != nil {
		return cp, 0, fmt.Errorf("reading the reconcile checkpoint: %w", err)
	}
	if err := json.Unmarshal(e.Value(), &cp); err != nil {
		return cp, 0, fmt.Errorf("reading the reconcile checkpoint: %w", err)
	}
	return cp, e.Revision(), nil
}

// write stores cp if the checkpoint is still at rev (absent for 0), and
// returns its new revision.
func (s *ReconcileScheduler) write(ctx context.Context, cp reconcileCheckpoint, rev uint64) (uint64, error) {
	b, err := json.Marshal(cp)
	if err != nil {
		return 0, err
	}
	if rev == 0 {
		return s.kv.Create(ctx, reconcileKey, b)
	}
	return s.kv.Update(ctx, reconcileKey, b, rev)
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
