package router

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/junction-fhir/junction/pkg/adapter"
	"github.com/junction-fhir/junction/pkg/audit"
	"github.com/junction-fhir/junction/pkg/consent"
	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/fault"
	"github.com/junction-fhir/junction/pkg/patient"
	"github.com/junction-fhir/junction/pkg/route"
	"github.com/junction-fhir/junction/pkg/rules"
	"github.com/junction-fhir/junction/pkg/store"
	"github.com/junction-fhir/junction/pkg/telemetry"
)

// Header naming destinations a replay is limited to (comma-separated).
const headerOnly = "Junction-Only-Destinations"

// Retry is a destination's retry policy.
type Retry struct {
	MaxAttempts int           `yaml:"max_attempts"`
	Initial     time.Duration `yaml:"initial"`
	Max         time.Duration `yaml:"max"`
	Multiplier  float64       `yaml:"multiplier"`
	// Timeout bounds one attempt.
	Timeout time.Duration `yaml:"timeout"`
}

// DefaultRetry retries for about half an hour before dead-lettering.
func DefaultRetry() Retry {
	return Retry{MaxAttempts: 30, Initial: time.Second, Max: time.Minute, Multiplier: 2, Timeout: 30 * time.Second}
}

// Validate reports every problem with r.
func (r *Retry) Validate() []error {
	var errs []error
	if r.MaxAttempts < 1 {
		errs = append(errs, errors.New("retry.max_attempts: must be at least 1"))
	}
	if r.Initial <= 0 || r.Max < r.Initial {
		errs = append(errs, errors.New("retry: initial must be positive and max at least initial"))
	}
	if r.Multiplier < 1 {
		errs = append(errs, errors.New("retry.multiplier: must be at least 1"))
	}
	if r.Timeout <= 0 {
		errs = append(errs, errors.New("retry.timeout: must be positive"))
	}
	return errs
}

// Delay is the wait before attempt n+1 after attempt n failed.
func (r Retry) Delay(n int) time.Duration {
	d := float64(r.Initial)
	for i := 1; i < n; i++ {
		d *= r.Multiplier
		if d >= float64(r.Max) {
			return r.Max
		}
	}
	return time.Duration(d)
}

// Destination is a running outbound component and its policy.
type Destination struct {
	Name   string
	Type   string
	Out    adapter.Outbound
	Retry  Retry
	Closed bool
	// Internal reports a destination that keeps what it is given inside
	// Junction (the consent store, the opt-out list): it discloses
	// nothing, so no consent is asked for it, at routing or before
	// sending.
	Internal bool
	// ODS is the ODS code of the organisation the destination delivers
	// to, if configured, put on consent records
	// (audit.Record.RecipientODS).
	ODS string
}

// Options configure a Router.
type Options struct {
	Store        *store.Store
	Routes       []*route.Route
	Translators  map[string]adapter.Translator // by source name
	Destinations map[string]*Destination
	Decider      consent.Decider
	Logger       *slog.Logger
	// ConfigFile is the engine's config file ("" for the defaults), named
	// in the commands the logs suggest so they reach this engine.
	ConfigFile string
	Metrics    *telemetry.Metrics
	Tracer     trace.Tracer
	// Batch is the most messages an unordered stage (receipt records)
	// takes at once; ordered stages take one at a time per partition.
	Batch int
	// AckWait is how long a batch may go unacknowledged before redelivery
	// (it is kept alive while being processed).
	AckWait time.Duration
	// Audit writes the audit records (nil makes a writer of its own).
	Audit *audit.Writer
	// Pipeline is PipelineMessage (each message its own store write at
	// every stage) or PipelineBatch (see accept.go).
	Pipeline string
	// DedupeWindow is how long the batch pipeline recognises resends.
	DedupeWindow time.Duration
	// DeliveryConcurrency is how many partitions the batch pipeline sends
	// to one destination at once.
	DeliveryConcurrency int
	// SpanBatches is how many stored batches a batch-pipeline stage that
	// has fallen behind takes at once (see spanner); 1 takes one.
	SpanBatches int
	// PatientHash turns a translation's patient key into the keyed hash
	// that audit records carry (audit.Record.Patient), so a patient's
	// disclosures can be found without patient data in the trail. Nil
	// leaves records without it.
	PatientHash func(patientKey string) string
	// Patients is the patient index: each message is applied to it once
	// per source, after translation, and every route reads the patient's
	// record as the CEL variable patient and for consent (restricted
	// patients). Nil leaves patient empty.
	Patients *patient.Index
	// OptedOut reports whether a patient (by NHS number) is on the
	// national data opt-out list as it stands, for the CEL variable
	// patient.consent.optedOut; it is asked once per message of a known
	// patient, with the index read. Nil leaves optedOut as the index
	// records it (false).
	OptedOut func(ctx context.Context, nhsNumber string) (bool, error)
	// PatientIndexed, if set, is given each record the index returned for
	// a message, right after the message was applied, to read only. It is
	// on the message path, so it must not block: the PDS enricher queues
	// the patient for a background lookup there. Nil does nothing.
	PatientIndexed func(rec *patient.Record)
	// SourceODS gives, by input name, the ODS code of the organisation
	// the input's data comes from, put on consent records
	// (audit.Record.SourceODS).
	SourceODS map[string]string
	// ConsentChanges returns when the writes consent decisions about the
	// patients with keyed hashes hashes rest on were last made
	// (consent.Store.LastChanges). Before each attempt at a payload whose
	// consent was decided RecheckAfter or longer ago, the delivery stage
	// asks it; a payload whose patients' Consents or opt-out list changed
	// since is not sent as queued but routed again for its destination
	// alone, so consent is decided anew (see recheck.go). Nil: payloads
	// are sent as decided.
	ConsentChanges func(ctx context.Context, hashes []string, optOut bool) (consent.Changes, error)
	// RecheckAfter is how old a payload's consent decision may be before
	// ConsentChanges is asked about it; 0 asks before every attempt.
	RecheckAfter time.Duration
	// Backlog, if set with a limit, is sampled every BacklogEvery (default
	// 1s) so the ingester refuses new input while an input's stored
	// messages not yet routed are over the limit (see backlog.go).
	Backlog      *Backlog
	BacklogEvery time.Duration
}

// Pipelines.
const (
	PipelineMessage = "message"
	PipelineBatch   = "batch"
)

// Router runs route and delivery consumers.
type Router struct {
	o     Options
	js    jetstream.JetStream
	audit *audit.Writer
	prop  propagation.TextMapPropagator
	// sourceRouted says which sources at least one route reads.
	sourceRouted map[string]bool
	// patientRead says which sources have a route whose expressions use
	// the CEL variable patient; only for those is the opt-out flag it
	// shows read per message.
	patientRead map[string]bool
	cancel      context.CancelFunc
	wg          sync.WaitGroup
	// failLog limits "delivery attempt failed" lines to one per
	// destination every few seconds (metrics count every attempt).
	failLog *logLimiter
	// deciders are the route workers by route name, which decide consent
	// again for a payload whose patient's consent changed (recheck.go).
	deciders map[string]*routeWorker
	// saidLost are the runs of ingest log batches the start found lost
	// and reported (reportIngestLoss): the accept stage, passing over
	// them later, records them but does not report them again.
	saidLost []LostRun
	mu       sync.Mutex
	done     bool
}

// New returns a router; call Start to run it.
func New(o Options) *Router {
	if o.Batch <= 0 {
		o.Batch = 64
	}
	if o.AckWait <= 0 {
		o.AckWait = 30 * time.Second
	}
	if o.Decider == nil {
		o.Decider = consent.DefaultPolicy{}
	}
	if o.Pipeline == "" {
		o.Pipeline = PipelineMessage
	}
	if o.DedupeWindow <= 0 {
		o.DedupeWindow = time.Hour
	}
	if o.DeliveryConcurrency <= 0 {
		o.DeliveryConcurrency = 16
	}
	if o.SpanBatches <= 0 {
		o.SpanBatches = defaultSpanLimits.batches
	}
	routed, patientRead := map[string]bool{}, map[string]bool{}
	for _, rt := range o.Routes {
		routed[rt.Source] = true
		if rt.Uses(rules.VarPatient) {
			patientRead[rt.Source] = true
		}
	}
	if o.Audit == nil {
		o.Audit = audit.NewWriter(o.Store.JS)
	}
	return &Router{o: o, js: o.Store.JS, audit: o.Audit, prop: propagation.TraceContext{}, sourceRouted: routed, patientRead: patientRead, failLog: newLogLimiter(failLogInterval)}
}

// Start creates every durable consumer, then runs them.
func (r *Router) Start(ctx context.Context) error {
	n := r.o.Store.Partitions()
	var pcs []*partitionConsumer
	shared := map[string]*sharedTranslator{}
	for src, t := range r.o.Translators {
		shared[src] = newSharedTranslator(t, func(env *envelope.Envelope, tr *adapter.Translation) {
			for _, dq := range tr.DataQuality {
				r.o.Metrics.DataQuality.WithLabelValues(env.Source, dq).Inc()
			}
			if tr.Relayed {
				r.o.Metrics.Relayed.WithLabelValues(env.Source).Inc()
			}
		})
		// Without a patient index, relayed messages still need their
		// patients read from their PIDs (indexPatient).
		shared[src].index = r.indexMessage
	}
	for _, rt := range r.o.Routes {
		tr, ok := shared[rt.Source]
		if !ok {
			return fmt.Errorf("route %s: no translator for source %q", rt.Name, rt.Source)
		}
		w := newRouteWorker(r, rt, tr)
		if r.deciders == nil {
			r.deciders = map[string]*routeWorker{}
		}
		r.deciders[rt.Name] = w
		for p := range n {
			pcs = append(pcs, &partitionConsumer{
				stream: store.StreamIngress, durable: "route-" + rt.Name + "-p" + strconv.Itoa(p),
				filter: IngressSubject(rt.Source, p), batch: 1, ackWait: r.o.AckWait,
				deliver: jetstream.DeliverNewPolicy, log: r.o.Logger, handle: w.handle,
			})
		}
	}
	ingress, err := r.stream(ctx, store.StreamIngress)
	if err != nil {
		return fmt.Errorf("opening ingress stream: %w", err)
	}
	if r.o.Pipeline == PipelineBatch {
		outbound, err := r.stream(ctx, store.StreamOutbound)
		if err != nil {
			return fmt.Errorf("opening outbound stream: %w", err)
		}
		ingestLog, err := r.stream(ctx, store.StreamIngestLog)
		if err != nil {
			return fmt.Errorf("opening ingest log: %w", err)
		}
		acc := newAcceptor(r, ingress, ingestLog, r.o.DedupeWindow)
		start, err := handoverStart(ctx, r.js, acceptDurable, splitterDurable)
		if err != nil {
			return err
		}
		r.reportIngestLoss(ctx, acceptDurable, start)
		pcs = append(pcs, &partitionConsumer{
			stream: store.StreamIngestLog, durable: acceptDurable, filter: ingestLogBatches,
			batch: 1, ackWait: r.o.AckWait, deliver: start.policy, startSeq: start.seq, log: r.o.Logger, handle: acc.handle,
		})
		for _, rt := range r.o.Routes {
			durable := "route-" + rt.Name + "-b"
			in, err := acceptedInputOf(ctx, r.js, ingress, durable, rt.Source)
			if err != nil {
				return err
			}
			w := &batchRouteWorker{w: newRouteWorker(r, rt, shared[rt.Source]), spans: &spanner{
				js: r.js, st: ingress, marker: spanMarkerSubject(store.SubjIngress, rt.Name), input: in.input, takes: in.takes,
				limits: spanLimits{batches: r.o.SpanBatches, entries: defaultSpanLimits.entries, bytes: defaultSpanLimits.bytes}, count: ingestFormat.count,
				relevant: sourceIn(rt.Source),
			}}
			pcs = append(pcs, &partitionConsumer{
				stream: store.StreamIngress, durable: durable, filters: in.filters,
				batch: 1, ackWait: r.o.AckWait, deliver: jetstream.DeliverNewPolicy, log: r.o.Logger, handle: w.handle,
			})
		}
		for _, d := range r.o.Destinations {
			w := &batchDeliveryWorker{r: r, d: d, concurrency: r.o.DeliveryConcurrency, spans: &spanner{
				js: r.js, st: outbound, marker: spanMarkerSubject(store.SubjOutbound, d.Name), input: OutboundBatchSubject(d.Name),
				limits: spanLimits{batches: r.o.SpanBatches, entries: defaultSpanLimits.entries, bytes: defaultSpanLimits.bytes}, count: outFormat.count,
			}}
			pcs = append(pcs, &partitionConsumer{
				stream: store.StreamOutbound, durable: "dest-" + d.Name + "-b", filter: OutboundBatchSubject(d.Name),
				batch: 1, ackWait: r.o.AckWait, deliver: jetstream.DeliverAllPolicy, log: r.o.Logger, handle: w.handle,
			})
		}
	} else {
		start, err := handoverStart(ctx, r.js, splitterDurable, acceptDurable)
		if err != nil {
			return err
		}
		r.reportIngestLoss(ctx, splitterDurable, start)
		ingestLog, err := r.stream(ctx, store.StreamIngestLog)
		if err != nil {
			return fmt.Errorf("opening ingest log: %w", err)
		}
		sp := &splitter{r: r, js: r.js, audit: r.audit, ingress: ingress, log: ingestLog, onDup: func(src string) { r.o.Metrics.Duplicates.WithLabelValues(src).Inc() }}
		pcs = append(pcs, &partitionConsumer{
			stream: store.StreamIngestLog, durable: splitterDurable, filter: store.SubjIngestLog + ".>",
			batch: 1, ackWait: r.o.AckWait, deliver: start.policy, startSeq: start.seq, log: r.o.Logger, handle: sp.handle,
		})
		pcs = append(pcs, &partitionConsumer{
			stream: store.StreamIngress, durable: "audit-receipts", filter: store.SubjIngress + ".>",
			batch: r.o.Batch, ackWait: r.o.AckWait, deliver: jetstream.DeliverAllPolicy, log: r.o.Logger, handle: r.recordReceipts,
		})
	}
	for _, d := range r.o.Destinations {
		for p := range n {
			// One worker per partition: it keeps per-batch state.
			w := &deliveryWorker{r: r, d: d}
			pcs = append(pcs, &partitionConsumer{
				stream: store.StreamOutbound, durable: "dest-" + d.Name + "-p" + strconv.Itoa(p),
				filter: OutboundSubject(d.Name, p), batch: 1, ackWait: r.o.AckWait,
				deliver: jetstream.DeliverAllPolicy, log: r.o.Logger, handle: w.handle, acked: w.acked,
			})
		}
	}
	ics, err := r.indexConsumers(ctx, ingress, shared)
	if err != nil {
		return err
	}
	pcs = append(pcs, ics...)
	cs := make([]jetstream.Consumer, len(pcs))
	// While the store is away every consumer fails its fetches: one line
	// for them all every few seconds says so.
	fetchLog := newLogLimiter(failLogInterval)
	for i, pc := range pcs {
		pc.fetchLog = fetchLog
		pc.failing = r.o.Metrics.FailingPartitions.WithLabelValues(consumerStage(pc.durable))
		// Several Junctions starting at once against a busy cluster can
		// take longer than one request's timeout to create a replicated
		// consumer; that is tried again rather than ending the start.
		var c jetstream.Consumer
		if err := r.o.Store.WhenSettled(ctx, "consumer "+pc.durable, func() (err error) {
			c, err = pc.consumer(ctx, r.js)
			return err
		}); err != nil {
			return err
		}
		cs[i] = c
	}
	rctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	for i, pc := range pcs {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			pc.run(rctx, cs[i])
		}()
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		r.watchQueues(rctx)
	}()
	if r.o.Backlog.Limit() > 0 {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			r.watchBacklog(rctx)
		}()
	}
	return nil
}

// stream looks up a stream, trying again while the cluster settles.
func (r *Router) stream(ctx context.Context, name string) (st jetstream.Stream, err error) {
	err = r.o.Store.WhenSettled(ctx, "stream "+name, func() (err error) {
		st, err = r.js.Stream(ctx, name)
		return err
	})
	return st, err
}

// Shutdown stops fetching, lets in-flight batches finish (or leaves them
// unacknowledged for redelivery when ctx expires first) and returns.
func (r *Router) Shutdown(ctx context.Context) error {
	r.mu.Lock()
	if r.done || r.cancel == nil {
		r.done = true
		r.mu.Unlock()
		return nil
	}
	r.done = true
	r.mu.Unlock()
	r.cancel()
	ch := make(chan struct{})
	go func() { r.wg.Wait(); close(ch) }()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("router drain: %w", ctx.Err())
	}
}

// OutboundSubject is where deliveries for destination d in partition p go.
func OutboundSubject(dest string, p int) string {
	return store.SubjOutbound + "." + dest + "." + strconv.Itoa(p)
}

// DeadLetterSubject is where a stage's dead letters go.
func DeadLetterSubject(stage, name string) string {
	return store.SubjDeadLetter + "." + stage + "." + name
}

func (r *Router) startSpan(h nats.Header, name string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	ctx := r.prop.Extract(context.Background(), propagation.HeaderCarrier(h))
	if r.o.Tracer == nil {
		return ctx, trace.SpanFromContext(ctx)
	}
	if rp := h.Get(envelope.HeaderReplay); rp != "" {
		// A replay's spans join the message's trace months on: said, so
		// they read as the replay, not the first routing.
		attrs = append(attrs, attribute.String(attrReplay, rp))
	}
	return r.o.Tracer.Start(ctx, name, trace.WithAttributes(attrs...))
}

// deadLetter stores m's data with the reason, for replay after a fix.
func (r *Router) deadLetter(ctx context.Context, stage, name string, h nats.Header, data []byte, err error) (uint64, error) {
	m := nats.NewMsg(DeadLetterSubject(stage, name))
	for k, v := range h {
		if k == jetstream.MsgIDHeader {
			continue
		}
		m.Header[k] = v
	}
	m.Header.Set(envelope.HeaderStage, stage)
	m.Header.Set(envelope.HeaderReasonCode, string(fault.CodeOf(err)))
	// The safe message only: details may hold patient data.
	reason := reasonOf(err)
	m.Header.Set(envelope.HeaderReason, reason)
	if d := deadLetterDetail(err); d != "" {
		m.Header.Set(envelope.HeaderDetail, d)
	} else {
		m.Header.Del(envelope.HeaderDetail)
	}
	// The route too: one message's payloads from two routes to one
	// destination are two dead letters.
	m.Header.Set(jetstream.MsgIDHeader, "dlq|"+stage+"|"+name+"|"+h.Get(envelope.HeaderID)+"|"+h.Get(envelope.HeaderRoute)+"|"+h.Get(envelope.HeaderAttempt)+"|"+h.Get(envelope.HeaderReplay))
	m.Data = data
	ack, perr := r.js.PublishMsg(ctx, m)
	if perr != nil {
		return 0, fmt.Errorf("dead-lettering: %w", perr)
	}
	r.o.Metrics.DeadLettered.WithLabelValues(stage, name).Inc()
	if !ack.Duplicate {
		// Ids, codes and the safe reason only, never the detail; and,
		// for a message's, what the operator does about it.
		id := h.Get(envelope.HeaderID)
		attrs := []any{"message_id", id, "stage", stage, "name", name, "code", string(fault.CodeOf(err)), "reason", reason}
		if id != "" && (stage == "route" || stage == "delivery") {
			cfg := ""
			if r.o.ConfigFile != "" {
				cfg = "-c " + shellQuote(r.o.ConfigFile) + " "
			}
			attrs = append(attrs, "next", "fix the cause (junction audit deadletters "+cfg+"--detail shows it in full), then resend: junction replay "+cfg+"--id "+id)
		}
		r.o.Logger.Warn("dead-lettered", attrs...)
	}
	return ack.Sequence, nil
}

// maxDetailBytes bounds a dead letter's detail.
const maxDetailBytes = 4 << 10

// deadLetterDetail is what a dead letter keeps of err beyond its safe
// message, for the people who fix the cause: the first caller-only
// detail in its chain (the receiver's answer, also when retries ran out
// on it, or a CEL error under the route's own wrapping), or else the
// cause the innermost fault wraps (a network error, say), or for an
// error with no fault at all, its text. It is one line of at most
// maxDetailBytes, as a header value must be.
func deadLetterDetail(err error) string {
	var d string
	var last *fault.Error
	for e := err; e != nil; e = errors.Unwrap(e) {
		if f, ok := e.(*fault.Error); ok {
			if f.Detail != "" {
				d = f.Detail
				break
			}
			last = f
		}
	}
	switch {
	case d != "":
	case last != nil && last.Err != nil:
		d = last.Err.Error()
	case last == nil && err != nil:
		d = err.Error()
	}
	d = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(d, "?"))
	if len(d) > maxDetailBytes {
		cut := maxDetailBytes
		for cut > 0 && !utf8.RuneStart(d[cut]) {
			cut--
		}
		d = d[:cut] + "..."
	}
	return strings.TrimSpace(d)
}

// sourceIn reports whether an accepted batch holds a message from source:
// from its sources header, or for a batch without one by decoding it, an
// unreadable batch counting as holding one (the route dead-letters it).
func sourceIn(source string) func(h nats.Header, data []byte) bool {
	return func(h nats.Header, data []byte) bool {
		if srcs := h.Values(headerSources); len(srcs) > 0 {
			return slices.Contains(srcs, source)
		}
		envs, err := decodeBatch(data)
		return err != nil || slices.ContainsFunc(envs, func(e *envelope.Envelope) bool { return e.Source == source })
	}
}

// batchHeader returns h for dead-lettering the stored batch seq: a batch
// has no message id of its own, so it is named by its sequence, and two
// unreadable batches are two dead letters, not one deduplicated away.
func batchHeader(h nats.Header, seq uint64) nats.Header {
	out := nats.Header{}
	for k, v := range h {
		out[k] = v
	}
	if out.Get(envelope.HeaderID) == "" {
		out.Set(envelope.HeaderID, batchDeadLetterPrefix+strconv.FormatUint(seq, 10))
	}
	return out
}

// batchDeadLetterPrefix starts the name of a dead-lettered batch.
const batchDeadLetterPrefix = "batch-"

// reasonOf returns the safe message of err, naming the route expression
// that failed when one did.
func reasonOf(err error) string {
	reason := "internal error"
	if f := fault.As(err); f != nil {
		reason = f.Msg
	}
	if ee, ok := errors.AsType[*route.ExprError](err); ok {
		// Which of the route's expressions failed, and where it is
		// written: the route's author needs it, and it holds no patient
		// data.
		reason = ee.Where + " (" + ee.Pos.String() + "): " + reason
	}
	return reason
}

// shellQuote returns s as one shell word: as it is when it holds only
// characters no shell treats specially, else in single quotes.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-+:@,=", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// only reports whether destination d is allowed by a replay restriction.
func only(h nats.Header, d string) bool {
	o := h.Get(headerOnly)
	if o == "" {
		return true
	}
	for _, x := range strings.Split(o, ",") {
		if x == d {
			return true
		}
	}
	return false
}

type startAt struct {
	policy jetstream.DeliverPolicy
	seq    uint64
}

// handoverStart says where the ingest log's consumer durable should start.
// An existing consumer carries on, unless the other pipeline's consumer
// has taken the log further since (router.pipeline was changed, and this
// one is back): then it is removed and starts again where the other left
// off, as a new one does, so no batch is taken twice or skipped; with
// neither, it starts at the beginning.
func handoverStart(ctx context.Context, js jetstream.JetStream, durable, other string) (startAt, error) {
	// A cluster busy electing a leader answers "no responders" for a
	// moment: ask again for a while before failing the start.
	var s startAt
	var err error
	for wait := 100 * time.Millisecond; ; wait *= 2 {
		s, err = handoverStartOnce(ctx, js, durable, other)
		if err == nil || !errors.Is(err, nats.ErrNoResponders) && !errors.Is(err, context.DeadlineExceeded) || wait > 10*time.Second {
			return s, err
		}
		sleep(ctx, wait)
	}
}

func handoverStartOnce(ctx context.Context, js jetstream.JetStream, durable, other string) (startAt, error) {
	all := startAt{policy: jetstream.DeliverAllPolicy}
	own, ownFound, err := ingestLogFloor(ctx, js, durable)
	if err != nil {
		return all, err
	}
	theirs, otherFound, err := ingestLogFloor(ctx, js, other)
	if err != nil || !otherFound || (ownFound && own >= theirs) {
		return all, err
	}
	if ownFound {
		// Stale: left behind when the pipeline last changed, it would
		// take again every batch the other pipeline has taken since.
		if err := js.DeleteConsumer(ctx, store.StreamIngestLog, durable); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return all, fmt.Errorf("removing stale consumer %s: %w", durable, err)
		}
	}
	return startAt{policy: jetstream.DeliverByStartSequencePolicy, seq: theirs + 1}, nil
}

// ingestLogFloor returns the ingest log position up to which consumer
// durable has acknowledged everything, and whether it exists.
func ingestLogFloor(ctx context.Context, js jetstream.JetStream, durable string) (uint64, bool, error) {
	c, err := js.Consumer(ctx, store.StreamIngestLog, durable)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("looking up consumer %s: %w", durable, err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		return 0, false, fmt.Errorf("reading consumer %s: %w", durable, err)
	}
	return info.AckFloor.Stream, true, nil
}
