package fhir

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/junction-fhir/junction/pkg/adapter"
	"github.com/junction-fhir/junction/pkg/consent"
	jfhir "github.com/junction-fhir/junction/pkg/fhir"
	"github.com/junction-fhir/junction/pkg/telemetry"
)

// consentHost is a fakeHost that also keeps Consents, as the engine's host
// does when the consent engine is on.
type consentHost struct {
	*fakeHost
	mu       sync.Mutex
	consents map[string][]consent.Policy // by patient
	err      error
}

func (h *consentHost) PutConsent(_ context.Context, data []byte) (consent.Policy, error) {
	if h.err != nil {
		return consent.Policy{}, h.err
	}
	pol, issues := consent.ParsePolicy(data)
	if len(issues) > 0 {
		return consent.Policy{}, issues
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	list := h.consents[pol.Patient][:0:0]
	for _, p := range h.consents[pol.Patient] {
		if p.ID != pol.ID {
			list = append(list, p)
		}
	}
	h.consents[pol.Patient] = append(list, pol)
	return pol, nil
}

func (h *consentHost) Policies(_ context.Context, patient string) ([]consent.Policy, error) {
	if h.err != nil {
		return nil, h.err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.consents[patient], nil
}

// consentBody is a Consent in the Junction profile for a synthetic patient.
func consentBody(id, status string) []byte {
	return []byte(`{"resourceType":"Consent","id":"` + id + `","status":"` + status + `",` +
		`"scope":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/consentscope","code":"patient-privacy"}]},` +
		`"category":[{"coding":[{"system":"http://loinc.org","code":"59284-0"}]}],` +
		`"patient":{"identifier":{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9990000026"}},` +
		`"provision":{"type":"permit","provision":[{"type":"deny","class":[{"system":"http://hl7.org/fhir/resource-types","code":"Observation"}]}]}}`)
}

func TestPostConsent(t *testing.T) {
	outside := strings.Replace(string(consentBody("c1", "active")), `"provision":{`, `"modifierExtension":[{"url":"http://example.org/x"}],"provision":{`, 1)
	tests := []struct {
		name       string
		bodies     []string
		storeErr   error
		wantStatus int
		// wantIssue is an expression the OperationOutcome must name.
		wantIssue string
		wantKept  []string // ids of the patient's stored Consents
	}{
		{"new consent is created", []string{string(consentBody("c1", "active"))}, nil, http.StatusCreated, "", []string{"c1"}},
		{"same id replaces", []string{string(consentBody("c1", "active")), string(consentBody("c1", "inactive"))}, nil, http.StatusOK, "", []string{"c1"}},
		{"another id adds", []string{string(consentBody("c1", "active")), string(consentBody("c2", "active"))}, nil, http.StatusCreated, "", []string{"c1", "c2"}},
		{"outside the profile is refused", []string{outside}, nil, http.StatusUnprocessableEntity, "Consent.modifierExtension", nil},
		{"without an id is refused", []string{strings.Replace(string(consentBody("c1", "active")), `"id":"c1",`, "", 1)}, nil, http.StatusUnprocessableEntity, "Consent.id", nil},
		{"store down answers 503", []string{string(consentBody("c1", "active"))}, errors.New("bucket unavailable"), http.StatusServiceUnavailable, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			host := &consentHost{fakeHost: newFakeHost(), consents: map[string][]consent.Policy{}, err: tt.storeErr}
			in, err := NewInbound(adapter.Settings{Name: "fhir", Metrics: telemetry.NewMetrics(prometheus.NewRegistry())}, host, DefaultInboundConfig())
			if err != nil {
				t.Fatal(err)
			}
			mux := http.NewServeMux()
			for p, h := range in.Routes() {
				mux.Handle(p, h)
			}
			var rec *httptest.ResponseRecorder
			for _, b := range tt.bodies {
				req := httptest.NewRequest(http.MethodPost, "/fhir/Consent", strings.NewReader(b))
				req.Header.Set("Content-Type", jfhir.MediaTypeJSON)
				rec = httptest.NewRecorder()
				mux.ServeHTTP(rec, req)
			}
			if rec.Code != tt.wantStatus {
				t.Fatalf("status %d, want %d: %s", rec.Code, tt.wantStatus, rec.Body)
			}
			if n := len(host.all()); n != 0 {
				t.Errorf("%d messages ingested; a Consent is stored, not routed", n)
			}
			var got map[string]any
			if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
				t.Fatalf("answer is not JSON: %v", err)
			}
			switch {
			case tt.wantStatus < 300:
				if got["resourceType"] != "Consent" || got["id"] == "" {
					t.Errorf("answer is not the stored Consent: %s", rec.Body)
				}
			case tt.wantIssue != "":
				if got["resourceType"] != "OperationOutcome" || !strings.Contains(rec.Body.String(), tt.wantIssue) {
					t.Errorf("answer does not name %s: %s", tt.wantIssue, rec.Body)
				}
			}
			var kept []string
			for _, p := range host.consents["9990000026"] {
				kept = append(kept, p.ID)
			}
			if strings.Join(kept, ",") != strings.Join(tt.wantKept, ",") {
				t.Errorf("stored %v, want %v", kept, tt.wantKept)
			}
		})
	}
}

// TestPostConsentWithoutEngine checks that without a consent store a
// Consent is ingested like any other resource, as before.
func TestPostConsentWithoutEngine(t *testing.T) {
	f := newInboundFixture(t, DefaultInboundConfig())
	rec := f.do(http.MethodPost, "/fhir/Consent", jfhir.MediaTypeJSON, consentBody("c1", "active"), nil)
	if rec.Code != http.StatusAccepted {
		t.Fatalf("status %d, want 202: %s", rec.Code, rec.Body)
	}
	if n := len(f.host.all()); n != 1 {
		t.Errorf("%d messages ingested, want 1", n)
	}
}
