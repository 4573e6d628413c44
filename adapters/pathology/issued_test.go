package pathology

import (
	"slices"
	"testing"
	"time"

	models "github.com/samply/golang-fhir-models/fhir-models/fhir"
)

// TestIssuedTimeAmbiguous checks that a report issue time (OBR-22) sent
// without an offset in the hour Europe/London skips or repeats is flagged
// local_time_ambiguous, as result times are: a merging FHIR destination
// orders a report's versions by it, so a guessed offset can put a final
// report before the preliminary it replaces. In the repeated hour it is
// read as the first pass when the second had not come when the message
// was received.
func TestIssuedTimeAmbiguous(t *testing.T) {
	later := time.Date(2024, 10, 28, 9, 0, 0, 0, time.UTC)
	tests := []struct {
		name, issued, want string
		received           time.Time
		ambiguous          bool
	}{
		{"summer", "20240716101000", "2024-07-16T10:10:00+01:00", later, false},
		{"winter", "20240116101000", "2024-01-16T10:10:00+00:00", later, false},
		{"the hour the clocks repeat", "20241027011000", "2024-10-27T01:10:00+00:00", later, true},
		{"the repeated hour's first pass, received at once", "20241027015000", "2024-10-27T01:50:00+01:00",
			time.Date(2024, 10, 27, 0, 51, 0, 0, time.UTC), true},
		{"the repeated hour's second pass, received at once", "20241027011000", "2024-10-27T01:10:00+00:00",
			time.Date(2024, 10, 27, 1, 11, 0, 0, time.UTC), true},
		{"the hour the clocks skip", "20240331011000", "2024-03-31T02:10:00+01:00", later, true},
		{"repeated hour with its offset", "20241027011000+0100", "2024-10-27T01:10:00+01:00", later, false},
	}
	tr := newTestTranslator(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			obr := `OBR|1|P1|F1|GLU^Glucose^L|||20240715081500|||||||||||||||` + tt.issued + `|||F`
			env := testEnvelope("issued", hl7(testMSH, testPID, obr, `OBX|1|NM|GLU^Glucose^L||5.2|mmol/L|||||F`))
			env.ReceivedAt = tt.received
			got, err := tr.Translate(env)
			if err != nil {
				t.Fatalf("Translate: %v", err)
			}
			b, err := models.UnmarshalBundle(got.Bundle)
			if err != nil {
				t.Fatal(err)
			}
			issued := ""
			for _, e := range b.Entry {
				if r, err := models.UnmarshalDiagnosticReport(e.Resource); err == nil && r.Issued != nil {
					issued = *r.Issued
				}
			}
			if issued != tt.want {
				t.Errorf("issued %q, want %q", issued, tt.want)
			}
			if flagged := slices.Contains(got.DataQuality, DQLocalTimeAmbiguous); flagged != tt.ambiguous {
				t.Errorf("data quality %v, want %s: %v", got.DataQuality, DQLocalTimeAmbiguous, tt.ambiguous)
			}
		})
	}
}
