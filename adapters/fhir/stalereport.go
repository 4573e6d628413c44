package fhir

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"

	models "github.com/samply/golang-fhir-models/fhir-models/fhir"

	"github.com/junction-fhir/junction/pkg/fault"
	"github.com/junction-fhir/junction/pkg/nhs"
)

// olderReport reports whether tx, an HL7 v2 delivery, holds a
// DiagnosticReport that is older than the one the server keeps under the
// same identifier (its result key): a preliminary replayed from the dead
// letters after the final was delivered, or a message resent with a
// reused control id after a correction. Such a delivery must not write
// its results over the newer ones, which a conditional update by
// identifier would do whole. A report is older when it was issued before
// the server's (DiagnosticReport.issued, from OBR-22, both set by the
// laboratory's clock), or, when either has no issue time or both the
// same, when its status is earlier in a report's life (registered,
// partial or preliminary before final; final before amended, corrected or
// appended; all before withdrawn, cancelled or entered-in-error). It
// reads the server's reports by a search, as a merge reads Patients, and
// returns those it found for otherPatientReport.
func (o *Outbound) olderReport(ctx context.Context, tx *models.Bundle, auth string) (bool, []keyedReports, error) {
	var targets []mergeTarget
	for i, e := range tx.Entry {
		r := e.Request
		if r == nil || r.Method != models.HTTPVerbPUT || !strings.HasPrefix(r.Url, "DiagnosticReport?") {
			continue
		}
		if id, ok := searchedIdentifier(strings.TrimPrefix(r.Url, "DiagnosticReport?")); ok {
			targets = append(targets, mergeTarget{i, "DiagnosticReport", id})
		}
	}
	if len(targets) == 0 {
		return false, nil, nil
	}
	results, err := o.searchAll(ctx, targets, auth)
	if err != nil {
		return false, nil, err
	}
	var keyed []keyedReports
	older := false
	for i, t := range targets {
		if len(results[i].found) > 0 {
			keyed = append(keyed, keyedReports{entry: t.entry, found: results[i].found})
		}
		ours := reportAgeOf(tx.Entry[t.entry].Resource)
		for _, have := range results[i].found {
			if ours.before(reportAgeOf(have)) {
				older = true
			}
		}
	}
	return older, keyed, nil
}

// keyedReports are the reports the server keeps under the result key of
// tx's entry.
type keyedReports struct {
	entry int
	found []json.RawMessage
}

// reportAge is what places a report in its life: when it was issued, and
// how far its status has come.
type reportAge struct {
	issued time.Time
	stage  int
}

// reportStages ranks DiagnosticReport statuses in the order a report
// passes through them.
var reportStages = map[string]int{
	"registered": 1, "partial": 2, "preliminary": 2, "final": 3,
	"amended": 4, "corrected": 4, "appended": 4,
	"cancelled": 5, "entered-in-error": 5,
}

// released reports whether a DiagnosticReport status is a released
// report's: final, amended, corrected or appended.
func released(status string) bool {
	return reportStages[status] >= reportStages["final"] && reportStages[status] < reportStages["cancelled"]
}

// reportAgeOf returns the age of DiagnosticReport res (zero when
// unreadable).
func reportAgeOf(res []byte) reportAge {
	var r struct {
		Issued string `json:"issued"`
		Status string `json:"status"`
	}
	if json.Unmarshal(res, &r) != nil {
		return reportAge{}
	}
	at, _ := time.Parse(time.RFC3339Nano, r.Issued)
	return reportAge{issued: at, stage: reportStages[r.Status]}
}

// before reports whether a is an earlier version of a report than b.
func (a reportAge) before(b reportAge) bool {
	if !a.issued.IsZero() && !b.issued.IsZero() && !a.issued.Equal(b.issued) {
		return a.issued.Before(b.issued)
	}
	return a.stage < b.stage
}

// otherPatientReport returns a permanent fault when a report the server
// keeps under one of tx's result keys (keyed, as olderReport found them)
// is about another patient than tx's report: a laboratory that gave an
// accession number used before to another patient's sample, say.
// Written, the conditional update would move the earlier patient's
// report to this one, and its results with it. It runs after the merge,
// which has found tx's Patient at the server when it is there: a report
// whose subject is that Patient is the same patient's. Otherwise the
// server's report is the same patient's when its subject's identifier,
// or its subject Patient's (read from the server), shares an identifier
// with tx's Patient and their NHS numbers, when both have one, agree. A
// report whose subject is not a Patient of this server, or is gone, and
// a delivery whose report names its patient by no identifier, are left
// to the update, as before. The fault quotes no identifier.
func (o *Outbound) otherPatientReport(ctx context.Context, tx *models.Bundle, keyed []keyedReports, auth string) error {
	read := map[string][]fhirIdentifier{} // the server's Patients, by id
	for _, k := range keyed {
		ours, ourID := subjectOf(tx, tx.Entry[k.entry].Resource)
		if len(ours) == 0 {
			continue
		}
		for _, have := range k.found {
			theirs, err := o.storedSubject(ctx, have, ourID, read, auth)
			if err != nil {
				return err
			}
			if theirs != nil && !samePatient(ours, theirs) {
				return fault.New(fault.CodeDestRejected, "fhir: the server holds a report under this result key about another patient (an accession number used again?); it was not written over").
					WithDetail("check the laboratory's numbering with the laboratory before resending; the report at the server is unchanged")
			}
		}
	}
	return nil
}

// storedSubject returns the identifiers of the patient a report the
// server keeps is about: its subject's identifier, or the identifiers of
// its subject Patient, read from the server once per id (read holds
// those read). It returns nil when there is nothing to compare: no
// subject, a subject that is the delivery's own Patient (ourID), not a
// Patient of this server, or gone.
func (o *Outbound) storedSubject(ctx context.Context, report json.RawMessage, ourID string, read map[string][]fhirIdentifier, auth string) ([]fhirIdentifier, error) {
	var r struct {
		Subject *patientRef `json:"subject"`
	}
	if json.Unmarshal(report, &r) != nil || r.Subject == nil {
		return nil, nil
	}
	if r.Subject.Identifier != nil && r.Subject.Identifier.Value != "" {
		return []fhirIdentifier{*r.Subject.Identifier}, nil
	}
	typ, id, ok := strings.Cut(serverPath(r.Subject.Reference, o.base), "/")
	if !ok || typ != "Patient" || !fhirID.MatchString(id) || id == ourID {
		return nil, nil
	}
	if got, seen := read[id]; seen {
		return got, nil
	}
	b, err := o.get(ctx, http.MethodGet, o.base+"/Patient/"+url.PathEscape(id), "", auth, "reading the patient of a report under the same result key", "")
	if errors.Is(err, errNotFound) {
		read[id] = nil
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var p struct {
		Identifier json.RawMessage `json:"identifier"`
	}
	_ = json.Unmarshal(b, &p)
	read[id] = identifiers(p.Identifier)
	return read[id], nil
}

// serverPath returns a reference as a path relative to base
// ("Patient/123"), without any _history part, or "" for a reference to
// another server or within the bundle.
func serverPath(ref, base string) string {
	ref = strings.TrimPrefix(ref, base+"/")
	if strings.Contains(ref, ":") {
		return ""
	}
	if i := strings.Index(ref, "/_history/"); i >= 0 {
		ref = ref[:i]
	}
	return ref
}

// subjectOf returns the identifiers of the Patient entry of tx that
// report (a resource of tx) has as its subject, and that Patient's id at
// the server when the entry updates it by id (a merge found it), or nil.
func subjectOf(tx *models.Bundle, report json.RawMessage) ([]fhirIdentifier, string) {
	var r struct {
		Subject *patientRef `json:"subject"`
	}
	if json.Unmarshal(report, &r) != nil || r.Subject == nil {
		return nil, ""
	}
	if r.Subject.Identifier != nil && r.Subject.Identifier.Value != "" {
		return []fhirIdentifier{*r.Subject.Identifier}, ""
	}
	for _, e := range tx.Entry {
		if e.FullUrl == nil || *e.FullUrl != r.Subject.Reference || r.Subject.Reference == "" {
			continue
		}
		var p struct {
			ResourceType string          `json:"resourceType"`
			Identifier   json.RawMessage `json:"identifier"`
		}
		if json.Unmarshal(e.Resource, &p) != nil || p.ResourceType != "Patient" {
			return nil, ""
		}
		id := ""
		if e.Request != nil && e.Request.Method == models.HTTPVerbPUT {
			if typ, rid, ok := strings.Cut(e.Request.Url, "/"); ok && typ == "Patient" && fhirID.MatchString(rid) {
				id = rid
			}
		}
		return identifiers(p.Identifier), id
	}
	return nil, ""
}

// samePatient reports whether two lists of a patient's identifiers name
// one patient: their NHS numbers, when both have one, agree, and they
// share an identifier (system and value).
func samePatient(a, b []fhirIdentifier) bool {
	nhsOf := func(ids []fhirIdentifier) string {
		for _, id := range ids {
			if nhs.IsNHSNumberSystem(id.System) && id.Value != "" {
				return nhs.Normalize(id.Value)
			}
		}
		return ""
	}
	if x, y := nhsOf(a), nhsOf(b); x != "" && y != "" {
		return x == y
	}
	for _, x := range a {
		for _, y := range b {
			if x.Value != "" && x.Value == y.Value && (x.System == y.System || nhs.IsNHSNumberSystem(x.System) && nhs.IsNHSNumberSystem(y.System)) {
				return true
			}
		}
	}
	return false
}
