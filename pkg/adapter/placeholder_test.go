package adapter

import "testing"

func TestIsPlaceholder(t *testing.T) {
	tests := []struct {
		system string
		want   bool
	}{
		{"https://fhir.example-trust.nhs.uk/Id/local-patient-identifier", true},
		{"http://example-trust.nhs.uk/CodeSystem/x", true},
		{"https://fhir.rx1.nhs.uk/Id/local-patient-identifier", false},
		{"https://fhir.example-trust.nhs.uk.evil.example/Id/x", false},
		{"https://notexample-trust.nhs.uk/Id/x", false},
		{"urn:oid:2.16.840.1.113883.2.1.4.1", false},
		{"", false},
	}
	for _, tt := range tests {
		t.Run(tt.system, func(t *testing.T) {
			if got := IsPlaceholder(tt.system); got != tt.want {
				t.Errorf("IsPlaceholder(%q) = %v, want %v", tt.system, got, tt.want)
			}
		})
	}
}
