package fhir

import (
	"context"
	"encoding/json"
	"strings"

	models "github.com/samply/golang-fhir-models/fhir-models/fhir"

	"github.com/junction-fhir/junction/pkg/fault"
)

// finalizeStatusOnly makes final the results a released report refers to
// by identifier only: an OBX with status U ("change to final without
// retransmitting results already sent as preliminary") is no Observation
// of the delivery, since one written whole would replace the preliminary
// value with none, so the Observation the preliminary report wrote would
// stay preliminary under a final report. For each DiagnosticReport of an
// HL7 v2 delivery that tx writes by identifier with a released status,
// each result it refers to by identifier alone and tx does not write is
// found at the server by a search; when it is registered or preliminary,
// tx updates it to final, its value kept, with If-Match on its version,
// and the report refers to it by id as well. It returns how many
// Observations it made final.
func (o *Outbound) finalizeStatusOnly(ctx context.Context, tx *models.Bundle, auth string) (int, error) {
	writes := map[fhirIdentifier]bool{}
	for _, e := range tx.Entry {
		if r := e.Request; r != nil && r.Method == models.HTTPVerbPUT && strings.HasPrefix(r.Url, "Observation?") {
			if id, ok := searchedIdentifier(strings.TrimPrefix(r.Url, "Observation?")); ok {
				writes[id] = true
			}
		}
	}
	n := 0
	for i := range tx.Entry {
		e := &tx.Entry[i]
		if r := e.Request; r == nil || r.Method != models.HTTPVerbPUT || !strings.HasPrefix(r.Url, "DiagnosticReport?") {
			continue
		}
		var report map[string]json.RawMessage
		if json.Unmarshal(e.Resource, &report) != nil {
			continue
		}
		var status string
		var results []map[string]json.RawMessage
		if json.Unmarshal(report["status"], &status) != nil || !released(status) || json.Unmarshal(report["result"], &results) != nil {
			continue
		}
		changed := false
		for j, ref := range results {
			var id fhirIdentifier
			if _, ok := ref["reference"]; ok || json.Unmarshal(ref["identifier"], &id) != nil || id.System == "" || id.Value == "" || writes[id] {
				continue
			}
			res, err := o.observationBy(ctx, id, auth)
			if err != nil {
				return 0, err
			}
			if res == nil {
				continue
			}
			var head struct {
				ID     string `json:"id"`
				Status string `json:"status"`
			}
			if json.Unmarshal(res, &head) != nil || !fhirID.MatchString(head.ID) {
				continue
			}
			target := "Observation/" + head.ID
			results[j]["reference"], _ = json.Marshal(target)
			changed = true
			if head.Status != "registered" && head.Status != "preliminary" {
				continue
			}
			entry, err := o.statusUpdate(res, target, "final")
			if err != nil {
				return 0, err
			}
			tx.Entry = append(tx.Entry, entry)
			e = &tx.Entry[i] // the append may have moved the entries
			writes[id] = true
			n++
		}
		if !changed {
			continue
		}
		var err error
		if report["result"], err = json.Marshal(results); err == nil {
			e.Resource, err = json.Marshal(report)
		}
		if err != nil {
			return 0, fault.Wrap(fault.Permanent, fault.CodeTranslate, "fhir: referring a report to its results", err)
		}
	}
	return n, nil
}
