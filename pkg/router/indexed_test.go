package router

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/junction-fhir/junction/pkg/adapter"
	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/patient"
	"github.com/junction-fhir/junction/pkg/telemetry"
)

// TestPatientIndexedCallback checks that Options.PatientIndexed gets the
// record each indexed message leaves (as the PDS enricher needs to judge
// whether the patient is due a lookup), and is not called for a patient
// the index cannot know.
func TestPatientIndexedCallback(t *testing.T) {
	var got []string
	r := &Router{o: Options{Metrics: telemetry.NewMetrics(prometheus.NewRegistry()), Patients: testIndex(t),
		PatientIndexed: func(rec *patient.Record) { got = append(got, rec.NHSNumber) }}}
	tests := []struct {
		name      string
		nhsNumber string
		want      []string
	}{
		{"known patient", "9990000026", []string{"9990000026"}},
		{"no NHS number", "", nil},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got = nil
			env := &envelope.Envelope{ID: "01JTESTIDX" + string(rune('A'+i)), Source: "pas", ReceivedAt: time.Now().UTC()}
			if _, err := r.indexPatient(t.Context(), env, &adapter.Translation{Parsed: admission(tt.nhsNumber)}); err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) || len(got) > 0 && got[0] != tt.want[0] {
				t.Errorf("callback got %v, want %v", got, tt.want)
			}
		})
	}
}
