package router

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/junction-fhir/junction/pkg/audit"
	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/fault"
	"github.com/junction-fhir/junction/pkg/store"
)

// The batch pipeline (router.pipeline: batch). The group-commit batch
// stays one stream message through every stage, so the store writes per
// batch, not per message:
//
//   - accept: takes one ingest-log batch at a time, with the batches
//     stored after it (see readAhead), drops resends found in an
//     in-memory dedupe index (rebuilt at start, and kept current, from
//     its own output), and writes one accepted batch per source on the
//     ingress stream (subject junction.in._acc.<source>.<last ingest-log
//     sequence it covers>). The accepted batch is the messages' receipt:
//     no record per message is written.
//   - route: each route takes one accepted batch of its source at a time
//     (routes never see other sources' batches), translates and routes its
//     messages in parallel, and writes one outbound batch per destination
//     and one audit batch.
//   - deliver: each destination takes one outbound batch at a time and
//     sends its entries concurrently across partitions, in order within a
//     partition (so per patient), then writes one audit batch.
//
// Each stage lets one batch be outstanding (MaxAckPending 1), so any
// number of processes may run it and order holds. Rare events (resends,
// failures, dead letters) are still written per message. Replays go
// through the per-message pipeline, which runs alongside.

// SubjAccepted prefixes the accepted batches on the ingress stream.
const SubjAccepted = store.SubjIngress + "._acc"

// subjLegacyAccepted matches the accepted batches of every source that
// versions before per-source batches wrote (junction.in._acc.<sequence>,
// one token fewer than a source's). Stages still read them, so batches
// stored before an upgrade are routed after it.
const subjLegacyAccepted = SubjAccepted + ".*"

// acceptDurable is the accept stage's consumer on the ingest log.
const acceptDurable = "accept"

// AcceptedSubject is the subject of source's accepted batch made from
// ingest-log message seq.
func AcceptedSubject(source string, seq uint64) string {
	return SubjAccepted + "." + source + "." + strconv.FormatUint(seq, 10)
}

// acceptedFilters are the subjects of the accepted batches that can hold
// source's messages: its own, and those of earlier versions.
func acceptedFilters(source string) []string {
	return []string{subjLegacyAccepted, ownAccepted(source)}
}

// ownAccepted matches source's own accepted batches.
func ownAccepted(source string) string { return SubjAccepted + "." + source + ".*" }

// acceptedInput is how a stage reading one source's accepted batches
// through a durable consumer takes them: its consumer's filters, and the
// input subject and narrowing of its spans (see spanner).
type acceptedInput struct {
	filters []string
	input   string
	takes   func(subject string) bool
}

// acceptedInputOf returns how the stage with consumer durable reads
// source's accepted batches. Only while earlier versions' mixed batches
// wait for that consumer (a store upgraded with a backlog) does it take
// those too, its spans then reading every accepted batch and passing
// over other sources'; otherwise it takes only its own source's, and its
// spans read nothing else. The choice is made at start: once a consumer
// is past the last mixed batch, none can come (a newer version writes
// none, and versions are not mixed on one store), so it holds until the
// next start looks again.
func acceptedInputOf(ctx context.Context, js jetstream.JetStream, ingress jetstream.Stream, durable, source string) (acceptedInput, error) {
	own := acceptedInput{filters: []string{ownAccepted(source)}, input: ownAccepted(source)}
	last, err := ingress.GetLastMsgForSubject(ctx, subjLegacyAccepted)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return own, nil
	}
	if err != nil {
		return acceptedInput{}, fmt.Errorf("looking for earlier versions' accepted batches: %w", err)
	}
	c, err := js.Consumer(ctx, store.StreamIngress, durable)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return own, nil // a new consumer starts at batches stored after it
	}
	if err != nil {
		return acceptedInput{}, fmt.Errorf("consumer %s: %w", durable, err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		return acceptedInput{}, fmt.Errorf("consumer %s: %w", durable, err)
	}
	if info.AckFloor.Stream >= last.Sequence {
		return own, nil
	}
	return acceptedInput{filters: acceptedFilters(source), input: SubjAccepted + ".>", takes: acceptedOf(source)}, nil
}

// acceptedOf returns a function reporting whether an accepted batch's
// subject is one of acceptedFilters(source).
func acceptedOf(source string) func(subject string) bool {
	return func(subject string) bool {
		rest, ok := strings.CutPrefix(subject, SubjAccepted+".")
		if !ok {
			return false
		}
		src, seq, perSource := strings.Cut(rest, ".")
		return !perSource || src == source && !strings.Contains(seq, ".")
	}
}

// auditBatchSubject is where a stage writes the records of one batch.
func auditBatchSubject(stage, name string, seq uint64) string {
	return store.SubjAudit + "._b." + stage + "." + name + "." + strconv.FormatUint(seq, 10)
}

// Limits of the accept stage's dedupe index: resends are recognised for
// the stream's dedupe window or the last dedupeMaxKeys messages, whichever
// is shorter (44 bytes a key: 44 MiB when full; see
// BenchmarkDedupeIndexMemory).
const dedupeMaxKeys = 1 << 20

// maxRebuildBatches bounds the stream sequences a rebuild reads back.
const maxRebuildBatches = 1 << 18

// headerSources lists the sources of an accepted batch's messages, one
// value each, so a route can pass over a batch holding none of its
// source without decoding it. Batches written before it was added lack
// it and are decoded.
const headerSources = "Junction-Sources"

// sourcesOf returns the distinct sources of envs, in order of first
// appearance.
func sourcesOf(envs []*envelope.Envelope) []string {
	var out []string
	for _, e := range envs {
		if !slices.Contains(out, e.Source) {
			out = append(out, e.Source)
		}
	}
	return out
}

// acceptor is the accept stage.
type acceptor struct {
	r       *Router
	ingress jetstream.Stream
	// log is the ingest log, read ahead of the delivered batch.
	log jetstream.Stream
	// maxBytes bounds an accepted batch's size, below the server's max
	// payload.
	maxBytes int
	idx      *dedupeIndex
	// built is set once the index holds the dedupe window.
	built bool
	// coveredTo holds, per source, the ingest-log sequence up to which
	// its entries are accepted, as far as this process knows; coveredAll
	// the same for every source (earlier versions' batches).
	coveredTo  map[string]uint64
	coveredAll uint64
	// handledTo is the last ingest-log batch this process finished, read
	// ahead or delivered (or passed over, covered, once it asked about
	// the batches before it): a batch holding only resends leaves no
	// accepted batch to learn it from. (Another process given such a batch
	// judges it again: its resends are counted again, and their records,
	// named by the resend, are stored once.)
	handledTo uint64
}

func newAcceptor(r *Router, ingress, log jetstream.Stream, window time.Duration) *acceptor {
	maxBytes := maxBatchBytes
	if mp := int(r.js.Conn().MaxPayload()); mp > 0 && mp/2 < maxBytes {
		maxBytes = mp / 2
	}
	return &acceptor{r: r, ingress: ingress, log: log, maxBytes: maxBytes, idx: newDedupeIndex(window, dedupeMaxKeys), coveredTo: map[string]uint64{}}
}

// rebuild loads the accepted batches of the dedupe window into the index.
func (a *acceptor) rebuild(ctx context.Context) error {
	last, err := a.ingress.GetLastMsgForSubject(ctx, SubjAccepted+".>")
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("finding the last accepted batch: %w", err)
	}
	// Read the window's batches, but no more than maxRebuildBatches of
	// them (the index would drop older keys anyway), so a restart of a
	// busy system stays quick.
	start := time.Now().Add(-a.idx.window)
	a.noteCovered(last.Subject)
	if last.Time.Before(start) {
		// Nothing in the window: the last batch is older.
		a.idx.setApplied(last.Sequence)
		return nil
	}
	cfg := jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{SubjAccepted + ".>"}, DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &start,
	}
	if first, err := a.ingress.GetMsg(ctx, 0, jetstream.WithGetMsgSubject(SubjAccepted+".>")); err == nil && last.Sequence > maxRebuildBatches &&
		first.Sequence < last.Sequence-maxRebuildBatches {
		cfg.DeliverPolicy, cfg.OptStartTime, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, nil, last.Sequence-maxRebuildBatches
	}
	err = scanStream(ctx, a.ingress, cfg, scanPayloadBatch, func(m jetstream.Msg, meta *jetstream.MsgMetadata) (bool, error) {
		a.apply(m.Data(), meta.Timestamp)
		a.noteCovered(m.Subject())
		a.idx.setApplied(meta.Sequence.Stream)
		return meta.Sequence.Stream >= last.Sequence, nil
	})
	if err != nil {
		return fmt.Errorf("reading accepted batches: %w", err)
	}
	// Everything in the window is read (older batches are out of it).
	a.idx.setApplied(max(a.idx.appliedSeq(), last.Sequence))
	return nil
}

// catchUp applies the accepted batches other processes wrote since this
// one last looked, so the index is current before a batch is judged. It
// reads forward from the last batch applied (usually finding none), which
// costs the store far less than finding the last of every accepted
// subject.
func (a *acceptor) catchUp(ctx context.Context) error {
	for {
		m, err := a.ingress.GetMsg(ctx, a.idx.appliedSeq()+1, jetstream.WithGetMsgSubject(SubjAccepted+".>"))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading an accepted batch: %w", err)
		}
		a.apply(m.Data, m.Time)
		a.noteCovered(m.Subject)
		a.idx.setApplied(m.Sequence)
	}
}

func (a *acceptor) apply(data []byte, at time.Time) {
	envs, err := decodeBatch(data)
	if err != nil {
		return
	}
	for _, env := range envs {
		a.idx.add(dedupeKeyOf(env), env.ID, a.idx.contentHash(env), at)
	}
}

// handle accepts one ingest-log batch, and with it the batches stored
// after it (see acceptAhead), or passes over it when a read ahead
// accepted it already.
func (a *acceptor) handle(ctx context.Context, msgs []jetstream.Msg) error {
	ctx = context.WithoutCancel(ctx)
	r := a.r
	for _, m := range msgs {
		meta, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("reading batch metadata: %w", err)
		}
		seq := meta.Sequence.Stream
		// The index is built on the first batch, not at start, so a store
		// that is briefly unavailable delays ingest rather than failing the
		// start; a failure here retries the batch.
		if !a.built {
			if err := a.rebuild(ctx); err != nil {
				return err
			}
			a.built = true
		}
		envs, decodeErr := decodeBatch(m.Data())
		in := []acceptInput{{seq: seq, envs: envs}}
		if decodeErr == nil && (seq <= a.handledTo || a.allCovered(in[0])) {
			// A read ahead accepted it. Coverage is only ever learnt from
			// stored batches, or from this process's own finished work, so
			// there is nothing to read or write, but for batches the
			// consumer passed over before it: coverage of this batch's
			// sources says nothing of another source's entries in them
			// (the process that read ahead may have stopped between one
			// source's accepted batch and the next).
			if err := r.recordPassedOver(ctx, a.ingress, a.log, acceptDurable, seq, a.takenTo()); err != nil {
				return err
			}
			a.handledTo = max(a.handledTo, seq)
			continue
		}
		if err := a.catchUp(ctx); err != nil {
			return err
		}
		// Batches the consumer passed over before this one, unreadable,
		// are recorded lost before it moves past them (see passedOver).
		if err := r.recordPassedOver(ctx, a.ingress, a.log, acceptDurable, seq, a.takenTo()); err != nil {
			return err
		}
		if decodeErr != nil {
			if _, derr := r.deadLetter(ctx, "ingest", "accept", batchHeader(m.Headers(), seq), m.Data(), fault.Wrap(fault.Permanent, fault.CodeInternal, "unreadable ingest batch", decodeErr)); derr != nil {
				return derr
			}
			a.handledTo = max(a.handledTo, seq)
			continue
		}
		if !a.allCovered(in[0]) {
			if in, err = a.readAhead(ctx, in, len(m.Data())); err != nil {
				return err
			}
		}
		if meta.NumDelivered > 1 {
			// A process that read ahead may have stopped part way, before
			// this batch was acknowledged: ask the store what it accepted.
			if err := a.lookUpCovered(ctx, in); err != nil {
				return err
			}
		}
		if err := a.accept(ctx, in); err != nil {
			return err
		}
		a.handledTo = max(a.handledTo, in[len(in)-1].seq)
		r.o.Metrics.Spans.WithLabelValues("accept", "ingest").Inc()
		r.o.Metrics.SpanBatches.WithLabelValues("accept", "ingest").Add(float64(len(in)))
	}
	return nil
}

// acceptInput is one ingest-log batch, decoded.
type acceptInput struct {
	seq  uint64
	envs []*envelope.Envelope
}

// Reading ahead. The ingest log lets one batch be outstanding, so an
// accept stage that took only the delivered batch would write an accepted
// batch (and fsync) for every ingest-log batch, and fall behind a busy
// ingest. Instead it takes the batches stored after the delivered one too
// (within acceptAhead), and writes one accepted batch per source for all
// of them, named by the last ingest-log sequence it covers. Those batches
// are delivered later all the same, and passed over: a source's accepted
// batches cover its entries of every ingest-log batch up to the sequence
// in their name, and an accepted batch of a later ingest-log batch is
// written only after the batches before it are accepted. Each process
// learns what is covered from the accepted batches it reads (catchUp),
// and a redelivered batch, whose process may have stopped between one
// source's write and the next, asks the store for each source's last.
var acceptAhead = spanLimits{batches: 64, entries: maxBatchCount, bytes: 1 << 20}

// readAhead adds to in the ingest-log batches stored after it, within
// acceptAhead. It stops before a batch it cannot decode, which is
// dead-lettered when delivered, and before a sequence the store does not
// produce, which the next batch delivered records as lost.
func (a *acceptor) readAhead(ctx context.Context, in []acceptInput, size int) ([]acceptInput, error) {
	entries := len(in[0].envs)
	limit := min(acceptAhead.bytes, a.maxBytes)
	next := in[0].seq + 1
	for len(in) < acceptAhead.batches {
		m, err := a.log.GetMsg(ctx, next, jetstream.WithGetMsgSubject(ingestLogBatches))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("reading ahead on the ingest log: %w", err)
		}
		if m.Sequence != next {
			// The store passed over batches it does not produce: the
			// consumer passes over them too, and the batch after them,
			// delivered, records them (recordPassedOver).
			break
		}
		envs, err := decodeBatch(m.Data)
		if err != nil || entries+len(envs) > acceptAhead.entries || size+len(m.Data) > limit {
			break
		}
		in = append(in, acceptInput{seq: m.Sequence, envs: envs})
		entries, size, next = entries+len(envs), size+len(m.Data), m.Sequence+1
	}
	return in, nil
}

// ingestLogBatches is the accept stage's consumer filter on the ingest
// log: every batch.
const ingestLogBatches = store.SubjIngestLog + ".>"

// covered reports whether env, from ingest-log batch seq, was accepted.
func (a *acceptor) covered(env *envelope.Envelope, seq uint64) bool {
	return seq <= a.coveredAll || seq <= a.coveredTo[env.Source]
}

// allCovered reports whether every entry of b was accepted.
func (a *acceptor) allCovered(b acceptInput) bool {
	return !slices.ContainsFunc(b.envs, func(e *envelope.Envelope) bool { return !a.covered(e, b.seq) })
}

// noteCovered records what the accepted batch on subject covers: its
// source's entries up to the ingest-log sequence in its last token, or
// for an earlier version's batch (junction.in._acc.<sequence>), every
// source's.
func (a *acceptor) noteCovered(subject string) {
	rest, ok := strings.CutPrefix(subject, SubjAccepted+".")
	if !ok {
		return
	}
	src, last, perSource := strings.Cut(rest, ".")
	if !perSource {
		if seq, err := strconv.ParseUint(src, 10, 64); err == nil {
			a.coveredAll = max(a.coveredAll, seq)
		}
		return
	}
	if seq, err := strconv.ParseUint(last, 10, 64); err == nil && seq > a.coveredTo[src] {
		a.coveredTo[src] = seq
	}
}

// lookUpCovered reads, for each source with entries in, the last accepted
// batch stored, and the last of earlier versions' batches.
func (a *acceptor) lookUpCovered(ctx context.Context, in []acceptInput) error {
	subjects := []string{subjLegacyAccepted}
	for _, b := range in {
		for _, src := range sourcesOf(b.envs) {
			if !slices.Contains(subjects, ownAccepted(src)) {
				subjects = append(subjects, ownAccepted(src))
			}
		}
	}
	for _, subj := range subjects {
		m, err := a.ingress.GetLastMsgForSubject(ctx, subj)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("finding what was accepted: %w", err)
		}
		a.noteCovered(m.Subject)
	}
	return nil
}

// accept writes the entries of in not accepted before, less resends, as
// one accepted batch per source.
func (a *acceptor) accept(ctx context.Context, in []acceptInput) error {
	r := a.r
	last := in[len(in)-1].seq
	now := time.Now().UTC()
	var accepted []*envelope.Envelope
	// Each record written, and what to count once it is stored for the
	// first time: a batch judged again (by another process given it, or
	// after a failed write) writes the same records, which the store
	// recognises as duplicates, so its resends are not counted twice.
	type noted struct {
		f     jetstream.PubAckFuture
		count prometheus.Counter
	}
	var futs []noted
	// waited counts the futures already waited for; whatever returns,
	// those already acknowledged are counted (a retry finds their records
	// stored and does not count them), without waiting for the rest.
	waited := 0
	counted := func(ack *jetstream.PubAck, n noted) {
		if n.count != nil && !ack.Duplicate {
			n.count.Inc()
		}
	}
	defer func() {
		for _, n := range futs[waited:] {
			select {
			case ack := <-n.f.Ok():
				counted(ack, n)
			default:
			}
		}
	}()
	note := func(id, dedupe string, rec audit.Record, count prometheus.Counter) error {
		f, err := r.audit.WriteAsync(id, dedupe, rec)
		if err != nil {
			return err
		}
		futs = append(futs, noted{f, count})
		return nil
	}
	for _, b := range in {
		for _, env := range b.envs {
			if a.covered(env, b.seq) {
				continue
			}
			key := dedupeKeyOf(env)
			content := a.idx.contentHash(env)
			id, same, found := a.idx.lookup(key, content)
			if found && id != env.ID && !same {
				// The sender reused a control id for a different message:
				// keep it under a key that includes its content.
				legacy := key + "|" + audit.Hash(env.Raw)[:16]
				env.DedupeKey = reuseKey(env)
				key = env.DedupeKey
				firstID := id
				id, same, found = a.idx.lookup(key, content)
				if !found {
					// Kept before 2026-12-05 under a key hashing the whole
					// message: a byte-identical resend still finds it
					// while that key is in the dedupe window.
					id, same, found = a.idx.lookup(legacy, content)
				}
				// Unless it resends the message already kept under that
				// key, it is routed as a message of its own: count it and
				// say why.
				if !found || id == env.ID || !same {
					if err := note(env.ID, reuseDedupe(env.ID), reusedRecord(env, firstID, now),
						r.o.Metrics.DataQuality.WithLabelValues(env.Source, DQControlIDReused)); err != nil {
						return err
					}
				}
			}
			if found && id != env.ID && same {
				if err := note(id, "dup|"+env.ID, audit.Record{Time: now, MessageID: id, Event: audit.Duplicate, Source: env.Source, Outcome: "duplicate",
					Reason: "resent as message " + env.ID + "; not routed again", Hash: audit.Hash(env.Raw)},
					r.o.Metrics.Duplicates.WithLabelValues(env.Source)); err != nil {
					return err
				}
				if err := note(env.ID, resendDedupe(env.ID), resendRecord(env, id, b.seq, now), nil); err != nil {
					return err
				}
				continue
			}
			// Added before the batch is stored so later entries see it; a
			// failed write retries this batch, whose entries then find
			// themselves.
			a.idx.add(key, env.ID, content, now)
			accepted = append(accepted, env)
		}
	}
	// One accepted batch per source, so each route reads only its own
	// source's batches.
	for _, src := range sourcesOf(accepted) {
		var group []*envelope.Envelope
		// noRoute are the records of accepted messages no route takes: one
		// audit batch beside the accepted batch, not a write each.
		var noRoute []audit.Record
		for _, env := range accepted {
			if env.Source != src {
				continue
			}
			group = append(group, env)
			if !r.sourceRouted[src] {
				noRoute = append(noRoute, audit.Record{Time: now, MessageID: env.ID, Event: audit.Filtered, Source: src,
					Outcome: "no-route", Reason: "no loaded route takes input from this source"})
			}
		}
		data, err := encodeBatch(group)
		if err != nil {
			return err
		}
		out := nats.NewMsg(AcceptedSubject(src, last))
		out.Data = data
		out.Header.Set(jetstream.MsgIDHeader, "acc|"+strconv.FormatUint(last, 10)+"|"+src)
		out.Header[headerSources] = []string{src}
		ack, err := r.js.PublishMsg(ctx, out)
		if err != nil {
			return fmt.Errorf("storing accepted batch: %w", err)
		}
		if !ack.Duplicate {
			// Nothing else can have been accepted since catchUp: the
			// ingest log lets one batch be outstanding.
			a.idx.setApplied(ack.Sequence)
		}
		a.noteCovered(out.Subject)
		r.o.Metrics.Accepted.WithLabelValues(src).Add(float64(len(group)))
		// Named by the accepted batch, where a trail looks; a retry finds
		// the same batch (a duplicate's ack carries its sequence) and
		// writes the same audit batch.
		if err := writeAuditBatch(ctx, r, "accept", "no-route", span{start: ack.Sequence, end: ack.Sequence}, noRoute); err != nil {
			return fmt.Errorf("writing accept records: %w", err)
		}
	}
	for ; waited < len(futs); waited++ {
		ack, err := waitAck(futs[waited].f)
		if err != nil {
			waited++ // its answer was taken
			return fmt.Errorf("writing accept records: %w", err)
		}
		counted(ack, futs[waited])
	}
	return nil
}
