package router

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"

	"github.com/junction-fhir/junction/pkg/adapter"
	"github.com/junction-fhir/junction/pkg/audit"
	"github.com/junction-fhir/junction/pkg/consent"
	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/fault"
	"github.com/junction-fhir/junction/pkg/nhs"
	"github.com/junction-fhir/junction/pkg/route"
	"github.com/junction-fhir/junction/pkg/store"
)

// routeWorker runs one route over ingress messages.
type routeWorker struct {
	r  *Router
	rt *route.Route
	tr *sharedTranslator
	// optOut reports that the national data opt-out applies to the
	// route's disclosures (see setDecided).
	optOut bool
}

// newRouteWorker returns the worker of route rt, translating with tr.
func newRouteWorker(r *Router, rt *route.Route, tr *sharedTranslator) *routeWorker {
	p, err1 := consent.ParsePurpose(rt.Purpose)
	b, err2 := consent.ParseLegalBasis(rt.LegalBasis)
	return &routeWorker{r: r, rt: rt, tr: tr, optOut: err1 == nil && err2 == nil && consent.OptOutApplies(p, b)}
}

// msgOut is what routing one message wrote or will write.
type msgOut struct {
	id   string
	recs []audit.Record
	futs []jetstream.PubAckFuture
}

// handle routes a batch: every message ends filtered, queued for its
// destinations, consent-denied or dead-lettered, and its outbound messages
// and audit records are stored before the batch is acknowledged. Outbound
// and audit writes are issued together so the wait is one store round
// trip; the payload each destination got is located from its delivery
// record.
func (w *routeWorker) handle(ctx context.Context, msgs []jetstream.Msg) error {
	// Routing has no long waits: finish it even when shutdown has begun,
	// so a cancelled context is never mistaken for a rule failure.
	ctx = context.WithoutCancel(ctx)
	var futs []jetstream.PubAckFuture
	for _, m := range msgs {
		h := m.Headers()
		if rt := h.Get(envelope.HeaderRoute); rt != "" && rt != w.rt.Name {
			continue // a replay aimed at another route
		}
		mo, err := w.route(ctx, m)
		if err != nil {
			return err
		}
		f, err := w.r.audit.WriteAsync(mo.id, "route|"+w.rt.Name+"|"+mo.id+"|"+h.Get(envelope.HeaderReplay), mo.recs...)
		if err != nil {
			return err
		}
		futs = append(append(futs, mo.futs...), f)
	}
	for _, f := range futs {
		if _, err := wait(f); err != nil {
			return fmt.Errorf("storing routing results: %w", err)
		}
	}
	return nil
}

// evaluation is what routing one message decided, before anything is
// written: its audit records and the payloads to queue, or the permanent
// failure that dead-letters it.
type evaluation struct {
	recs       []audit.Record
	deliveries []route.Delivery
	fail       error
	// patient is the message's keyed patient hash once it is translated
	// ("" when it names no patient or the engine hashes none); translated
	// reports that it was.
	patient    string
	translated bool
	// key is the translation's patient key, normalised, and hashes the
	// keyed hashes of further patients' NHS numbers (see others), made
	// with hash.
	key    string
	hashes map[string]string
	hash   func(string) string
	// decided is when consent was decided (no later than the reads it
	// made), and decidedFor the hash of the NHS number it was decided by
	// when the patient index gave it (see setDecided).
	decided    time.Time
	decidedFor string
}

// others returns the keyed hashes of the NHS numbers nums other than the
// message's own patient, for audit.Record.Patients: nil in the usual
// message about one patient, which hashes nothing more. A message naming
// its patient by a local identifier alone had consent decided by the NHS
// number the patient index knows (decidedFor), which therefore leads
// the list: that patient's disclosure report is found by it.
func (ev *evaluation) others(nums []string) []string {
	if ev.hash == nil {
		return nil
	}
	var out []string
	if ev.decidedFor != "" && ev.decidedFor != ev.patient {
		out = append(out, ev.decidedFor)
	}
	for _, n := range nums {
		if n == ev.key {
			continue
		}
		h, ok := ev.hashes[n]
		if !ok {
			if ev.hashes == nil {
				ev.hashes = map[string]string{}
			}
			h = ev.hash(n)
			ev.hashes[n] = h
		}
		if h != ev.patient && !slices.Contains(out, h) {
			out = append(out, h)
		}
	}
	return out
}

// stamp puts the message's patient hash (or, translated without one, the
// mark that it has none) on rec, as on every record of a translated
// message (see audit.Record.Patient).
func (ev *evaluation) stamp(rec *audit.Record) {
	if !ev.translated {
		return
	}
	if ev.patient != "" {
		rec.Patient = ev.patient
	} else {
		rec.NoPatient = true
	}
}

// patientHeader is the HeaderPatient value that passes the message's
// patient hash to the delivery stage.
func (ev *evaluation) patientHeader() string {
	if ev.patient == "" {
		return envelope.PatientNone
	}
	return ev.patient
}

// patientOf stamps rec with the patient hash the delivery stage was given
// in header h. A payload queued before the route stage passed the hash
// on carries none, and its record stays unstamped (see
// audit.Record.NoPatient).
func patientOf(h nats.Header, rec *audit.Record) {
	switch v := h.Get(envelope.HeaderPatient); v {
	case "":
	case envelope.PatientNone:
		rec.NoPatient = true
	default:
		rec.Patient = v
	}
	if v := h.Get(envelope.HeaderPatients); v != "" {
		rec.Patients = strings.Split(v, ",")
	}
}

// setPatients sets or clears, on outbound headers h, the further
// patients (HeaderPatients) of payload d of evaluation ev, and returns
// them for its queued record.
func (ev *evaluation) setPatients(h nats.Header, d route.Delivery) []string {
	others := ev.others(d.Patients)
	if len(others) > 0 {
		h.Set(envelope.HeaderPatients, strings.Join(others, ","))
	} else {
		h.Del(envelope.HeaderPatients)
	}
	return others
}

// evaluate translates env and runs the route over it. It writes nothing,
// so the per-message and batch pipelines share it. h carries replay
// restrictions (nil for none).
func (w *routeWorker) evaluate(ctx context.Context, env *envelope.Envelope, h nats.Header) *evaluation {
	r := w.r
	ev := &evaluation{}
	countRouted := func(outcome string) {
		// Deciding consent again for one queued payload (decideAgain)
		// is not another routing of the message.
		if !strings.HasPrefix(h.Get(envelope.HeaderReplay), recheckGen) {
			r.o.Metrics.Routed.WithLabelValues(w.rt.Name, outcome).Inc()
		}
	}
	base := audit.Record{Time: time.Now().UTC(), MessageID: env.ID, Source: env.Source, Route: w.rt.Name}
	translate := w.tr.Translate
	if h.Get(envelope.HeaderReplay) != "" {
		translate = w.tr.Fresh
	}
	if !w.rt.Takes(env.MessageType, "") {
		if r.o.Patients != nil && !w.rt.Relayed(env.MessageType) {
			// The patient index learns from every message of the source
			// (merges, say), taken by a route or not; the translation is
			// shared, so this costs nothing when another route takes it.
			// Only an index that cannot be reached holds the message back.
			// (A relayed message teaches it nothing.)
			if err := safely(func() error { _, _, err := translate(ctx, env); return err }); retryable(err) {
				ev.fail = err
				return ev
			}
		}
		ev.recs = append(ev.recs, w.rt.NotTakenRecord(env))
		countRouted("not_taken")
		return ev
	}
	var tr *adapter.Translation
	var pv patientView
	if err := safely(func() (err error) { tr, pv, err = translate(ctx, env); return err }); err != nil {
		ev.fail = err
		return ev
	}
	ev.translated = true
	if tr.PatientKey != "" && r.o.PatientHash != nil {
		ev.patient = r.o.PatientHash(tr.PatientKey)
	}
	ev.key, ev.hash = nhs.Normalize(tr.PatientKey), r.o.PatientHash
	ev.decided = base.Time
	if n, _ := pv.cel["nhsNumber"].(string); n != "" && r.o.PatientHash != nil && !nhs.ValidNumber(ev.key) {
		// Consent is decided by the NHS number the index knows for a
		// patient the message names by a local identifier.
		ev.decidedFor = r.o.PatientHash(n)
	}
	t := base
	t.Event, t.Outcome, t.Hash = audit.Translated, "ok", tr.BundleHash
	t.Reason = translatedReason(tr)
	if t.Hash == "" {
		t.Hash = audit.Hash(tr.Bundle)
	}
	ev.stamp(&t)
	ev.recs = append(ev.recs, t)
	var res *route.Result
	err := safely(func() (err error) {
		res, err = w.rt.Process(ctx, route.Input{Env: env, Tr: tr, Patient: pv.cel, Restricted: pv.restricted, OtherPatients: pv.others, UnidentifiedPatient: pv.unidentified}, r.o.Decider)
		return err
	})
	if err != nil {
		ev.fail = err
		return ev
	}
	// A payload the store cannot hold would fail on every retry: refuse
	// the message as a whole before queueing any of it.
	for _, d := range res.Deliveries {
		if int64(len(d.Body))+headerRoom > r.js.Conn().MaxPayload() {
			ev.fail = fault.Newf(fault.CodeTooLarge, "payload for %s is %d bytes, more than the store accepts", d.Destination, len(d.Body))
			return ev
		}
	}
	// A replay naming some destinations decides for those alone: the
	// route's decisions for the others (a consent permit for a payload
	// never sent) would read in the trail as disclosures.
	res.Records = namedOnly(res.Records, h)
	// A decision about several patients is each one's.
	others := ev.others(res.Patients)
	for i := range res.Records {
		rec := &res.Records[i]
		ev.stamp(rec)
		rec.Patients = others
		if rec.Event == audit.Consent {
			// The organisations as they are now, for the disclosure
			// report, whatever the configuration says later.
			if d := r.o.Destinations[rec.Destination]; d != nil {
				rec.RecipientODS = d.ODS
			}
			rec.SourceODS = r.o.SourceODS[env.Source]
		}
	}
	ev.recs = append(ev.recs, res.Records...)
	switch {
	case !res.Taken:
		countRouted("not_taken")
		return ev
	case !res.Matched:
		countRouted("filtered")
		return ev
	}
	countRouted("matched")
	// Decisions are counted for the destinations this routing may send
	// to: a replay, or a decision made again for one queued payload, for
	// one destination does not decide again for the others.
	for _, d := range res.Denied {
		if only(h, d) {
			r.o.Metrics.Consent.WithLabelValues(w.rt.Name, d, "deny").Inc()
		}
	}
	for _, d := range res.Deliveries {
		if !only(h, d.Destination) {
			x := base
			x.Time, x.Event, x.Destination, x.Outcome, x.Reason = time.Now().UTC(), audit.Filtered, d.Destination, "not-replayed", "destination not among those the replay named"
			ev.stamp(&x)
			ev.recs = append(ev.recs, x)
			continue
		}
		r.o.Metrics.Consent.WithLabelValues(w.rt.Name, d.Destination, "permit").Inc()
		ev.deliveries = append(ev.deliveries, d)
	}
	return ev
}

// retryable reports a fault that says to try again later (the store
// behind a translator was unavailable, say), rather than a fault in the
// message, which dead-letters it.
func retryable(err error) bool {
	f := fault.As(err)
	return f != nil && f.Class == fault.Transient
}

// failRecords are the audit records of a message dead-lettered by the
// route at dead-letter sequence seq; they carry the patient hash of ev
// when the message was translated before it failed.
func (w *routeWorker) failRecords(env *envelope.Envelope, ev *evaluation, seq uint64) []audit.Record {
	err := ev.fail
	w.r.o.Metrics.Routed.WithLabelValues(w.rt.Name, "failed").Inc()
	base := audit.Record{Time: time.Now().UTC(), MessageID: env.ID, Source: env.Source, Route: w.rt.Name}
	ev.stamp(&base)
	rec := base
	rec.Event, rec.Outcome, rec.Reason, rec.Code = audit.Failed, "permanent", reasonOf(err), string(fault.CodeOf(err))
	dl := base
	dl.Event, dl.Outcome, dl.Reason, dl.Code, dl.Stream, dl.Seq = audit.DeadLettered, "dead_lettered", reasonOf(err), string(fault.CodeOf(err)), store.StreamDeadLetter, seq
	return []audit.Record{rec, dl}
}

// queuedRecord is the audit record of payload d of evaluation ev queued
// for its destination.
func queuedRecord(env *envelope.Envelope, ev *evaluation, routeName string, d route.Delivery, seq uint64, others []string) audit.Record {
	rec := audit.Record{Time: time.Now().UTC(), MessageID: env.ID, Source: env.Source, Route: routeName, Event: audit.Queued,
		Destination: d.Destination, Outcome: "queued", Hash: audit.Hash(d.Body), Stream: store.StreamOutbound, Seq: seq, Classes: d.Classes, Patients: others}
	ev.stamp(&rec)
	return rec
}

// route processes one message. It returns an error only when the batch
// must be retried; a message that cannot be routed is dead-lettered.
func (w *routeWorker) route(ctx context.Context, m jetstream.Msg) (*msgOut, error) {
	r := w.r
	h := m.Headers()
	env := envelope.FromHeader(h, m.Data())
	mo := &msgOut{id: env.ID}
	sctx, span := r.startSpan(h, "route", attribute.String("junction.message_id", env.ID), attribute.String("junction.route", w.rt.Name))
	defer span.End()
	ev := w.evaluate(sctx, env, h)
	annotateRoute(span, ev)
	mo.recs = ev.recs
	if retryable(ev.fail) {
		return nil, ev.fail
	}
	if ev.fail != nil {
		seq, derr := r.deadLetter(ctx, "route", w.rt.Name, h, m.Data(), ev.fail)
		if derr != nil {
			return nil, derr
		}
		mo.recs = append(mo.recs, w.failRecords(env, ev, seq)...)
		return mo, nil
	}
	replay := h.Get(envelope.HeaderReplay)
	for _, d := range ev.deliveries {
		om := nats.NewMsg(OutboundSubject(d.Destination, env.Partition))
		om.Header = env.Header()
		om.Header.Set(envelope.HeaderContentType, d.ContentType)
		om.Header.Set(envelope.HeaderRoute, w.rt.Name)
		om.Header.Set(envelope.HeaderDestination, d.Destination)
		om.Header.Set(envelope.HeaderPatient, ev.patientHeader())
		setDecided(om.Header, ev.decided, ev.decidedFor, w.optOut)
		others := ev.setPatients(om.Header, d)
		if replay != "" {
			om.Header.Set(envelope.HeaderReplay, replay)
		}
		om.Header.Set(jetstream.MsgIDHeader, env.ID+"|"+w.rt.Name+"|"+d.Destination+"|"+replay)
		r.prop.Inject(sctx, propagation.HeaderCarrier(om.Header))
		om.Data = d.Body
		f, err := r.js.PublishMsgAsync(om, jetstream.WithStallWait(time.Minute))
		if err != nil {
			return nil, fmt.Errorf("queueing outbound message: %w", err)
		}
		mo.recs = append(mo.recs, queuedRecord(env, ev, w.rt.Name, d, 0, others))
		mo.futs = append(mo.futs, f)
	}
	return mo, nil
}

// headerRoom is what headers may add to a stored message.
const headerRoom = 64 << 10

// RelayedReason is the reason of a relayed message's translated record:
// it was given only its header and patients, for routing, and goes on as
// it came.
const RelayedReason = "relayed untranslated: header and patients read for routing"

// translatedReason returns the reason of a translated record: for a
// relayed message, that it was not translated, only read
// (RelayedReason); then the translation's data quality issues, such as
// a result naming an order sent for another patient
// (order_patient_mismatch), so that the trail shows which message the
// counters of junction_ingress_data_quality_issues_total counted. Issue
// names never hold the values sent.
func translatedReason(tr *adapter.Translation) string {
	var parts []string
	if tr.Relayed {
		parts = append(parts, RelayedReason)
	}
	if len(tr.DataQuality) > 0 {
		parts = append(parts, "data quality: "+strings.Join(tr.DataQuality, ", "))
	}
	return strings.Join(parts, "; ")
}

// safely runs fn, turning a panic (a bug in a translator, a CEL function
// or a consent decider) into a permanent fault for this one message, so it
// is dead-lettered rather than crashing the engine again on every
// redelivery. The panic value is not kept: it may hold message data.
func safely(fn func() error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fault.New(fault.CodePanic, "internal error while processing the message")
		}
	}()
	return fn()
}

func wait(f jetstream.PubAckFuture) (uint64, error) {
	ack, err := waitAck(f)
	if err != nil {
		return 0, err
	}
	return ack.Sequence, nil
}

// waitAck is wait returning the whole acknowledgement, which says whether
// the store already held the message (Duplicate).
func waitAck(f jetstream.PubAckFuture) (*jetstream.PubAck, error) {
	t := time.NewTimer(30 * time.Second)
	defer t.Stop()
	select {
	case ack := <-f.Ok():
		return ack, nil
	case err := <-f.Err():
		return nil, err
	case <-t.C:
		return nil, fmt.Errorf("store did not acknowledge within 30s")
	}
}

// deliveryWorker sends one destination's messages.
type deliveryWorker struct {
	r *Router
	d *Destination
	// done remembers, by stream sequence, deliveries of the current batch
	// whose fate is decided, so a retried batch (after a failed audit
	// write) does not send them again.
	done map[uint64][]audit.Record
	// tried remembers, by stream sequence, the attempts made at a
	// delivery interrupted by an error, for the batch's next try.
	tried map[uint64]attempts
}

// handle delivers a batch in order. A transient failure retries the same
// message with backoff (keeping per-patient order); a permanent failure or
// exhausted retries dead-letters it and moves on.
func (w *deliveryWorker) handle(ctx context.Context, msgs []jetstream.Msg) error {
	if w.done == nil {
		w.done = map[uint64][]audit.Record{}
	}
	var futs []jetstream.PubAckFuture
	for _, m := range msgs {
		meta, _ := m.Metadata()
		var seq uint64
		if meta != nil {
			seq = meta.Sequence.Stream
		}
		recs, ok := w.done[seq]
		if !ok {
			var err error
			recs, err = w.deliver(ctx, m)
			if err != nil {
				return err
			}
			w.done[seq] = recs
		}
		f, err := w.r.audit.WriteAsync(recs[0].MessageID, "deliver|"+w.d.Name+"|"+strconv.FormatUint(seq, 10)+"|"+strconv.Itoa(len(recs)), recs...)
		if err != nil {
			return err
		}
		futs = append(futs, f)
	}
	for _, f := range futs {
		if _, err := wait(f); err != nil {
			return fmt.Errorf("writing audit records: %w", err)
		}
	}
	clear(w.done)
	return nil
}

func (w *deliveryWorker) deliver(ctx context.Context, m jetstream.Msg) ([]audit.Record, error) {
	meta, _ := m.Metadata()
	var seq uint64
	h := m.Headers()
	if meta != nil {
		seq = meta.Sequence.Stream
	}
	// Attempts this worker made before handling failed (it is tried
	// again in process), or, delivered before, those on the trail.
	prior := w.tried[seq]
	if n, err := strconv.Atoi(h.Get(HeaderAttemptsMade)); err == nil && n > 0 {
		// Moved here by the batch pipeline after n attempts, the last
		// perhaps asking for a wait.
		asked, _ := time.ParseDuration(h.Get(HeaderRetryAfter))
		prior = prior.later(attempts{made: n, asked: max(asked, 0)})
	}
	if meta != nil && meta.NumDelivered > 1 {
		before, err := w.r.attemptsMade(ctx, h.Get(envelope.HeaderID), h.Get(envelope.HeaderRoute), w.d.Name, seq)
		if err != nil {
			return nil, err
		}
		prior = prior.later(before)
	}
	recs, now, err := deliverPayload(ctx, w.r, w.d, h, m.Data(), seq, prior)
	if err != nil {
		if w.tried == nil {
			w.tried = map[uint64]attempts{}
		}
		w.tried[seq] = now
		return nil, err
	}
	delete(w.tried, seq)
	return recs, nil
}

// acked closes the lane of each entry in msgs the batch pipeline moved
// there (see lanes.go), now that its fate is recorded and acknowledged:
// closed before, a lost acknowledgement would send it again after newer
// entries sent directly.
func (w *deliveryWorker) acked(ctx context.Context, msgs []jetstream.Msg) {
	for _, m := range msgs {
		if h := m.Headers(); h.Get(HeaderLane) != "" {
			w.r.closeLane(ctx, w.d.Name, h.Get(envelope.HeaderPartition))
		}
	}
}

// attempts is what is known of a payload's earlier attempts at one
// destination.
type attempts struct {
	// made is how many were made.
	made int
	// last is the record of the last, a failure, when known.
	last *audit.Record
	// asked is how long the last failure asked to wait before the next
	// attempt (an HTTP Retry-After), when known.
	asked time.Duration
	// delivered reports a delivery of the payload recorded on the trail.
	delivered bool
	// settled is the record, on the trail, that ended the payload unsent
	// because its consent changed (see recheck.go): withheld by deciding
	// again, or routed again by an earlier build. Its fate is settled.
	settled *audit.Record
}

// later returns whichever of a and b knows of more attempts, keeping a
// settling record either knows of (which settles the payload whatever the
// count).
func (a attempts) later(b attempts) attempts {
	out := a
	if b.made > a.made {
		out = b
	}
	if out.settled == nil {
		out.settled = cmp.Or(a.settled, b.settled)
	}
	return out
}

// decided reports whether the earlier attempts already settled the
// payload's fate under policy p: the last failed for good, or they used
// up max_attempts. A payload delivered again after a restart is then
// dead-lettered again (the same dead letter, which the store's dedupe
// keeps single) without another attempt.
func (a attempts) decided(p Retry) bool {
	return a.last != nil && (a.last.Outcome == "permanent" || a.made >= p.MaxAttempts)
}

// failure rebuilds, from the last failed attempt's record, the fault the
// payload was (or was about to be) dead-lettered with.
func (a attempts) failure() error {
	f := &fault.Error{Code: fault.Code(a.last.Code), Class: fault.Permanent, Msg: a.last.Reason}
	if a.last.Outcome == "permanent" {
		return f
	}
	return retriesExhausted(a.made, a.last.Reason, f)
}

// retriesExhausted is the fault of a payload that failed transiently n
// times, the last with the safe reason last.
func retriesExhausted(n int, last string, cause error) error {
	return fault.Wrap(fault.Permanent, fault.CodeRetriesExhausted, fmt.Sprintf("gave up after %d attempts; the last: %s", n, last), cause)
}

// deliverPayload sends one payload (headers h, stored at outbound sequence
// seq) to d, retrying transient failures with d's backoff, and
// dead-letters it when it fails for good. Each failed attempt is recorded
// on the message's trail as it happens (see recordFailure); it returns
// the records still to write: how it ended, delivered or dead-lettered,
// and any failure whose own write failed. An error means shutdown (or a
// failed dead-letter write) interrupted it and it must be tried again.
// prior is what is known of attempts already made (a failed batch
// attempt, an interrupted try, or attempts before a restart: see
// attemptsMade); attempts carry on from there, so max_attempts holds
// across restarts, and a payload whose fate they decided is not sent
// again. It returns what is known of the attempts made, for a caller to
// pass to its next try after an error.
func deliverPayload(ctx context.Context, r *Router, d *Destination, h nats.Header, data []byte, seq uint64, prior attempts) ([]audit.Record, attempts, error) {
	return sendPayload(ctx, r, d, h, data, seq, prior, false)
}

// receivedAt is when Junction received the message whose headers h are
// (envelope.HeaderReceived), or zero.
func receivedAt(h nats.Header) time.Time {
	t, _ := time.Parse(time.RFC3339Nano, h.Get(envelope.HeaderReceived))
	return t
}

// sendPayload is deliverPayload; with deferRetry, a failed attempt that
// is to be tried again ends it with errDeferred instead of a wait (the
// records still to write and the attempts made come with it), for the
// batch pipeline to move the payload to its lane.
func sendPayload(ctx context.Context, r *Router, d *Destination, h nats.Header, data []byte, seq uint64, prior attempts, deferRetry bool) ([]audit.Record, attempts, error) {
	id := h.Get(envelope.HeaderID)
	rt := h.Get(envelope.HeaderRoute)
	sctx, span := r.startSpan(h, "deliver", attribute.String("junction.message_id", id), attribute.String("junction.destination", d.Name))
	defer span.End()
	del := &adapter.Delivery{
		MessageID: id, Route: rt, Destination: d.Name,
		ContentType: h.Get(envelope.HeaderContentType), Body: data,
		IdempotencyKey: id + "|" + rt + "|" + d.Name,
		ReceivedAt:     receivedAt(h),
	}
	base := audit.Record{MessageID: id, Route: rt, Destination: d.Name, Stream: store.StreamOutbound, Seq: seq, Hash: audit.Hash(data)}
	patientOf(h, &base)
	if prior.settled != nil {
		// Withheld (or routed again) before a restart or a lost
		// acknowledgement: its fate is settled, and not decided twice.
		return []audit.Record{*prior.settled}, prior, nil
	}
	var lastErr error
	var unwritten []audit.Record
	now := prior
	settled := prior.decided(d.Retry)
	if settled {
		lastErr = prior.failure()
		del.Attempt = prior.made
		// Decided again before a restart: the dead letter holds the
		// payload the attempts were made with, not the one queued.
		nd, err := r.lastTried(ctx, prior, seq)
		if err != nil {
			return nil, now, err
		}
		if nd != nil {
			h, data = nd.h, nd.data
			base.Hash, base.SentSeq = audit.Hash(data), nd.seq
			base.Patient, base.NoPatient, base.Patients = "", false, nil
			patientOf(h, &base)
		}
	} else if prior.made > 0 {
		// A payload moved to its lane, or tried before: the wait after
		// its last attempt, as long as a Retry-After asked for.
		sleep(ctx, retryWait(d.Retry, prior.made, prior.asked))
		if ctx.Err() != nil {
			return nil, now, ctx.Err()
		}
	}
	for attempt := prior.made + 1; !settled; attempt++ {
		del.Attempt = attempt
		actx, cancel := context.WithTimeout(sctx, d.Retry.Timeout)
		var rc adapter.Receipt
		err := r.recheckConsent(actx, d, h)
		if errors.Is(err, errConsentChanged) {
			// Decided again, and what that makes is sent in its place,
			// so the patient's later payloads still follow it.
			cancel()
			nd, recs, derr := r.decideAgain(ctx, d, h, data, seq, base)
			if derr != nil {
				return nil, now, derr
			}
			unwritten = append(unwritten, recs...)
			if nd == nil {
				span.SetAttributes(attribute.String(attrOutcome, "decided_again"))
				span.SetStatus(codes.Ok, "not sent as queued: consent changed")
				return unwritten, now, nil
			}
			h, data = nd.h, nd.data
			del.ContentType, del.Body = h.Get(envelope.HeaderContentType), data
			base.Hash, base.SentSeq = audit.Hash(data), nd.seq
			base.Patient, base.NoPatient, base.Patients = "", false, nil
			patientOf(h, &base)
			actx, cancel = context.WithTimeout(sctx, d.Retry.Timeout)
			err = nil
		}
		switch {
		case err != nil:
			// Not known whether it may go: tried again later, without
			// counting an attempt, as any store failure is.
			cancel()
			span.SetAttributes(attribute.String(attrOutcome, "retrying"), attribute.String(attrCode, string(fault.CodeOf(err))))
			span.SetStatus(codes.Error, reasonOf(err))
			return nil, now, err
		default:
			sendCtx, aspan := r.startAttempt(actx, id, d.Name, attempt)
			start := time.Now()
			err = safely(func() (err error) { rc, err = d.Out.Send(sendCtx, del); return err })
			r.o.Metrics.SendLatency.WithLabelValues(d.Name).Observe(time.Since(start).Seconds())
			endAttempt(aspan, err)
		}
		cancel()
		rec := base
		rec.Time, rec.Attempt = time.Now().UTC(), attempt
		if err == nil {
			r.o.Metrics.Attempts.WithLabelValues(d.Name, "ok").Inc()
			r.o.Metrics.Delivered.WithLabelValues(d.Name, "delivered").Inc()
			if !del.ReceivedAt.IsZero() {
				r.o.Metrics.EndToEnd.WithLabelValues(rt, d.Name).Observe(time.Since(del.ReceivedAt).Seconds())
			}
			r.delivering(d.Name)
			span.SetAttributes(attribute.String(attrOutcome, "delivered"), attribute.Int(attrAttempt, attempt))
			rec.Event, rec.Outcome, rec.Status, rec.Location = audit.Delivered, "delivered", rc.Status, rc.Location
			return append(unwritten, rec), now, nil
		}
		lastErr = err
		transient := fault.IsTransient(err)
		class := "permanent"
		if transient {
			class = "transient"
		}
		r.o.Metrics.Attempts.WithLabelValues(d.Name, class).Inc()
		rec.Event, rec.Outcome, rec.Reason, rec.Code = audit.Failed, class, reasonOf(err), string(fault.CodeOf(err))
		if !r.recordFailure(rec) {
			unwritten = append(unwritten, rec) // written with the outcome instead
		}
		now = attempts{made: attempt, last: &rec, asked: fault.RetryAfterOf(err)}
		r.failLog.failed(d.Name, time.Now())
		if ok, held := r.failLog.allow(d.Name, time.Now()); ok {
			r.o.Logger.Warn("delivery attempt failed", "message_id", id, "destination", d.Name, "attempt", attempt, "class", class, "code", fault.CodeOf(err),
				"reason", reasonOf(err), "similar_lines_held_back", held)
		}
		if !transient {
			break
		}
		if attempt >= d.Retry.MaxAttempts {
			lastErr = retriesExhausted(attempt, reasonOf(err), err)
			break
		}
		if deferRetry {
			// This span's attempt failed; the lane's tries are spans of
			// their own.
			span.SetAttributes(attribute.String(attrOutcome, "retrying"), attribute.Int(attrAttempt, attempt))
			span.SetStatus(codes.Error, reasonOf(err))
			return unwritten, now, errDeferred
		}
		sleep(ctx, retryWait(d.Retry, attempt, now.asked))
		if ctx.Err() != nil {
			// Shutting down: leave the message for redelivery. Its failed
			// attempts so far are recorded, and counted when it comes back.
			return nil, now, ctx.Err()
		}
	}
	span.SetAttributes(attribute.String(attrOutcome, "dead_lettered"), attribute.Int(attrAttempt, del.Attempt), attribute.String(attrCode, string(fault.CodeOf(lastErr))))
	span.SetStatus(codes.Error, reasonOf(lastErr))
	ctx = context.WithoutCancel(ctx)
	h2 := cloneHeader(h)
	h2.Set(envelope.HeaderAttempt, strconv.Itoa(del.Attempt))
	dl, err := r.deadLetterPayload(ctx, d, h2, data, base, lastErr)
	if err != nil {
		return nil, now, err
	}
	return append(unwritten, dl), now, nil
}

// delivering notes a delivery to destination name: the first after
// failed attempts is logged, so the log says when a destination recovered
// as it said when it failed.
func (r *Router) delivering(name string) {
	if since, ok := r.failLog.recovered(name, time.Now()); ok {
		r.o.Logger.Info("destination delivering again", "destination", name, "failing_for", since.Round(time.Second).String())
	}
}

// deadLetterPayload dead-letters payload data (headers h) for d with
// cause, counts it, and returns its audit record, made from base.
func (r *Router) deadLetterPayload(ctx context.Context, d *Destination, h nats.Header, data []byte, base audit.Record, cause error) (audit.Record, error) {
	dseq, err := r.deadLetter(ctx, "delivery", d.Name, h, data, cause)
	if err != nil {
		return audit.Record{}, err
	}
	r.o.Metrics.Delivered.WithLabelValues(d.Name, "dead_lettered").Inc()
	dl := base
	dl.Time, dl.Event, dl.Outcome, dl.Reason, dl.Code, dl.Stream, dl.Seq = time.Now().UTC(), audit.DeadLettered, "dead_lettered", reasonOf(cause), string(fault.CodeOf(cause)), store.StreamDeadLetter, dseq
	return dl, nil
}

// retryWait is the wait after failed attempt n: the backoff, or longer
// when the destination asked for longer (asked, an HTTP Retry-After), up
// to the policy's max.
func retryWait(p Retry, n int, asked time.Duration) time.Duration {
	d := p.Delay(n)
	if asked > d {
		d = min(asked, p.Max)
	}
	return d
}

// recordFailure writes the record of a failed delivery attempt to the
// message's trail at once, so that it is there even if the process dies
// before the message's fate is decided, and a later process can count it
// (attemptsMade). Failures are rare and slow, so one write each costs
// little. It reports whether the write succeeded; one that failed is
// logged, and the caller writes the record with the outcome instead.
func (r *Router) recordFailure(rec audit.Record) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// The dedupe id names the attempt exactly: the message, and the
	// outbound payload (a replay queues a new one) at this destination.
	dedupe := "failed|" + rec.MessageID + "|" + rec.Route + "|" + rec.Destination + "|" + strconv.FormatUint(rec.Seq, 10) + "|" + strconv.Itoa(rec.Attempt)
	if err := r.audit.Write(ctx, rec.MessageID, dedupe, rec); err != nil {
		r.o.Logger.Warn("failed attempt not recorded yet", "message_id", rec.MessageID, "destination", rec.Destination, "attempt", rec.Attempt, "error", err.Error())
		return false
	}
	return true
}

// attemptsMade reads, from message id's trail, the failed attempts to
// deliver its payload stored at outbound sequence seq by route rt to
// destination dest: attempts an earlier process made before it stopped,
// so a redelivered payload carries on counting towards max_attempts
// rather than starting again (a replay queues a new payload, which starts
// again). A trail that cannot be read at all is an error: the payload
// waits, tried again with the partition's backoff, rather than being
// sent as if never tried (a payload delivered, or whose retries were used
// up, would be sent again; one refused for good, sent again and again).
//
// A trail that comes back incomplete (audit.IncompleteError: part of the
// audit stream is damaged) counts what it holds, logged: records are
// only ever missing from it, so it counts no more attempts than were
// made (each new one is recorded after the damage, so the count still
// reaches max_attempts and retries end, later than without the damage
// when the last attempts' records are in it), and a delivery or a final
// failure it holds is so. A delivery whose record was in the
// damage cannot be seen: the payload is sent again, with the same
// idempotency key, as after a crash between a delivery and its record
// (at-least-once).
func (r *Router) attemptsMade(ctx context.Context, id, rt, dest string, seq uint64) (attempts, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	trail, err := audit.Trail(ctx, r.js, id)
	var incomplete *audit.IncompleteError
	switch {
	case errors.As(err, &incomplete):
		r.o.Logger.Warn("earlier delivery attempts counted from an incomplete trail", "message_id", id, "destination", dest, "error", err.Error())
	case err != nil:
		return attempts{}, fmt.Errorf("counting earlier delivery attempts of a redelivered payload: %w", err)
	}
	var a attempts
	for i := range trail {
		rec := &trail[i]
		if rec.Route != rt || rec.Destination != dest || rec.Seq != seq {
			continue
		}
		if rec.Event == audit.Failed && rec.Attempt > a.made {
			a.made, a.last = rec.Attempt, rec
		}
		if rec.Event == audit.Delivered {
			a.delivered = true
		}
		if rec.Event == audit.Replayed && rec.Outcome == audit.OutcomeRerouted || rec.Event == audit.Filtered && rec.Outcome == audit.OutcomeWithheld {
			a.settled = rec
		}
	}
	return a, nil
}

// watchQueues samples each destination's backlog for the depth and age
// gauges, the quarantine's size and the dead letters waiting, at start
// and every five seconds.
func (r *Router) watchQueues(ctx context.Context) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	sizes := newBatchSizes(rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())))
	deadLetters := map[[2]string]bool{}
	for first := true; ; first = false {
		if !first {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
		r.sampleQuarantine(ctx)
		r.sampleStore(ctx)
		r.sampleDeadLetters(ctx, deadLetters)
		r.sampleRoutes(ctx, r.o.Store.Partitions(), sizes)
		r.sampleDestinations(ctx, r.o.Store.Partitions(), sizes)
	}
}

// sampleDestinations sets each destination's backlog gauges: the
// deliveries waiting (in the batch pipeline, partly estimated: see
// batchQueue) and the oldest one's age.
func (r *Router) sampleDestinations(ctx context.Context, partitions int, sizes *batchSizes) {
	ost, err := r.js.Stream(ctx, store.StreamOutbound)
	if err != nil {
		return
	}
	infos, err := consumerInfos(ctx, ost)
	if err != nil {
		return
	}
	for name := range r.o.Destinations {
		var depth uint64
		var oldest time.Time
		for p := range partitions {
			d, o := consumerBacklog(ctx, ost, infos["dest-"+name+"-p"+strconv.Itoa(p)])
			depth += d
			oldest = earliest(oldest, o)
		}
		if r.o.Pipeline == PipelineBatch {
			d, o := r.batchQueue(ctx, ost, name, sizes.rng)
			depth += d
			oldest = earliest(oldest, o)
		}
		r.o.Metrics.QueueDepth.WithLabelValues(name).Set(float64(depth))
		age := 0.0
		if !oldest.IsZero() {
			age = time.Since(oldest).Seconds()
		}
		r.o.Metrics.QueueAge.WithLabelValues(name).Set(age)
	}
}

// sampleRoutes sets each route's backlog gauges: the stored messages it
// has not finished, and the oldest one's age. Before these, a backlog in
// the route stage showed nowhere: delivery's gauges read near zero while
// tens of thousands of messages waited. The partition consumers (which
// in the batch pipeline take replays) are counted exactly. A batch
// route's accepted batches are counted as an input's backlog is (see
// Router.sampleBacklog): on the ingest log, from the oldest message of
// its input it has not finished, so other inputs' messages stored since
// count too; it is how far behind the route is, in messages. Counting
// accepted batches times a batch's size read several times too high: the
// accept stage reads ahead, so their sizes vary from one message to
// hundreds.
func (r *Router) sampleRoutes(ctx context.Context, partitions int, sizes *batchSizes) {
	ist, err := r.js.Stream(ctx, store.StreamIngress)
	if err != nil {
		return
	}
	infos, err := consumerInfos(ctx, ist)
	if err != nil {
		return
	}
	var ls ingestLogState
	if r.o.Pipeline == PipelineBatch {
		if ls, err = r.readIngestLog(ctx, sizes, acceptDurable); err != nil {
			return
		}
	}
	for _, rt := range r.o.Routes {
		var depth uint64
		var oldest time.Time
		for p := range partitions {
			d, o := consumerBacklog(ctx, ist, infos["route-"+rt.Name+"-p"+strconv.Itoa(p)])
			depth += d
			oldest = earliest(oldest, o)
		}
		if r.o.Pipeline == PipelineBatch {
			// A route that has finished all the accept stage gave it
			// still waits for what the accept stage has not taken.
			d := ls.accepting
			if behind, o, err := ls.behind(ctx, r.js, ist, "route-"+rt.Name+"-b"); err == nil {
				d = max(d, behind)
				oldest = earliest(oldest, o)
			}
			depth += d
		}
		r.o.Metrics.RouteDepth.WithLabelValues(rt.Name).Set(float64(depth))
		age := 0.0
		if !oldest.IsZero() {
			age = time.Since(oldest).Seconds()
		}
		r.o.Metrics.RouteAge.WithLabelValues(rt.Name).Set(age)
	}
}

// earliest returns the earlier of a and b, the zero time standing for
// none.
func earliest(a, b time.Time) time.Time {
	if a.IsZero() || !b.IsZero() && b.Before(a) {
		return b
	}
	return a
}

// consumerBacklog returns the messages the consumer of stream st whose
// info is info (nil: none) has not finished and when the oldest of them
// was stored.
func consumerBacklog(ctx context.Context, st jetstream.Stream, info *jetstream.ConsumerInfo) (uint64, time.Time) {
	pending := unfinishedIn(info)
	if pending == 0 {
		return 0, time.Time{}
	}
	first := firstOn(ctx, st, consumerFilters(info), info.AckFloor.Stream+1)
	if first == nil {
		return pending, time.Time{}
	}
	return pending, first.Time
}

// unfinished returns the info of consumer durable on stream and the
// messages it has not finished (pending and awaiting acknowledgement);
// 0 when it cannot be read.
func unfinished(ctx context.Context, js jetstream.JetStream, stream, durable string) (*jetstream.ConsumerInfo, uint64) {
	info, n, err := pendingOf(ctx, js, stream, durable)
	if err != nil {
		return nil, 0
	}
	return info, n
}

// sampleQuarantine sets the quarantine gauge to the messages the
// quarantine stream holds, so it counts entries kept from before a
// restart and falls when entries age out or the size bound drops them.
func (r *Router) sampleQuarantine(ctx context.Context) {
	s, err := r.js.Stream(ctx, store.StreamQuarantine)
	if err != nil {
		return
	}
	r.o.Metrics.QuarantineSize.Set(float64(s.CachedInfo().State.Msgs))
}

// storeStreams are the streams whose size the store gauges report.
var storeStreams = []string{store.StreamIngress, store.StreamIngestLog, store.StreamOutbound, store.StreamDeadLetter, store.StreamAudit, store.StreamQuarantine}

// sampleStore sets the gauges of what each stream holds on disk and, for
// the embedded store, of its filesystem's free space and size and of its
// storage limit and use, so that growth (the audit stream has no limit)
// can be seen, and alerted on, before the disk fills or the store
// reaches its limit.
func (r *Router) sampleStore(ctx context.Context) {
	for _, name := range storeStreams {
		s, err := r.js.Stream(ctx, name)
		if err != nil {
			continue
		}
		r.o.Metrics.StreamBytes.WithLabelValues(name).Set(float64(s.CachedInfo().State.Bytes))
	}
	if r.o.Store == nil {
		return
	}
	if free, total, ok := r.o.Store.DiskFree(); ok {
		r.o.Metrics.DiskFree.Set(float64(free))
		r.o.Metrics.DiskSize.Set(float64(total))
	}
	if limit, used, ok := r.o.Store.StorageLimit(); ok {
		r.o.Metrics.StoreLimit.Set(float64(limit))
		r.o.Metrics.StoreUsed.Set(float64(used))
	}
}

// sampleDeadLetters sets the dead-letter gauge to the dead letters the
// dead-letter stream holds for each stage and route or destination. A
// replay removes the dead letters it resends, so the gauge counts those
// still waiting for someone to act, including those from before a
// restart, which the dead_lettered counters do not. Every loaded route
// and configured destination has a series, at zero when it has none;
// shown, the dead letters of others (a route since removed) keep one
// until they are gone. shown holds the stage and name pairs set at the
// last sample.
func (r *Router) sampleDeadLetters(ctx context.Context, shown map[[2]string]bool) {
	s, err := r.js.Stream(ctx, store.StreamDeadLetter)
	if err != nil {
		return
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(store.SubjDeadLetter+".>"))
	if err != nil {
		return
	}
	waiting := map[[2]string]uint64{}
	for _, rt := range r.o.Routes {
		waiting[[2]string{"route", rt.Name}] = 0
	}
	for name := range r.o.Destinations {
		waiting[[2]string{"delivery", name}] = 0
	}
	for subj, n := range info.State.Subjects {
		stage, name, ok := strings.Cut(strings.TrimPrefix(subj, store.SubjDeadLetter+"."), ".")
		if !ok {
			continue
		}
		waiting[[2]string{stage, name}] += n
	}
	for k := range shown {
		if _, ok := waiting[k]; !ok {
			r.o.Metrics.DeadLetters.DeleteLabelValues(k[0], k[1])
			delete(shown, k)
		}
	}
	for k, n := range waiting {
		r.o.Metrics.DeadLetters.WithLabelValues(k[0], k[1]).Set(float64(n))
		shown[k] = true
	}
}

// batchQueue estimates the deliveries waiting in destination name's
// outbound batches and returns the oldest one's time. A route writes one
// outbound batch for each accepted batch it takes, from one message to
// hundreds, so waiting batches are counted by the mean size of the oldest
// and of randomReads more taken at random among them, rather than by the
// oldest's alone.
func (r *Router) batchQueue(ctx context.Context, ost jetstream.Stream, name string, rng *rand.Rand) (uint64, time.Time) {
	info, pending := unfinished(ctx, r.js, store.StreamOutbound, "dest-"+name+"-b")
	if pending == 0 {
		return 0, time.Time{}
	}
	subj := jetstream.WithGetMsgSubject(OutboundBatchSubject(name))
	from, last := info.AckFloor.Stream+1, ost.CachedInfo().State.LastSeq
	var oldest time.Time
	var sum, read uint64
	for i := range randomReads + 1 {
		seq := from
		if i > 0 && last > from {
			seq += rng.Uint64N(last - from + 1)
		}
		msg, err := ost.GetMsg(ctx, seq, subj)
		if err != nil {
			continue
		}
		if i == 0 {
			oldest = msg.Time
		}
		n, err := strconv.ParseUint(msg.Header.Get(headerCount), 10, 32)
		if err != nil || n == 0 {
			n = 1
		}
		sum += n
		read++
	}
	if read == 0 {
		return pending, oldest
	}
	return (pending*sum + read/2) / read, oldest
}
