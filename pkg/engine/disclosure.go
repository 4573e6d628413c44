package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime"
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

// patientParam returns the keyed hash of NHS number number (from the
// request's path or body), or writes a 400 that does not repeat it.
func (e *Engine) patientParam(w http.ResponseWriter, number string) (string, bool) {
	n := nhs.Normalize(number)
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
	e.serveDisclosures(w, r, r.PathValue("nhs"), r.URL.Query())
}

// disclosuresRequest is the body of POST /api/disclosures: the NHS number
// and the query parameters of GET /api/patients/{nhs}/disclosures, kept
// out of the URL (and so out of proxies' access logs).
type disclosuresRequest struct {
	NHSNumber           string `json:"nhs_number"`
	From                string `json:"from"`
	To                  string `json:"to"`
	Format              string `json:"format"`
	View                string `json:"view"`
	Requester           string `json:"requester"`
	IncludeSafeguarding bool   `json:"include_safeguarding"`
}

// handleDisclosuresPost serves POST /api/disclosures: the report of
// handleDisclosures with the patient and parameters in a JSON body.
func (e *Engine) handleDisclosuresPost(w http.ResponseWriter, r *http.Request) {
	var req disclosuresRequest
	if !readAdminBody(w, r, &req, "{nhs_number, from, to, format, view, requester, include_safeguarding}") {
		return
	}
	q := url.Values{}
	for k, v := range map[string]string{"from": req.From, "to": req.To, "format": req.Format, "view": req.View, "requester": req.Requester} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if req.IncludeSafeguarding {
		q.Set("include_safeguarding", "true")
	}
	e.serveDisclosures(w, r, req.NHSNumber, q)
}

// bodyPatientKey carries, for the access record, the NHS number a
// request gives in its body.
type bodyPatientKey struct{}

// withBodyPatient reads a request's JSON body (at most maxWithholdBody
// bytes) for its nhs_number before h checks access, so that the access
// record names the patient (by keyed hash) as it does when the number is
// in the path; h gets the body unread.
func withBodyPatient(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxWithholdBody))
		if err != nil {
			writeJSON(w, http.StatusRequestEntityTooLarge, map[string]string{"error": "request body too large"})
			return
		}
		var p struct {
			NHSNumber string `json:"nhs_number"`
		}
		// Read as the handler reads it (readAdminBody), so that a body it
		// would take is never one whose patient this record misses; the
		// handler answers a body that is not JSON.
		_ = json.NewDecoder(bytes.NewReader(body)).Decode(&p)
		r.Body = io.NopCloser(bytes.NewReader(body))
		if p.NHSNumber != "" {
			r = r.WithContext(context.WithValue(r.Context(), bodyPatientKey{}, p.NHSNumber))
		}
		h.ServeHTTP(w, r)
	})
}

// readAdminBody decodes a JSON admin request body of at most
// maxWithholdBody bytes into v, refusing unknown fields and parameters
// given in the URL (those requests carry an NHS number, which belongs in
// the body); on failure it writes the answer, naming the fields shape.
func readAdminBody(w http.ResponseWriter, r *http.Request, v any, shape string) bool {
	if r.URL.RawQuery != "" {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "give the parameters in the JSON body, not the URL: " + shape})
		return false
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxWithholdBody))
	if err != nil {
		writeJSON(w, http.StatusRequestEntityTooLarge, map[string]string{"error": "request body too large"})
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil || !atEOF(dec) {
		// Nothing after the object either: the access record reads the
		// patient from the body as a whole (withBodyPatient), and must
		// name the patient this answer is about.
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "body must be JSON: " + shape})
		return false
	}
	return true
}

// atEOF reports whether dec has nothing left but white space.
func atEOF(dec *json.Decoder) bool {
	_, err := dec.Token()
	return errors.Is(err, io.EOF)
}

// auditorView names, in access records and metrics, the auditor's view
// of a disclosure report, which the disclosures permission alone does not
// give.
const auditorView access.Permission = "disclosures:view=auditor"

// serveDisclosures writes the disclosure report of the patient with NHS
// number number, with the parameters q.
func (e *Engine) serveDisclosures(w http.ResponseWriter, r *http.Request, number string, q url.Values) {
	patient, ok := e.patientParam(w, number)
	if !ok {
		return
	}
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
			// The access was recorded as allowed before this check: the
			// trail says it was refused after all.
			if err := e.recordAccess(r, p, "disclosures", auditorView, accessDenied, ""); err != nil {
				e.log.Warn("access denied but not recorded", "principal", p.Name, "permission", string(auditorView), "err", err)
			}
			e.metrics.Accesses.WithLabelValues(string(auditorView), accessDenied, p.Name).Inc()
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
	js, done, ok := e.bulk(w, r)
	if !ok {
		return
	}
	defer done()
	rep, err := disclosure.Build(r.Context(), js, patient, withheld, disclosure.Options{
		From: from, To: to, View: view, Directory: disclosure.DirectoryFrom(e.plan.Config.Consent),
	})
	done() // the slot is free while the answer is written
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

// withholdRequest is the body of a withholding; NHSNumber is given in
// the body to POST /api/disclosures/withhold, and not at all to the form
// with the number in the path.
type withholdRequest struct {
	NHSNumber   string `json:"nhs_number,omitempty"`
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
	var req withholdRequest
	if !readAdminBody(w, r, &req, "{message_id, destination, exemption, reason}") {
		return
	}
	if req.NHSNumber != "" {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "the NHS number is in the path: leave nhs_number out of the body (or POST /api/disclosures/withhold)"})
		return
	}
	e.withhold(w, r, r.PathValue("nhs"), req)
}

// handleWithholdPost is handleWithhold with the patient's NHS number in
// the body: POST /api/disclosures/withhold with {nhs_number, message_id,
// destination, exemption, reason}.
func (e *Engine) handleWithholdPost(w http.ResponseWriter, r *http.Request) {
	var req withholdRequest
	if !readAdminBody(w, r, &req, "{nhs_number, message_id, destination, exemption, reason}") {
		return
	}
	e.withhold(w, r, req.NHSNumber, req)
}

// disclosedIn reports whether trail, read with err, shows a release of
// the patient's to destination, which can then be withheld. A trail read
// past damaged audit files (an *audit.IncompleteError) that shows it is
// enough, as the report read past the same damage shows it; one that
// does not cannot say there is none, so that is an error.
func disclosedIn(trail []audit.Record, err error, patient, destination string) (bool, error) {
	var incomplete *audit.IncompleteError
	if err != nil && !errors.As(err, &incomplete) {
		return false, err
	}
	if disclosure.Discloses(trail, patient, destination) {
		return true, nil
	}
	return false, err
}

// withhold records withholding req from the report of the patient with
// NHS number number.
func (e *Engine) withhold(w http.ResponseWriter, r *http.Request, number string, req withholdRequest) {
	patient, ok := e.patientParam(w, number)
	if !ok {
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
	shown, err := disclosedIn(trail, err, patient, wh.Destination)
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		return
	}
	if !shown {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "nothing to withhold: this patient's disclosure report has no entry for that message and destination"})
		return
	}
	st, err := disclosure.OpenStore(r.Context(), e.store.JS, e.plan.Config.NATS.Buckets())
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

// searchParamsKey carries an AuditEvent search's parameters (see
// withSearchParams) to its handler.
type searchParamsKey struct{}

// searchParams are an AuditEvent search's parameters, or with status set
// the answer to a request whose parameters could not be read.
type searchParams struct {
	values    url.Values
	status    int
	code, msg string
}

// maxSearchBody bounds the form-encoded body of a search by POST.
const maxSearchBody = 16 << 10

// withSearchParams reads an AuditEvent search's parameters before h
// checks access: the URL's and, for POST [base]/AuditEvent/_search, its
// form-encoded body's too (FHIR allows both at once), so that the search
// may keep the NHS number out of the URL. The access record then names
// the searched patient by keyed hash, as it does a disclosure report's.
func withSearchParams(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sp := searchParams{values: r.URL.Query()}
		if r.Method == http.MethodPost {
			mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
			body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxSearchBody))
			form, ferr := url.ParseQuery(string(body))
			switch {
			case mt != "application/x-www-form-urlencoded":
				sp = searchParams{status: http.StatusUnsupportedMediaType, code: "not-supported", msg: "a search by POST takes its parameters as application/x-www-form-urlencoded"}
			case err != nil:
				sp = searchParams{status: http.StatusRequestEntityTooLarge, code: "too-long", msg: "the search's body is too large"}
			case ferr != nil:
				sp = searchParams{status: http.StatusBadRequest, code: "invalid", msg: "the search's body is not form-encoded parameters"}
			default:
				for k, v := range form {
					sp.values[k] = append(sp.values[k], v...)
				}
			}
		}
		ctx := context.WithValue(r.Context(), searchParamsKey{}, sp)
		if ps := sp.values["patient"]; len(ps) == 1 {
			number, _ := strings.CutPrefix(ps[0], "https://fhir.nhs.uk/Id/nhs-number|")
			if number = nhs.Normalize(number); nhs.ValidNumber(number) {
				ctx = context.WithValue(ctx, bodyPatientKey{}, number)
			}
		}
		h.ServeHTTP(w, r.WithContext(ctx))
	})
}

// handleAuditEvents serves GET /fhir/AuditEvent?patient=<NHS number>
// &date=ge..&date=le..&_count=N: a searchset Bundle of the patient's
// releases and refused releases as AuditEvents (see
// disclosure.AuditEvent), oldest stored first, with a next link carrying
// a cursor. Every page scans the audit stream over the date window
// (default the last 90 days). POST /fhir/AuditEvent/_search serves the
// same search with its parameters in a form-encoded body; its links are
// GET URLs, as FHIR asks.
func (e *Engine) handleAuditEvents(w http.ResponseWriter, r *http.Request) {
	bad := func(msg, expr string) {
		jfhir.WriteOutcome(w, http.StatusBadRequest, jfhir.Outcome("error", "invalid", msg, expr))
	}
	sp, _ := r.Context().Value(searchParamsKey{}).(searchParams)
	if sp.status != 0 {
		jfhir.WriteOutcome(w, sp.status, jfhir.Outcome("error", sp.code, sp.msg))
		return
	}
	q := sp.values
	if q == nil {
		q = r.URL.Query()
	}
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
	js, done, err := e.acquireBulk(r.Context())
	switch {
	case errors.Is(err, errBulkBusy):
		w.Header().Set("Retry-After", bulkRetryAfter)
		jfhir.WriteOutcome(w, http.StatusTooManyRequests, jfhir.Outcome("error", "throttled", err.Error()))
		return
	case err != nil:
		jfhir.WriteOutcome(w, http.StatusServiceUnavailable, jfhir.Outcome("error", "transient", "the audit trail cannot be read now"))
		return
	}
	defer done()
	pg, err := disclosure.Search(r.Context(), js, e.patientHash(number), from, to, after, count, disclosure.DirectoryFrom(e.plan.Config.Consent))
	done() // the slot is free while the answer is written
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
	if pg.More {
		next = page(&pg.Entries[len(pg.Entries)-1].At)
	}
	body, err := json.Marshal(disclosure.SearchBundle(pg, number, page(self), next))
	if err != nil {
		jfhir.WriteOutcome(w, http.StatusInternalServerError, jfhir.Outcome("error", "exception", "internal error"))
		return
	}
	w.Header().Set("Content-Type", jfhir.MediaTypeJSON)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}
