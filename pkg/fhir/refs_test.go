package fhir

import (
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestRewriteReferences(t *testing.T) {
	repl := map[string]map[string]any{
		"urn:uuid:gone": nil,
		"urn:uuid:spec": {"type": "Specimen", "identifier": map[string]any{"value": "S1"}},
	}
	tests := []struct {
		name, in, want string
	}{
		{"a reference key goes", `{"subject":{"reference":"urn:uuid:gone"},"status":"final"}`, `{"status":"final"}`},
		{"an array it empties goes", `{"performer":[{"reference":"urn:uuid:gone"}],"status":"final"}`, `{"status":"final"}`},
		{"an array keeps the rest", `{"performer":[{"reference":"urn:uuid:gone"},{"reference":"Practitioner/1"}]}`, `{"performer":[{"reference":"Practitioner/1"}]}`},
		{"an object it empties goes", `{"basedOn":[{"x":{"reference":"urn:uuid:gone"}}],"id":"o"}`, `{"id":"o"}`},
		{"replaced, display kept", `{"specimen":{"reference":"urn:uuid:spec","display":"blood"}}`,
			`{"specimen":{"type":"Specimen","identifier":{"value":"S1"},"display":"blood"}}`},
		{"others untouched", `{"subject":{"reference":"Patient/1"},"note":[]}`, `{"subject":{"reference":"Patient/1"},"note":[]}`},
		// A backbone element without its reference would be invalid
		// (Encounter.diagnosis.condition is 1..1): it goes whole.
		{"a backbone element goes whole", `{"diagnosis":[{"condition":{"reference":"urn:uuid:gone"},"rank":1},{"condition":{"reference":"Condition/2"},"rank":2}]}`,
			`{"diagnosis":[{"condition":{"reference":"Condition/2"},"rank":2}]}`},
		{"an extension goes whole", `{"extension":[{"url":"https://x.example/e","valueReference":{"reference":"urn:uuid:gone"}}],"id":"o"}`, `{"id":"o"}`},
		{"a replaced reference keeps its element", `{"diagnosis":[{"condition":{"reference":"urn:uuid:spec"},"rank":1}]}`,
			`{"diagnosis":[{"condition":{"type":"Specimen","identifier":{"value":"S1"}},"rank":1}]}`},
		{"a contained resource keeps its place", `{"contained":[{"resourceType":"Observation","id":"c","subject":{"reference":"urn:uuid:gone"}}]}`,
			`{"contained":[{"resourceType":"Observation","id":"c"}]}`},
		// A reference that is a detail of its element goes alone: the
		// NHS number and the next of kin stay.
		{"an identifier keeps its place without its assigner", `{"identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9990000018","assigner":{"reference":"urn:uuid:gone"}}],"contact":[{"name":{"family":"TESTKIN"},"organization":{"reference":"urn:uuid:gone"}}]}`,
			`{"identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9990000018"}],"contact":[{"name":{"family":"TESTKIN"}}]}`},
		{"a reference deeper in an element leaves the element", `{"participant":[{"individual":{"x":{"reference":"urn:uuid:gone"}},"type":"a"}]}`,
			`{"participant":[{"type":"a"}]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var v any
			if err := json.Unmarshal([]byte(tt.in), &v); err != nil {
				t.Fatal(err)
			}
			var want any
			if err := json.Unmarshal([]byte(tt.want), &want); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(want, RewriteReferences(v, repl)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}
