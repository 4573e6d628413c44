package engine

import (
	"bytes"
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/junction-fhir/junction/pkg/access"
	"github.com/junction-fhir/junction/pkg/audit"
	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/hl7v2"
	"github.com/junction-fhir/junction/pkg/nhs"
	"github.com/junction-fhir/junction/pkg/route"
	"github.com/junction-fhir/junction/pkg/router"
	"github.com/junction-fhir/junction/pkg/store"
)

// MessageView is everything known about one message: its trail, its raw
// input and what was sent to each destination. It holds patient data and
// is served only to authorised admin callers.
type MessageView struct {
	ID       string         `json:"id"`
	Trail    []audit.Record `json:"trail"`
	Input    *Payload       `json:"input,omitempty"`
	Outbound []Payload      `json:"outbound,omitempty"`
	// PayloadsOmitted is set when Input and Outbound are left out: the
	// caller may not see payloads (an operator), or asked for none
	// (payloads=false).
	PayloadsOmitted bool `json:"payloads_omitted,omitempty"`
	// Incomplete, when set, says why Trail lacks records: part of the
	// audit stream cannot be read (its files are damaged).
	Incomplete string `json:"incomplete,omitempty"`
}

// Payload is one stored message body.
type Payload struct {
	Stream      string    `json:"stream"`
	Seq         uint64    `json:"seq"`
	Destination string    `json:"destination,omitempty"`
	ContentType string    `json:"content_type,omitempty"`
	Time        time.Time `json:"time"`
	// Body is the payload as stored: text when it is UTF-8, else base64
	// with Encoding "base64" (an ISO 8859-1 HL7 v2 message, say), so the
	// bytes shown are the bytes whose hash the trail records.
	Body     string `json:"body"`
	Encoding string `json:"encoding,omitempty"`
}

// bodyOf returns b as Body and Encoding fields: the text, or base64 when
// b is not UTF-8 (JSON would replace its invalid bytes).
func bodyOf(b []byte) (body, encoding string) {
	if utf8.Valid(b) {
		return string(b), ""
	}
	return base64.StdEncoding.EncodeToString(b), "base64"
}

func (e *Engine) adminMux(mux *http.ServeMux) {
	mux.Handle("GET /api/messages", e.admin("findmessages", e.handleFindMessages))
	mux.Handle("GET /api/messages/{id}", e.admin("messages", e.handleMessage))
	mux.Handle("GET /api/deadletters", e.admin("deadletters", e.handleDeadLetters))
	mux.Handle("POST /api/replay", e.admin("replay", e.handleReplay))
	mux.Handle("GET /api/quarantine", e.admin("quarantine", e.handleQuarantine))
	mux.Handle("GET /api/reconcile", e.admin("reconcile", e.handleReconcile))
	mux.Handle("GET /api/patients/{nhs}/disclosures", e.admin("disclosures", e.handleDisclosures))
	mux.Handle("POST /api/patients/{nhs}/disclosures/withhold", e.admin("withhold", e.handleWithhold))
	// The same, with the NHS number in the body rather than the URL.
	mux.Handle("POST /api/disclosures", withBodyPatient(e.admin("disclosures", e.handleDisclosuresPost)))
	mux.Handle("POST /api/disclosures/withhold", withBodyPatient(e.admin("withhold", e.handleWithholdPost)))
	mux.Handle("GET /fhir/AuditEvent", withSearchParams(e.admin("auditevents", e.handleAuditEvents)))
	mux.Handle("POST /fhir/AuditEvent/_search", withSearchParams(e.admin("auditevents", e.handleAuditEvents)))
	mux.Handle("POST /api/optouts", e.admin("optouts", e.handleOptOuts))
}

// defaultFindWindow is how far back GET /api/messages looks without since.
const defaultFindWindow = 24 * time.Hour

// handleFindMessages lists the messages received with a sender's control
// id (?control_id=; sender=APP|FACILITY or APP, source=, since=, until=;
// since defaults to a day before now), or without one every message of a
// window given at both ends: which Junction message each was, and
// whether it was accepted, a resend or is waiting.
// It holds ids, names and times, no patient data.
func (e *Engine) handleFindMessages(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	fq := router.FindQuery{ControlID: q.Get("control_id"), Sender: q.Get("sender"), Source: q.Get("source")}
	if fq.ControlID == "" && (q.Get("since") == "" || q.Get("until") == "") {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "give control_id, the sender's message id (MSH-10, or a Bundle's identifier value), or a window with both since and until"})
		return
	}
	now := time.Now()
	var err error
	if fq.Since, fq.Until, err = windowFromQuery(q, now); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	if fq.Since.IsZero() {
		fq.Since = now.Add(-defaultFindWindow).UTC()
	}
	if !fq.Until.IsZero() && fq.Until.Before(fq.Since) {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "until is before since"})
		return
	}
	js, done, ok := e.bulk(w, r)
	if !ok {
		return
	}
	defer done()
	res, err := router.Find(r.Context(), js, fq, e.sourceRoutes())
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		return
	}
	if res.Messages == nil {
		res.Messages = []router.Found{}
	}
	// What the sender sent that was refused is part of the answer to
	// "did you get it?": it was received, and is in the quarantine.
	q2, err := router.FindQuarantined(r.Context(), js, fq, quarantinedHeader)
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		return
	}
	res.Quarantined, res.Truncated, res.QuarantineLost = q2.Found, res.Truncated || q2.Truncated, q2.Lost
	done() // the slot is free while the answer is written
	writeJSON(w, http.StatusOK, struct {
		router.FindQuery
		router.FindResult
	}{fq, res})
}

// sourceRoutes maps each source to the routes that read it.
func (e *Engine) sourceRoutes() map[string][]string {
	routes := map[string][]string{}
	for _, rt := range e.plan.Routes {
		routes[rt.Source] = append(routes[rt.Source], rt.Name)
	}
	return routes
}

// maxBulkReads bounds the admin reads of whole streams (reconciles,
// finds, dead-letter lists, disclosure reports, AuditEvent searches) that
// run at once. Each reads up to the whole audit or ingress stream, for
// seconds on a large store, and competes with routing for the CPU and
// the store: without a bound, a caller repeating a disclosure report
// slows every patient's messages.
const maxBulkReads = 2

// bulkRetryAfter is the Retry-After, in seconds, of a read refused
// while maxBulkReads others run.
const bulkRetryAfter = "5"

// maxPatientServiceBulkReads bounds those of them that callers holding
// no role but patient_service run at once: fewer than maxBulkReads, so a
// patient-facing service, the least trusted and the most exposed caller,
// can never hold every slot and keep operators and auditors out.
const maxPatientServiceBulkReads = 1

// principalName is the configured name of the caller of ctx, "" when the
// request carries none.
func principalName(ctx context.Context) string {
	p, _ := access.PrincipalFrom(ctx)
	return p.Name
}

// errBulkBusy is acquireBulk's answer while maxBulkReads reads run.
var errBulkBusy = errors.New("other reads of the whole store are running; try again in a few seconds")

// acquireBulk opens a store connection for a read of whole streams (see
// store.Store.Bulk) for the caller of ctx when fewer than maxBulkReads
// are open (and, for a patient service, fewer than
// maxPatientServiceBulkReads of its kind), or returns errBulkBusy. Call
// done when the read is finished.
func (e *Engine) acquireBulk(ctx context.Context) (jetstream.JetStream, func(), error) {
	p, _ := access.PrincipalFrom(ctx)
	outside := p.Has(access.PatientService) && !p.Has(access.Operator) && !p.Has(access.Auditor) && !p.Has(access.IntegrationEngineer)
	if outside {
		select {
		case e.patientServiceReads <- struct{}{}:
		default:
			return nil, nil, errBulkBusy
		}
	}
	release := func() {
		<-e.bulkReads
		if outside {
			<-e.patientServiceReads
		}
	}
	select {
	case e.bulkReads <- struct{}{}:
	default:
		if outside {
			<-e.patientServiceReads
		}
		return nil, nil, errBulkBusy
	}
	js, closeConn, err := e.store.Bulk()
	if err != nil {
		release()
		return nil, nil, err
	}
	var once sync.Once
	// Called twice (at once when the read is done, and deferred) it
	// releases once.
	return js, func() { once.Do(func() { closeConn(); release() }) }, nil
}

// bulk is acquireBulk for the admin API: it answers 429 with Retry-After
// while other reads run, or 503 when the store cannot be reached, and
// then returns false.
func (e *Engine) bulk(w http.ResponseWriter, r *http.Request) (jetstream.JetStream, func(), bool) {
	js, done, err := e.acquireBulk(r.Context())
	switch {
	case errors.Is(err, errBulkBusy):
		w.Header().Set("Retry-After", bulkRetryAfter)
		writeJSON(w, http.StatusTooManyRequests, map[string]string{"error": err.Error()})
		return nil, nil, false
	case err != nil:
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": err.Error()})
		return nil, nil, false
	}
	return js, done, true
}

// handleReconcile reports the fate of every retained accepted message,
// or of those received since the query's since: counts by terminal
// outcome and the messages without one. It holds ids, sources and times
// only, no patient data.
func (e *Engine) handleReconcile(w http.ResponseWriter, r *http.Request) {
	since, err := router.ParseWindowTime(r.URL.Query().Get("since"), time.Now())
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "since must be an RFC 3339 time or a duration before now, such as 2h"})
		return
	}
	js, done, ok := e.bulk(w, r)
	if !ok {
		return
	}
	defer done()
	rep, err := router.Reconcile(r.Context(), js, e.sourceRoutes(), since)
	done() // the slot is free while the answer is written
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		return
	}
	if d := r.URL.Query().Get("destination"); d != "" && !e.knownDestination(d, rep.Pending) {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "unknown destination " + strconv.Quote(d) + ": not configured, and no pending message waits for it"})
		return
	}
	if rep.Pending == nil {
		rep.Pending = []audit.Pending{}
	}
	writeJSON(w, http.StatusOK, rep)
}

// knownDestination reports whether d is a configured destination, or one
// since removed that a pending message still waits for.
func (e *Engine) knownDestination(d string, pending []audit.Pending) bool {
	if _, ok := e.dests[d]; ok {
		return true
	}
	return slices.ContainsFunc(pending, func(p audit.Pending) bool { return p.WaitsFor(d) })
}

// quarantinedHeader reads the control id, sender ("APP|FACILITY") and
// message type from the HL7 v2 header of quarantined input, or from a
// refused FHIR post the identifier value and resourceType of a Bundle
// (with no sender: a FHIR message names none), as the accepted messages
// have them (see router.HeaderOf). They are what the sender quotes when
// asking after a message, not patient data.
func quarantinedHeader(raw []byte) (controlID, sender, messageType string, ok bool) {
	if ctrl, rt, ok := fhirIdentifier(raw); ok {
		return ctrl, "", rt, true
	}
	m, err := hl7v2.ParseHeader(raw)
	if err != nil || m.ControlID() == "" {
		return "", "", "", false
	}
	typ := m.MessageType()
	if !plausibleMessageType(typ) {
		// Refused input's MSH-9 may hold anything, patient data
		// included; a message type is three letters and an event.
		typ = ""
	}
	return m.ControlID(), m.SendingApp() + "|" + m.SendingFacility(), typ, true
}

// plausibleMessageType reports whether typ has the shape of an HL7 v2
// message type, "ADT" or "ADT^A01": codes of three letters or digits (HL7
// tables 0076 and 0003).
func plausibleMessageType(typ string) bool {
	code, event, hasEvent := strings.Cut(typ, "^")
	three := func(s string) bool {
		if len(s) != 3 {
			return false
		}
		for i := range 3 {
			if c := s[i]; !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
				return false
			}
		}
		return true
	}
	return three(code) && (!hasEvent || three(event))
}

// maxQuarantinedIdentifier bounds the identifier read from a refused
// FHIR post, as the FHIR input bounds an accepted one's.
const maxQuarantinedIdentifier = 512

// fhirIdentifier reads a JSON object's top-level resourceType and
// identifier.value (a Bundle's identifier), member by member, so that a
// body the quarantine kept only the start of still gives them when they
// come before the cut. ok is false when raw is no such object, or names
// no identifier.
func fhirIdentifier(raw []byte) (value, resourceType string, ok bool) {
	trimmed := bytes.TrimLeft(bytes.TrimPrefix(raw, []byte("\xef\xbb\xbf")), " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return "", "", false
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	if _, err := dec.Token(); err != nil {
		return "", "", false
	}
	for dec.More() && (value == "" || resourceType == "") {
		tok, err := dec.Token()
		if err != nil {
			break
		}
		key, _ := tok.(string)
		switch key {
		case "resourceType":
			if dec.Decode(&resourceType) != nil {
				resourceType = ""
			}
		case "identifier":
			var id struct {
				System string `json:"system"`
				Value  string `json:"value"`
			}
			// Never an NHS number: a refused Patient may carry one here.
			if dec.Decode(&id) == nil && len(id.Value) <= maxQuarantinedIdentifier && !nhs.IsNHSNumberSystem(id.System) {
				value = id.Value
			}
		default:
			var skip json.RawMessage
			if dec.Decode(&skip) != nil {
				return bundleIdentifier(value, resourceType)
			}
		}
	}
	return bundleIdentifier(value, resourceType)
}

// bundleIdentifier is fhirIdentifier's answer: a Bundle's identifier
// only, since another resource's identifier (a Patient's, an
// Observation's) may be patient data, which the listings never show.
func bundleIdentifier(value, resourceType string) (string, string, bool) {
	if resourceType != "Bundle" || value == "" {
		return "", "", false
	}
	return value, resourceType, true
}

// QuarantineEntry is one piece of unparseable input kept for inspection.
type QuarantineEntry struct {
	Seq    uint64    `json:"seq"`
	Time   time.Time `json:"time"`
	ID     string    `json:"id"`
	Source string    `json:"source"`
	Reason string    `json:"reason"`
	// ControlID and Sender are read from an HL7 v2 input's header when
	// it has one (MSH-10; MSH-3|MSH-4), so ops can match a refusal to
	// what a sender quotes without reading the body.
	ControlID string `json:"control_id,omitempty"`
	Sender    string `json:"sender,omitempty"`
	// Size is how many bytes are kept: the first 64 KiB of what came.
	Size int `json:"size"`
	// Received is how many bytes came (the part of a too-large frame
	// read before it was refused); more than Size when only the start
	// is kept.
	Received int `json:"received"`
	// Body is the input kept (it may hold patient data), as Payload.Body
	// with Encoding.
	Body     string `json:"body,omitempty"`
	Encoding string `json:"encoding,omitempty"`
}

// handleQuarantine lists quarantined input, newest last; ?body=true
// includes the bytes. Entries of the window the store cannot read are
// passed over and named, as runs, in the Junction-Quarantine-Unreadable
// header (the newest 16; older ones summed: setUnreadable).
func (e *Engine) handleQuarantine(w http.ResponseWriter, r *http.Request) {
	limit := 100
	if l := r.URL.Query().Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 10000 {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "limit must be 1 to 10000"})
			return
		}
		limit = n
	}
	withBody := r.URL.Query().Get("body") == "true"
	out := []QuarantineEntry{}
	// Newest first while reading, so that when the bodies reach the
	// answer's budget the newest entries are the ones kept.
	bodies := 0
	listing, err := router.ListQuarantine(r.Context(), e.store.JS, limit, func(m *jetstream.RawStreamMsg) bool {
		if withBody && bodies+len(m.Data) > maxQuarantineBodyBytes {
			// This one and every older one in the window are left out.
			return true
		}
		q := QuarantineEntry{Seq: m.Sequence, Time: m.Time, ID: m.Header.Get(envelope.HeaderID), Source: m.Header.Get(envelope.HeaderSource), Reason: m.Header.Get(envelope.HeaderReason),
			Size: len(m.Data), Received: len(m.Data)}
		if n, err := strconv.Atoi(m.Header.Get(envelope.HeaderReceivedBytes)); err == nil && n > q.Size {
			q.Received = n
		}
		if ctrl, sender, _, ok := quarantinedHeader(m.Data); ok {
			q.ControlID, q.Sender = ctrl, sender
		}
		if withBody {
			bodies += len(m.Data)
			q.Body, q.Encoding = bodyOf(m.Data)
		}
		out = append(out, q)
		return false
	})
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		return
	}
	slices.Reverse(out)
	if listing.Omitted > 0 {
		// The oldest entries of the window did not fit: say how many.
		w.Header().Set(headerQuarantineOmitted, strconv.Itoa(listing.Omitted))
	}
	// Entries of the window the store cannot read (damaged files):
	// named beside the list, which stays a list of entries.
	if err := setUnreadable(w.Header(), listing.Lost); err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// setUnreadable names in h the runs lost, oldest first, of unreadable
// quarantine entries: the newest maxUnreadableRuns of them in the
// Junction-Quarantine-Unreadable header, and the older ones, when there
// are more, summed in the Junction-Quarantine-Unreadable-Omitted header.
func setUnreadable(h http.Header, lost []router.LostRun) error {
	if len(lost) == 0 {
		return nil
	}
	named, left := lost, []router.LostRun(nil)
	if n := len(lost); n > maxUnreadableRuns {
		left, named = lost[:n-maxUnreadableRuns], lost[n-maxUnreadableRuns:]
	}
	runs, err := json.Marshal(named)
	if err != nil {
		return fmt.Errorf("naming the unreadable quarantine entries: %w", err)
	}
	h.Set(HeaderQuarantineUnreadable, string(runs))
	if len(left) == 0 {
		return nil
	}
	o := UnreadableOmitted{Runs: len(left), First: left[0].First, Last: left[len(left)-1].Last}
	for _, r := range left {
		o.Entries += r.Last - r.First + 1
	}
	sum, err := json.Marshal(o)
	if err != nil {
		return fmt.Errorf("counting the unreadable quarantine entries: %w", err)
	}
	h.Set(HeaderQuarantineUnreadableOmitted, string(sum))
	return nil
}

// maxUnreadableRuns bounds the runs the Junction-Quarantine-Unreadable
// header names, so that however damaged the quarantine, the header stays
// within what HTTP servers, proxies and clients pass (several cut a
// response's headers at 4 or 8 KiB): 16 runs are under 3 KiB.
const maxUnreadableRuns = 16

// UnreadableOmitted sums, in the Junction-Quarantine-Unreadable-Omitted
// header, the runs of unreadable quarantine entries older than those the
// Junction-Quarantine-Unreadable header names: how many runs, how many
// entries in them, and the first sequence of the oldest and the last of
// the newest.
type UnreadableOmitted struct {
	Runs    int    `json:"runs"`
	Entries uint64 `json:"entries"`
	First   uint64 `json:"first"`
	Last    uint64 `json:"last"`
}

// maxQuarantineBodyBytes bounds the input one quarantine listing with
// bodies returns (before base64), so listing cannot run the engine out
// of memory however full the quarantine is; older entries past it are
// left out and counted in the Junction-Quarantine-Omitted header.
const maxQuarantineBodyBytes = 16 << 20

// HeaderQuarantineUnreadable names, as a JSON array of runs (first,
// last, and when the entries either side were kept: after, before),
// oldest first, the entries of a quarantine listing's window the store
// counts but cannot read, or dropped (its files damaged): refused input
// in them cannot be listed. It names the newest 16 runs at most; older
// ones are summed in HeaderQuarantineUnreadableOmitted.
const HeaderQuarantineUnreadable = "Junction-Quarantine-Unreadable"

// HeaderQuarantineUnreadableOmitted sums, as a JSON UnreadableOmitted,
// the runs of unreadable entries of a listing's window older than those
// HeaderQuarantineUnreadable names; absent when it names them all.
const HeaderQuarantineUnreadableOmitted = "Junction-Quarantine-Unreadable-Omitted"

// headerQuarantineOmitted counts the entries a listing with bodies left
// out to stay within maxQuarantineBodyBytes.
const headerQuarantineOmitted = "Junction-Quarantine-Omitted"

// admin wraps an admin handler with authentication, the permission check
// of the endpoint registered as name (see access.RuleFor), the access
// record of audited permissions, and metrics.
func (e *Engine) admin(name string, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rw := &statusWriter{ResponseWriter: w, code: 200}
		defer func() { e.metrics.HTTPRequests.WithLabelValues(name, strconv.Itoa(rw.code)).Inc() }()
		r, ok := e.authorize(rw, r, name)
		if !ok {
			return
		}
		if why := e.notReady(); changesState(name) && why != "" {
			// While draining, routing and the audit writer are closing
			// (a replay now could send without recording it); with the
			// store away or full, nothing could be recorded either.
			rw.Header().Set("Retry-After", "5")
			writeJSON(rw, http.StatusServiceUnavailable, map[string]string{"error": "the engine is not ready (" + why + "); try again later"})
			return
		}
		h(rw, r)
	})
}

// changesState reports whether the admin endpoint registered as name
// changes what the engine holds or does, and so is refused during drain.
func changesState(name string) bool {
	switch access.Permission(name) {
	case access.Replay, access.OptOuts, access.Withhold:
		return true
	}
	return false
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (s *statusWriter) WriteHeader(code int) { s.code = code; s.ResponseWriter.WriteHeader(code) }

// liftDeadlines lifts the listener's read and write timeouts for one
// long request: the write timeout would cut off its answer, and the read
// timeout end its context (the server watches the idle connection for
// the caller going away).
func liftDeadlines(w http.ResponseWriter) error {
	rc := http.NewResponseController(w)
	return errors.Join(rc.SetReadDeadline(time.Time{}), rc.SetWriteDeadline(time.Time{}))
}

// Unwrap lets http.ResponseController reach the connection (a replay
// lifts the listener's deadlines).
func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// handleMessage serves a message's trail, with its payloads when the
// caller may see them and has not asked for none (payloads=false).
func (e *Engine) handleMessage(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !validID(id) {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid message id"})
		return
	}
	if q := r.URL.Query().Get("payloads"); q != "" {
		if _, err := strconv.ParseBool(q); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "payloads must be true or false"})
			return
		}
	}
	var v *MessageView
	var err error
	if payloadAllowed(r.Context()) {
		v, err = LookupMessage(r.Context(), e.store.JS, id)
	} else {
		v, err = lookupTrail(r.Context(), e.store.JS, id)
	}
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		return
	}
	if v.Incomplete == "" && !slices.ContainsFunc(v.Trail, func(rec audit.Record) bool { return rec.Event != audit.Accessed }) {
		// Nothing but records of callers asking for it. (A trail read
		// past damaged files is answered as it is, however little it
		// holds: its records may be in the damage.)
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such message (rejected input has no trail; it may be in the quarantine: junction audit quarantine, GET /api/quarantine)"})
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// validID accepts what message ids look like (subject-token safe).
func validID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, c := range id {
		if !(c >= '0' && c <= '9' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// lookupTrail is a message's trail without its payloads, for callers who
// may not see them.
func lookupTrail(ctx context.Context, js jetstream.JetStream, id string) (*MessageView, error) {
	trail, incomplete, err := readTrail(ctx, js, id)
	if err != nil {
		return nil, err
	}
	return &MessageView{ID: id, Trail: trail, PayloadsOmitted: true, Incomplete: incomplete}, nil
}

// readTrail is router.Trail, with what a trail read past damaged files
// lacks said in incomplete rather than as an error.
func readTrail(ctx context.Context, js jetstream.JetStream, id string) (trail []audit.Record, incomplete string, err error) {
	trail, err = router.Trail(ctx, js, id)
	var inc *audit.IncompleteError
	if errors.As(err, &inc) {
		return trail, inc.Error(), nil
	}
	return trail, "", err
}

// LookupMessage assembles a message's trail and payloads.
func LookupMessage(ctx context.Context, js jetstream.JetStream, id string) (*MessageView, error) {
	trail, incomplete, err := readTrail(ctx, js, id)
	if err != nil {
		return nil, err
	}
	v := &MessageView{ID: id, Trail: trail, Incomplete: incomplete}
	get := func(stream string, seq uint64, dest string) *Payload {
		m, err := router.LoadPayload(ctx, js, stream, seq, id, dest)
		if err != nil {
			return nil
		}
		p := &Payload{Stream: stream, Seq: seq, Destination: dest, ContentType: m.Header.Get("Junction-Content-Type"), Time: m.Time}
		p.Body, p.Encoding = bodyOf(m.Data)
		return p
	}
	seen := map[uint64]bool{}
	for _, rec := range trail {
		switch {
		case rec.Event == audit.Received && rec.Stream == store.StreamIngress && v.Input == nil:
			v.Input = get(rec.Stream, rec.Seq, "")
		case rec.Event == audit.Duplicate && rec.MessageID == id && rec.Stream == store.StreamIngestLog && v.Input == nil:
			// A resend, never stored under its own id: what was received
			// is in the ingest-log batch that carried it.
			v.Input = get(rec.Stream, rec.Seq, "")
		case (rec.Event == audit.Delivered || rec.Event == audit.Failed || rec.Event == audit.DeadLettered) && rec.Stream == store.StreamOutbound && rec.Seq != 0:
			// What was sent: the queued payload, or what deciding
			// consent again made in its place.
			seq := cmp.Or(rec.SentSeq, rec.Seq)
			if seen[seq] {
				continue
			}
			seen[seq] = true
			if p := get(rec.Stream, seq, rec.Destination); p != nil {
				v.Outbound = append(v.Outbound, *p)
			}
		}
	}
	return v, nil
}

// windowFromQuery reads the since and until parameters of q (RFC 3339
// times or durations before now; zero when absent).
func windowFromQuery(q url.Values, now time.Time) (since, until time.Time, err error) {
	for _, p := range []struct {
		name string
		at   *time.Time
	}{{"since", &since}, {"until", &until}} {
		t, perr := router.ParseWindowTime(q.Get(p.name), now)
		if perr != nil {
			return time.Time{}, time.Time{}, errors.New(p.name + " must be an RFC 3339 time or a duration before now, such as 2h")
		}
		*p.at = t
	}
	return since, until, nil
}

func filterFromQuery(r *http.Request) (router.Filter, error) {
	q := r.URL.Query()
	f := router.Filter{Route: q.Get("route"), Destination: q.Get("destination")}
	if ids := q.Get("id"); ids != "" {
		f.IDs = strings.Split(ids, ",")
	}
	var err error
	f.Since, f.Until, err = windowFromQuery(q, time.Now())
	if l := q.Get("limit"); l != "" && err == nil {
		if f.Limit, err = strconv.Atoi(l); err != nil || f.Limit < 1 {
			err = errors.New("limit must be a positive whole number")
		}
	}
	return f, err
}

func (e *Engine) handleDeadLetters(w http.ResponseWriter, r *http.Request) {
	f, err := filterFromQuery(r)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	newest := r.URL.Query().Get("newest") == "true"
	js, done, ok := e.bulk(w, r)
	if !ok {
		return
	}
	defer done()
	dls, err := router.ListDeadLetters(r.Context(), js, f, newest)
	done() // the slot is free while the answer is written
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		return
	}
	if len(dls) == 0 {
		if why := e.unknownName(f); why != "" {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": why})
			return
		}
		dls = []router.DeadLetter{}
	}
	if r.URL.Query().Get("detail") != "true" {
		// Asked for (and authorised as deadletters.payload) only.
		for i := range dls {
			dls[i].Detail = ""
		}
	}
	writeJSON(w, http.StatusOK, dls)
}

// unknownName says why a dead-letter listing that matched nothing names a
// destination not configured or a route not loaded, or returns "". Dead
// letters of a destination or route since removed are still listed, so an
// empty listing of such a name is most likely a mistyped one, which would
// otherwise read as "none waiting" at the very destination that has them.
func (e *Engine) unknownName(f router.Filter) string {
	if d := f.Destination; d != "" {
		if _, ok := e.dests[d]; !ok {
			return "unknown destination " + strconv.Quote(d) + ": not configured, and no dead letter matched names it"
		}
	}
	if rt := f.Route; rt != "" && !slices.ContainsFunc(e.plan.Routes, func(r *route.Route) bool { return r.Name == rt }) {
		return "unknown route " + strconv.Quote(rt) + ": not loaded, and no dead letter matched names it"
	}
	return ""
}

// withoutDetails clears the dead letters' details in res: a replay's
// answer does not show them (GET /api/deadletters?detail=true does).
func withoutDetails(res *router.ReplayResult) {
	if res == nil {
		return
	}
	for i := range res.Replayed {
		res.Replayed[i].Detail = ""
	}
	for i := range res.Skipped {
		res.Skipped[i].Detail = ""
	}
}

// ReplayRequest is the body of POST /api/replay.
type ReplayRequest struct {
	Filter       router.Filter `json:"filter"`
	Destinations []string      `json:"destinations,omitempty"`
	// AsStored resends delivery dead letters whose input is past the
	// ingress retention as stored, without deciding consent again
	// (router.ReplayOptions.AsStored).
	AsStored bool `json:"as_stored,omitempty"`
	// Again routes again, by id, messages that were delivered and have no
	// dead letter (router.ReplayOptions.Again).
	Again bool `json:"again,omitempty"`
}

// replayBody is a ReplayRequest as posted: since and until are RFC 3339
// times or, as for the CLI and the dead-letter listing, durations before
// now such as 2h.
type replayBody struct {
	Filter struct {
		IDs         []string `json:"ids"`
		Route       string   `json:"route"`
		Destination string   `json:"destination"`
		Since       string   `json:"since"`
		Until       string   `json:"until"`
		Limit       int      `json:"limit"`
	} `json:"filter"`
	Destinations []string `json:"destinations"`
	AsStored     bool     `json:"as_stored"`
	Again        bool     `json:"again"`
}

func (e *Engine) handleReplay(w http.ResponseWriter, r *http.Request) {
	var body replayBody
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid replay request: " + err.Error()})
		return
	}
	// Read to the end (at most the 1 MiB above), so the server watches
	// the connection for the caller going away while the replay runs.
	_, _ = io.Copy(io.Discard, r.Body)
	now := time.Now()
	since, err1 := router.ParseWindowTime(body.Filter.Since, now)
	until, err2 := router.ParseWindowTime(body.Filter.Until, now)
	if err1 != nil || err2 != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "filter.since and filter.until must be RFC 3339 times or durations before now, such as 2h"})
		return
	}
	bf := body.Filter
	req := ReplayRequest{Destinations: body.Destinations, AsStored: body.AsStored, Again: body.Again,
		Filter: router.Filter{IDs: bf.IDs, Route: bf.Route, Destination: bf.Destination, Since: since, Until: until, Limit: bf.Limit}}
	f := req.Filter
	if len(f.IDs) == 0 && f.Route == "" && f.Destination == "" && f.Since.IsZero() && f.Until.IsZero() {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "say what to replay: ids, route, destination or a time window"})
		return
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && f.Until.Before(f.Since) {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "the time window ends (until) before it starts (since)"})
		return
	}
	for _, id := range f.IDs {
		if !validID(id) {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid message id " + strconv.Quote(id)})
			return
		}
	}
	if d := f.Destination; d != "" {
		if _, ok := e.dests[d]; !ok {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "unknown destination " + strconv.Quote(d) + " (dead letters of a destination no longer configured cannot be replayed; junction audit deadletters lists them)"})
			return
		}
	}
	for _, d := range req.Destinations {
		if _, ok := e.dests[d]; !ok {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "unknown destination " + strconv.Quote(d)})
			return
		}
	}
	routes := map[string][]string{}
	for _, rt := range e.plan.Routes {
		routes[rt.Name] = []string{}
		for _, d := range rt.Destinations {
			routes[rt.Name] = append(routes[rt.Name], d.Name)
		}
	}
	if rt := f.Route; rt != "" {
		if _, ok := routes[rt]; !ok {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "unknown route " + strconv.Quote(rt) + " (dead letters of a route no longer loaded cannot be replayed; junction audit deadletters lists them)"})
			return
		}
	}
	// A replay of many dead letters (about 70 a second here) outlasts the
	// listener's timeouts. The caller's going away still stops it, and so
	// does the engine's drain, before the audit writer closes.
	if err := liftDeadlines(w); err != nil {
		e.log.Warn("replay: the listener's timeouts stay", "err", err)
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	defer context.AfterFunc(e.drained, cancel)()
	dests := map[string]bool{}
	for name := range e.dests {
		dests[name] = true
	}
	res, err := router.Replay(ctx, e.store.JS, e.audit, f, router.ReplayOptions{OnlyDests: req.Destinations, Routes: routes, Dests: dests, AsStored: req.AsStored, Again: req.Again, Principal: principalName(r.Context())})
	withoutDetails(res)
	// The answer is written under the listener's write timeout again: a
	// caller that stops reading it holds nothing for ever.
	if wt := e.plan.Config.HTTP.WriteTimeout; wt > 0 {
		_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(wt))
	}
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]any{"error": err.Error(), "partial": res})
		return
	}
	e.log.Info("replay", "replayed", len(res.Replayed), "rerouted", len(res.Rerouted), "skipped", len(res.Skipped))
	writeJSON(w, http.StatusOK, res)
}
