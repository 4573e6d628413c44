package router

import (
	"os"
	"testing"

	"github.com/junction-fhir/junction/pkg/envelope"
)

// BenchmarkResendContentFHIR measures the resend content of a FHIR
// message Bundle: compacting it and leaving out its timestamp and
// meta.lastUpdated, done for every FHIR message stored.
func BenchmarkResendContentFHIR(b *testing.B) {
	raw, err := os.ReadFile("../../adapters/fhir/testdata/message-bundle.json")
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		resendContent(envelope.ContentTypeFHIR, raw)
	}
}
