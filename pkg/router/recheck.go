package router

import (
	"context"
	"errors"
	"fmt"
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

// Consent is decided when a message is routed, but a payload may wait in
// its destination's queue for minutes or hours (the receiver is down and
// retries back off). A patient who withdraws a Consent, or who joins the
// national data opt-out, meanwhile must stop what has not left yet. So
// before an attempt at a payload whose decision is older than
// Options.RecheckAfter, the delivery stage asks whether, for the patients
// whose keyed hashes the payload's headers carry, a Consent was written
// since, or, where the opt-out gate applied to the decision, one of them
// is on the opt-out list now (Options.ConsentChanges). If so, the payload
// is not sent as queued: its stored input is routed again by its route for
// its destination alone, as a replay of a delivery dead letter is, so
// consent is decided, redacted and audited anew, and the queued payload
// ends with a replayed record (outcome audit.OutcomeRerouted) that the
// reconciler counts as finishing it. A payload whose input is gone, or
// whose route no longer delivers to its destination, is dead-lettered
// (fault.CodeConsentChanged) rather than sent undecided.
//
// Routing again puts the new payload behind what the patient's partition
// queued since; receivers that apply events in order see it late, as
// after any replay. Only the patient whose consent changed is affected.
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

// rerouteForConsent routes payload data (headers h, stored at outbound
// sequence seq) again for d alone because its consent changed, and
// returns the records that end the queued payload: one replayed record,
// or, when its input is gone, a dead letter's.
func (r *Router) rerouteForConsent(ctx context.Context, d *Destination, h nats.Header, data []byte, seq uint64) ([]audit.Record, error) {
	ctx = context.WithoutCancel(ctx)
	id, rt := h.Get(envelope.HeaderID), h.Get(envelope.HeaderRoute)
	base := audit.Record{MessageID: id, Route: rt, Destination: d.Name, Stream: store.StreamOutbound, Seq: seq, Hash: audit.Hash(data)}
	patientOf(h, &base)
	// The payload's own place names the new routing: the same payload
	// found changed again (a restart before it was acknowledged) routes
	// once, and its records are not taken for another's.
	gen := "recheck." + d.Name + "." + strconv.FormatUint(seq, 10)
	var in *nats.Msg
	var err error
	why := ""
	if r.delivers(rt, d.Name) {
		in, _, err = storedInput(ctx, r.js, id, gen)
	} else {
		why = "route " + rt + " no longer delivers to " + d.Name
	}
	var ns *notStoredError
	if errors.As(err, &ns) {
		why, err = ns.why, nil
	}
	switch {
	case why != "":
		advice := "replay it as stored to send it anyway"
		if ns == nil {
			advice = "a replay can send it once the route delivers there again"
		}
		cause := fault.Newf(fault.CodeConsentChanged, "consent changed after this payload was decided, and it cannot be decided again (%s): %s", why, advice)
		dl, err := r.deadLetterPayload(ctx, d, h, data, base, cause)
		if err != nil {
			return nil, err
		}
		return []audit.Record{dl}, nil
	case err != nil:
		return nil, err
	}
	in.Header.Set(envelope.HeaderRoute, rt)
	in.Header.Set(headerOnly, d.Name)
	in.Header.Set(envelope.HeaderReplay, gen)
	in.Header.Set(jetstream.MsgIDHeader, "recheck|"+d.Name+"|"+strconv.FormatUint(seq, 10)+"|"+id)
	// Dated before the new routing's records, which follow it.
	rec := base
	rec.Time, rec.Event, rec.Outcome = time.Now().UTC(), audit.Replayed, audit.OutcomeRerouted
	rec.Reason = "not sent as queued: a Consent or the opt-out list changed after its consent decision, so it is routed again for this destination and consent decided anew"
	ack, err := r.js.PublishMsg(ctx, in)
	if err != nil {
		return nil, fmt.Errorf("routing %s again after a consent change: %w", id, err)
	}
	if !ack.Duplicate {
		r.o.Metrics.Delivered.WithLabelValues(d.Name, "rerouted").Inc()
		r.o.Logger.Info("queued payload routed again: consent changed since it was decided", "message_id", id, "route", rt, "destination", d.Name)
	}
	return []audit.Record{rec}, nil
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
