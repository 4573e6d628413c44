package fhir

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"

	models "github.com/samply/golang-fhir-models/fhir-models/fhir"

	"github.com/junction-fhir/junction/pkg/fault"
)

// MediaTypeJSON is the FHIR JSON media type used on every response.
const MediaTypeJSON = "application/fhir+json"

// FaultCodeSystem is the code system of Junction's stable fault codes, used
// in OperationOutcome.issue.details so clients can act on a code rather
// than parse diagnostics.
const FaultCodeSystem = "https://junction-fhir.github.io/fault-code"

// Outcome returns an OperationOutcome with one issue. severity is an
// issue-severity code ("fatal", "error", "warning", "information"); an
// unknown severity becomes "error". code is an issue-type code ("invalid",
// "structure", "transient", ...); an unknown code becomes "exception".
// expression lists FHIRPath expressions locating the problem, if any.
func Outcome(severity, code, diagnostics string, expression ...string) *models.OperationOutcome {
	issue := models.OperationOutcomeIssue{
		Severity: parseSeverity(severity),
		Code:     parseIssueType(code),
	}
	if diagnostics != "" {
		d := diagnostics
		issue.Diagnostics = &d
	}
	if len(expression) > 0 {
		issue.Expression = append([]string(nil), expression...)
	}
	return &models.OperationOutcome{Issue: []models.OperationOutcomeIssue{issue}}
}

// Information returns an OperationOutcome with one informational issue,
// used to report success (for example "stored as message ...").
func Information(diagnostics string) *models.OperationOutcome {
	return Outcome("information", "informational", diagnostics)
}

// OutcomeFromError returns an OperationOutcome describing err. The issue
// type comes from the fault's code (fault.IssueType), the diagnostics from
// its caller-only detail (fault.DetailOf), and issue.details carries the
// stable fault code in FaultCodeSystem. Errors that are not faults are
// described as "internal error" so nothing unvetted reaches the client. A
// nil err gives an informational outcome.
func OutcomeFromError(err error) *models.OperationOutcome {
	if err == nil {
		return Information("ok")
	}
	code := fault.CodeOf(err)
	oo := Outcome("error", fault.IssueType(code), fault.DetailOf(err))
	system, c, text := FaultCodeSystem, string(code), string(code)
	oo.Issue[0].Details = &models.CodeableConcept{
		Coding: []models.Coding{{System: &system, Code: &c}},
		Text:   &text,
	}
	return oo
}

// StatusOf returns the HTTP status that fits err: 400 for invalid input,
// 413 for too large, 415 for an unsupported media type, 503 for transient
// faults, 500 otherwise.
func StatusOf(err error) int {
	if err == nil {
		return http.StatusOK
	}
	switch fault.CodeOf(err) {
	case fault.CodeFHIRInvalidJSON, fault.CodeFHIRInvalid, fault.CodeFHIREmpty,
		fault.CodeHL7Parse, fault.CodeHL7Required:
		return http.StatusBadRequest
	case fault.CodeFHIRTooLarge, fault.CodeFrameTooLarge:
		return http.StatusRequestEntityTooLarge
	case fault.CodeFHIRMediaType, fault.CodeHL7Unsupported, fault.CodeHL7Charset:
		return http.StatusUnsupportedMediaType
	case fault.CodeNotFound:
		return http.StatusNotFound
	case fault.CodeUnauthorized:
		return http.StatusUnauthorized
	}
	var f *fault.Error
	if errors.As(err, &f) && f.Class == fault.Transient {
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// fallbackOutcome is written when an outcome cannot be marshalled, which
// only happens if the model library misbehaves.
const fallbackOutcome = `{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"exception","diagnostics":"internal error"}]}`

// WriteOutcome writes oo as the response body with the given status and
// Content-Type application/fhir+json. A nil oo writes an outcome with no
// diagnostics that matches the status.
func WriteOutcome(w http.ResponseWriter, status int, oo *models.OperationOutcome) {
	if oo == nil {
		if status >= 400 {
			oo = Outcome("error", "exception", http.StatusText(status))
		} else {
			oo = Information(http.StatusText(status))
		}
	}
	body, err := json.Marshal(oo)
	if err != nil {
		body = []byte(fallbackOutcome)
		status = http.StatusInternalServerError
	}
	h := w.Header()
	h.Set("Content-Type", MediaTypeJSON)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// OutcomeText summarises an OperationOutcome as one line of text
// ("error invalid: diagnostics; ..."), for receipts and dead-letter
// reasons shown to entitled readers. It may hold patient data, so it
// belongs in fault Detail, never in logs. Input that is not an
// OperationOutcome gives "".
func OutcomeText(body []byte) string {
	oo, err := models.UnmarshalOperationOutcome(body)
	if err != nil || len(oo.Issue) == 0 {
		return ""
	}
	parts := make([]string, 0, len(oo.Issue))
	for _, is := range oo.Issue {
		s := is.Severity.Code() + " " + is.Code.Code()
		switch {
		case is.Diagnostics != nil && *is.Diagnostics != "":
			s += ": " + *is.Diagnostics
		case is.Details != nil && is.Details.Text != nil && *is.Details.Text != "":
			s += ": " + *is.Details.Text
		}
		if len(is.Expression) > 0 {
			s += " (at " + strings.Join(is.Expression, ", ") + ")"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "; ")
}

func parseSeverity(s string) models.IssueSeverity {
	var v models.IssueSeverity
	if err := v.UnmarshalJSON([]byte(strconv.Quote(s))); err != nil {
		return models.IssueSeverityError
	}
	return v
}

func parseIssueType(s string) models.IssueType {
	var v models.IssueType
	if err := v.UnmarshalJSON([]byte(strconv.Quote(s))); err != nil {
		return models.IssueTypeException
	}
	return v
}
