package pathology

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/junction-fhir/junction/pkg/adapter/adaptertest"
	"github.com/junction-fhir/junction/pkg/hl7v2"
	"github.com/junction-fhir/junction/pkg/nhs"
)

// BenchmarkConvertORU10OBX measures one conversion as issue 3 defines it:
// parse, translate and marshal to JSON of a synthetic ORU^R01 with 10 OBX
// (a full blood count with a 999-range NHS number, ORC, OBR, notes and a
// specimen), on one goroutine. conv/s is conversions per second of wall time,
// cpu-ns/op the process CPU time per conversion (see adaptertest.ReportCPU).
func BenchmarkConvertORU10OBX(b *testing.B) {
	raw, err := os.ReadFile(filepath.Join("testdata", "oru-v251-fbc.hl7"))
	if err != nil {
		b.Fatal(err)
	}
	if m, err := hl7v2.Parse(raw); err != nil || len(m.SegmentsNamed("OBX")) != 10 {
		b.Fatalf("benchmark message must parse and hold 10 OBX (%v)", err)
	}
	tr := newTestTranslator(b)
	env := testEnvelope("bench", raw)
	got, err := tr.Translate(env)
	if err != nil {
		b.Fatalf("Translate: %v", err)
	}
	if !nhs.ValidNumber(got.PatientKey) || got.PatientKey[:3] != "999" {
		b.Fatal("benchmark message must carry a valid 999-range NHS number")
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(raw)))
	cpu := adaptertest.ProcessCPU()
	for b.Loop() {
		if _, err := tr.Translate(env); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "conv/s")
	adaptertest.ReportCPU(b, cpu)
}
