package fhir

import "testing"

func TestCheckBaseURL(t *testing.T) {
	tests := []struct {
		url string
		ok  bool
	}{
		{"https://fhir.example.nhs.uk/R4", true},
		{"http://127.0.0.1:8080/fhir", true},
		{"ftp://fhir.example.nhs.uk", false},
		{"https:///R4", false},
		{"https://fhir.example.nhs.uk/R4?x=1", false},
		{"https://fhir.example.nhs.uk/R4#top", false},
		{"fhir.example.nhs.uk/R4", false},
		{"https://exa mple.nhs.uk", false},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			if err := CheckBaseURL(tt.url); (err == nil) != tt.ok {
				t.Errorf("CheckBaseURL(%q) = %v, want ok %v", tt.url, err, tt.ok)
			}
		})
	}
}
