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

// TestResultPeriodAcrossClockChange checks that an observation period
// (OBR-7 to OBR-8) and a collection period (SPM-17) begun in the first
// pass of the hour Europe/London repeats and ended in the second do not
// end before they start, and that the results take the start as their
// time; times out of order otherwise stay as sent.
func TestResultPeriodAcrossClockChange(t *testing.T) {
	tests := []struct {
		name, start, end string
		wantStart        string
	}{
		{"begun 01:50 BST, ended 01:10 GMT", "20241027015000", "20241027011000", "2024-10-27T01:50:00+01:00"},
		{"both in the second pass", "20241027011000", "20241027015000", "2024-10-27T01:10:00+00:00"},
		{"out of order in summer", "20240715100000", "20240715090000", "2024-07-15T10:00:00+01:00"},
	}
	tr := newTestTranslator(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			obr := `OBR|1|P1|F1|GLU^Glucose^L|||` + tt.start + `|` + tt.end + `||||||||||||||20241027020000|||F`
			spm := `SPM|1|S1||119364003^Serum specimen^SCT|||||||||||||` + tt.start + `^` + tt.end
			got, err := tr.Translate(testEnvelope("period", hl7(testMSH, testPID, obr, `OBX|1|NM|GLU^Glucose^L||5.2|mmol/L|||||F`, spm)))
			if err != nil {
				t.Fatalf("Translate: %v", err)
			}
			b, err := models.UnmarshalBundle(got.Bundle)
			if err != nil {
				t.Fatal(err)
			}
			var report, collection, observation string
			for _, e := range b.Entry {
				if r, err := models.UnmarshalDiagnosticReport(e.Resource); err == nil && r.EffectivePeriod != nil && r.EffectivePeriod.Start != nil {
					report = *r.EffectivePeriod.Start
				}
				if s, err := models.UnmarshalSpecimen(e.Resource); err == nil && s.Collection != nil && s.Collection.CollectedPeriod != nil && s.Collection.CollectedPeriod.Start != nil {
					collection = *s.Collection.CollectedPeriod.Start
				}
				if o, err := models.UnmarshalObservation(e.Resource); err == nil && o.EffectiveDateTime != nil {
					observation = *o.EffectiveDateTime
				}
			}
			if report != tt.wantStart || collection != tt.wantStart || observation != tt.wantStart {
				t.Errorf("report from %q, collection from %q, observation at %q, want %q", report, collection, observation, tt.wantStart)
			}
		})
	}
}
