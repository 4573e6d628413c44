package fhir

import (
	"testing"
	"time"

	models "github.com/samply/golang-fhir-models/fhir-models/fhir"
)

func TestConceptLeavesOutEmptyDisplay(t *testing.T) {
	tests := []struct {
		name, display string
		wantDisplay   bool
	}{
		{"with display", "Male", true},
		{"without display", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, c := range []models.Coding{
				Concept("http://example.org/cs", "M", tc.display).Coding[0],
				Concepts("http://example.org/cs", "M", tc.display)[0].Coding[0],
			} {
				if *c.System != "http://example.org/cs" || *c.Code != "M" {
					t.Errorf("coding = %s|%s", *c.System, *c.Code)
				}
				if (c.Display != nil) != tc.wantDisplay || (c.Display != nil && *c.Display != tc.display) {
					t.Errorf("display = %v, want present %v", c.Display, tc.wantDisplay)
				}
			}
		})
	}
}

func TestInstantFromHL7(t *testing.T) {
	london, err := time.LoadLocation("Europe/London")
	if err != nil {
		t.Skipf("no time zone data: %v", err)
	}
	tests := []struct {
		raw  string
		want string
		ok   bool
	}{
		{"202607011030", "2026-07-01T10:30:00+01:00", true},
		{"20260115103000", "2026-01-15T10:30:00+00:00", true},
		{"20260701", "", false},
		{`""`, "", false},
		{"2026070110xx", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.raw, func(t *testing.T) {
			got, ok := InstantFromHL7(tc.raw, london)
			if ok != tc.ok || (ok && got != tc.want) {
				t.Errorf("InstantFromHL7(%q) = %q, %v; want %q, %v", tc.raw, got, ok, tc.want, tc.ok)
			}
		})
	}
}
