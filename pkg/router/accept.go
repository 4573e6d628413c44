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

	"github.com/junction-fhir/junction/pkg/audit"
	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/fault"
	"github.com/junction-fhir/junction/pkg/store"
)

// The batch pipeline (router.pipeline: batch). The group-commit batch
// stays one stream message through every stage, so the store writes per
// batch, not per message:
//
//   - accept: takes one ingest-log batch at a time, drops resends found in
//     an in-memory dedupe index (rebuilt at start, and kept current, from
//     its own output), and writes one accepted batch per source on the
//     ingress stream (subject junction.in._acc.<source>.<ingest-log
//     sequence>). The accepted batch is the messages' receipt: no record
//     per message is written.
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
// is shorter (about 60 bytes a key).
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
	idx     *dedupeIndex
	// built is set once the index holds the dedupe window.
	built bool
}

func newAcceptor(r *Router, ingress jetstream.Stream, window time.Duration) *acceptor {
	return &acceptor{r: r, ingress: ingress, idx: newDedupeIndex(window, dedupeMaxKeys)}
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
	cfg := jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{SubjAccepted + ".>"}, DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &start,
	}
	if first, err := a.ingress.GetMsg(ctx, 0, jetstream.WithGetMsgSubject(SubjAccepted+".>")); err == nil && last.Sequence > maxRebuildBatches &&
		first.Sequence < last.Sequence-maxRebuildBatches {
		cfg.DeliverPolicy, cfg.OptStartTime, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, nil, last.Sequence-maxRebuildBatches
	}
	c, err := a.ingress.OrderedConsumer(ctx, cfg)
	if err != nil {
		return fmt.Errorf("reading accepted batches: %w", err)
	}
	for a.idx.appliedSeq() < last.Sequence {
		b, err := c.Fetch(256, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return fmt.Errorf("reading accepted batches: %w", err)
		}
		n := 0
		for m := range b.Messages() {
			n++
			meta, err := m.Metadata()
			if err != nil {
				return fmt.Errorf("reading accepted batches: %w", err)
			}
			a.apply(m.Data(), meta.Timestamp)
			a.idx.setApplied(meta.Sequence.Stream)
		}
		if err := b.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return fmt.Errorf("reading accepted batches: %w", err)
		}
		if n == 0 {
			// Everything in the window is read (older batches are out of it).
			a.idx.setApplied(last.Sequence)
		}
	}
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

// handle accepts one ingest-log batch.
func (a *acceptor) handle(ctx context.Context, msgs []jetstream.Msg) error {
	ctx = context.WithoutCancel(ctx)
	r := a.r
	for _, m := range msgs {
		meta, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("reading batch metadata: %w", err)
		}
		seq := meta.Sequence.Stream
		envs, err := decodeBatch(m.Data())
		if err != nil {
			if _, derr := r.deadLetter(ctx, "ingest", "accept", batchHeader(m.Headers(), seq), m.Data(), fault.Wrap(fault.Permanent, fault.CodeInternal, "unreadable ingest batch", err)); derr != nil {
				return derr
			}
			continue
		}
		// The index is built on the first batch, not at start, so a store
		// that is briefly unavailable delays ingest rather than failing the
		// start; a failure here retries the batch.
		if !a.built {
			if err := a.rebuild(ctx); err != nil {
				return err
			}
			a.built = true
		}
		if err := a.catchUp(ctx); err != nil {
			return err
		}
		now := time.Now().UTC()
		var accepted []*envelope.Envelope
		var futs []jetstream.PubAckFuture
		note := func(id, dedupe string, rec audit.Record) error {
			f, err := r.audit.WriteAsync(id, dedupe, rec)
			if err != nil {
				return err
			}
			futs = append(futs, f)
			return nil
		}
		for _, env := range envs {
			key := dedupeKeyOf(env)
			content := a.idx.contentHash(env)
			id, same, found := a.idx.lookup(key, content)
			if found && id != env.ID && !same {
				// The sender reused a control id for a different message:
				// keep it under a key that includes its content.
				env.DedupeKey = key + "|" + audit.Hash(env.Raw)[:16]
				key = env.DedupeKey
				r.o.Metrics.DataQuality.WithLabelValues(env.Source, "control_id_reused").Inc()
				id, same, found = a.idx.lookup(key, content)
			}
			if found && id != env.ID && same {
				r.o.Metrics.Duplicates.WithLabelValues(env.Source).Inc()
				if err := note(id, "dup|"+env.ID, audit.Record{Time: now, MessageID: id, Event: audit.Duplicate, Source: env.Source, Outcome: "duplicate",
					Reason: "resend of an already stored message; not routed again", Hash: audit.Hash(env.Raw)}); err != nil {
					return err
				}
				continue
			}
			// Added before the batch is stored so later entries of the same
			// batch see it; a failed write retries this batch, whose
			// entries then find themselves.
			a.idx.add(key, env.ID, content, now)
			accepted = append(accepted, env)
		}
		// One accepted batch per source, so each route reads only its
		// own source's batches.
		for _, src := range sourcesOf(accepted) {
			var group []*envelope.Envelope
			// noRoute are the records of accepted messages no route
			// takes: one audit batch beside the accepted batch, not a
			// write each.
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
			out := nats.NewMsg(AcceptedSubject(src, seq))
			out.Data = data
			out.Header.Set(jetstream.MsgIDHeader, "acc|"+strconv.FormatUint(seq, 10)+"|"+src)
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
			// Named by the accepted batch, where a trail looks; a retry
			// finds the same batch (a duplicate's ack carries its
			// sequence) and writes the same audit batch.
			if err := writeAuditBatch(ctx, r, "accept", "no-route", span{start: ack.Sequence, end: ack.Sequence}, noRoute); err != nil {
				return fmt.Errorf("writing accept records: %w", err)
			}
		}
		for _, f := range futs {
			if _, err := wait(f); err != nil {
				return fmt.Errorf("writing accept records: %w", err)
			}
		}
	}
	return nil
}
