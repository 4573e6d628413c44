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
	"github.com/junction-fhir/junction/pkg/store"
)

// DeadLetter is one dead-lettered message, without its payload.
type DeadLetter struct {
	Seq         uint64    `json:"seq"`
	Time        time.Time `json:"time"`
	MessageID   string    `json:"message_id"`
	Stage       string    `json:"stage"`
	Route       string    `json:"route,omitempty"`
	Destination string    `json:"destination,omitempty"`
	Source      string    `json:"source,omitempty"`
	MessageType string    `json:"message_type,omitempty"`
	Code        string    `json:"code"`
	Reason      string    `json:"reason"`
	Attempts    int       `json:"attempts,omitempty"`
	// Detail is the receiver's answer or the failure's cause, kept for
	// the people who fix it. It may hold patient data: the admin API
	// serves it only to callers allowed to see payloads.
	Detail string `json:"detail,omitempty"`
}

// ParseWindowTime reads an end of a time window: an RFC 3339 time, or a
// duration such as 90m meaning that long before now; "" is no bound.
func ParseWindowTime(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d).UTC(), nil
	}
	return time.Time{}, fmt.Errorf("time %q: use RFC 3339, such as 2026-11-23T09:00:00Z, or a duration before now, such as 2h", s)
}

// Filter selects dead letters (and, for replay by id, stored messages).
type Filter struct {
	IDs         []string  `json:"ids,omitempty"`
	Route       string    `json:"route,omitempty"`
	Destination string    `json:"destination,omitempty"`
	Since       time.Time `json:"since,omitzero"`
	Until       time.Time `json:"until,omitzero"`
	Limit       int       `json:"limit,omitempty"`
}

func (f Filter) match(d DeadLetter) bool {
	if len(f.IDs) > 0 {
		ok := false
		for _, id := range f.IDs {
			ok = ok || id == d.MessageID
		}
		if !ok {
			return false
		}
	}
	if f.Route != "" && f.Route != d.Route {
		return false
	}
	if f.Destination != "" && f.Destination != d.Destination {
		return false
	}
	if !f.Since.IsZero() && d.Time.Before(f.Since) {
		return false
	}
	if !f.Until.IsZero() && d.Time.After(f.Until) {
		return false
	}
	return true
}

func deadLetterOf(seq uint64, t time.Time, subj string, h nats.Header) DeadLetter {
	d := DeadLetter{
		Seq: seq, Time: t, MessageID: h.Get(envelope.HeaderID), Stage: h.Get(envelope.HeaderStage),
		Source: h.Get(envelope.HeaderSource), MessageType: h.Get(envelope.HeaderMsgType),
		Code: h.Get(envelope.HeaderReasonCode), Reason: h.Get(envelope.HeaderReason),
		Route: h.Get(envelope.HeaderRoute), Destination: h.Get(envelope.HeaderDestination),
		Detail: h.Get(envelope.HeaderDetail),
	}
	d.Attempts, _ = strconv.Atoi(h.Get(envelope.HeaderAttempt))
	if d.Stage == "route" && d.Route == "" {
		// Route-stage dead letters carry the ingress headers; the route is
		// the subject's last token.
		d.Route = subj[strings.LastIndexByte(subj, '.')+1:]
	}
	return d
}

// ListDeadLetters returns the dead letters matching f, oldest first: with
// f.Limit the oldest that many, or with newest the newest that many.
func ListDeadLetters(ctx context.Context, js jetstream.JetStream, f Filter, newest bool) ([]DeadLetter, error) {
	var out []DeadLetter
	err := scanDeadLetters(ctx, js, func(m jetstream.Msg, d DeadLetter) bool {
		if f.match(d) {
			out = append(out, d)
		}
		if !newest {
			return f.Limit <= 0 || len(out) < f.Limit
		}
		if f.Limit > 0 && len(out) >= 2*f.Limit {
			// Only the last Limit are wanted: keep memory to twice that.
			out = append(out[:0], out[len(out)-f.Limit:]...)
		}
		return true
	})
	if newest && f.Limit > 0 && len(out) > f.Limit {
		out = out[len(out)-f.Limit:]
	}
	return out, err
}

func scanDeadLetters(ctx context.Context, js jetstream.JetStream, fn func(jetstream.Msg, DeadLetter) bool) error {
	err := scanFrom(ctx, js, store.StreamDeadLetter, jetstream.OrderedConsumerConfig{}, scanPayloadBatch, func(m jetstream.Msg, meta *jetstream.MsgMetadata) (bool, error) {
		return !fn(m, deadLetterOf(meta.Sequence.Stream, meta.Timestamp, m.Subject(), m.Headers())), nil
	}, nil)
	if err != nil {
		return fmt.Errorf("reading dead letters: %w", err)
	}
	return nil
}

// afterSend returns the context for what must follow a resend once it is
// queued (its audit record, removing its dead letter): not cancelled with
// ctx, bounded by its own time.
func afterSend(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
}

// ReplayResult reports what a replay did.
type ReplayResult struct {
	Replayed []DeadLetter `json:"replayed"`
	// AlreadyReplayed lists matching dead letters another replay running
	// at the same time (or an earlier one that stopped before removing
	// them) had queued already: resent once, by that replay.
	AlreadyReplayed []DeadLetter `json:"already_replayed,omitempty"`
	// Rerouted lists message ids re-run through routing from their stored
	// raw input (replay by id of messages that were not dead-lettered).
	Rerouted []string `json:"rerouted,omitempty"`
	// Skipped lists matching dead letters left in place, and ids with no
	// stored input of their own to route again, with why.
	Skipped []Skipped `json:"skipped,omitempty"`
}

// Skipped is a dead letter a replay left in place, or a message id it
// could not route again (stage "ingress").
type Skipped struct {
	DeadLetter
	Why string `json:"why"`
}

// ReplayOptions say what a replay may resend, and where.
type ReplayOptions struct {
	// OnlyDests, when set, limits the destinations.
	OnlyDests []string
	// Routes are the loaded routes, each with its destinations.
	Routes map[string][]string
	// Dests are the configured destinations.
	Dests map[string]bool
	// AsStored resends a delivery dead letter whose stored input is gone
	// (past the ingress retention) as its payload was stored, without
	// deciding consent again; the replayed record says so. Without it
	// such a dead letter is left.
	AsStored bool
	// Again routes again, by id, a message that was delivered somewhere
	// and has no dead letter, which sends it to its receivers again.
	// Without it such an id is left, with why, so that a replay command
	// repeated from a shell's history does not quietly send twice.
	Again bool
	// Principal is the configured name of the caller who asked (never a
	// secret), written on each replayed record, so that a resend, above
	// all one as stored, names who made it in the message's own trail.
	Principal string
}

// Replay resends dead letters matching f: route-stage ones are routed
// again (by the route that failed, with the current mapping), and so are
// delivery-stage ones, by their route for their destination alone, so that
// the patient's consent is decided again rather than a payload decided
// before a Consent or opt-out changed being sent as stored. With f.IDs, ids that have no dead
// letter are re-routed from their stored raw input through every route.
// onlyDests, when set, limits the destinations. Each replayed dead letter
// is removed from the dead-letter stream and a replayed record is audited.
// Dead letters are resent in the order their messages were received (by
// message id), not the order they were dead-lettered, so one patient's
// messages replayed together reach the receiver in their order.
//
// Dead letters are left in place (and reported as skipped) when their
// route no longer exists (routes gives the routes that do, each with its
// destinations) or, for a delivery, no longer delivers to their
// destination, when their destination is not configured any more (dests
// reports those that are: nothing would take a payload queued for it) or
// not among onlyDests, when their stage cannot be replayed, or when one is
// a whole stored batch its stage could not read (batch-<sequence>).
// aw records the replays; nil makes a writer of its own.
func Replay(ctx context.Context, js jetstream.JetStream, aw *audit.Writer, f Filter, opts ReplayOptions) (*ReplayResult, error) {
	onlyDests, routes, dests := opts.OnlyDests, opts.Routes, opts.Dests
	res := &ReplayResult{}
	dlq, err := js.Stream(ctx, store.StreamDeadLetter)
	if err != nil {
		return nil, fmt.Errorf("opening dead-letter stream: %w", err)
	}
	if aw == nil {
		aw = audit.NewWriter(js)
	}
	gen := strconv.FormatInt(time.Now().UnixNano(), 36)
	type item struct {
		d    DeadLetter
		subj string
		h    nats.Header
		data []byte
	}
	var items []item
	err = scanDeadLetters(ctx, js, func(m jetstream.Msg, d DeadLetter) bool {
		if f.match(d) {
			items = append(items, item{d: d, subj: m.Subject(), h: m.Headers(), data: m.Data()})
		}
		return f.Limit <= 0 || len(items) < f.Limit
	})
	if err != nil {
		return nil, err
	}
	// Dead letters are stored in the order they failed, which is not the
	// order their messages came: a patient's admission dead-lettered after
	// its discharge (say, on a second failure) would be resent after it.
	// They are resent in the order received, as message ids sort by their
	// receipt time, so each patient's partition takes them in that order.
	slices.SortStableFunc(items, func(a, b item) int { return strings.Compare(a.d.MessageID, b.d.MessageID) })
	found := map[string]bool{}
	for _, it := range items {
		found[it.d.MessageID] = true
		nm := nats.NewMsg("")
		for k, v := range it.h {
			switch k {
			case envelope.HeaderStage, envelope.HeaderReason, envelope.HeaderReasonCode, envelope.HeaderDetail, envelope.HeaderAttempt, jetstream.MsgIDHeader,
				HeaderLane, HeaderAttemptsMade, HeaderRetryAfter: // a replay starts a fresh budget, not a lane's
				continue
			}
			nm.Header[k] = v
		}
		part, _ := strconv.Atoi(it.h.Get(envelope.HeaderPartition))
		replayName := gen
		outcome, reason := "replayed", "dead letter replayed from stage "+it.d.Stage
		rerouted := false // a delivery dead letter routed again from its input
		skip := func(why string) { res.Skipped = append(res.Skipped, Skipped{DeadLetter: it.d, Why: why}) }
		if isBatchDeadLetter(it.d) {
			// No source, partition or route of a message to send it
			// by: queued as one, nothing would take it.
			skip("a stored batch its stage could not read (such as one a later version wrote, read after a rollback), not one message: replay cannot resend it; inspect it")
			continue
		}
		switch it.d.Stage {
		case "route":
			if _, ok := routes[it.d.Route]; !ok {
				skip("route " + it.d.Route + " is not loaded")
				continue
			}
			nm.Subject = IngressSubject(it.h.Get(envelope.HeaderSource), part)
			nm.Header.Set(envelope.HeaderRoute, it.d.Route)
		case "delivery":
			if !dests[it.d.Destination] {
				skip("destination " + it.d.Destination + " is not configured")
				continue
			}
			if len(onlyDests) > 0 && !slices.Contains(onlyDests, it.d.Destination) {
				skip("destination not among those named")
				continue
			}
			rdests, ok := routes[it.d.Route]
			if !ok {
				skip("route " + it.d.Route + " is not loaded")
				continue
			}
			if !slices.Contains(rdests, it.d.Destination) {
				skip("route " + it.d.Route + " no longer delivers to " + it.d.Destination)
				continue
			}
			// The payload is not sent as stored: its patient's Consents
			// and opt-out may have changed since it was decided. The
			// stored input is routed again by the dead letter's route for
			// its destination alone, so consent is decided (and audited)
			// anew, with the current mapping.
			in, _, err := storedInput(ctx, js, it.d.MessageID, gen)
			var ns *notStoredError
			switch {
			case errors.As(err, &ns) && opts.AsStored:
				// The operator asked for the stored payload to go as it is.
				nm.Subject = OutboundSubject(it.d.Destination, part)
				nm.Data = it.data
				// The operator's choice stands for the decision: a
				// check before sending asks only about changes after it.
				setDecided(nm.Header, time.Now(), "", decidedOptOut(nm.Header))
				outcome = audit.OutcomeResentAsStored
				reason = "dead letter resent as stored (its input is gone, so consent was not decided again)"
			case errors.As(err, &ns):
				skip(ns.why + "; its consent cannot be decided again, so it is not resent (replay it as stored to send it anyway)")
				continue
			case err != nil:
				return res, err
			default:
				nm = in
				nm.Header.Set(envelope.HeaderRoute, it.d.Route)
				nm.Header.Set(headerOnly, it.d.Destination)
				// Two dead letters of one message and route, replayed
				// together, are routed again twice: each needs a replay
				// name of its own, or the second's records would be taken
				// for the first's (the route stage dedupes them by it).
				replayName = gen + "." + strconv.FormatUint(it.d.Seq, 10)
				rerouted = true
			}
		default:
			skip("stage " + it.d.Stage + " cannot be replayed; inspect it")
			continue
		}
		if len(onlyDests) > 0 && !rerouted {
			nm.Header.Set(headerOnly, strings.Join(onlyDests, ","))
		}
		nm.Header.Set(envelope.HeaderReplay, replayName)
		// The dead letter's own sequence, not this replay's, names the
		// resend: two replays at once (or one after a replay that died
		// before removing the dead letter, within the stream's dedupe
		// window) queue it once.
		dl := strconv.FormatUint(it.d.Seq, 10) + "|" + it.d.MessageID
		nm.Header.Set(jetstream.MsgIDHeader, "replay|dl|"+dl)
		if !rerouted {
			nm.Data = it.data
		}
		ack, err := js.PublishMsg(ctx, nm)
		if err != nil {
			return res, fmt.Errorf("replaying %s: %w", it.d.MessageID, err)
		}
		// One replayed record per dead letter, whichever replay writes it
		// (one that queued it may have stopped before recording it).
		rec := audit.Record{Time: time.Now().UTC(), MessageID: it.d.MessageID, Event: audit.Replayed, Route: it.d.Route, Destination: it.d.Destination, Outcome: outcome, Reason: reason, Principal: opts.Principal}
		// A delivery-stage dead letter keeps the patient hash its payload
		// was queued with, and so does the replayed payload (every header
		// but the dead letter's own is copied above).
		patientOf(it.h, &rec)
		// Queued now: the record and the removal are finished even if
		// the caller goes away or the engine starts draining meanwhile,
		// so a resent message never lacks its replayed record.
		done, cancel := afterSend(ctx)
		err = aw.Write(done, it.d.MessageID, "replayed|dl|"+dl, rec)
		if err == nil {
			if derr := dlq.DeleteMsg(done, it.d.Seq); derr != nil && !goneAlready(derr) {
				err = fmt.Errorf("removing replayed dead letter: %w", derr)
			}
		}
		cancel()
		if err != nil {
			return res, err
		}
		if ack.Duplicate {
			res.AlreadyReplayed = append(res.AlreadyReplayed, it.d)
			continue
		}
		res.Replayed = append(res.Replayed, it.d)
	}
	for _, id := range f.IDs {
		if found[id] {
			continue
		}
		if !opts.Again {
			to, err := deliveredTo(ctx, js, id)
			if err != nil {
				return res, err
			}
			if len(onlyDests) > 0 {
				// Only those destinations would be sent to again.
				to = slices.DeleteFunc(to, func(d string) bool { return !slices.Contains(onlyDests, d) })
			}
			if len(to) > 0 {
				res.Skipped = append(res.Skipped, Skipped{DeadLetter: DeadLetter{MessageID: id, Stage: "ingress"},
					Why: "not dead-lettered, and delivered already (to " + strings.Join(to, ", ") + "): routing it again would send it again: replay --again (API: \"again\": true) does so"})
				continue
			}
		}
		if err := reroute(ctx, js, aw, id, gen, onlyDests, opts.Principal); err != nil {
			var ns *notStoredError
			if errors.As(err, &ns) {
				res.Skipped = append(res.Skipped, Skipped{DeadLetter: DeadLetter{MessageID: id, Stage: "ingress"}, Why: ns.why})
				continue
			}
			return res, err
		}
		res.Rerouted = append(res.Rerouted, id)
	}
	return res, nil
}

// isBatchDeadLetter reports whether d is a whole stored batch that its
// stage could not read, dead-lettered under the name batchHeader gives it
// (message ids are ULIDs, never so named).
func isBatchDeadLetter(d DeadLetter) bool {
	return strings.HasPrefix(d.MessageID, batchDeadLetterPrefix)
}

// goneAlready reports whether err, from deleting a dead letter, says it
// was deleted already (by another replay). The server's answer reaches
// the client only as text: "no message found", or "sequence N not found"
// past the stream's last message.
func goneAlready(err error) bool {
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return true
	}
	msg := err.Error()
	return errors.Is(err, jetstream.ErrMsgDeleteUnsuccessful) &&
		(strings.Contains(msg, "no message found") || strings.Contains(msg, "sequence") && strings.Contains(msg, "not found"))
}

// notStoredError says why an id asked to be routed again has no stored
// input of its own: the replay leaves it, and says why.
type notStoredError struct{ why string }

func (e *notStoredError) Error() string { return e.why }

// notStored explains, from its trail, why message id has no input to
// route again.
func notStored(trail []audit.Record, id string) error {
	hops := 0
	for _, r := range trail {
		if r.Event == audit.Duplicate && r.MessageID == id && r.Stream == store.StreamIngestLog {
			return &notStoredError{why: "a resend, never routed under its own id (" + r.Reason + "); replay the message it repeats"}
		}
		if r.Event != audit.Accessed {
			hops++ // reads of the trail are not the message's own
		}
	}
	if hops == 0 {
		return &notStoredError{why: "no message with this id"}
	}
	return &notStoredError{why: "no stored input found (not yet accepted for routing, or past the ingress retention)"}
}

// storedInput returns message id's stored raw input as a message to
// publish on the ingress stream again (its headers but its dedupe id,
// marked as replay gen), and the patient hash of its records. An id with
// no stored input gives a *notStoredError.
func storedInput(ctx context.Context, js jetstream.JetStream, id, gen string) (*nats.Msg, string, error) {
	trail, err := Trail(ctx, js, id)
	if err != nil {
		return nil, "", err
	}
	var seq uint64
	var patient string
	for _, r := range trail {
		if r.Event == audit.Received && r.Stream == store.StreamIngress {
			seq = r.Seq
		}
		if r.Patient != "" {
			patient = r.Patient
		}
	}
	if seq == 0 {
		return nil, "", notStored(trail, id)
	}
	raw, err := LoadPayload(ctx, js, store.StreamIngress, seq, id, "")
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, "", &notStoredError{why: "stored input is gone (past the ingress retention)"}
	}
	if err != nil {
		return nil, "", fmt.Errorf("message %s: reading stored input: %w", id, err)
	}
	nm := nats.NewMsg(raw.Subject)
	for k, v := range raw.Header {
		if k != jetstream.MsgIDHeader {
			nm.Header[k] = v
		}
	}
	nm.Header.Set(envelope.HeaderReplay, gen)
	nm.Data = raw.Data
	return nm, patient, nil
}

// deliveredTo returns the destinations message id's trail records as
// delivered to, sorted.
func deliveredTo(ctx context.Context, js jetstream.JetStream, id string) ([]string, error) {
	trail, err := Trail(ctx, js, id)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, r := range trail {
		if r.Event == audit.Delivered && r.Destination != "" && !slices.Contains(out, r.Destination) {
			out = append(out, r.Destination)
		}
	}
	slices.Sort(out)
	return out, nil
}

// reroute republishes a stored message's raw input for every route.
func reroute(ctx context.Context, js jetstream.JetStream, aw *audit.Writer, id, gen string, onlyDests []string, principal string) error {
	nm, patient, err := storedInput(ctx, js, id, gen)
	if err != nil {
		return err
	}
	if len(onlyDests) > 0 {
		nm.Header.Set(headerOnly, strings.Join(onlyDests, ","))
	}
	nm.Header.Set(jetstream.MsgIDHeader, "replay|"+gen+"|"+id)
	if _, err := js.PublishMsg(ctx, nm); err != nil {
		return fmt.Errorf("replaying %s: %w", id, err)
	}
	// The replayed record carries the patient hash the message's earlier
	// records did; routing it again writes the hash on its new records.
	done, cancel := afterSend(ctx)
	defer cancel()
	return aw.Write(done, id, "", audit.Record{Time: time.Now().UTC(), MessageID: id, Event: audit.Replayed, Outcome: "rerouted", Reason: "stored input routed again", Patient: patient, Principal: principal})
}
