package fhir

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
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
		{"malformed JSON is a bad request", []string{`{"resourceType":"Consent",`}, nil, http.StatusBadRequest, "invalid JSON at offset", nil},
		{"an array is a bad request", []string{`[1]`}, nil, http.StatusBadRequest, "not a JSON object", nil},
		{"a provision type given twice is a bad request", []string{strings.Replace(string(consentBody("c1", "active")), `"provision":{"type":"permit"`, `"provision":{"type":"deny","type":"permit"`, 1)},
			nil, http.StatusBadRequest, "twice", nil},
		{"an id given twice is a bad request", []string{strings.Replace(string(consentBody("c1", "active")), `"id":"c1"`, `"id":"c1","id":"c2"`, 1)},
			nil, http.StatusBadRequest, "twice", nil},
		{"a value of the wrong JSON type is a bad request", []string{strings.Replace(string(consentBody("c1", "active")), `"code":"59284-0"`, `"code":"59284-0","display":123`, 1)},
			nil, http.StatusBadRequest, "wrong JSON type", nil},
		{"store down answers 503", []string{string(consentBody("c1", "active"))}, errors.New("bucket unavailable"), http.StatusServiceUnavailable, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			host := &consentHost{fakeHost: newFakeHost(), consents: map[string][]consent.Policy{}, err: tt.storeErr}
			mux := endpointMux(t, host)
			var rec *httptest.ResponseRecorder
			for _, b := range tt.bodies {
				req := localRequest(http.MethodPost, "/fhir/Consent", strings.NewReader(b))
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
				if loc := rec.Header().Get("Location"); loc != "/fhir/Consent/"+got["id"].(string) {
					t.Errorf("Location %q, want the Consent's", loc)
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

// TestConsentInBundleIsWarned: a Bundle holding a Consent is routed as
// data, and with the consent engine on its 202 warns that the Consent was
// not recorded, naming the entry; without the engine there is nothing to
// warn of.
func TestConsentInBundleIsWarned(t *testing.T) {
	bundle := []byte(`{"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Patient"}},{"resource":` +
		string(consentBody("c1", "active")) + `}]}`)
	for _, engineOn := range []bool{true, false} {
		t.Run(fmt.Sprintf("consent engine %v", engineOn), func(t *testing.T) {
			var host adapter.Host = newFakeHost()
			if engineOn {
				host = &consentHost{fakeHost: newFakeHost(), consents: map[string][]consent.Policy{}}
			}
			mux := endpointMux(t, host)
			req := localRequest(http.MethodPost, "/fhir", bytes.NewReader(bundle))
			req.Header.Set("Content-Type", jfhir.MediaTypeJSON)
			rec := httptest.NewRecorder()
			mux.ServeHTTP(rec, req)
			if rec.Code != http.StatusAccepted {
				t.Fatalf("status %d, want 202: %s", rec.Code, rec.Body)
			}
			var oo struct {
				Issue []struct {
					Severity   string
					Expression []string
				}
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &oo); err != nil {
				t.Fatal(err)
			}
			warned := len(oo.Issue) == 2 && oo.Issue[1].Severity == "warning" && slices.Equal(oo.Issue[1].Expression, []string{"Bundle.entry[1].resource"})
			if warned != engineOn {
				t.Errorf("answer %s: warned %v, want %v", rec.Body, warned, engineOn)
			}
		})
	}
}

// guardedHost is a consentHost that also offers ConsentGuard, as the
// engine's host does when http.tokens is configured: it admits the
// bearer token "role-token" and records the patients of the writes.
type guardedHost struct {
	*consentHost
	recorded  []string
	recordErr error
}

func (h *guardedHost) AuthorizeConsent(w http.ResponseWriter, r *http.Request) (func(context.Context, string) error, int) {
	switch r.Header.Get("Authorization") {
	case "Bearer role-token":
	case "Bearer other-role":
		jfhir.WriteOutcome(w, http.StatusForbidden, jfhir.Outcome("error", "forbidden", "permission consent.write is needed"))
		return nil, http.StatusForbidden
	default:
		jfhir.WriteOutcome(w, http.StatusUnauthorized, jfhir.Outcome("error", "login", "a bearer token is required"))
		return nil, http.StatusUnauthorized
	}
	return func(_ context.Context, patient string) error {
		if h.recordErr != nil {
			return h.recordErr
		}
		h.recorded = append(h.recorded, patient)
		return nil
	}, 0
}

// TestConsentGuard: with a host offering ConsentGuard, a Consent write is
// authorised by the guard alone (the endpoint's bearer_token neither
// suffices nor is needed), audited with its patient before it is stored,
// and not stored when the audit fails; other resources still need the
// endpoint's token.
func TestConsentGuard(t *testing.T) {
	t.Setenv("JUNCTION_TEST_FHIR_TOKEN", "input-token-long-enough")
	cfg := DefaultInboundConfig()
	cfg.BearerToken = "env:JUNCTION_TEST_FHIR_TOKEN"
	tests := []struct {
		name, path, auth string
		body             []byte
		recordErr        error
		want             int
		wantRecorded     []string
		wantKept         int
	}{
		{"role token stores", "/fhir/Consent", "Bearer role-token", consentBody("c1", "active"), nil, http.StatusCreated, []string{"9990000026"}, 1},
		{"input token alone is refused", "/fhir/Consent", "Bearer input-token-long-enough", consentBody("c1", "active"), nil, http.StatusUnauthorized, nil, 0},
		{"role without the permission", "/fhir/Consent", "Bearer other-role", consentBody("c1", "active"), nil, http.StatusForbidden, nil, 0},
		{"audit failure stores nothing", "/fhir/Consent", "Bearer role-token", consentBody("c1", "active"), errors.New("audit stream unavailable"), http.StatusServiceUnavailable, nil, 0},
		{"outside the profile is not audited", "/fhir/Consent", "Bearer role-token", []byte(strings.Replace(string(consentBody("c1", "active")), `"id":"c1",`, "", 1)), nil, http.StatusUnprocessableEntity, nil, 0},
		{"other resources need the input token", "/fhir/Patient", "Bearer role-token", []byte(`{"resourceType":"Patient"}`), nil, http.StatusUnauthorized, nil, 0},
		{"other resources take the input token", "/fhir/Patient", "Bearer input-token-long-enough", []byte(`{"resourceType":"Patient"}`), nil, http.StatusAccepted, nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			host := &guardedHost{consentHost: &consentHost{fakeHost: newFakeHost(), consents: map[string][]consent.Policy{}}, recordErr: tt.recordErr}
			in, err := NewInbound(adapter.Settings{Name: "fhir", Metrics: telemetry.NewMetrics(prometheus.NewRegistry()), Secrets: testSecrets{}}, host, cfg)
			if err != nil {
				t.Fatal(err)
			}
			mux := http.NewServeMux()
			for p, h := range in.Routes() {
				mux.Handle(p, h)
			}
			req := localRequest(http.MethodPost, tt.path, strings.NewReader(string(tt.body)))
			req.Header.Set("Content-Type", jfhir.MediaTypeJSON)
			req.Header.Set("Authorization", tt.auth)
			rec := httptest.NewRecorder()
			mux.ServeHTTP(rec, req)
			if rec.Code != tt.want {
				t.Fatalf("status %d, want %d: %s", rec.Code, tt.want, rec.Body)
			}
			if rec.Code >= 400 && !strings.Contains(rec.Body.String(), `"OperationOutcome"`) {
				t.Errorf("refusal is not an OperationOutcome: %s", rec.Body)
			}
			if strings.Join(host.recorded, ",") != strings.Join(tt.wantRecorded, ",") {
				t.Errorf("audited %v, want %v", host.recorded, tt.wantRecorded)
			}
			if n := len(host.consents["9990000026"]); n != tt.wantKept {
				t.Errorf("%d Consents stored, want %d", n, tt.wantKept)
			}
		})
	}
}

// TestBinaryOnlyWhenListed: POST /fhir/Binary is refused with the default
// resource types and accepted when resource_types lists Binary.
func TestBinaryOnlyWhenListed(t *testing.T) {
	body := []byte(`{"resourceType":"Binary","contentType":"text/csv","data":"OTk5MDAwMDAyNgo="}`)
	for _, tt := range []struct {
		name  string
		types []string
		want  int
	}{
		{"default types", DefaultResourceTypes(), http.StatusNotFound},
		{"listed", append(DefaultResourceTypes(), "Binary"), http.StatusAccepted},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultInboundConfig()
			cfg.ResourceTypes = tt.types
			f := newInboundFixture(t, cfg)
			if rec := f.do(http.MethodPost, "/fhir/Binary", jfhir.MediaTypeJSON, body, nil); rec.Code != tt.want {
				t.Fatalf("status %d, want %d: %s", rec.Code, tt.want, rec.Body)
			}
		})
	}
}

// endpointMux serves the FHIR endpoint of an input on host with the
// default settings.
func endpointMux(t *testing.T, host adapter.Host) *http.ServeMux {
	t.Helper()
	in, err := NewInbound(adapter.Settings{Name: "fhir", Metrics: telemetry.NewMetrics(prometheus.NewRegistry())}, host, DefaultInboundConfig())
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	for p, h := range in.Routes() {
		mux.Handle(p, h)
	}
	return mux
}
