// Package router moves messages through JetStream: it stores inbound
// messages (the adapter.Host inbound adapters use), runs each route's
// partitioned consumers, runs each destination's delivery consumers with
// retry and dead-lettering, and replays dead letters.
package router

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/junction-fhir/junction/pkg/adapter"
	"github.com/junction-fhir/junction/pkg/audit"
	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/fault"
	"github.com/junction-fhir/junction/pkg/store"
	"github.com/junction-fhir/junction/pkg/telemetry"
)

// Ingester stores inbound messages. It implements adapter.Host.
type Ingester struct {
	js jetstream.JetStream
	// note is told each write's outcome (Store.NoteIngest).
	note       func(error)
	audit      *audit.Writer
	partitions int
	ids        *IDGen
	log        *slog.Logger
	metrics    *telemetry.Metrics
	// group is nil when each message is written on its own.
	group *committer
	// backlog, if set, refuses input while routing is too far behind.
	backlog *Backlog
	// writeFailed, if set, says why the store cannot write now
	// (Store.WriteFailed), so input is refused at once.
	writeFailed func() error
}

// LimitBacklog makes Ingest refuse, unstored, the messages of an input
// whose backlog b last found over its limit. Call it before the inbound
// adapters start; the router given b samples it.
func (i *Ingester) LimitBacklog(b *Backlog) { i.backlog = b }

// NewIngester returns an ingester on st.
// aw writes its audit records (nil makes a writer of its own).
func NewIngester(st *store.Store, log *slog.Logger, m *telemetry.Metrics, aw *audit.Writer) *Ingester {
	if aw == nil {
		aw = audit.NewWriter(st.JS)
	}
	i := &Ingester{js: st.JS, note: st.NoteIngest, audit: aw, partitions: st.Partitions(), ids: &IDGen{}, log: log, metrics: m, writeFailed: st.WriteFailed}
	if st.GroupCommit() {
		i.group = newCommitter(st.JS, m, st.NoteIngest, st.RefusedForGood)
	}
	return i
}

// Close stops group commit after answering every queued message, or
// returns ctx's error when ctx ends first (the messages are answered all
// the same, in the background: see committer.answerQueued). Call it after
// the inbound adapters have stopped.
func (i *Ingester) Close(ctx context.Context) error {
	if i.group != nil {
		return i.group.close(ctx)
	}
	return nil
}

// IngressSubject is the subject a message from source in partition p is stored on.
func IngressSubject(source string, p int) string {
	return store.SubjIngress + "." + source + "." + strconv.Itoa(p)
}

// Ingest stores env and returns once JetStream has acknowledged the write
// (which the embedded server gives only after fsync). A resend of a stored
// message is recognised by its dedupe key within the stream's window. With
// group commit, the write is part of a batch (see groupcommit.go).
func (i *Ingester) Ingest(ctx context.Context, env *envelope.Envelope) (adapter.IngestResult, error) {
	if env.TraceParent == "" {
		// The receive span's context, which routing continues: the
		// ingest span below is its sibling's parent, not theirs.
		c := propagation.MapCarrier{}
		propagation.TraceContext{}.Inject(ctx, c)
		env.TraceParent = c.Get("traceparent")
	}
	// The store's part of the acknowledgement's latency (with group
	// commit, the wait for the batch's fsync), on the receive span's
	// tracer: ids and outcomes only.
	ctx, span := trace.SpanFromContext(ctx).TracerProvider().Tracer("junction").Start(ctx, "ingest",
		trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(attribute.String("junction.message_id", env.ID), attribute.String("junction.input", env.Source)))
	defer span.End()
	if err := i.backlog.refuse(env.Source); err != nil {
		if i.metrics != nil {
			i.metrics.Rejected.WithLabelValues(env.Source, string(fault.CodeBacklog)).Inc()
		}
		endIngest(span, adapter.IngestResult{}, err)
		return adapter.IngestResult{}, err
	}
	if i.writeFailed != nil {
		if err := i.writeFailed(); err != nil {
			// Asking the store would wait out the write's timeout for no
			// answer: refused unstored, "resend later", at once.
			if i.metrics != nil {
				i.metrics.Rejected.WithLabelValues(env.Source, string(fault.CodeStoreUnavailable)).Inc()
			}
			err = fault.Wrap(fault.Transient, fault.CodeStoreUnavailable, "storing inbound messages: the store cannot write", err)
			endIngest(span, adapter.IngestResult{}, err)
			return adapter.IngestResult{}, err
		}
	}
	res, err := i.ingest(ctx, env)
	endIngest(span, res, err)
	if err != nil && i.metrics != nil && ctx.Err() == nil {
		// (A sender gone before the store answered is no store fault.)
		// Counted by why, as refusals of input are: a sender's negative
		// answer for want of a store reads apart from one for its message.
		code := fault.CodeOf(err)
		if code == "" || code == fault.CodeInternal {
			code = fault.CodeStoreUnavailable
		}
		i.metrics.Rejected.WithLabelValues(env.Source, string(code)).Inc()
	}
	return res, err
}

// endIngest records how an ingest went on its span (which the caller
// ends): the stored message's id (a resend's original), or the refusal's
// fault code with an error status.
func endIngest(span trace.Span, res adapter.IngestResult, err error) {
	if err != nil {
		span.SetAttributes(attribute.String(attrOutcome, "refused"), attribute.String(attrCode, string(fault.CodeOf(err))))
		span.SetStatus(codes.Error, reasonOf(err))
		return
	}
	outcome := "stored"
	if res.Duplicate {
		outcome = "duplicate"
	}
	span.SetAttributes(attribute.String(attrOutcome, outcome), attribute.String("junction.message_id", res.ID))
}

// ingest is Ingest once the backlog let the message in.
func (i *Ingester) ingest(ctx context.Context, env *envelope.Envelope) (adapter.IngestResult, error) {
	if env.ID == "" {
		env.ID = i.ids.New()
	}
	if i.group != nil {
		// Resends are recognised when the batch is split, and counted
		// there; the sender gets the same positive answer either way.
		if err := i.group.commit(ctx, env); err != nil {
			return adapter.IngestResult{}, err
		}
		return adapter.IngestResult{ID: env.ID}, nil
	}
	ack, err := i.js.PublishMsg(ctx, ingressMsg(env))
	i.note(err)
	if err != nil {
		return adapter.IngestResult{}, fault.Wrap(fault.Transient, fault.CodeStoreUnavailable, "storing inbound message", err)
	}
	res := adapter.IngestResult{ID: env.ID, Duplicate: ack.Duplicate}
	if !ack.Duplicate {
		// The received record is written from the stored message by the
		// receipt recorder, so the acknowledgement waits for one write only.
		if i.metrics != nil {
			i.metrics.Accepted.WithLabelValues(env.Source).Inc()
		}
		return res, nil
	}
	// The stream gives the original's sequence; find its id.
	if st, err := i.js.Stream(ctx, store.StreamIngress); err == nil {
		if raw, err := st.GetMsg(ctx, ack.Sequence); err == nil {
			res.ID = raw.Header.Get(envelope.HeaderID)
			if !sameMessage(env, raw.Data) {
				// A reused control id on a different message: store it
				// under a key that includes its content (see the splitter).
				m := ingressMsg(env)
				m.Header.Set(jetstream.MsgIDHeader, reuseKey(env))
				ack2, err := i.js.PublishMsg(ctx, m)
				if err != nil {
					return adapter.IngestResult{}, fault.Wrap(fault.Transient, fault.CodeStoreUnavailable, "storing inbound message", err)
				}
				if !ack2.Duplicate {
					return i.storedReuse(ctx, env, res.ID), nil
				}
				// A resend of the message already kept under that key (the
				// inbound adapter counts it): named, and recorded on its
				// trail below, as that message, like any resend.
				orig, err := st.GetMsg(ctx, ack2.Sequence)
				if err != nil || orig.Header.Get(envelope.HeaderID) == "" {
					return adapter.IngestResult{ID: env.ID, Duplicate: true}, nil
				}
				ack, res.ID = ack2, orig.Header.Get(envelope.HeaderID)
			}
		}
	}
	rec := audit.Record{Time: time.Now().UTC(), MessageID: res.ID, Event: audit.Duplicate, Source: env.Source, Outcome: "duplicate",
		Reason: "resend of an already stored message; not routed again", Hash: audit.Hash(env.Raw), Stream: store.StreamIngress, Seq: ack.Sequence}
	if err := i.audit.Write(ctx, res.ID, "", rec); err != nil {
		// The sender still gets its positive answer: the message is stored.
		i.log.Warn("audit write failed", "message_id", res.ID, "err", err)
	}
	return res, nil
}

// storedReuse counts and records env, stored under its reuse key because
// its control id was the stored message origID's, and returns its result.
func (i *Ingester) storedReuse(ctx context.Context, env *envelope.Envelope, origID string) adapter.IngestResult {
	if i.metrics != nil {
		i.metrics.DataQuality.WithLabelValues(env.Source, DQControlIDReused).Inc()
		i.metrics.Accepted.WithLabelValues(env.Source).Inc()
	}
	if err := i.audit.Write(ctx, env.ID, reuseDedupe(env.ID), reusedRecord(env, origID, time.Now().UTC())); err != nil {
		// The message is stored; the sender still gets its answer.
		i.log.Warn("audit write failed", "message_id", env.ID, "err", err)
	}
	return adapter.IngestResult{ID: env.ID}
}

// ingressMsg is env as stored on the ingress stream: the raw bytes on the
// source's partition subject, its metadata in headers, and its dedupe key
// (or, lacking one, its id) as Nats-Msg-Id.
func ingressMsg(env *envelope.Envelope) *nats.Msg {
	m := nats.NewMsg(IngressSubject(env.Source, env.Partition))
	m.Header = env.Header()
	m.Data = env.Raw
	key := env.DedupeKey
	if key == "" {
		key = env.ID
	}
	m.Header.Set(jetstream.MsgIDHeader, key)
	return m
}

// Quarantine keeps unparseable input, and how many bytes came when raw is
// only their start, and returns the entry's id.
func (i *Ingester) Quarantine(ctx context.Context, source string, raw []byte, received int, reason string) (string, error) {
	m := nats.NewMsg(store.SubjQuarantine + "." + source)
	id := i.ids.New()
	m.Header.Set(envelope.HeaderID, id)
	m.Header.Set(envelope.HeaderSource, source)
	m.Header.Set(envelope.HeaderReason, reason)
	m.Header.Set(envelope.HeaderReceived, time.Now().UTC().Format(time.RFC3339Nano))
	if received > len(raw) {
		m.Header.Set(envelope.HeaderReceivedBytes, strconv.Itoa(received))
	}
	m.Data = raw
	if _, err := i.js.PublishMsg(ctx, m); err != nil {
		return "", fmt.Errorf("storing quarantined input: %w", err)
	}
	if i.metrics != nil {
		i.metrics.QuarantineSize.Inc()
	}
	return id, nil
}

// Partition maps a patient key to a partition; an empty key gets a random
// one (no ordering to keep).
func (i *Ingester) Partition(patientKey string) int {
	if patientKey == "" {
		return rand.IntN(i.partitions)
	}
	return partitionOf(patientKey, i.partitions)
}

// NewID returns a new message id.
func (i *Ingester) NewID() string { return i.ids.New() }

var _ adapter.Host = (*Ingester)(nil)
