package pas

import (
	"strings"
	"testing"
	"time"

	models "github.com/samply/golang-fhir-models/fhir-models/fhir"
)

// TestTimesAcrossClockChange checks the times of an A02 sent at once,
// without offsets, in the hour Europe/London repeats (27 October 2024,
// 01:00 BST to 01:59 GMT): the message time (MessageHeader is dropped by
// routes, so Provenance.recorded) and the transfer time (EVN-6) read as
// the first pass when the second had not come when it was received, and
// as the second otherwise.
func TestTimesAcrossClockChange(t *testing.T) {
	tests := []struct {
		name     string
		at       string
		received time.Time
		want     string
	}{
		{"first pass, received at once", "20241027015000", time.Date(2024, 10, 27, 0, 51, 0, 0, time.UTC), "2024-10-27T01:50:00+01:00"},
		{"second pass, received at once", "20241027011000", time.Date(2024, 10, 27, 1, 11, 0, 0, time.UTC), "2024-10-27T01:10:00+00:00"},
		{"first pass, received next day", "20241027015000", time.Date(2024, 10, 28, 9, 0, 0, 0, time.UTC), "2024-10-27T01:50:00+00:00"},
	}
	tr := newTestTranslator(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msh := strings.Replace(strings.Replace(testMSH, "ADT^A01", "ADT^A02", 1), "20240715093512", tt.at, 1)
			env := testEnvelope("dst", hl7(msh, segment("EVN", map[int]string{1: "A02", 6: tt.at}),
				pid("9990000018^^^NHS", nil), pv1(map[int]string{2: "I", 3: "WARD2^^^RX1", 6: "WARD1^^^RX1", 19: "V1"})))
			env.ReceivedAt = tt.received
			tl, err := tr.Translate(env)
			if err != nil {
				t.Fatalf("Translate: %v", err)
			}
			b, err := models.UnmarshalBundle(tl.Bundle)
			if err != nil {
				t.Fatal(err)
			}
			e, ok := resourceOf(t, &b, "Encounter", models.UnmarshalEncounter)
			if !ok {
				t.Fatal("no Encounter")
			}
			if len(e.Location) != 2 || e.Location[0].Period == nil || e.Location[0].Period.Start == nil ||
				e.Location[1].Period == nil || e.Location[1].Period.End == nil {
				t.Fatalf("locations %+v, want the new one begun and the old one ended", e.Location)
			}
			if got := *e.Location[0].Period.Start; got != tt.want {
				t.Errorf("new location from %s, want %s", got, tt.want)
			}
			if got := *e.Location[1].Period.End; got != tt.want {
				t.Errorf("old location until %s, want %s", got, tt.want)
			}
			p, ok := resourceOf(t, &b, "Provenance", models.UnmarshalProvenance)
			if !ok {
				t.Fatal("no Provenance")
			}
			if p.Recorded != tt.want {
				t.Errorf("recorded %s, want %s", p.Recorded, tt.want)
			}
		})
	}
}

// TestVisitPeriodAcrossClockChange checks that an admission (PV1-44) in
// the first pass of the hour Europe/London repeats, discharged (PV1-45)
// in the second, gives a stay that does not end before it began; times
// out of order otherwise stay as sent.
func TestVisitPeriodAcrossClockChange(t *testing.T) {
	tests := []struct {
		name, admit, discharge string
		wantStart, wantEnd     string
	}{
		{"admitted 01:50 BST, discharged 01:10 GMT", "20241027015000", "20241027011000", "2024-10-27T01:50:00+01:00", "2024-10-27T01:10:00+00:00"},
		{"both in the second pass", "20241027011000", "20241027015000", "2024-10-27T01:10:00+00:00", "2024-10-27T01:50:00+00:00"},
		{"out of order in summer", "20240715100000", "20240715090000", "2024-07-15T10:00:00+01:00", "2024-07-15T09:00:00+01:00"},
	}
	tr := newTestTranslator(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msh := strings.Replace(testMSH, "ADT^A01", "ADT^A03", 1)
			tl, err := tr.Translate(testEnvelope("stay", hl7(msh, pid("9990000018^^^NHS", nil),
				pv1(map[int]string{2: "I", 3: "WARD1^^^RX1", 19: "V1", 44: tt.admit, 45: tt.discharge}))))
			if err != nil {
				t.Fatalf("Translate: %v", err)
			}
			b, err := models.UnmarshalBundle(tl.Bundle)
			if err != nil {
				t.Fatal(err)
			}
			e, ok := resourceOf(t, &b, "Encounter", models.UnmarshalEncounter)
			if !ok || e.Period == nil || e.Period.Start == nil || e.Period.End == nil {
				t.Fatalf("encounter period %+v, want a start and an end", e.Period)
			}
			if *e.Period.Start != tt.wantStart || *e.Period.End != tt.wantEnd {
				t.Errorf("period %s to %s, want %s to %s", *e.Period.Start, *e.Period.End, tt.wantStart, tt.wantEnd)
			}
		})
	}
}
