package patient

import (
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// TestFirstRecord: for a patient the index has never seen, FirstRecord
// gives the record that applying the message to a real index returns
// (apart from the store's version), and nil where the index leaves the
// patient unindexed.
func TestFirstRecord(t *testing.T) {
	js := startJetStream(t)
	n0 := num(t, 0)
	cases := []struct {
		name string
		b    map[string]any
		// none says the index leaves the patient unindexed.
		none bool
	}{
		{"demographics", bundle(t, "A01", pat{nhsNumber: n0, ids: []Identifier{local("L0")}, family: "TESTPATIENT", given: []string{"Alpha"}, ods: "Y99999", postcode: "LS1 4AP", gender: "female", birthDate: "1970-01-01"}), false},
		{"restricted", bundle(t, "A08", pat{nhsNumber: n0, restricted: true}), false},
		{"flags only", flagBundle(t, flagRes(byNHS(n0), "active", "2026-02-01", "")), false},
		{"two patients, the first read", bundle(t, "A08", pat{nhsNumber: n0, family: "FIRST"}, pat{nhsNumber: num(t, 1), family: "SECOND"}), false},
		{"without NHS number", bundle(t, "A08", pat{ids: []Identifier{local("L1")}}), true},
		{"no patient", bundle(t, "A08"), true},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ix := openIndex(t, js, fmt.Sprintf("PATIENTS_FIRST_%d", i))
			_, want, err := ix.ApplyLookup(t.Context(), tc.b, src(1))
			if err != nil {
				t.Fatalf("ApplyLookup: %v", err)
			}
			got := FirstRecord(tc.b, src(1))
			if tc.none {
				if got != nil || want != nil {
					t.Errorf("FirstRecord = %v, index = %v; want neither", got, want)
				}
				return
			}
			if want == nil || got == nil {
				t.Fatalf("FirstRecord = %v, index = %v; want both", got, want)
			}
			if diff := cmp.Diff(want, got, cmpopts.IgnoreFields(Record{}, "Version")); diff != "" {
				t.Errorf("FirstRecord differs from the index's record (-index +first):\n%s", diff)
			}
			if diff := cmp.Diff(want.CELAt(src(1).Received), got.CELAt(src(1).Received)); diff != "" {
				t.Errorf("patient variable differs (-index +first):\n%s", diff)
			}
		})
	}
}
