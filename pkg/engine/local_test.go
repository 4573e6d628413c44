package engine_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestTokenlessAPIOnlyForThisMachine: with no tokens on a loopback
// listener (the zero-setup default), the admin API and the FHIR endpoint
// answer this machine's own tools, and refuse what a web page open in a
// browser here could send: requests from another site's page, and
// requests addressed to a site's own name resolved to 127.0.0.1.
func TestTokenlessAPIOnlyForThisMachine(t *testing.T) {
	e, _ := startEngine(t, "")
	addr := e.HTTPAddr().String()
	patient := `{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9990000018"}]}`
	tests := []struct {
		name, method, path, host, origin, contentType, body string
		want                                                int
	}{
		{"admin read by curl", http.MethodGet, "/api/deadletters", "", "", "", "", http.StatusOK},
		{"admin read by a rebound name", http.MethodGet, "/api/deadletters", "rebind.example:8080", "", "", "", http.StatusForbidden},
		{"opt-out list from another site's page", http.MethodPost, "/api/optouts?as_of=2026-12-01", "", "https://evil.example", "text/plain", "9990000018\n", http.StatusForbidden},
		{"replay from another site's page", http.MethodPost, "/api/replay", "", "https://evil.example", "text/plain", `{"filter":{"ids":["01NONE"]}}`, http.StatusForbidden},
		{"FHIR post from another site's page", http.MethodPost, "/fhir/Patient", "", "https://evil.example", "application/fhir+json", patient, http.StatusForbidden},
		{"FHIR post to a rebound name", http.MethodPost, "/fhir/Patient", "rebind.example:8080", "", "application/fhir+json", patient, http.StatusForbidden},
		{"FHIR post by curl", http.MethodPost, "/fhir/Patient", "", "", "application/fhir+json", patient, http.StatusAccepted},
		{"FHIR capability statement to any name", http.MethodGet, "/fhir/metadata", "rebind.example:8080", "", "", "", http.StatusOK},
	}
	client := &http.Client{Timeout: 10 * time.Second}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(tt.method, "http://"+addr+tt.path, strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if tt.host != "" {
				req.Host = tt.host
			}
			if tt.origin != "" {
				req.Header.Set("Origin", tt.origin)
			}
			if tt.contentType != "" {
				req.Header.Set("Content-Type", tt.contentType)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.want {
				t.Fatalf("%s %s: %d %.300s, want %d", tt.method, tt.path, resp.StatusCode, b, tt.want)
			}
			if tt.want == http.StatusForbidden && !strings.Contains(string(b), "loopback name") {
				t.Fatalf("refusal does not say why: %.300s", b)
			}
		})
	}
}
