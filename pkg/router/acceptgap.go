package router

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/junction-fhir/junction/pkg/store"
)

// Batches passed over. The accept stage's consumer delivers the ingest
// log's batches in order, one outstanding at a time, but passes over
// without a word a batch the store counts and cannot read (a record
// overwritten in the middle of a block) or no longer holds (deleted
// sequences, where the server dropped what it could not read of a
// damaged block at start), and its ack floor then moves past it: the
// acknowledged messages in it would be lost with nothing said, and audit
// reconcile, which takes batches below the floor as taken, would count
// nothing missing. So before it accepts a batch, the stage asks whether
// the consumer passed over any before it, and records those it did as
// lost: on the ingress stream (SubjIngestLost, which reconcile reads),
// at ERROR and in junction_ingress_ingest_log_lost_batches_total. A read
// ahead stops where the store passes over a sequence, so the batch after
// one is always delivered, and checked.

// SubjIngestLost prefixes the records of ingest log batches the accept
// stage found lost as it moved past them: junction.in._lost.<first>.<last>,
// holding the run (a LostRun, as JSON).
const SubjIngestLost = store.SubjIngress + "._lost"

// ingestLostSubject is the subject of the record of run.
func ingestLostSubject(run LostRun) string {
	return SubjIngestLost + "." + strconv.FormatUint(run.First, 10) + "." + strconv.FormatUint(run.Last, 10)
}

// passedOver returns the runs of ingest log batches before seq, the batch
// the stage's consumer delivered, that the consumer passed over because
// the store does not produce them, and that nothing accepted before the
// damage. A stored batch just before seq was delivered (to this process
// or another), which is the usual answer, from one read; else the
// consumer's ack floor, while it lets one batch be outstanding, is the
// last batch it delivered before seq, to any process, and those after it
// that the store does not produce were passed over. Batches up to the
// last accepted batch known (read ahead, by this process or another,
// before the damage) are not lost.
func (a *acceptor) passedOver(ctx context.Context, seq uint64) ([]LostRun, error) {
	taken := max(a.handledTo, a.acceptedTo())
	if seq <= taken+1 {
		// Every batch before it was taken: the one process's usual case.
		return nil, nil
	}
	_, err := a.log.GetMsg(ctx, seq-1)
	if err == nil {
		return nil, nil
	}
	if !errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, fmt.Errorf("reading the ingest log batch before %d: %w", seq, err)
	}
	c, err := a.r.js.Consumer(ctx, store.StreamIngestLog, acceptDurable)
	if err != nil {
		return nil, fmt.Errorf("reading the accept stage's position: %w", err)
	}
	ci, err := c.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading the accept stage's position: %w", err)
	}
	si, err := a.log.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading the ingest log's state: %w", err)
	}
	// Batches before the stream's first expired, and the server moves
	// its consumers past them: not lost to damage.
	from := max(ci.AckFloor.Stream, taken, si.State.FirstSeq-1) + 1
	var gone []uint64
	for s := from; s < seq; s++ {
		_, err := a.log.GetMsg(ctx, s)
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
			gone = append(gone, s)
		case err != nil:
			return nil, fmt.Errorf("reading ingest log batch %d: %w", s, err)
		}
	}
	return runsOf(ctx, a.log, gone, si.State.FirstSeq)
}

// acceptedTo is the last ingest-log sequence an accepted batch this
// process knows of covers, for any source: every batch up to it was
// taken (or recorded lost) before it was written.
func (a *acceptor) acceptedTo() uint64 {
	last := a.coveredAll
	for _, seq := range a.coveredTo {
		last = max(last, seq)
	}
	return last
}

// recordPassedOver records as lost the batches the consumer passed over
// before seq (passedOver), before the stage accepts seq: the record
// first, so that a failure retries the batch rather than moving past
// them unrecorded. A run recorded already (by another process, or before
// a retry) is not reported again, nor is what the start reported.
func (a *acceptor) recordPassedOver(ctx context.Context, seq uint64) error {
	runs, err := a.passedOver(ctx, seq)
	if err != nil {
		return err
	}
	for _, run := range runs {
		data, err := json.Marshal(run)
		if err != nil {
			return fmt.Errorf("recording lost ingest log batches: %w", err)
		}
		m := nats.NewMsg(ingestLostSubject(run))
		m.Data = data
		m.Header.Set(jetstream.MsgIDHeader, "lost|"+strconv.FormatUint(run.First, 10)+"|"+strconv.FormatUint(run.Last, 10))
		ack, err := a.r.js.PublishMsg(ctx, m)
		if err != nil {
			return fmt.Errorf("recording lost ingest log batches %d-%d: %w", run.First, run.Last, err)
		}
		if ack.Duplicate {
			continue
		}
		unsaid, err := a.unsaid(ctx, run)
		if err != nil {
			return err
		}
		for _, u := range unsaid {
			a.r.reportLostRun(u)
		}
	}
	return nil
}

// unsaid returns the part of run the start did not report.
func (a *acceptor) unsaid(ctx context.Context, run LostRun) ([]LostRun, error) {
	said := func(seq uint64) bool {
		return slices.ContainsFunc(a.r.saidLost, func(r LostRun) bool { return r.First <= seq && seq <= r.Last })
	}
	if len(a.r.saidLost) == 0 {
		return []LostRun{run}, nil
	}
	var gone []uint64
	for s := run.First; s <= run.Last; s++ {
		if !said(s) {
			gone = append(gone, s)
		}
	}
	return runsOf(ctx, a.log, gone, a.log.CachedInfo().State.FirstSeq)
}
