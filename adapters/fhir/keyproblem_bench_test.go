package fhir

import (
	"fmt"
	"strings"
	"testing"
)

// bundleOfObservations is a collection Bundle of n small Observations,
// about 330 bytes each.
func bundleOfObservations(n int) []byte {
	entry := `{"fullUrl":"urn:uuid:%08d-0000-4000-8000-000000000000","resource":{"resourceType":"Observation","status":"final",` +
		`"code":{"coding":[{"system":"http://snomed.info/sct","code":"271649006","display":"Systolic blood pressure"}]},` +
		`"subject":{"reference":"Patient/1"},"valueQuantity":{"value":120.5,"unit":"mmHg"}}}`
	parts := make([]string, n)
	for i := range parts {
		parts[i] = fmt.Sprintf(entry, i)
	}
	return []byte(`{"resourceType":"Bundle","type":"collection","entry":[` + strings.Join(parts, ",") + `]}`)
}

// BenchmarkKeyProblem measures the duplicate-key and number scan of a
// FHIR body (go test -run='^$' -bench=KeyProblem -benchmem ./adapters/fhir).
func BenchmarkKeyProblem(b *testing.B) {
	for _, n := range []int{100, 3000, 9000} {
		doc := bundleOfObservations(n)
		b.Run(fmt.Sprintf("%dKiB", len(doc)>>10), func(b *testing.B) {
			b.SetBytes(int64(len(doc)))
			b.ReportAllocs()
			for b.Loop() {
				if off, reason := keyProblem(doc); off >= 0 {
					b.Fatalf("problem at %d: %s", off, reason)
				}
			}
		})
	}
}
