package router

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/junction-fhir/junction/pkg/adapter"
)

// TestTranslatedReason: the translated record names a relayed message as
// read, not translated, and lists the translation's data quality issues,
// so a result not linked to another patient's order can be found from
// its trail.
func TestTranslatedReason(t *testing.T) {
	tests := []struct {
		name string
		tr   adapter.Translation
		want string
	}{
		{"translated cleanly", adapter.Translation{}, ""},
		{"relayed", adapter.Translation{Relayed: true}, RelayedReason},
		{"order of another patient", adapter.Translation{DataQuality: []string{"order_patient_mismatch"}},
			"data quality: order_patient_mismatch"},
		{"several issues", adapter.Translation{DataQuality: []string{"nhs_number_missing", "order_patient_mismatch"}},
			"data quality: nhs_number_missing, order_patient_mismatch"},
		{"relayed with an issue", adapter.Translation{Relayed: true, DataQuality: []string{"nhs_number_missing"}},
			RelayedReason + "; data quality: nhs_number_missing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, translatedReason(&tt.tr)); diff != "" {
				t.Errorf("translatedReason (-want +got):\n%s", diff)
			}
		})
	}
}
