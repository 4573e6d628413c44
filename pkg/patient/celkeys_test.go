package patient

import (
	"maps"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/junction-fhir/junction/pkg/rules"
)

// TestCELKeysAreTheRulesKeys holds the patient variable's keys, which
// route loading checks expressions against (rules.PatientKeys), to those
// CELAt gives: a key added here and not there would fail every route
// reading it at load, and one listed there and not given here would pass
// the load and fail every message.
func TestCELKeysAreTheRulesKeys(t *testing.T) {
	r := &Record{NHSNumber: "9990000018", GPPractice: "Y99999"}
	got := slices.Sorted(maps.Keys(r.CELAt(base)))
	want := slices.Sorted(slices.Values(rules.PatientKeys()))
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("CELAt keys (-rules.PatientKeys +got):\n%s", diff)
	}
}
