package engine_test

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/junction-fhir/junction/pkg/router"
)

// TestFindRefusedFHIRPost: a supplier asking after a Bundle it posted
// (by its identifier) is told it was refused and quarantined, as a PAS
// asking after an HL7 v2 message by its MSH-10 is. Before, only HL7 v2
// refusals were found, so the answer was a wrong "no message".
func TestFindRefusedFHIRPost(t *testing.T) {
	e, _ := startEngine(t, "")
	base := "http://" + e.HTTPAddr().String()
	bad := `{"resourceType":"Bundle","type":"collection","identifier":{"system":"https://supplier.example/id","value":"REJ-0001"},` +
		`"entry":[{"resource":{"resourceType":"Observation","status":"final","code":{"text":"Hb"},"subject":{"reference":"urn:uuid:0b8e3a52-7c1d-4e6f-9a0b-1c2d3e4f5a99"}}}]}`
	resp, body := request(t, http.MethodPost, base+"/fhir", "", "application/fhir+json", bad)
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("POST of a Bundle with a dangling reference: %d %s", resp.StatusCode, body)
	}
	qid := resp.Header.Get("X-Junction-Quarantine-Id")
	resp, body = request(t, http.MethodGet, base+"/api/messages?control_id=REJ-0001", "", "", "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /api/messages: %d %s", resp.StatusCode, body)
	}
	var res router.FindResult
	if err := json.Unmarshal(body, &res); err != nil {
		t.Fatal(err)
	}
	if len(res.Messages) != 0 || len(res.Quarantined) != 1 {
		t.Fatalf("found %d accepted and %d refused, want none and 1: %s", len(res.Messages), len(res.Quarantined), body)
	}
	q := res.Quarantined[0]
	if q.State != "quarantined" || q.ID != qid || q.MessageType != "Bundle" || q.ControlID != "REJ-0001" || q.Source != "fhir" {
		t.Errorf("refused post found as %+v, want quarantined as %s, a Bundle from fhir", q, qid)
	}
}
