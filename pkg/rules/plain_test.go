package rules

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/google/cel-go/common/types"

	"github.com/junction-fhir/junction/pkg/jsonmap"
)

// celNHSNumber is nhsNumber(b) as the CEL walk reads it, without the
// plain one.
func celNHSNumber(b map[string]any) string {
	return patientNHSNumber(types.NewStringInterfaceMap(numberAdapter{base: types.DefaultTypeAdapter}, b), 0)
}

// plainBundles are Bundles, as JSON, whose patient nhsNumber finds by
// each of its rules, and some it finds none in.
var plainBundles = []struct{ name, json string }{
	{"first patient", `{"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "MessageHeader"}}, {"resource": {"resourceType": "Patient", "identifier": [{"system": "https://trust.example/mrn", "value": "K1"}, {"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9990000018"}]}}, {"resource": {"resourceType": "Patient", "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9990000026"}]}}]}`},
	{"empty", `{}`},
	{"no nhs identifier", `{"entry": [{"resource": {"resourceType": "Patient", "identifier": [{"system": "x", "value": "1"}]}}]}`},
	{"no identifiers", `{"entry": [{"resource": {"resourceType": "Patient"}}]}`},
	{"value not a string", `{"entry": [{"resource": {"resourceType": "Patient", "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": 9990000018}]}}]}`},
	{"value a decimal", `{"entry": [{"resource": {"resourceType": "Patient", "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": 1.50}]}}]}`},
	{"first patient without one", `{"entry": [{"resource": {"resourceType": "Patient"}}, {"resource": {"resourceType": "Observation", "subject": {"identifier": {"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9990000018"}}}}]}`},
	{"subject identifier", `{"entry": [{"resource": {"resourceType": "Observation", "subject": {"identifier": {"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9990000018"}}}}]}`},
	{"patient identifier", `{"entry": [{"resource": {"resourceType": "Practitioner"}}, {"resource": {"resourceType": "AllergyIntolerance", "patient": {"identifier": {"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9990000026"}}}}]}`},
	{"conditional reference", `{"entry": [{"resource": {"resourceType": "Condition", "subject": {"reference": "Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|9990000034"}}}]}`},
	{"reference by another system", `{"entry": [{"resource": {"resourceType": "Condition", "subject": {"identifier": {"system": "https://trust.example/mrn", "value": "9990000034"}, "reference": "Patient/1"}}}]}`},
	{"Patient in a carried document", `{"entry": [{"resource": {"resourceType": "MessageHeader"}}, {"resource": {"resourceType": "Bundle", "type": "document", "entry": [{"resource": {"resourceType": "Composition"}}, {"resource": {"resourceType": "Patient", "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9990000042"}]}}]}}]}`},
	{"carried document without one, then a subject", `{"entry": [{"resource": {"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Composition"}}]}}, {"resource": {"resourceType": "Observation", "subject": {"identifier": {"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9990000018"}}}}]}`},
	{"Bundles nested past the bound", `{"entry": [{"resource": {"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Patient", "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9990000018"}]}}]}}]}}]}}]}}]}}]}`},
	{"identifier not a list", `{"entry": [{"resource": {"resourceType": "Patient", "identifier": "x"}}]}`},
	{"identifier a map", `{"entry": [{"resource": {"resourceType": "Patient", "identifier": {"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9990000018"}}}]}`},
	{"entry not a list", `{"entry": {"resource": {"resourceType": "Patient"}}}`},
	{"entries of every kind", `{"entry": ["x", 1, null, [], {"fullUrl": "urn:uuid:a"}, {"resource": "x"}, {"resource": {"resourceType": 7}}, {"resource": {"resourceType": "Observation", "subject": "Patient/1", "patient": {"reference": 3}}}, {"resource": {"resourceType": "Observation", "patient": {"identifier": "x", "reference": "Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|9990000042"}}}]}`},
	{"subject null", `{"entry": [{"resource": {"resourceType": "Observation", "subject": null, "patient": [{"identifier": {"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9990000018"}}]}}]}`},
}

// TestPlainNHSNumberAgreesWithCEL checks that nhsNumber read from a
// decoded Bundle's maps gives what the CEL walk gives, for Bundles
// decoded by jsonmap (as the engine decodes translations) and by
// encoding/json.
func TestPlainNHSNumberAgreesWithCEL(t *testing.T) {
	decoders := []struct {
		name   string
		decode func([]byte) (map[string]any, error)
	}{
		{"jsonmap", jsonmap.Decode},
		{"encoding/json", func(b []byte) (map[string]any, error) {
			var m map[string]any
			return m, json.Unmarshal(b, &m)
		}},
	}
	for _, tt := range plainBundles {
		for _, d := range decoders {
			t.Run(tt.name+"/"+d.name, func(t *testing.T) {
				m, err := d.decode([]byte(tt.json))
				if err != nil {
					t.Fatal(err)
				}
				got, ok := plainNHSNumber(m, 0)
				if !ok {
					t.Fatal("the plain walk gave up on a decoded Bundle")
				}
				if want := celNHSNumber(m); got != want {
					t.Errorf("plain walk %q, CEL walk %q", got, want)
				}
			})
		}
	}
}

// TestPlainNHSNumberGivesUpOnOtherTypes checks that a Bundle holding Go
// values JSON does not decode to, where the walk reads, is left to the
// CEL walk, and that nhsNumber still gives what that walk gives.
func TestPlainNHSNumberGivesUpOnOtherTypes(t *testing.T) {
	nhsID := map[string]any{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9990000018"}
	tests := []struct {
		name   string
		bundle map[string]any
	}{
		{"entries as a typed slice", map[string]any{"entry": []map[string]any{{"resource": map[string]any{"resourceType": "Patient", "identifier": []any{nhsID}}}}}},
		{"a resource as a typed map", map[string]any{"entry": []any{map[string]any{"resource": map[string]string{"resourceType": "Patient"}}}}},
		{"identifiers as a typed slice", map[string]any{"entry": []any{map[string]any{"resource": map[string]any{"resourceType": "Patient", "identifier": []map[string]any{nhsID}}}}}},
		{"a value as a CEL string", map[string]any{"entry": []any{map[string]any{"resource": map[string]any{"resourceType": "Patient", "identifier": []any{map[string]any{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": types.String("9990000018")}}}}}}},
		{"a resource type as a CEL string", map[string]any{"entry": []any{map[string]any{"resource": map[string]any{"resourceType": types.String("Patient"), "identifier": []any{nhsID}}}}}},
		{"a subject as a typed map", map[string]any{"entry": []any{map[string]any{"resource": map[string]any{"resourceType": "Observation", "subject": map[string]map[string]any{"identifier": nhsID}}}}}},
		{"a reference as bytes", map[string]any{"entry": []any{map[string]any{"resource": map[string]any{"resourceType": "Observation", "subject": map[string]any{"reference": []byte("Patient/1")}}}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, ok := plainNHSNumber(tt.bundle, 0); ok {
				t.Error("the plain walk read a Bundle of other Go types")
			}
			b := types.NewStringInterfaceMap(numberAdapter{base: types.DefaultTypeAdapter}, tt.bundle)
			if got, want := string(bundleNHSNumber(b).(types.String)), celNHSNumber(tt.bundle); got != want {
				t.Errorf("nhsNumber %q, CEL walk %q", got, want)
			}
		})
	}
}

// TestNHSNumberAllocationsDoNotGrowWithEntries checks that nhsNumber of
// a decoded Bundle makes no CEL value of each entry it passes: finding
// the Patient after 64 other entries allocates no more than after 2.
func TestNHSNumberAllocationsDoNotGrowWithEntries(t *testing.T) {
	allocs := func(before int) float64 {
		entries := make([]any, 0, before+1)
		for i := range before {
			entries = append(entries, map[string]any{"resource": map[string]any{"resourceType": "Observation", "id": fmt.Sprint(i)}})
		}
		entries = append(entries, map[string]any{"resource": map[string]any{"resourceType": "Patient", "identifier": []any{
			map[string]any{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9990000018"}}}})
		b := types.NewStringInterfaceMap(numberAdapter{base: types.DefaultTypeAdapter}, map[string]any{"resourceType": "Bundle", "entry": entries})
		return testing.AllocsPerRun(20, func() {
			if n := bundleNHSNumber(b); n != types.String("9990000018") {
				t.Fatalf("nhsNumber = %v", n)
			}
		})
	}
	if few, many := allocs(2), allocs(64); many > few {
		t.Errorf("%v allocations after 64 entries, %v after 2", many, few)
	}
}

// FuzzPlainNHSNumber checks that, for any JSON object jsonmap decodes,
// the plain walk reads it and gives what the CEL walk gives.
func FuzzPlainNHSNumber(f *testing.F) {
	for _, tt := range plainBundles {
		f.Add([]byte(tt.json))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := jsonmap.Decode(data)
		if err != nil {
			return
		}
		got, ok := plainNHSNumber(m, 0)
		if !ok {
			t.Fatal("the plain walk gave up on a decoded Bundle")
		}
		if want := celNHSNumber(m); got != want {
			t.Errorf("plain walk %q, CEL walk %q", got, want)
		}
	})
}
