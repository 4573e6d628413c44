package pathology

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/junction-fhir/junction/pkg/adapter/adaptertest"
	"github.com/junction-fhir/junction/pkg/corpustest"

	"github.com/junction-fhir/junction/pkg/fhirschema"
)

// fhirSchema is the FHIR R4 JSON schema of the shared corpora, compiled
// by pkg/fhirschema, in the form checkBundle uses.
type fhirSchema struct{ *fhirschema.Schema }

// loadFHIRSchema returns the schema, or nil after logging why when the
// corpus is absent.
func loadFHIRSchema(t testing.TB) *fhirSchema {
	t.Helper()
	s := adaptertest.FHIRSchema(t, filepath.Join(corporaDir, "fhir-r4-schema", "fhir.schema.json"))
	if s == nil {
		return nil
	}
	return &fhirSchema{s}
}

// check validates v against the definition def and returns each issue as
// "path rule: message", its path starting with path in place of def.
func (s *fhirSchema) check(v any, def, path string) []string {
	issues, err := s.ValidateDefinition(v, def)
	if err != nil {
		return []string{path + ": " + err.Error()}
	}
	var out []string
	for _, is := range issues {
		out = append(out, path+strings.TrimPrefix(is.Path, def)+" "+is.Rule+": "+is.Msg)
	}
	return out
}

// TestSchemaCheckerFails makes sure the check checkBundle runs catches
// each kind of error it should, inside a bundle as well as at the top.
func TestSchemaCheckerFails(t *testing.T) {
	s := loadFHIRSchema(t)
	if s == nil {
		corpustest.Missing(t, "FHIR R4 JSON schema absent from the shared corpora")
	}
	tests := []struct{ name, json, want string }{
		{"unknown element", `{"resourceType":"Observation","status":"final","code":{"text":"x"},"valueAttachment":{"url":"x"},"colour":"red"}`, "Observation.colour unknown-element"},
		{"bad code", `{"resourceType":"Observation","status":"done","code":{"text":"x"}}`, "Observation.status enum"},
		{"bad dateTime", `{"resourceType":"Observation","status":"final","code":{"text":"x"},"effectiveDateTime":"2024-13-01"}`, "Observation.effectiveDateTime pattern"},
		{"missing code", `{"resourceType":"Observation","status":"final"}`, "Observation.code required"},
		{"decimal as string", `{"resourceType":"Observation","status":"final","code":{"text":"x"},"valueQuantity":{"value":"1"}}`, "Observation.valueQuantity.value type"},
		{"bad instant", `{"resourceType":"DiagnosticReport","status":"final","code":{"text":"x"},"issued":"2024-01-01"}`, "DiagnosticReport.issued pattern"},
		{"bad element in a bundle", `{"resourceType":"Bundle","type":"message","entry":[{"resource":{"resourceType":"Observation","status":"final","code":{"txt":"x"}}}]}`, "Bundle.entry[0].resource(Observation).code.txt unknown-element"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var v map[string]any
			if err := json.Unmarshal([]byte(tt.json), &v); err != nil {
				t.Fatal(err)
			}
			rt := v["resourceType"].(string)
			if got := strings.Join(s.check(v, rt, rt), "\n"); !strings.Contains(got, tt.want) {
				t.Errorf("problems %q, want one containing %q", got, tt.want)
			}
		})
	}
	ok := map[string]any{"resourceType": "Observation", "status": "final", "code": map[string]any{"text": "x"}, "valueQuantity": map[string]any{"value": 1.5}}
	if got := s.check(ok, "Observation", "Observation"); len(got) > 0 {
		t.Errorf("valid Observation rejected: %q", got)
	}
}
