package engine_test

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/junction-fhir/junction/pkg/access"
	"github.com/junction-fhir/junction/pkg/audit"
	"github.com/junction-fhir/junction/pkg/engine"
)

// TestConsentWriteNeedsRole: with http.tokens configured, POST
// /fhir/Consent needs a token whose roles grant consent.write (the
// patient service); the FHIR input's own bearer_token no longer suffices
// for it but still does for ordinary resources. Every write, allowed or
// refused, leaves an access record naming the principal, with the
// patient's keyed hash for an allowed one, and never the token or the NHS
// number.
func TestConsentWriteNeedsRole(t *testing.T) {
	secrets := map[string]string{"ops": "ops-secret-5a1e-long-enough", "eng": "eng-secret-c0d3-long-enough", "aud": "aud-secret-b77f-long-enough", "app": "app-secret-4e21-long-enough"}
	roles := map[string]string{"ops": "operator", "eng": "integration_engineer", "aud": "auditor", "app": "patient_service"}
	inputToken := "supplier-token-8d2c"
	tokFile := filepath.Join(t.TempDir(), "supplier")
	if err := os.WriteFile(tokFile, []byte(inputToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	hashKey := "consent-write-test-hash-key-01"
	keyFile := filepath.Join(t.TempDir(), "hashkey")
	if err := os.WriteFile(keyFile, []byte(hashKey), 0o600); err != nil {
		t.Fatal(err)
	}
	inputs := "inputs:\n  pas:\n    type: pas\n    listen: 127.0.0.1:0\n  pathology:\n    type: pathology\n    listen: 127.0.0.1:0\n  fhir:\n    type: fhir\n    bearer_token: file:" + tokFile + "\n"
	e, _ := startEngine(t, tokenFiles(t, secrets, roles)+inputs+"consent:\n  hash_key: file:"+keyFile+"\n  destinations:\n    fhir-store: {ods: RX1}\n")
	base := "http://" + e.HTTPAddr().String()

	post := func(path, token string, body []byte) (int, string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, base+path, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/fhir+json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		return resp.StatusCode, b.String()
	}
	tests := []struct {
		name, token string
		want        int
	}{
		{"no token", "", http.StatusUnauthorized},
		{"unknown token", "not-a-token", http.StatusUnauthorized},
		{"input token alone", inputToken, http.StatusUnauthorized},
		{"operator", secrets["ops"], http.StatusForbidden},
		{"integration engineer", secrets["eng"], http.StatusForbidden},
		{"auditor", secrets["aud"], http.StatusForbidden},
		{"patient service", secrets["app"], http.StatusCreated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, body := post("/fhir/Consent", tt.token, denyTo("c-role", deniedPatient, "RX1", "active"))
			if st != tt.want {
				t.Fatalf("status %d, want %d: %s", st, tt.want, body)
			}
			if st >= 400 && !strings.Contains(body, `"resourceType":"OperationOutcome"`) {
				t.Errorf("refusal is not an OperationOutcome: %s", body)
			}
		})
	}
	rec, err := e.PatientIndex().Get(context.Background(), deniedPatient)
	if err != nil || !rec.Consent.HasActiveConsent {
		t.Errorf("the patient service's Consent was not stored: %v", err)
	}
	// The input token still admits ordinary resources, and role tokens do
	// not replace it there.
	patientRes := []byte(`{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"` + controlPatient + `"}]}`)
	if st, body := post("/fhir/Patient", inputToken, patientRes); st != http.StatusAccepted {
		t.Errorf("POST Patient with the input token: %d %s", st, body)
	}
	if st, body := post("/fhir/Patient", secrets["app"], patientRes); st != http.StatusUnauthorized {
		t.Errorf("POST Patient with a role token: %d %s, want 401", st, body)
	}

	recs, raw := auditStream(t, e)
	got := map[string]audit.Record{}
	for _, r := range recs {
		if r.Event == audit.Accessed && r.Rule == string(access.ConsentWrite) {
			got[r.Principal+" "+r.Outcome] = r
		}
	}
	for _, want := range []string{"ops denied", "eng denied", "aud denied", "app allowed"} {
		r, ok := got[want]
		if !ok {
			t.Errorf("no access record %q among %v", want, got)
			continue
		}
		if r.Endpoint != "POST /fhir/Consent" {
			t.Errorf("%s: endpoint %q", want, r.Endpoint)
		}
	}
	if len(got) != 4 {
		t.Errorf("%d kinds of consent.write access records, want 4: %v", len(got), got)
	}
	if r := got["app allowed"]; r.Patient == "" || r.Patient != engine.PatientHash([]byte(hashKey), deniedPatient) {
		t.Errorf("allowed write: patient %q, want the patient's keyed hash", r.Patient)
	}
	for _, secret := range append([]string{inputToken}, secrets["app"], secrets["ops"]) {
		if strings.Contains(raw, secret) {
			t.Errorf("the audit trail holds a token")
		}
	}
	if strings.Contains(raw, deniedPatient) {
		t.Error("the audit trail holds the NHS number")
	}
	if n := testutil.ToFloat64(e.Metrics().Accesses.WithLabelValues(string(access.ConsentWrite), "allowed", "app")); n != 1 {
		t.Errorf("allowed consent writes counted %v, want 1", n)
	}
}
