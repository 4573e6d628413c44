package engine

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/junction-fhir/junction/pkg/access"
	"github.com/junction-fhir/junction/pkg/audit"
	"github.com/junction-fhir/junction/pkg/disclosure"
	jfhir "github.com/junction-fhir/junction/pkg/fhir"
	"github.com/junction-fhir/junction/pkg/nhs"
	"github.com/junction-fhir/junction/pkg/router"
)

// maxWithholdBody bounds a withholding request.
const maxWithholdBody = 16 << 10

// patientParam returns the keyed hash of the NHS number in the request's
// path, or writes a 400 that does not repeat it.
func (e *Engine) patientParam(w http.ResponseWriter, r *http.Request) (string, bool) {
	n := nhs.Normalize(r.PathValue("nhs"))
	if !nhs.ValidNumber(n) {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "not a valid NHS number: give 10 digits with a valid Modulus 11 check digit"})
		return "", false
	}
	return e.patientHash(n), true
}

// handleDisclosures serves a patient's disclosure report:
// GET /api/patients/{nhs}/disclosures?from=&to=&format=json|csv|html,
// with view=auditor to see withheld entries (marked) and requester=proxy
// to leave out safeguarding entries unless include_safeguarding=true.
// The report scans the audit stream over the window (default the last
// 90 days), so its cost grows with all audit records in the window.
func (e *Engine) handleDisclosures(w http.ResponseWriter, r *http.Request) {
	patient, ok := e.patientParam(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	format := q.Get("format")
	switch format {
	case "":
		format = disclosure.FormatJSON
	case disclosure.FormatJSON, disclosure.FormatCSV, disclosure.FormatHTML:
	default:
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "format must be json, csv or html"})
		return
	}
	from, to, err := disclosure.ParseWindow(q.Get("from"), q.Get("to"), time.Now())
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	var view disclosure.View
	switch q.Get("view") {
	case "", "patient":
	case "auditor":
		// Withheld entries are for auditors only: a patient-facing
		// service shares the disclosures permission but not this view.
		if p, _ := access.PrincipalFrom(r.Context()); !p.Has(access.Auditor) {
			writeJSON(w, http.StatusForbidden, map[string]string{"error": "view=auditor needs the auditor role"})
			return
		}
		view.Auditor = true
	default:
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "view must be patient or auditor"})
		return
	}
	switch q.Get("requester") {
	case "", "patient":
	case "proxy":
		view.Proxy = true
	default:
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "requester must be patient or proxy"})
		return
	}
	view.IncludeSafeguarding = q.Get("include_safeguarding") == "true"
	withheld, err := disclosure.ReadWithheld(r.Context(), e.store.JS, patient)
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		return
	}
	rep, err := disclosure.Build(r.Context(), e.store.JS, patient, withheld, disclosure.Options{
		From: from, To: to, View: view, Directory: disclosure.DirectoryFrom(e.plan.Config.Consent),
	})
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		return
	}
	// Rendered whole before the status is sent, so a report that cannot
	// be rendered is a 500, never a 200 cut short.
	var body bytes.Buffer
	if err := disclosure.Write(&body, rep, format); err != nil {
		e.log.Error("disclosure report not rendered", "format", format, "err", err)
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "the report could not be rendered"})
		return
	}
	w.Header().Set("Content-Type", disclosure.ContentType(format))
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	if _, err := body.WriteTo(w); err != nil {
		e.log.Warn("disclosure report not sent whole", "err", err)
	}
}

// withholdRequest is the body of a withholding.
type withholdRequest struct {
	MessageID   string `json:"message_id"`
	Destination string `json:"destination"`
	Exemption   string `json:"exemption"`
	Reason      string `json:"reason"`
}

// handleWithhold withholds one entry from a patient's disclosure report
// under DPA 2018 Schedule 3: POST /api/patients/{nhs}/disclosures/withhold
// with {message_id, destination, exemption, reason}. The withholding is
// kept in the disclosure_withholdings bucket and audited (event
// withheld_from_report, with the hash of its text, not the text).
func (e *Engine) handleWithhold(w http.ResponseWriter, r *http.Request) {
	patient, ok := e.patientParam(w, r)
	if !ok {
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxWithholdBody))
	if err != nil {
		writeJSON(w, http.StatusRequestEntityTooLarge, map[string]string{"error": "request body too large"})
		return
	}
	var req withholdRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "body must be JSON: {message_id, destination, exemption, reason}"})
		return
	}
	wh := disclosure.Withholding{MessageID: req.MessageID, Destination: req.Destination, Exemption: req.Exemption, Reason: req.Reason, Time: time.Now().UTC()}
	if err := wh.Validate(); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	// Only what the patient's report shows can be withheld from it; the
	// answer is the same whether the message is unknown or another
	// patient's, so it tells nothing about other patients.
	trail, err := router.Trail(r.Context(), e.store.JS, wh.MessageID)
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		return
	}
	if !disclosure.Discloses(trail, patient, wh.Destination) {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "nothing to withhold: this patient's disclosure report has no entry for that message and destination"})
		return
	}
	st, err := disclosure.OpenStore(r.Context(), e.store.JS, e.plan.Config.NATS.Replicas)
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		return
	}
	text, err := json.Marshal(struct{ Exemption, Reason string }{wh.Exemption, wh.Reason})
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		return
	}
	// Audit first: a withholding that is not on the trail must not take
	// effect.
	rec := audit.Record{Time: wh.Time, MessageID: wh.MessageID, Event: audit.WithheldFromReport, Destination: wh.Destination,
		Outcome: "withheld", Reason: "withheld from the patient's disclosure report under DPA 2018 Schedule 3",
		Rule: "dpa2018:schedule3", Hash: audit.Hash(text), Patient: patient}
	if p, ok := access.PrincipalFrom(r.Context()); ok {
		rec.Principal = p.Name
	}
	if err := e.audit.Write(r.Context(), wh.MessageID, "", rec); err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		return
	}
	if err := st.Withhold(r.Context(), patient, wh); err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"withheld": map[string]string{"message_id": wh.MessageID, "destination": wh.Destination}})
}

// Limits of an AuditEvent search page.
const (
	defaultAuditEventCount = 50
	maxAuditEventCount     = 500
)

// handleAuditEvents serves GET /fhir/AuditEvent?patient=<NHS number>
// &date=ge..&date=le..&_count=N: a searchset Bundle of the patient's
// releases and refused releases as AuditEvents (see
// disclosure.AuditEvent), oldest stored first, with a next link carrying
// a cursor. Every page scans the audit stream over the date window
// (default the last 90 days).
func (e *Engine) handleAuditEvents(w http.ResponseWriter, r *http.Request) {
	bad := func(msg, expr string) {
		jfhir.WriteOutcome(w, http.StatusBadRequest, jfhir.Outcome("error", "invalid", msg, expr))
	}
	q := r.URL.Query()
	for k := range q {
		switch k {
		case "patient", "date", "_count", "_cursor":
		default:
			bad("unsupported search parameter: use patient, date, _count", "")
			return
		}
	}
	number := q.Get("patient")
	if v, ok := strings.CutPrefix(number, "https://fhir.nhs.uk/Id/nhs-number|"); ok {
		number = v
	}
	number = nhs.Normalize(number)
	if len(q["patient"]) != 1 || !nhs.ValidNumber(number) {
		bad("patient: one NHS number with a valid check digit is required", "patient")
		return
	}
	from, to, err := disclosure.ParseDateParams(q["date"], time.Now())
	if err != nil {
		bad("date: "+err.Error(), "date")
		return
	}
	count := defaultAuditEventCount
	if s := q.Get("_count"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			bad("_count: a positive whole number is required", "_count")
			return
		}
		count = min(n, maxAuditEventCount)
	}
	var after disclosure.Cursor
	if s := q.Get("_cursor"); s != "" {
		if after, err = disclosure.ParseCursor(s); err != nil {
			bad("_cursor: not a cursor this server issued", "_cursor")
			return
		}
	}
	entries, more, err := disclosure.Search(r.Context(), e.store.JS, e.patientHash(number), from, to, after, count, disclosure.DirectoryFrom(e.plan.Config.Consent))
	if err != nil {
		jfhir.WriteOutcome(w, http.StatusInternalServerError, jfhir.Outcome("error", "exception", "the audit trail could not be read"))
		return
	}
	base := "http://" + r.Host
	if r.TLS != nil {
		base = "https://" + r.Host
	}
	page := func(c *disclosure.Cursor) string {
		v := url.Values{}
		v.Set("patient", number)
		for _, d := range q["date"] {
			v.Add("date", d)
		}
		v.Set("_count", strconv.Itoa(count))
		if c != nil {
			v.Set("_cursor", c.String())
		}
		return base + "/fhir/AuditEvent?" + v.Encode()
	}
	var self *disclosure.Cursor
	if q.Get("_cursor") != "" {
		self = &after
	}
	next := ""
	if more {
		next = page(&entries[len(entries)-1].At)
	}
	body, err := json.Marshal(disclosure.SearchBundle(entries, number, page(self), next))
	if err != nil {
		jfhir.WriteOutcome(w, http.StatusInternalServerError, jfhir.Outcome("error", "exception", "internal error"))
		return
	}
	w.Header().Set("Content-Type", jfhir.MediaTypeJSON)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}
