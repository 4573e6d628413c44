package router

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/junction-fhir/junction/adapters/pas"
	"github.com/junction-fhir/junction/pkg/envelope"
)

// BenchmarkFresh measures what sharedTranslator.Fresh does for one
// message besides the patient index: the PAS translation of an ADT^A01
// with every mapped segment (parse, map, encode), decoding the bundle
// for CEL, and hashing it.
func BenchmarkFresh(b *testing.B) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "adapters", "pas", "testdata", "a01-full-segments.hl7"))
	if err != nil {
		b.Fatal(err)
	}
	tr, err := pas.NewTranslator(pas.DefaultDialect())
	if err != nil {
		b.Fatal(err)
	}
	s := newSharedTranslator(tr, nil)
	env := &envelope.Envelope{ID: "msg-bench", Source: "pas", ContentType: envelope.ContentTypeHL7v2,
		ReceivedAt: time.Date(2024, 7, 15, 8, 36, 0, 0, time.UTC), Raw: raw}
	b.ReportAllocs()
	for b.Loop() {
		t, _, err := s.Fresh(b.Context(), env)
		if err != nil || t.Parsed == nil {
			b.Fatalf("Fresh: %v", err)
		}
	}
}
