package route

import (
	"strings"
	"testing"
)

// TestBundleProblem checks what a replace step's result is refused for,
// named by its path, without quoting a value.
func TestBundleProblem(t *testing.T) {
	patient := func(extra map[string]any) map[string]any {
		res := map[string]any{"resourceType": "Patient", "id": "SECRET-ID"}
		for k, v := range extra {
			res[k] = v
		}
		return map[string]any{"resourceType": "Bundle", "type": "collection", "entry": []any{map[string]any{"resource": res}}}
	}
	tests := []struct {
		name string
		b    map[string]any
		want string // prefix of the problem; "" for none
	}{
		{"a Bundle", patient(nil), ""},
		{"a Bundle without entries", map[string]any{"resourceType": "Bundle", "type": "collection"}, ""},
		{"a null lining up a repeating primitive", patient(map[string]any{"name": []any{map[string]any{"given": []any{"ALEX", nil}}}}), ""},
		{"no resourceType", map[string]any{"type": "collection"}, "resourceType: missing"},
		{"a resource, not a Bundle", map[string]any{"resourceType": "Patient", "id": "p1"}, `resourceType: not "Bundle"`},
		{"an entry without a resource", map[string]any{"resourceType": "Bundle", "entry": []any{map[string]any{"fullUrl": "urn:uuid:1"}}}, "entry[0].resource: missing"},
		{"a transaction's DELETE, a request alone", map[string]any{"resourceType": "Bundle", "type": "transaction", "entry": []any{map[string]any{"request": map[string]any{"method": "DELETE", "url": "Encounter/e1"}}}}, ""},
		{"a resource without a type", map[string]any{"resourceType": "Bundle", "entry": []any{map[string]any{"resource": map[string]any{"id": "p1"}}}}, "entry[0].resource.resourceType: missing"},
		{"an empty string", patient(map[string]any{"identifier": []any{map[string]any{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": ""}}}), "entry[0].resource.identifier[0].value: an empty string"},
		{"an empty array", patient(map[string]any{"identifier": []any{}}), "entry[0].resource.identifier: an empty array"},
		{"an empty object", patient(map[string]any{"meta": map[string]any{}}), "entry[0].resource.meta: an empty object"},
		{"a null member", patient(map[string]any{"gender": nil}), "entry[0].resource.gender: null"},
		{"a control character", patient(map[string]any{"gender": "fe\x00male"}), "entry[0].resource.gender: a string holding a control character"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := bundleProblem(tt.b)
			if tt.want == "" && got != "" || !strings.HasPrefix(got, tt.want) {
				t.Errorf("bundleProblem = %q, want %q...", got, tt.want)
			}
			if strings.Contains(got, "SECRET") || strings.Contains(got, "male") {
				t.Errorf("bundleProblem = %q quotes a value", got)
			}
		})
	}
}
