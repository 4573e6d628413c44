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
		{"https://user:pass@fhir.example.nhs.uk/R4", false},
		{"https://user@fhir.example.nhs.uk/R4", false},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			if err := CheckBaseURL(tt.url); (err == nil) != tt.ok {
				t.Errorf("CheckBaseURL(%q) = %v, want ok %v", tt.url, err, tt.ok)
			}
		})
	}
}

func TestPlainBeyondLoopback(t *testing.T) {
	tests := []struct {
		url  string
		want bool
	}{
		{"http://ehr.example.nhs.uk/fhir", true},
		{"http://10.1.2.3:8080/fhir", true},
		{"https://ehr.example.nhs.uk/fhir", false},
		{"http://127.0.0.1:8080/fhir", false},
		{"http://localhost:8080/fhir", false},
		{"http://[::1]:8080/fhir", false},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			if got := PlainBeyondLoopback(tt.url); got != tt.want {
				t.Errorf("PlainBeyondLoopback(%q) = %v, want %v", tt.url, got, tt.want)
			}
		})
	}
}
