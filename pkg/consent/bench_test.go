package consent

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/junction-fhir/junction/pkg/jstest"
)

// benchBundle is the shipped ADT^A01 route's delivered bundle (Patient,
// Encounter, Organization, Location, Practitioner, ...), decoded.
func benchBundle(b *testing.B) map[string]any {
	b.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "routes", "testdata", "adt_a01.fhir-store.json"))
	if err != nil {
		b.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		b.Fatal(err)
	}
	return m
}

// BenchmarkBundleNHSNumbers measures finding the patients a bundle names
// (Patient entries, contained Patients, logical references), which every
// consent decision and every delivery's disclosure list does.
func BenchmarkBundleNHSNumbers(b *testing.B) {
	m := benchBundle(b)
	if got := BundleNHSNumbers(m); len(got) != 1 {
		b.Fatalf("found %v, want the one patient", got)
	}
	b.ReportAllocs()
	for b.Loop() {
		BundleNHSNumbers(m)
	}
}

// BenchmarkDecide measures one consent decision for that bundle with no
// Consents stored: the cost a route pays per destination.
func BenchmarkDecide(b *testing.B) {
	m := benchBundle(b)
	e := &Engine{Source: memSource{}}
	req := Request{Route: "r", Purpose: "direct-care", LegalBasis: "direct-care", Destination: "d",
		PatientKey: "9990000018", Bundle: m, Default: Permit}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.Decide(context.Background(), req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLastChanges measures the check a delivery makes before
// sending a payload that waited longer than consent.recheck_after: the
// patient's Consents and opt-out entry, read from an embedded
// JetStream store holding both.
func BenchmarkLastChanges(b *testing.B) {
	ctx := context.Background()
	js := jstest.Start(b, "consent-bench")
	s, err := OpenStore(ctx, js, StoreConfig{HashKey: []byte("bench-key-0123456789abcdef"), OptOutMaxAge: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	if err := s.ImportOptOuts(ctx, []string{"9990000026"}, time.Now()); err != nil {
		b.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join("testdata", "consent-valid.json"))
	if err != nil {
		b.Fatal(err)
	}
	pol, err := s.PutConsent(ctx, raw)
	if err != nil {
		b.Fatal(err)
	}
	hashes := []string{s.PatientHash(pol.Patient)}
	b.ReportAllocs()
	for b.Loop() {
		c, err := s.LastChanges(ctx, hashes, true)
		if err != nil {
			b.Fatal(err)
		}
		if c.Patients[hashes[0]].IsZero() {
			b.Fatal("the stored Consent's time was not read")
		}
	}
}
