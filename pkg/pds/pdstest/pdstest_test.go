package pdstest

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/junction-fhir/junction/pkg/nhs"
)

const rid = "60e0b220-8136-4ca5-ae46-1d97ef59d068"

// TestDouble checks the double against the published behaviour it
// claims (see the package documentation).
func TestDouble(t *testing.T) {
	srv := NewServer(Seed()...)
	defer srv.Close()
	srv.Supersede(nhs.TestNumber(20), nhs.TestNumber(0))
	tests := []struct {
		name    string
		number  string
		headers map[string]string
		status  int
		code    string // Spine error code, "" for a Patient
		check   func(t *testing.T, h http.Header, body map[string]any)
	}{
		{name: "no bearer token", number: nhs.TestNumber(0), headers: map[string]string{"X-Request-ID": rid},
			status: 401, code: "ACCESS_DENIED"},
		{name: "no X-Request-ID", number: nhs.TestNumber(0), headers: map[string]string{"Authorization": "Bearer t"},
			status: 400, code: "MISSING_VALUE"},
		{name: "X-Request-ID not a UUID", number: nhs.TestNumber(0), headers: map[string]string{"Authorization": "Bearer t", "X-Request-ID": "12345"},
			status: 400, code: "INVALID_VALUE"},
		{name: "bad check digit", number: "9990000019", status: 400, code: "INVALID_RESOURCE_ID"},
		{name: "not ten digits", number: "999000001", status: 400, code: "INVALID_RESOURCE_ID"},
		{name: "unknown", number: nhs.TestNumber(30), status: 404, code: "RESOURCE_NOT_FOUND"},
		{name: "found", number: nhs.TestNumber(0), status: 200, check: func(t *testing.T, h http.Header, p map[string]any) {
			if h.Get("ETag") != `W/"2"` || h.Get("X-Request-ID") != rid || h.Get("X-Correlation-ID") != "c-1" {
				t.Errorf("headers: ETag %q, X-Request-ID %q, X-Correlation-ID %q", h.Get("ETag"), h.Get("X-Request-ID"), h.Get("X-Correlation-ID"))
			}
			if p["id"] != nhs.TestNumber(0) {
				t.Errorf("id = %v", p["id"])
			}
			gp, _ := p["generalPractitioner"].([]any)
			ref, _ := gp[0].(map[string]any)
			id, _ := ref["identifier"].(map[string]any)
			if ref["type"] != "Organization" || id["system"] != nhs.SystemODSOrganization || id["value"] != "Y12345" {
				t.Errorf("generalPractitioner = %v", gp)
			}
			if label(p) != "U" {
				t.Errorf("security label %q, want U", label(p))
			}
		}},
		{name: "restricted", number: nhs.TestNumber(2), status: 200, check: func(t *testing.T, _ http.Header, p map[string]any) {
			for _, k := range []string{"address", "telecom", "generalPractitioner"} {
				if _, ok := p[k]; ok {
					t.Errorf("restricted patient returned with %s", k)
				}
			}
			if label(p) != "R" {
				t.Errorf("security label %q, want R", label(p))
			}
		}},
		{name: "superseded", number: nhs.TestNumber(20), status: 200, check: func(t *testing.T, _ http.Header, p map[string]any) {
			if p["id"] != nhs.TestNumber(0) {
				t.Errorf("id = %v, want the superseding number", p["id"])
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL()+"/Patient/"+tt.number, nil)
			if err != nil {
				t.Fatal(err)
			}
			headers := tt.headers
			if headers == nil {
				headers = map[string]string{"Authorization": "Bearer t", "X-Request-ID": rid, "X-Correlation-ID": "c-1"}
			}
			for k, v := range headers {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body map[string]any
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.status)
			}
			if resp.Header.Get("Content-Type") != "application/fhir+json" {
				t.Errorf("Content-Type %q", resp.Header.Get("Content-Type"))
			}
			if tt.code != "" {
				if got := spineCode(body); got != tt.code {
					t.Errorf("error code %q, want %q", got, tt.code)
				}
				return
			}
			if body["resourceType"] != "Patient" {
				t.Fatalf("resourceType %v", body["resourceType"])
			}
			tt.check(t, resp.Header, body)
		})
	}
}

// TestScript checks that scripted failures come in order, with
// Retry-After, and then the answer.
func TestScript(t *testing.T) {
	srv := NewServer(Seed()...)
	defer srv.Close()
	srv.Script(Failure{Status: 429, RetryAfter: "2"}, Failure{Status: 503})
	var got []int
	for range 3 {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL()+"/Patient/"+nhs.TestNumber(0), nil)
		req.Header.Set("Authorization", "Bearer t")
		req.Header.Set("X-Request-ID", rid)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == 429 && resp.Header.Get("Retry-After") != "2" {
			t.Errorf("429 without Retry-After: 2")
		}
		got = append(got, resp.StatusCode)
	}
	if len(got) != 3 || got[0] != 429 || got[1] != 503 || got[2] != 200 {
		t.Errorf("statuses %v, want [429 503 200]", got)
	}
}

func label(p map[string]any) string {
	meta, _ := p["meta"].(map[string]any)
	sec, _ := meta["security"].([]any)
	if len(sec) == 0 {
		return ""
	}
	c, _ := sec[0].(map[string]any)
	s, _ := c["code"].(string)
	return s
}

func spineCode(oo map[string]any) string {
	issues, _ := oo["issue"].([]any)
	if len(issues) == 0 {
		return ""
	}
	is, _ := issues[0].(map[string]any)
	det, _ := is["details"].(map[string]any)
	codings, _ := det["coding"].([]any)
	if len(codings) == 0 {
		return ""
	}
	c, _ := codings[0].(map[string]any)
	if c["system"] != SystemSpineError {
		return ""
	}
	s, _ := c["code"].(string)
	return s
}
