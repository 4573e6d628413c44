package fhir_test

import (
	"testing"

	"github.com/junction-fhir/junction/adapters/fhir"
	"github.com/junction-fhir/junction/pkg/adapter/adaptertest"
)

// TestDataQualityCodesComplete checks that the codes the engine primes
// metric series for name every Issue constant, so a new one is primed
// too.
func TestDataQualityCodesComplete(t *testing.T) {
	adaptertest.ConstsListed(t, fhir.Translator{}.DataQualityCodes(), ".", "Issue")
}
