package fhir

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/junction-fhir/junction/pkg/corpustest"
)

func TestMissingRequired(t *testing.T) {
	tests := []struct {
		name, rt, json, want string
	}{
		{"observation complete", "Observation", `{"resourceType":"Observation","status":"final","code":{"text":"Hb"}}`, ""},
		{"observation without status", "Observation", `{"resourceType":"Observation","code":{"text":"Hb"}}`, "status"},
		{"status null", "Observation", `{"resourceType":"Observation","status":null,"code":{"text":"Hb"}}`, "status"},
		{"status as an extension only", "Observation", `{"resourceType":"Observation","_status":{"extension":[{"url":"http://hl7.org/fhir/StructureDefinition/data-absent-reason","valueCode":"unknown"}]},"code":{"text":"Hb"}}`, ""},
		{"observation without code", "Observation", `{"resourceType":"Observation","status":"final"}`, "code"},
		{"empty list", "Consent", `{"resourceType":"Consent","status":"active","scope":{"text":"x"},"category":[]}`, "category"},
		{"choice given", "MedicationRequest", `{"resourceType":"MedicationRequest","status":"active","intent":"order","medicationCodeableConcept":{"text":"x"},"subject":{"reference":"Patient/1"}}`, ""},
		{"choice missing", "MedicationRequest", `{"resourceType":"MedicationRequest","status":"active","intent":"order","medicine":{"text":"x"},"subject":{"reference":"Patient/1"}}`, "medication[x]"},
		{"choice as a primitive extension", "Immunization", `{"resourceType":"Immunization","status":"completed","vaccineCode":{"text":"x"},"patient":{"reference":"Patient/1"},"_occurrenceDateTime":{"extension":[{"url":"u","valueCode":"unknown"}]}}`, ""},
		{"message header by event coding", "MessageHeader", `{"resourceType":"MessageHeader","eventCoding":{"code":"ADT^A01"},"source":{"endpoint":"urn:x"}}`, ""},
		{"type with nothing required", "Patient", `{"resourceType":"Patient"}`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := missingRequired(tt.rt, []byte(tt.json)); got != tt.want {
				t.Errorf("missingRequired = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestMissingRequiredAgreesWithR4 checks the table against the FHIR R4
// material in the corpora: every official example of a listed type has
// what the table requires, and every complex element the FHIR JSON schema
// requires of a listed type is in the table (the schema cannot require
// primitives, which the table adds).
func TestMissingRequiredAgreesWithR4(t *testing.T) {
	examples, _ := filepath.Glob(filepath.Join(corporaDir, "fhir-r4-examples", "*.json"))
	schemaRaw, err := os.ReadFile(filepath.Join(corporaDir, "fhir-r4-schema", "fhir.schema.json"))
	if len(examples) == 0 || err != nil {
		corpustest.Missing(t, "corpus ../shared/corpora (fhir-r4-examples, fhir-r4-schema) absent; skipping")
	}
	checked := 0
	for _, f := range examples {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var head struct{ ResourceType string }
		if json.Unmarshal(raw, &head) != nil || requiredElements[head.ResourceType] == nil {
			continue
		}
		checked++
		if el := missingRequired(head.ResourceType, raw); el != "" {
			t.Errorf("%s: the official example lacks %s, which the table requires", filepath.Base(f), el)
		}
	}
	if checked < 20 {
		t.Errorf("checked %d examples of the listed types, want 20 or more", checked)
	}
	var schema struct {
		Definitions map[string]struct {
			Required []string `json:"required"`
		} `json:"definitions"`
	}
	if err := json.Unmarshal(schemaRaw, &schema); err != nil {
		t.Fatal(err)
	}
	for rt, req := range requiredElements {
		for _, el := range schema.Definitions[rt].Required {
			if el == "resourceType" {
				continue
			}
			if !slices.ContainsFunc(req, func(r string) bool { return r == el || strings.TrimSuffix(r, "[x]") == el }) {
				t.Errorf("%s: the schema requires %s, the table does not", rt, el)
			}
		}
	}
}
