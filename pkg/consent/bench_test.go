package consent

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
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
