package fhir

import (
	"context"
	"encoding/json"
	"strings"
	"time"

	models "github.com/samply/golang-fhir-models/fhir-models/fhir"
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
// reads the server's reports by a search, as a merge reads Patients.
func (o *Outbound) olderReport(ctx context.Context, tx *models.Bundle, auth string) (bool, error) {
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
		return false, nil
	}
	results, err := o.searchAll(ctx, targets, auth)
	if err != nil {
		return false, err
	}
	for i, t := range targets {
		ours := reportAgeOf(tx.Entry[t.entry].Resource)
		for _, have := range results[i].found {
			if ours.before(reportAgeOf(have)) {
				return true, nil
			}
		}
	}
	return false, nil
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
