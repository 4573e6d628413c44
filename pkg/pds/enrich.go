package pds

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/junction-fhir/junction/pkg/patient"
	"github.com/junction-fhir/junction/pkg/telemetry"
)

// Defaults of EnricherOptions.
const (
	DefaultRefreshAfter = 24 * time.Hour
	DefaultQueueSize    = 1024
	DefaultCooldown     = 30 * time.Second
)

// Lookup outcomes, the values of the outcome label of
// junction_patient_pds_lookups_total.
const (
	OutcomeFound       = "found"
	OutcomeSuperseded  = "superseded"
	OutcomeNotFound    = "not_found"
	OutcomeInvalid     = "invalid"
	OutcomeUnavailable = "unavailable"
	OutcomeRefused     = "refused"
	OutcomeBadReply    = "bad_reply"
	OutcomeIndexError  = "index_error"
)

// Looker looks a patient up; *Client is one.
type Looker interface {
	Lookup(ctx context.Context, nhsNumber string) (Result, error)
}

// Index is what the Enricher needs of the patient index; *patient.Index
// is one.
type Index interface {
	Update(ctx context.Context, nhsNumber string, change func(*patient.Record) error) (*patient.Record, error)
	SetRestricted(ctx context.Context, nhsNumber string, restricted bool, src patient.Source) (*patient.Record, error)
	MergeInto(ctx context.Context, old, survivor string, src patient.Source) (bool, error)
}

// EnricherOptions configure an Enricher.
type EnricherOptions struct {
	// RefreshAfter is how old a patient's last PDS answer may be before
	// the patient is looked up again (DefaultRefreshAfter if zero).
	RefreshAfter time.Duration
	// QueueSize bounds the NHS numbers waiting (DefaultQueueSize if
	// zero); more are dropped and counted.
	QueueSize int
	// Cooldown is how long the worker pauses after PDS was unavailable,
	// refused the request or answered unusably, so that an outage is not
	// met with a lookup per message (DefaultCooldown if zero).
	Cooldown time.Duration
	// Metrics, if set, counts lookups and drops.
	Metrics *telemetry.Metrics
	// Logger logs outcomes, never NHS numbers (discarded if nil).
	Logger *slog.Logger
}

// Enricher keeps the patient index's GP registration current from PDS,
// off the message path: the router hands it each record it has just
// updated (Observe), which queues the patient's NHS number when PDS was
// never asked about the patient or its answer is older than
// RefreshAfter; one background worker takes the queue in order, looks
// each patient up and writes the answer to the index.
//
// What a lookup writes, always on behalf of a Source dated when PDS
// answered (a PDS lookup is a message of its own, received then):
//
//   - The GP practice (and GP), through patient.Record.SetGP: PDS wins
//     over a PD1 received before the lookup, and a PD1 received after it
//     wins over PDS. PDS is the national record of registration, but a
//     PAS message received later may know of a change PDS has not yet
//     published to this system. No practice (a restricted patient, or
//     one not registered) leaves the index's practice as it was.
//   - The check itself (patient.Record.PDS: when, found or not found,
//     version), which decides when the patient is next due.
//   - A restricted (R or V) answer sets the restricted marker; an
//     unrestricted one does not clear it (clearing stays with whoever set
//     it, since a wrong clear exposes a patient's whereabouts).
//   - A superseded number is merged into the number that superseded it
//     (patient.Index.MergeInto), as an A40 would; the answer is then
//     written to the survivor.
//
// The queue is in memory: lookups queued at shutdown are dropped and are
// queued again by the patient's next message. Each process enriches on
// its own; NHS numbers are deduplicated within a process only.
type Enricher struct {
	look Looker
	ix   Index
	o    EnricherOptions
	log  *slog.Logger
	now  func() time.Time

	mu      sync.Mutex
	queue   chan string
	pending map[string]bool
	cancel  context.CancelFunc
	done    chan struct{}
}

// NewEnricher returns an enricher; call Start to run its worker.
func NewEnricher(look Looker, ix Index, o EnricherOptions) *Enricher {
	if o.RefreshAfter <= 0 {
		o.RefreshAfter = DefaultRefreshAfter
	}
	if o.QueueSize <= 0 {
		o.QueueSize = DefaultQueueSize
	}
	if o.Cooldown <= 0 {
		o.Cooldown = DefaultCooldown
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Enricher{
		look: look, ix: ix, o: o, log: log, now: time.Now,
		queue: make(chan string, o.QueueSize), pending: map[string]bool{},
	}
}

// Due reports whether the record's patient should be looked up at now:
// never looked up, or last answered RefreshAfter ago or more. A merged
// record is not due (its survivor is).
func (e *Enricher) Due(rec *patient.Record, now time.Time) bool {
	if rec == nil || rec.NHSNumber == "" || rec.MergedInto != "" {
		return false
	}
	return rec.PDS.CheckedAt.IsZero() || now.Sub(rec.PDS.CheckedAt) >= e.o.RefreshAfter
}

// Observe queues the record's patient for a lookup when it is due. It
// never blocks, so the router calls it for every message it indexes.
func (e *Enricher) Observe(rec *patient.Record) {
	if e.Due(rec, e.now()) {
		e.Enqueue(rec.NHSNumber)
	}
}

// Enqueue queues an NHS number for a lookup unless it is queued already.
// It never blocks: when the queue is full the number is dropped, counted,
// and false returned.
func (e *Enricher) Enqueue(nhsNumber string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.pending[nhsNumber] {
		return true
	}
	select {
	case e.queue <- nhsNumber:
		e.pending[nhsNumber] = true
		return true
	default:
		if e.o.Metrics != nil {
			e.o.Metrics.PDSDropped.Inc()
		}
		return false
	}
}

// Start runs the worker until Stop. It is idempotent.
func (e *Enricher) Start(ctx context.Context) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.done != nil {
		return
	}
	ctx, e.cancel = context.WithCancel(context.WithoutCancel(ctx))
	e.done = make(chan struct{})
	go e.run(ctx, e.done)
}

// Stop stops the worker, abandoning a lookup in progress and the queue,
// and waits for it (or for ctx). It is safe without Start and idempotent.
func (e *Enricher) Stop(ctx context.Context) error {
	e.mu.Lock()
	cancel, done := e.cancel, e.done
	e.mu.Unlock()
	if cancel == nil {
		return nil
	}
	cancel()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return errors.New("pds: enricher did not stop in time")
	}
}

func (e *Enricher) run(ctx context.Context, done chan struct{}) {
	defer close(done)
	for {
		var n string
		select {
		case <-ctx.Done():
			return
		case n = <-e.queue:
		}
		outcome := e.Refresh(ctx, n)
		e.mu.Lock()
		delete(e.pending, n)
		e.mu.Unlock()
		switch outcome {
		case OutcomeUnavailable, OutcomeRefused, OutcomeBadReply:
			select {
			case <-ctx.Done():
				return
			case <-time.After(e.o.Cooldown):
			}
		}
	}
}

// Refresh looks one patient up and writes the answer to the index (see
// Enricher), and returns the outcome it counted.
func (e *Enricher) Refresh(ctx context.Context, nhsNumber string) string {
	outcome, err := e.refresh(ctx, nhsNumber)
	if ctx.Err() != nil {
		// Stopped part way: not an outcome of PDS.
		return outcome
	}
	if e.o.Metrics != nil {
		e.o.Metrics.PDSLookups.WithLabelValues(outcome).Inc()
	}
	if err != nil {
		// The error holds no patient data (see Error).
		e.log.Warn("pds lookup failed", "outcome", outcome, "err", err.Error())
	}
	return outcome
}

func (e *Enricher) refresh(ctx context.Context, nhsNumber string) (string, error) {
	res, err := e.look.Lookup(ctx, nhsNumber)
	at := e.now()
	switch {
	case errors.Is(err, ErrNotFound):
		_, werr := e.ix.Update(ctx, nhsNumber, func(r *patient.Record) error {
			r.PDS = patient.PDSCheck{CheckedAt: at, Outcome: OutcomeNotFound}
			return nil
		})
		if werr != nil {
			return OutcomeIndexError, werr
		}
		return OutcomeNotFound, nil
	case errors.Is(err, ErrInvalid):
		return OutcomeInvalid, err
	case errors.Is(err, ErrRefused):
		return OutcomeRefused, err
	case errors.Is(err, ErrBadReply):
		return OutcomeBadReply, err
	case err != nil:
		return OutcomeUnavailable, err
	}
	src := patient.Source{MessageID: "pds:" + res.VersionID, Received: at}
	outcome, target := OutcomeFound, nhsNumber
	if res.Superseded {
		outcome, target = OutcomeSuperseded, res.NHSNumber
		if _, err := e.ix.MergeInto(ctx, nhsNumber, res.NHSNumber, src); err != nil {
			return OutcomeIndexError, err
		}
	}
	_, err = e.ix.Update(ctx, target, func(r *patient.Record) error {
		r.SetGP(res.GPPractice, res.GP, src)
		r.PDS = patient.PDSCheck{CheckedAt: at, Outcome: OutcomeFound, VersionID: res.VersionID, GPPractice: res.GPPractice}
		return nil
	})
	if err != nil {
		return OutcomeIndexError, err
	}
	if res.Restricted {
		if _, err := e.ix.SetRestricted(ctx, target, true, src); err != nil {
			return OutcomeIndexError, err
		}
	}
	return outcome, nil
}
