package pathology

import (
	"context"
	"testing"
)

// BenchmarkEncodeOrder measures one FHIR order bundle (Patient,
// Encounter, Practitioner, PractitionerRole, Organization, ServiceRequest,
// Specimen) to OML^O21 v2.5, with an OrderEncoder built once.
func BenchmarkEncodeOrder(b *testing.B) {
	raw := readOrderBundle(b, "fbc-encounter")
	opts := testOrderOptions("2.5", MessageTypeOML)
	enc, err := NewOrderEncoder(opts)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := enc.Encode(raw, opts.ControlID, opts.Time); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCorrelate measures linking a translated two-order result to
// its orders, with an in-memory store.
func BenchmarkCorrelate(b *testing.B) {
	ctx := context.Background()
	enc, err := EncodeOrder(readOrderBundle(b, "two-orders"), testOrderOptions("2.5", MessageTypeOML))
	if err != nil {
		b.Fatal(err)
	}
	c := NewCorrelator(newOrderMemStore(), "EPR")
	if err := c.RecordSent(ctx, enc.Orders); err != nil {
		b.Fatal(err)
	}
	res, err := newTestTranslator(b).Translate(testEnvelope("bench", toORU(b, enc.Message)))
	if err != nil {
		b.Fatal(err)
	}
	orders := []ResultOrder{{PlacerNumber: "ORD-2026-000200", PlacerNamespace: "EPR"}, {PlacerNumber: "ORD-2026-000201", PlacerNamespace: "EPR"}}
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := c.Correlate(ctx, res.Bundle, orders); err != nil {
			b.Fatal(err)
		}
	}
}
