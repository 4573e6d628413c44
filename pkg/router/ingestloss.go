package router

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/junction-fhir/junction/pkg/jserr"
	"github.com/junction-fhir/junction/pkg/store"
)

// LostRun is a run of ingest log sequences, First to Last, that the
// store no longer holds, or counts but cannot read: batches of
// acknowledged messages, lost (its files were damaged). After and
// Before are when the stored batches either side of the run were
// written (zero where there is none): the lost messages were
// acknowledged between them.
type LostRun = jserr.Run

// ingestLogLoss returns the runs of ingest log batches after floor (the
// position up to which the accept stage has taken every batch) that the
// stream no longer holds. Junction never deletes from the ingest log, so
// a deleted sequence after floor is a batch lost: the server drops what
// it cannot read of a damaged block when it rebuilds the stream at
// start, as deleted sequences. (Batches that expire at the stream's head
// cannot be seen this way: the server moves its consumers past them.)
func ingestLogLoss(ctx context.Context, js jetstream.JetStream, floor uint64) ([]LostRun, error) {
	st, err := js.Stream(ctx, store.StreamIngestLog)
	if err != nil {
		return nil, fmt.Errorf("opening ingest log: %w", err)
	}
	return droppedRuns(ctx, st, floor)
}

// droppedRuns returns the runs of sequences after floor that stream st,
// from which Junction deletes nothing (the ingest log, the ingress
// stream, the quarantine), no longer holds between its first and last, with when the
// messages either side were stored: what the server dropped, as
// deleted sequences, of a damaged block it rebuilt at start.
func droppedRuns(ctx context.Context, st jetstream.Stream, floor uint64) ([]LostRun, error) {
	name := st.CachedInfo().Config.Name
	state := st.CachedInfo().State
	if state.LastSeq <= floor || state.NumDeleted == 0 {
		return nil, nil
	}
	info, err := st.Info(ctx, jetstream.WithDeletedDetails(true))
	if err != nil {
		return nil, fmt.Errorf("reading the deleted sequences of stream %s: %w", name, err)
	}
	var gone []uint64
	for _, seq := range info.State.Deleted {
		if seq > floor {
			gone = append(gone, seq)
		}
	}
	return runsOf(ctx, st, gone, state.FirstSeq)
}

// runsOf returns the sequences gone of st, whose first message is first,
// as runs, with when the messages either side of each were stored.
func runsOf(ctx context.Context, st jetstream.Stream, gone []uint64, first uint64) ([]LostRun, error) {
	return runsAt(gone, func(seq uint64) (time.Time, error) { return storedAt(ctx, st, seq, first) })
}

// runsAt returns the sequences gone as runs, oldest first, with when the
// messages either side of each were stored as at gives it (zero: not
// held); an error from at is returned as it is.
func runsAt(gone []uint64, at func(seq uint64) (time.Time, error)) ([]LostRun, error) {
	gone = slices.Clone(gone)
	slices.Sort(gone)
	gone = slices.Compact(gone)
	var runs []LostRun
	for _, seq := range gone {
		if n := len(runs); n > 0 && runs[n-1].Last+1 == seq {
			runs[n-1].Last = seq
			continue
		}
		runs = append(runs, LostRun{First: seq, Last: seq})
	}
	var err error
	for i := range runs {
		if runs[i].After, err = at(runs[i].First - 1); err != nil {
			return nil, err
		}
		if runs[i].Before, err = at(runs[i].Last + 1); err != nil {
			return nil, err
		}
	}
	return runs, nil
}

// storedAt is when message seq of st was written, or zero when the
// stream does not hold it.
func storedAt(ctx context.Context, st jetstream.Stream, seq, first uint64) (time.Time, error) {
	if seq < first {
		return time.Time{}, nil
	}
	m, err := st.GetMsg(ctx, seq)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return time.Time{}, nil
	case err != nil:
		return time.Time{}, fmt.Errorf("reading message %d of stream %s: %w", seq, st.CachedInfo().Config.Name, err)
	}
	return m.Time, nil
}

// reportIngestLoss logs at ERROR, and counts, the batches of
// acknowledged messages the ingest log lost before consumer durable (the
// stage taking batches from it) took them, found as the engine starts:
// nothing else tells ops that messages senders were told were stored are
// gone. start is where the consumer starts when it is made now.
func (r *Router) reportIngestLoss(ctx context.Context, durable string, start startAt) {
	floor, found, err := ingestLogFloor(ctx, r.js, durable)
	// A consumer that exists has taken every batch up to its floor; one
	// made now from a handover starts after the other's; one made now
	// from the beginning has taken nothing.
	if err == nil && !found && start.policy == jetstream.DeliverByStartSequencePolicy {
		floor = start.seq - 1
	}
	var runs []LostRun
	if err == nil {
		runs, err = ingestLogLoss(ctx, r.js, floor)
	}
	if err != nil {
		r.o.Logger.Warn("could not check the ingest log for batches lost before routing took them", "err", err.Error())
		return
	}
	r.saidLost = runs
	for _, run := range runs {
		r.reportLostRun(run)
	}
}

// reportLostRun logs at ERROR, and counts, run: ingest log batches of
// acknowledged messages lost before routing took them. It says
// sequences and times only, never what the batches held.
func (r *Router) reportLostRun(run LostRun) {
	batches := run.Last - run.First + 1
	r.o.Metrics.IngestLogLost.Add(float64(batches))
	args := []any{"stream", store.StreamIngestLog, "batches", batches, "first_seq", run.First, "last_seq", run.Last}
	if !run.After.IsZero() {
		args = append(args, "acknowledged_after", run.After.UTC().Format(time.RFC3339Nano))
	}
	if !run.Before.IsZero() {
		args = append(args, "acknowledged_before", run.Before.UTC().Format(time.RFC3339Nano))
	}
	r.o.Logger.Error("the ingest log lost batches of acknowledged messages that routing had not taken: it no longer holds them, or counts them but cannot read them (its files were damaged); the messages in them are lost, with no audit record; restore the store from a backup, or ask the senders to resend what they sent between the times given (a resend within nats.dedupe_window of a message accepted already is recognised as one)", args...)
}
