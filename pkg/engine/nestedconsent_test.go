package engine_test

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/junction-fhir/junction/pkg/audit"
)

// TestConsentSeesNestedBundles posts, to the FHIR input, a collection
// whose one entry is a document Bundle about a patient who refused
// disclosure to the store (its Composition refers to its Patient by
// urn:uuid, resolved within the document), then an ordinary Patient. The
// refusal holds for the nested patient: before, the engine saw only a
// Bundle entry, permitted it, and the store received the refused
// patient's record; and the document's own reference was refused at
// ingress as dangling.
func TestConsentSeesNestedBundles(t *testing.T) {
	e, dir := startEngine(t, "consent:\n  destinations:\n    fhir-store: {ods: RX1}\n")
	base := "http://" + e.HTTPAddr().String()
	if st, body := postConsent(t, base, denyTo("c-deny-nested", deniedPatient, "RX1", "active")); st != http.StatusCreated {
		t.Fatalf("POST Consent: %d %s", st, body)
	}
	patient := func(nhsNumber string) string {
		return `{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"` + nhsNumber + `"}],"name":[{"family":"NESTEDTEST"}]}`
	}
	const p, c = "urn:uuid:0b8e3a52-7c1d-4e6f-9a0b-1c2d3e4f5a61", "urn:uuid:0b8e3a52-7c1d-4e6f-9a0b-1c2d3e4f5a62"
	document := `{"resourceType":"Bundle","type":"document","identifier":{"system":"urn:ietf:rfc:3986","value":"urn:uuid:0b8e3a52-7c1d-4e6f-9a0b-1c2d3e4f5a60"},"timestamp":"2026-12-06T10:00:00Z","entry":[` +
		`{"fullUrl":"` + c + `","resource":{"resourceType":"Composition","status":"final","type":{"text":"discharge summary"},"date":"2026-12-06","title":"Discharge","author":[{"display":"ward"}],"subject":{"reference":"` + p + `"}}},` +
		`{"fullUrl":"` + p + `","resource":` + patient(deniedPatient) + `}]}`
	postAccepted(t, base+"/fhir", `{"resourceType":"Bundle","type":"collection","identifier":{"system":"https://test.example/id","value":"NESTED0001"},"entry":[{"fullUrl":"urn:uuid:0b8e3a52-7c1d-4e6f-9a0b-1c2d3e4f5a63","resource":`+document+`}]}`)
	postAccepted(t, base+"/fhir/Patient", patient(controlPatient))

	outDir := filepath.Join(dir, "out", "fhir-store")
	waitFiles(t, outDir, 1)
	deadline := time.Now().Add(15 * time.Second)
	for denied := false; !denied; {
		for _, trail := range trails(t, e) {
			for _, r := range trail {
				if r.Event == audit.Consent && r.Destination == "fhir-store" && r.Outcome == "deny" {
					denied = true
					if r.Rule != "consent:c-deny-nested:Consent.provision" {
						t.Errorf("decision rule %q", r.Rule)
					}
				}
			}
		}
		if !denied {
			if time.Now().After(deadline) {
				t.Fatal("no consent denial recorded for the nested patient")
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	files, err := filepath.Glob(filepath.Join(outDir, "*", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 1 {
		t.Errorf("%d files at the store, want 1 (the ordinary Patient)", len(files))
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(data), deniedPatient) {
			t.Errorf("%s holds the refused patient's record", filepath.Base(f))
		}
	}
}
