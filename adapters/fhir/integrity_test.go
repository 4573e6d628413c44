package fhir

import (
	"encoding/json"
	"testing"

	models "github.com/samply/golang-fhir-models/fhir-models/fhir"
)

func TestBundleIntegrity(t *testing.T) {
	const (
		a = "urn:uuid:6f0c1e0a-1d2b-4c3d-8e4f-5a6b7c8d9e01"
		b = "urn:uuid:6f0c1e0a-1d2b-4c3d-8e4f-5a6b7c8d9e02"
	)
	tests := []struct {
		name, entries string
		where         string // "" when sound
	}{
		{"references resolved", `[{"fullUrl":"` + a + `","resource":{"resourceType":"Patient"}},{"fullUrl":"` + b + `","resource":{"resourceType":"Encounter","subject":{"reference":"` + a + `"}}}]`, ""},
		{"a urn that is no reference", `[{"fullUrl":"` + a + `","resource":{"resourceType":"DocumentReference","masterIdentifier":{"system":"urn:ietf:rfc:3986","value":"` + b + `"}}}]`, ""},
		{"server references are not checked", `[{"resource":{"resourceType":"Encounter","subject":{"reference":"Patient/123"}}}]`, ""},
		{"versions of one resource", `[{"fullUrl":"` + a + `","resource":{"resourceType":"Patient","meta":{"versionId":"1"}}},{"fullUrl":"` + a + `","resource":{"resourceType":"Patient","meta":{"versionId":"2"}}}]`, ""},
		{"one fullUrl twice", `[{"fullUrl":"` + a + `","resource":{"resourceType":"Patient"}},{"fullUrl":"` + b + `"},{"fullUrl":"` + a + `","resource":{"resourceType":"Patient"}}]`, "Bundle.entry[2].fullUrl"},
		{"one version twice", `[{"fullUrl":"` + a + `","resource":{"resourceType":"Patient","meta":{"versionId":"1"}}},{"fullUrl":"` + a + `","resource":{"resourceType":"Patient","meta":{"versionId":"1"}}}]`, "Bundle.entry[1].fullUrl"},
		{"dangling reference", `[{"fullUrl":"` + a + `","resource":{"resourceType":"Patient"}},{"resource":{"resourceType":"Encounter","participant":[{},{"individual":{"reference":"` + b + `"}}]}}]`, "Bundle.entry[1].resource.participant[1].individual.reference"},
		{"dangling urn:oid", `[{"resource":{"resourceType":"Observation","subject":{"reference":"urn:oid:1.2.3"}}}]`, "Bundle.entry[0].resource.subject.reference"},
		{"an unknown key is not shown", `[{"resource":{"resourceType":"Basic","extension":[{"url":"u","valueReference":{"reference":"` + b + `"}}],"testpatient":{"reference":"` + b + `"}}}]`, "Bundle.entry[0].resource.extension[0].valueReference.reference"},
		{"a nested Bundle's own references", `[{"fullUrl":"` + a + `","resource":{"resourceType":"Bundle","type":"document","entry":[{"fullUrl":"` + b + `","resource":{"resourceType":"Patient"}},{"resource":{"resourceType":"Composition","subject":{"reference":"` + b + `"}}}]}}]`, ""},
		{"a nested Bundle referring to the outer one", `[{"fullUrl":"` + a + `","resource":{"resourceType":"Patient"}},{"resource":{"resourceType":"Bundle","type":"document","entry":[{"resource":{"resourceType":"Composition","subject":{"reference":"` + a + `"}}}]}}]`, ""},
		{"a nested Bundle's dangling reference", `[{"resource":{"resourceType":"Bundle","type":"document","entry":[{"fullUrl":"` + a + `","resource":{"resourceType":"Patient"}},{"resource":{"resourceType":"Composition","subject":{"reference":"` + b + `"}}}]}}]`, "Bundle.entry[0].resource.entry[1].resource.subject.reference"},
		{"a nested Bundle's fullUrls stay inside it", `[{"resource":{"resourceType":"Bundle","type":"document","entry":[{"fullUrl":"` + b + `","resource":{"resourceType":"Patient"}}]}},{"resource":{"resourceType":"Encounter","subject":{"reference":"` + b + `"}}}]`, "Bundle.entry[1].resource.subject.reference"},
		{"an unknown key on the path", `[{"resource":{"resourceType":"Basic","smithjohn":{"reference":"` + b + `"}}}]`, "Bundle.entry[0].resource.*.reference"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var entries []models.BundleEntry
			if err := json.Unmarshal([]byte(tt.entries), &entries); err != nil {
				t.Fatal(err)
			}
			detail, where, bad := bundleIntegrity(entries)
			if bad != (tt.where != "") || where != tt.where {
				t.Errorf("bundleIntegrity = %q at %q (%v), want a problem at %q", detail, where, bad, tt.where)
			}
		})
	}
}
