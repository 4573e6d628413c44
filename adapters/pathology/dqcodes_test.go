package pathology_test

import (
	"slices"
	"testing"

	"github.com/junction-fhir/junction/adapters/pas"
	"github.com/junction-fhir/junction/adapters/pathology"
	"github.com/junction-fhir/junction/pkg/adapter/adaptertest"
)

// TestDataQualityCodesComplete checks that the codes the engine primes
// metric series for name every DQ constant of a translation (those of
// the orders Junction sends, in orders_out.go, are not) and every code
// of the patient mapping shared with pas.
func TestDataQualityCodesComplete(t *testing.T) {
	got := (&pathology.Translator{}).DataQualityCodes()
	adaptertest.ConstsListed(t, got, ".", "DQ", "orders_out.go")
	for _, c := range pas.DataQualityCodes() {
		if !slices.Contains(got, c) {
			t.Errorf("DataQualityCodes lacks the patient mapping's %q", c)
		}
	}
	if slices.Contains(got, pathology.DQOrderCodeMissing) {
		t.Errorf("DataQualityCodes lists %q, a code of orders sent, not of translations", pathology.DQOrderCodeMissing)
	}
}
