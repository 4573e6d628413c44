package pas

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/junction-fhir/junction/pkg/adapter/adaptertest"
	"github.com/junction-fhir/junction/pkg/corpustest"

	"github.com/junction-fhir/junction/pkg/fhirschema"
)

// schemaPath is the FHIR R4 JSON schema in the shared corpora.
var schemaPath = filepath.Join(corporaDir, "fhir-r4-schema", "fhir.schema.json")

// bundleSchema is the FHIR R4 JSON schema, compiled by pkg/fhirschema, as
// checkBundle uses it.
type bundleSchema struct{ s *fhirschema.Schema }

// loadSchema returns the schema, or nil (after logging why) when the
// corpus is absent.
func loadSchema(t testing.TB) *bundleSchema {
	t.Helper()
	s := adaptertest.FHIRSchema(t, schemaPath)
	if s == nil {
		return nil
	}
	return &bundleSchema{s: s}
}

// check validates v against definition def and returns the issues, each
// as its path (starting with path in place of def) and message.
func (b *bundleSchema) check(v any, def, path string) []string {
	issues, err := b.s.ValidateDefinition(v, def)
	if err != nil {
		return []string{path + ": " + err.Error()}
	}
	out := make([]string, 0, len(issues))
	for _, is := range issues {
		out = append(out, path+strings.TrimPrefix(is.Path, def)+": "+is.Rule+": "+is.Msg)
	}
	return out
}

// TestSchemaCheckerCatchesErrors makes sure the check checkBundle runs
// can fail.
func TestSchemaCheckerCatchesErrors(t *testing.T) {
	s := loadSchema(t)
	if s == nil {
		corpustest.Missing(t, "FHIR R4 JSON schema not present at %s", schemaPath)
	}
	tests := []struct {
		name string
		json string
		want string
	}{
		{"unknown element", `{"resourceType":"Patient","nickname":"x"}`, "Patient.nickname: unknown-element"},
		{"bad code", `{"resourceType":"Patient","gender":"m"}`, "Patient.gender: enum"},
		{"bad date", `{"resourceType":"Patient","birthDate":"1970-13-01"}`, "Patient.birthDate: pattern"},
		{"nested", `{"resourceType":"Patient","name":[{"family":"X","givn":["Y"]}]}`, "Patient.name[0].givn: unknown-element"},
		{"missing class", `{"resourceType":"Encounter","status":"finished"}`, "Encounter.class: required"},
		{"wrong type", `{"resourceType":"Patient","active":"yes"}`, "Patient.active: type"},
		{"bundle entry", `{"resourceType":"Bundle","type":"message","entry":[{"resource":{"resourceType":"Patient","gender":"male","nickname":"x"}}]}`, "Bundle.entry[0].resource(Patient).nickname: unknown-element"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var v map[string]any
			if err := json.Unmarshal([]byte(tt.json), &v); err != nil {
				t.Fatal(err)
			}
			rt := v["resourceType"].(string)
			if probs := s.check(v, rt, rt); !strings.Contains(strings.Join(probs, "\n"), tt.want) {
				t.Errorf("problems %q, want one containing %q", probs, tt.want)
			}
		})
	}
	var ok map[string]any
	_ = json.Unmarshal([]byte(`{"resourceType":"Patient","gender":"male","birthDate":"1970-01-01","name":[{"family":"X"}]}`), &ok)
	if probs := s.check(ok, "Patient", "Patient"); len(probs) > 0 {
		t.Errorf("valid Patient rejected: %q", probs)
	}
}
