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
	"github.com/junction-fhir/junction/pkg/route"
	"github.com/junction-fhir/junction/pkg/store"
)

// Consent is decided when a message is routed, but a payload may wait in
// its destination's queue for minutes or hours (the receiver is down and
// retries back off). A patient who withdraws a Consent, or who joins the
// national data opt-out, meanwhile must stop what has not left yet. So
// before an attempt at a payload whose decision is older than
// Options.RecheckAfter, the delivery stage asks whether, for the patients
// whose keyed hashes the payload's headers carry, a Consent was written
// since, or, where the opt-out gate applied to the decision, one of them
// is on the opt-out list now (Options.ConsentChanges). If so, the payload
// is not sent as queued: its route runs again over the stored input for
// that destination alone, with consent read now, and what it makes is
// sent in the queued payload's place (stored beside it for the trail, on
// a subject no consumer reads), so the patient's later payloads still
// follow it. A new decision that sends nothing withholds the payload (a
// filtered record, audit.OutcomeWithheld, ends it); a payload whose input
// is gone, whose route no longer delivers to its destination, or whose
// route now fails on it is dead-lettered (fault.CodeConsentChanged)
// rather than sent on the old decision.
//
// The decision time is the engine's clock and a Consent's write time the
// store's: with an external NATS, keep their clocks in step (NTP), or a
// change within the skew of a decision goes unseen.

// errConsentChanged says a payload's consent changed since it was
// decided.
var errConsentChanged = errors.New("consent changed since the payload was decided")

// setDecided stamps outbound headers h with the time consent was decided,
// when it is not the message's patient hash the hash of the NHS number it
// was decided by, and whether the opt-out gate applied.
func setDecided(h nats.Header, at time.Time, decidedFor string, optOut bool) {
	h.Set(envelope.HeaderDecided, strconv.FormatInt(at.UnixMilli(), 10))
	if decidedFor != "" && decidedFor != h.Get(envelope.HeaderPatient) {
		h.Set(envelope.HeaderDecidedFor, decidedFor)
	} else {
		h.Del(envelope.HeaderDecidedFor)
	}
	if optOut {
		h.Set(envelope.HeaderDecidedOptOut, "true")
	} else {
		h.Del(envelope.HeaderDecidedOptOut)
	}
}

// decidedOptOut reports whether the opt-out gate applied to the decision
// of the payload with headers h. A payload queued before that was
// recorded is treated as if it had.
func decidedOptOut(h nats.Header) bool {
	return h.Get(envelope.HeaderDecidedOptOut) == "true" || h.Get(envelope.HeaderDecided) == ""
}

// decidedAt is when consent was decided for the payload with headers h:
// HeaderDecided, or, on a payload queued before it was set, when its
// message was received (no later than the decision).
func decidedAt(h nats.Header) time.Time {
	if ms, err := strconv.ParseInt(h.Get(envelope.HeaderDecided), 10, 64); err == nil {
		return time.UnixMilli(ms)
	}
	if t := receivedAt(h); !t.IsZero() {
		return t
	}
	// Of unknown age: checked against every change there has been.
	return time.Unix(0, 0)
}

// decidedHashes returns the keyed hashes of the patients whose consent
// the payload with headers h was decided for.
func decidedHashes(h nats.Header) []string {
	var out []string
	if p := h.Get(envelope.HeaderPatient); p != "" && p != envelope.PatientNone {
		out = append(out, p)
	}
	if v := h.Get(envelope.HeaderDecidedFor); v != "" {
		out = append(out, v)
	}
	if v := h.Get(envelope.HeaderPatients); v != "" {
		out = append(out, strings.Split(v, ",")...)
	}
	return out
}

// recheckDue reports whether the payload with headers h for d is to have
// its consent checked again before it is sent.
func (r *Router) recheckDue(d *Destination, h nats.Header) bool {
	return r.o.ConsentChanges != nil && !d.Internal && time.Since(decidedAt(h)) >= r.o.RecheckAfter
}

// recheckConsent returns errConsentChanged when the payload with headers h
// for d must not go as queued, a transient fault when that cannot be
// known now (the consent store is unavailable), and nil to send it.
func (r *Router) recheckConsent(ctx context.Context, d *Destination, h nats.Header) error {
	if !r.recheckDue(d, h) {
		return nil
	}
	hashes, optOut := decidedHashes(h), decidedOptOut(h)
	c, err := r.o.ConsentChanges(ctx, hashes, optOut)
	if err != nil {
		return fault.Wrap(fault.Transient, fault.CodeStoreUnavailable, "consent could not be checked again before sending", err)
	}
	if c.After(hashes, decidedAt(h), optOut) {
		return errConsentChanged
	}
	return nil
}

// unchangedForBatch returns which of entries may go in a batch attempt
// to d as they are: those not due a check, and those due whose consent
// did not change, all checked with one read of each patient. The rest
// (changed, or not known when the store is unavailable) are left to the
// per-entry path, which checks them again and routes or fails them.
func (r *Router) unchangedForBatch(ctx context.Context, d *Destination, entries []outEntry) []bool {
	ok := make([]bool, len(entries))
	var due []int
	var hashes []string
	optOut := false
	for i, e := range entries {
		if !r.recheckDue(d, e.h) {
			ok[i] = true
			continue
		}
		due = append(due, i)
		hashes = append(hashes, decidedHashes(e.h)...)
		optOut = optOut || decidedOptOut(e.h)
	}
	if len(due) == 0 {
		return ok
	}
	c, err := r.o.ConsentChanges(ctx, hashes, optOut)
	if err != nil {
		return ok
	}
	for _, i := range due {
		h := entries[i].h
		ok[i] = !c.After(decidedHashes(h), decidedAt(h), decidedOptOut(h))
	}
	return ok
}

// forDestination returns the records of recs about destination dest: of
// a route run again for one queued payload, its consent decision (with
// what it redacted) and what became of that payload. The route's own
// records and other destinations' are left out: they were decided when
// the message was routed, and written again they would tell reconcile
// and the disclosure report of a second routing that did not happen.
func forDestination(recs []audit.Record, dest string) []audit.Record {
	var out []audit.Record
	for _, r := range recs {
		if r.Destination == dest {
			out = append(out, r)
		}
	}
	return out
}

// namedOnly returns recs without the records about a destination the
// replay restriction in h leaves out (all of them when h has none).
func namedOnly(recs []audit.Record, h nats.Header) []audit.Record {
	if h.Get(headerOnly) == "" {
		return recs
	}
	out := recs[:0:0]
	for _, r := range recs {
		if r.Destination == "" || only(h, r.Destination) {
			out = append(out, r)
		}
	}
	return out
}

// redecided is what deciding consent again made of a queued payload for
// its destination: the payload to send in its place (headers h, body
// data), stored at outbound sequence seq for the trail to show.
type redecided struct {
	h    nats.Header
	data []byte
	seq  uint64
}

// cloneHeader returns a copy of h that shares nothing with it.
func cloneHeader(h nats.Header) nats.Header {
	out := make(nats.Header, len(h))
	for k, v := range h {
		out[k] = slices.Clone(v)
	}
	return out
}

// recheckGen begins the replay mark (envelope.HeaderReplay) of a stored
// input routed again by decideAgain.
const recheckGen = "recheck."

// redecidedSubject is where the payloads made by deciding consent again
// are kept, for the trail to show what was sent: no consumer reads it.
func redecidedSubject(dest string) string { return store.SubjOutbound + "." + dest + "._redecided" }

// decideAgain decides consent again for payload data (headers h, queued
// at outbound sequence seq for d, base its records' common fields)
// because a Consent or the opt-out list changed since it was decided. Its
// route runs again over the stored input for d alone, with consent read
// now. It returns the payload to send in the queued one's place, or nil
// when none is to be sent: the new decision refused it (a filtered
// record, outcome audit.OutcomeWithheld, ends it), or it could not be
// decided again (its input is gone, its route no longer delivers there,
// or the route failed: it is dead-lettered, code consent.changed). The
// records of the new decision come with it. An error means it cannot be
// known now (the store is unavailable) and is to be tried again.
func (r *Router) decideAgain(ctx context.Context, d *Destination, h nats.Header, data []byte, seq uint64, base audit.Record) (*redecided, []audit.Record, error) {
	ctx = context.WithoutCancel(ctx)
	id, rt := h.Get(envelope.HeaderID), h.Get(envelope.HeaderRoute)
	// The payload's own place names the decision: made again after a
	// restart, its stored payload is the same one (the store's dedupe).
	gen := recheckGen + d.Name + "." + strconv.FormatUint(seq, 10)
	w := r.deciders[rt]
	var in *nats.Msg
	var err error
	why := ""
	if w != nil && r.delivers(rt, d.Name) {
		in, _, err = storedInput(ctx, r.js, id, gen)
	} else {
		why = "route " + rt + " no longer delivers to " + d.Name
	}
	var ns *notStoredError
	if errors.As(err, &ns) {
		why, err = ns.why, nil
	}
	if err != nil {
		return nil, nil, err
	}
	var recs []audit.Record
	var cause error
	switch {
	case why != "":
		advice := "replay it as stored to send it anyway"
		if ns == nil {
			advice = "a replay can send it once the route delivers there again"
		}
		cause = fault.Newf(fault.CodeConsentChanged, "consent changed after this payload was decided, and it cannot be decided again (%s): %s", why, advice)
	default:
		in.Header.Set(envelope.HeaderRoute, rt)
		in.Header.Set(headerOnly, d.Name)
		ev := w.evaluate(ctx, envelope.FromHeader(in.Header, in.Data), in.Header)
		if retryable(ev.fail) {
			return nil, nil, ev.fail
		}
		recs = forDestination(ev.recs, d.Name)
		if ev.fail != nil {
			cause = fault.Wrap(fault.Permanent, fault.CodeConsentChanged, "consent changed after this payload was decided, and deciding it again failed: "+reasonOf(ev.fail), ev.fail)
			break
		}
		var nd *route.Delivery
		for i := range ev.deliveries {
			if ev.deliveries[i].Destination == d.Name {
				nd = &ev.deliveries[i]
			}
		}
		if nd == nil {
			rec := base
			rec.Time, rec.Event, rec.Outcome = time.Now().UTC(), audit.Filtered, audit.OutcomeWithheld
			rec.Reason = "not sent: a Consent or the opt-out list changed after its consent decision, and deciding again no longer sends it here"
			r.o.Metrics.Delivered.WithLabelValues(d.Name, "withheld").Inc()
			r.o.Logger.Info("queued payload withheld: consent changed since it was decided", "message_id", id, "route", rt, "destination", d.Name)
			return nil, append(recs, rec), nil
		}
		nh := cloneHeader(h)
		nh.Set(envelope.HeaderContentType, nd.ContentType)
		nh.Set(envelope.HeaderPatient, ev.patientHeader())
		setDecided(nh, ev.decided, ev.decidedFor, w.optOut)
		ev.setPatients(nh, *nd)
		nh.Set(envelope.HeaderReplay, gen)
		om := nats.NewMsg(redecidedSubject(d.Name))
		om.Header = cloneHeader(nh)
		// The body's hash in the id: decided again to the same payload
		// (after a restart, say), the stored one is kept; decided to a
		// different one, that is stored too, so the trail shows what was
		// sent.
		hash := audit.Hash(nd.Body)
		om.Header.Set(jetstream.MsgIDHeader, "redecided|"+d.Name+"|"+strconv.FormatUint(seq, 10)+"|"+id+"|"+hash)
		om.Data = nd.Body
		ack, err := r.js.PublishMsg(ctx, om)
		if err != nil {
			return nil, nil, fmt.Errorf("storing the payload decided again for %s: %w", id, err)
		}
		rec := base
		rec.Time, rec.Event, rec.Outcome, rec.SentSeq = time.Now().UTC(), audit.Replayed, audit.OutcomeRedecided, ack.Sequence
		rec.Hash, rec.Classes = hash, nd.Classes
		rec.Reason = "a Consent or the opt-out list changed after its consent decision: decided again, and what that decision made is sent in its place"
		if !ack.Duplicate {
			r.o.Metrics.Delivered.WithLabelValues(d.Name, "redecided").Inc()
			r.o.Logger.Info("queued payload decided again: consent changed since it was decided", "message_id", id, "route", rt, "destination", d.Name)
		}
		return &redecided{h: nh, data: nd.Body, seq: ack.Sequence}, append(recs, rec), nil
	}
	dl, err := r.deadLetterPayload(ctx, d, h, data, base, cause)
	if err != nil {
		return nil, nil, err
	}
	return nil, append(recs, dl), nil
}

// lastTried returns the payload that attempts a at the payload queued at
// outbound sequence seq were made with, when consent changed before them
// and it was decided again (their records name where the new one is
// stored), or nil when they were made with the queued one. One no longer
// stored (the outbound stream's limits removed it) is nil too, logged:
// the queued payload is all there is to keep. An error means the store
// could not say.
func (r *Router) lastTried(ctx context.Context, a attempts, seq uint64) (*redecided, error) {
	if a.last == nil || a.last.SentSeq == 0 || a.last.SentSeq == seq {
		return nil, nil
	}
	st, err := r.js.Stream(ctx, store.StreamOutbound)
	if err != nil {
		return nil, fmt.Errorf("reading the payload decided again for %s: %w", a.last.MessageID, err)
	}
	m, err := st.GetMsg(ctx, a.last.SentSeq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		r.o.Logger.Warn("payload decided again is no longer stored: the queued one is kept", "message_id", a.last.MessageID, "destination", a.last.Destination)
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the payload decided again for %s: %w", a.last.MessageID, err)
	}
	if m.Subject != redecidedSubject(a.last.Destination) {
		return nil, fmt.Errorf("outbound sequence %d, named as the payload decided again for %s, holds another subject", a.last.SentSeq, a.last.MessageID)
	}
	return &redecided{h: m.Header, data: m.Data, seq: m.Sequence}, nil
}

// delivers reports whether the loaded route named rt delivers to
// destination dest.
func (r *Router) delivers(rt, dest string) bool {
	for _, x := range r.o.Routes {
		if x.Name != rt {
			continue
		}
		for _, d := range x.Destinations {
			if d.Name == dest {
				return true
			}
		}
	}
	return false
}
