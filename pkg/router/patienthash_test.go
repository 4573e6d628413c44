package router

import (
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/junction-fhir/junction/pkg/audit"
	"github.com/junction-fhir/junction/pkg/envelope"
)

// TestPatientHashCarried: the route stage's records and the header it
// gives the delivery stage carry the message's patient hash, or mark that
// it has none; the delivery stage's records take it back from the header,
// and a payload queued before the header existed leaves them unmarked.
func TestPatientHashCarried(t *testing.T) {
	const hash = "5f1d0c2b"
	tests := []struct {
		name       string
		ev         evaluation
		wantHeader string
		want       audit.Record
	}{
		{"patient", evaluation{translated: true, patient: hash}, hash, audit.Record{Patient: hash}},
		{"no patient", evaluation{translated: true}, envelope.PatientNone, audit.Record{NoPatient: true}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var rec audit.Record
			tc.ev.stamp(&rec)
			if rec.Patient != tc.want.Patient || rec.NoPatient != tc.want.NoPatient {
				t.Errorf("route stage record %+v, want %+v", rec, tc.want)
			}
			h := nats.Header{}
			h.Set(envelope.HeaderPatient, tc.ev.patientHeader())
			if got := h.Get(envelope.HeaderPatient); got != tc.wantHeader {
				t.Errorf("header %q, want %q", got, tc.wantHeader)
			}
			var del audit.Record
			patientOf(h, &del)
			if del.Patient != tc.want.Patient || del.NoPatient != tc.want.NoPatient {
				t.Errorf("delivery stage record %+v, want %+v", del, tc.want)
			}
		})
	}
	t.Run("not translated", func(t *testing.T) {
		var rec audit.Record
		(&evaluation{}).stamp(&rec)
		if rec.Patient != "" || rec.NoPatient {
			t.Errorf("record of an untranslated message %+v, want no patient fields", rec)
		}
	})
	t.Run("queued before the header", func(t *testing.T) {
		var rec audit.Record
		patientOf(nats.Header{}, &rec)
		if rec.Patient != "" || rec.NoPatient {
			t.Errorf("delivery record %+v, want no patient fields", rec)
		}
	})
}
