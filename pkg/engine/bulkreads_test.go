package engine_test

import (
	"net/http"
	"strings"
	"testing"
)

// TestBulkReadsBounded checks that the admin reads of whole streams are
// refused with 429 and Retry-After while others hold every slot, and
// served again once one is free: a caller repeating disclosure reports
// cannot take the store and the CPU from routing.
func TestBulkReadsBounded(t *testing.T) {
	e, _ := startEngine(t, "")
	base := "http://" + e.HTTPAddr().String()
	const patient = "9990000018"
	reads := []struct {
		name, method, path, body, ctype string
	}{
		{"disclosure report", http.MethodGet, "/api/patients/" + patient + "/disclosures", "", ""},
		{"disclosure report by body", http.MethodPost, "/api/disclosures", `{"nhs_number":"` + patient + `"}`, "application/json"},
		{"AuditEvent search", http.MethodGet, "/fhir/AuditEvent?patient=" + patient, "", ""},
		{"AuditEvent search by form", http.MethodPost, "/fhir/AuditEvent/_search", "patient=" + patient, "application/x-www-form-urlencoded"},
		{"reconcile", http.MethodGet, "/api/reconcile", "", ""},
		{"dead letters", http.MethodGet, "/api/deadletters", "", ""},
		{"find", http.MethodGet, "/api/messages?control_id=X1", "", ""},
	}
	release := e.HoldBulkReads()
	for _, r := range reads {
		t.Run("busy/"+r.name, func(t *testing.T) {
			resp, b := request(t, r.method, base+r.path, "", r.ctype, r.body)
			body := string(b)
			if resp.StatusCode != http.StatusTooManyRequests {
				t.Fatalf("status %d, want 429: %s", resp.StatusCode, body)
			}
			if got := resp.Header.Get("Retry-After"); got == "" {
				t.Error("no Retry-After")
			}
			if strings.HasPrefix(r.path, "/fhir/") && !strings.Contains(body, `"OperationOutcome"`) {
				t.Errorf("FHIR search refused without an OperationOutcome: %s", body)
			}
		})
	}
	release()
	for _, r := range reads {
		t.Run("free/"+r.name, func(t *testing.T) {
			resp, b := request(t, r.method, base+r.path, "", r.ctype, r.body)
			body := string(b)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d, want 200: %s", resp.StatusCode, body)
			}
		})
	}
}

// TestPatientServiceLeavesBulkReadsForOthers: while a patient service's
// read of whole streams runs, a second one from it is refused, but an
// auditor's and an operator's still get a slot: the most exposed caller
// cannot keep the others out.
func TestPatientServiceLeavesBulkReadsForOthers(t *testing.T) {
	e, secrets, _ := rolesEngine(t, "BULK0001")
	base := "http://" + e.HTTPAddr().String()
	release := e.HoldPatientServiceRead()
	defer release()
	tests := []struct {
		name, token, path string
		want              int
	}{
		{"patient service again", "app", "/api/patients/9990000018/disclosures", http.StatusTooManyRequests},
		{"auditor, AuditEvent search", "aud", "/fhir/AuditEvent?patient=9990000018", http.StatusOK},
		{"auditor", "aud", "/api/patients/9990000018/disclosures", http.StatusOK},
		{"operator", "ops", "/api/deadletters", http.StatusOK},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if code, body, _ := call(t, "GET", base+tc.path, secrets[tc.token], ""); code != tc.want {
				t.Errorf("status %d, want %d: %s", code, tc.want, body)
			}
		})
	}
}
