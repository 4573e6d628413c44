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

// Batches passed over. The accept stage's consumer (the splitter's, in
// the per-message pipeline) delivers the ingest log's batches in order,
// one outstanding at a time, but passes over
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
// consumer durable on log delivered, that the consumer passed over
// because the store does not produce them. taken is the last batch known
// taken: batches up to it are not asked about. A stored batch just before
// seq was delivered (to this process or another), which is the usual
// answer, from one read; else the consumer's ack floor, while it lets one
// batch be outstanding, is the last batch it delivered before seq, to any
// process, and those after it that the store does not produce were passed
// over. Those the stream holds as deleted sequences (what the server
// dropped of a damaged block at start: a run of thousands of batches,
// maybe) are known from its state, read once with them; only the others
// are asked for one by one (a batch the store counts but cannot read,
// such as a record overwritten in the log's last block, is not deleted).
func passedOver(ctx context.Context, js jetstream.JetStream, log jetstream.Stream, durable string, seq, taken uint64) ([]LostRun, error) {
	if seq <= taken+1 {
		// Every batch before it was taken: the one process's usual case.
		return nil, nil
	}
	_, err := log.GetMsg(ctx, seq-1)
	if err == nil {
		return nil, nil
	}
	if !errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, fmt.Errorf("reading the ingest log batch before %d: %w", seq, err)
	}
	c, err := js.Consumer(ctx, store.StreamIngestLog, durable)
	if err != nil {
		return nil, fmt.Errorf("reading consumer %s's position: %w", durable, err)
	}
	ci, err := c.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading consumer %s's position: %w", durable, err)
	}
	// The stream's deleted sequences, with its state, in one read: a
	// block the server dropped at start (thousands of batches, maybe)
	// is deleted sequences, known gone without a read each.
	si, err := log.Info(ctx, jetstream.WithDeletedDetails(true))
	if err != nil {
		return nil, fmt.Errorf("reading the ingest log's state: %w", err)
	}
	// Batches before the stream's first expired, and the server moves
	// its consumers past them: not lost to damage.
	from := max(ci.AckFloor.Stream, taken, si.State.FirstSeq-1) + 1
	var gone []uint64
	deleted := slices.Sorted(slices.Values(si.State.Deleted))
	for s := from; s < seq; s++ {
		if _, ok := slices.BinarySearch(deleted, s); ok {
			gone = append(gone, s)
			continue
		}
		// Not deleted, and not delivered: a batch the store counts
		// but cannot read (a record overwritten in the log's last
		// block is no deleted sequence), or one taken elsewhere.
		_, err := log.GetMsg(ctx, s)
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
			gone = append(gone, s)
		case err != nil:
			return nil, fmt.Errorf("reading ingest log batch %d: %w", s, err)
		}
	}
	return runsOf(ctx, log, gone, si.State.FirstSeq)
}

// takenTo is the last ingest-log sequence up to which the accept stage
// knows every batch taken: the last this process finished (or passed
// over, covered, having asked about the batches before it), or the last
// an earlier version's accepted batch covers, for every source. A
// source's own accepted batches say nothing of other sources' entries in
// the batches they cover: the process that wrote one may have stopped
// before writing the next source's, and a batch the consumer then passed
// over may have held that source's entries, lost.
func (a *acceptor) takenTo() uint64 {
	return max(a.handledTo, a.coveredAll)
}

// recordPassedOver records as lost, on ingress, the batches consumer
// durable on log passed over before seq (passedOver, with taken), before
// its stage takes seq: the record first, so that a failure retries the
// batch rather than moving past them unrecorded. A run recorded already
// (by another process, or before a retry) is not recorded or reported
// again, nor is what the start reported. The record already stored is
// looked for, not only left to the stream's dedupe window: a retry may
// come after the window (the store refusing the batch's own writes for
// longer), and would record and count the run again.
func (r *Router) recordPassedOver(ctx context.Context, ingress, log jetstream.Stream, durable string, seq, taken uint64) error {
	runs, err := passedOver(ctx, r.js, log, durable, seq, taken)
	if err != nil {
		return err
	}
	for _, run := range runs {
		_, err := ingress.GetLastMsgForSubject(ctx, ingestLostSubject(run))
		if err == nil {
			continue
		}
		if !errors.Is(err, jetstream.ErrMsgNotFound) {
			return fmt.Errorf("looking for the record of lost ingest log batches %d-%d: %w", run.First, run.Last, err)
		}
		// What the start did not report, worked out before the record
		// is written: once it is, a retry finds it and says nothing.
		unsaid, err := r.unsaid(ctx, log, run)
		if err != nil {
			return err
		}
		data, err := json.Marshal(run)
		if err != nil {
			return fmt.Errorf("recording lost ingest log batches: %w", err)
		}
		m := nats.NewMsg(ingestLostSubject(run))
		m.Data = data
		// Its dedupe key is its subject, which holds no '|': every key
		// a sender's message is stored on the ingress stream by (the
		// per-message pipeline's) has one (an HL7 v2 message's is its
		// sending application, facility and control id joined by '|'),
		// so none is taken for this record, nor this record for one.
		m.Header.Set(jetstream.MsgIDHeader, m.Subject)
		ack, err := r.js.PublishMsg(ctx, m)
		if err != nil {
			return fmt.Errorf("recording lost ingest log batches %d-%d: %w", run.First, run.Last, err)
		}
		if ack.Duplicate {
			continue
		}
		for _, u := range unsaid {
			r.reportLostRun(u)
		}
	}
	return nil
}

// unsaid returns the part of run, of log, the start did not report.
func (r *Router) unsaid(ctx context.Context, log jetstream.Stream, run LostRun) ([]LostRun, error) {
	if len(r.saidLost) == 0 {
		return []LostRun{run}, nil
	}
	var gone []uint64
	for s := run.First; s <= run.Last; s++ {
		if !slices.ContainsFunc(r.saidLost, func(said LostRun) bool { return said.First <= s && s <= said.Last }) {
			gone = append(gone, s)
		}
	}
	return runsOf(ctx, log, gone, log.CachedInfo().State.FirstSeq)
}
