package fhir

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	models "github.com/samply/golang-fhir-models/fhir-models/fhir"

	"github.com/junction-fhir/junction/pkg/consent"
	"github.com/junction-fhir/junction/pkg/fault"
	jfhir "github.com/junction-fhir/junction/pkg/fhir"
)

// RoutePostConsent is where patients' Consents are posted. When the engine
// runs the consent engine, the endpoint stores them there (see
// ConsentStore); otherwise the path is served by RoutePostResource like any
// other resource type.
const RoutePostConsent = "POST /fhir/Consent"

// ConsentStore keeps patients' Consents for the consent engine;
// *consent.Store implements it. The endpoint finds it as an optional
// interface of the adapter.Host the engine hands it: a host that offers
// ConsentStore turns POST /fhir/Consent from routed ingress into storage.
type ConsentStore interface {
	// PutConsent validates a Consent against the Junction profile and
	// stores it, replacing one with the same id. A Consent outside the
	// profile returns consent.Issues.
	PutConsent(ctx context.Context, data []byte) (consent.Policy, error)
	// Policies returns the patient's stored Consents.
	Policies(ctx context.Context, patientKey string) ([]consent.Policy, error)
}

// ConsentGuard authorises Consent writes by the engine's roles rather
// than the endpoint's bearer_token. The endpoint finds it as an optional
// interface of the adapter.Host; the engine offers it when http.tokens is
// configured. Then POST /fhir/Consent, with the consent engine on, is
// authenticated by the guard alone: the caller sends a role token, not
// the endpoint's bearer_token (which alone no longer suffices), while
// every other POST still needs bearer_token.
type ConsentGuard interface {
	// AuthorizeConsent authenticates r's caller and checks they may
	// record or change Consents. When it refuses, it has answered w with
	// an OperationOutcome and returns the status sent. Otherwise it
	// returns record, which the endpoint calls with the Consent's patient
	// key once the Consent is read and before it is stored, to audit the
	// write; an error from record means the write was not audited and
	// must not be made.
	AuthorizeConsent(w http.ResponseWriter, r *http.Request) (record func(ctx context.Context, patientKey string) error, status int)
}

// storeConsent answers POST /fhir/Consent with the consent engine on:
// 201 with the stored Consent when its id is new for the patient, 200 when
// it replaced one, 400 when the body is not a JSON object, 422 with an OperationOutcome when it is outside the
// profile, 503 when the store is unavailable. Nothing is routed. The
// 201/200 distinction is read before the write, so two concurrent first
// posts of one id may both see 201; the store keeps one.
//
// record, when set, audits the write (see ConsentGuard) before it is made.
func (in *Inbound) storeConsent(ctx context.Context, w http.ResponseWriter, body []byte, record func(context.Context, string) error) int {
	doc := stripBOM(body)
	switch {
	case len(bytes.TrimSpace(doc)) == 0:
		return in.reject(w, rejection{status: http.StatusBadRequest, code: fault.CodeFHIREmpty, detail: "empty body"})
	case depthOffset(doc, MaxDepth) >= 0:
		return in.reject(w, rejection{status: http.StatusBadRequest, code: fault.CodeFHIRInvalidJSON, detail: fmt.Sprintf("JSON nested deeper than %d levels", MaxDepth)})
	case invalidUTF8Offset(doc) >= 0:
		return in.reject(w, rejection{status: http.StatusBadRequest, code: fault.CodeFHIRInvalidJSON, detail: "body is not valid UTF-8"})
	case countContainers(doc) > in.maxContainers():
		return in.reject(w, tooCostly(fmt.Sprintf("JSON holds more than %d objects and arrays", in.maxContainers())))
	case !json.Valid(doc):
		var v any
		return in.reject(w, rejection{status: http.StatusBadRequest, code: fault.CodeFHIRInvalidJSON, detail: jsonError(json.Unmarshal(doc, &v))})
	case bytes.TrimSpace(doc)[0] != '{':
		return in.reject(w, rejection{status: http.StatusBadRequest, code: fault.CodeFHIRInvalid, issue: "structure", detail: "body is not a JSON object"})
	}
	// The checks every other post gets: a Consent read two ways (a
	// provision whose type is given twice, deny then permit) would be
	// stored as whichever the decoder kept.
	if off, reason := keyProblem(doc); off >= 0 {
		return in.reject(w, rejection{status: http.StatusBadRequest, code: fault.CodeFHIRInvalid, issue: "structure", detail: fmt.Sprintf("%s, at offset %d", reason, off)})
	}
	if off, reason := fhirJSONProblem(doc); off >= 0 {
		return in.reject(w, rejection{status: http.StatusBadRequest, code: fault.CodeFHIRInvalid, issue: "structure", detail: fmt.Sprintf("%s, at offset %d", reason, off)})
	}
	if err := json.Unmarshal(doc, new(models.Consent)); err != nil {
		return in.reject(w, rejection{status: http.StatusBadRequest, code: fault.CodeFHIRInvalid, detail: "invalid Consent: " + modelError(err)})
	}
	pol, issues := consent.ParsePolicy(doc)
	if len(issues) == 0 && pol.ID == "" {
		issues = consent.Issues{{Code: "required", Location: "Consent.id", Message: "a stored Consent needs an id"}}
	}
	if len(issues) > 0 {
		return in.refuseConsent(w, issues)
	}
	if record != nil {
		if err := record(ctx, pol.Patient); err != nil {
			// The error names the audit stream, never the Consent.
			in.log.Warn("consent not stored: the write could not be audited; answered 503", "error", err.Error())
			w.Header().Set("Retry-After", retryAfterSeconds)
			jfhir.WriteOutcome(w, http.StatusServiceUnavailable, jfhir.Outcome("error", "transient", "consent not stored: the write could not be recorded in the audit trail; resend later"))
			return http.StatusServiceUnavailable
		}
	}
	existing, err := in.consents.Policies(ctx, pol.Patient)
	if err != nil {
		return in.consentUnavailable(w, err)
	}
	status := http.StatusCreated
	for _, p := range existing {
		if p.ID == pol.ID {
			status = http.StatusOK
		}
	}
	if _, err := in.consents.PutConsent(ctx, doc); err != nil {
		if is, ok := errors.AsType[consent.Issues](err); ok {
			return in.refuseConsent(w, is)
		}
		return in.consentUnavailable(w, err)
	}
	in.log.Info("consent stored", "status", status)
	h := w.Header()
	h.Set("Content-Type", jfhir.MediaTypeJSON)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Length", strconv.Itoa(len(doc)))
	if fhirID.MatchString(pol.ID) {
		// As FHIR's create answers; the Consent is not readable there.
		h.Set("Location", "/fhir/Consent/"+pol.ID)
	}
	w.WriteHeader(status)
	_, _ = w.Write(doc)
	return status
}

// refuseConsent answers 422 with the profile issues.
func (in *Inbound) refuseConsent(w http.ResponseWriter, issues consent.Issues) int {
	in.metrics.Rejected.WithLabelValues(in.name, "consent.outside-profile").Inc()
	jfhir.WriteOutcome(w, http.StatusUnprocessableEntity, issues.OperationOutcome())
	return http.StatusUnprocessableEntity
}

// consentUnavailable answers 503: the Consent is not stored.
func (in *Inbound) consentUnavailable(w http.ResponseWriter, err error) int {
	// The error names buckets and operations, never the Consent.
	in.log.Warn("consent not stored; answered 503", "error", err.Error())
	w.Header().Set("Retry-After", retryAfterSeconds)
	jfhir.WriteOutcome(w, http.StatusServiceUnavailable, jfhir.Outcome("error", "transient", "consent not stored: the store is unavailable; resend later"))
	return http.StatusServiceUnavailable
}
