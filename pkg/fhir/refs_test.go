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
