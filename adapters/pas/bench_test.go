package pas

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/junction-fhir/junction/pkg/adapter/adaptertest"
	"github.com/junction-fhir/junction/pkg/nhs"
)

// BenchmarkConvertADTA01 measures one conversion as issue 3 defines it:
// parse, translate and marshal to JSON of a synthetic ADT^A01 of about
// 1 KB (PID with a 999-range NHS number, PD1, two NK1, PV1, two AL1 and
// two DG1), on one goroutine. conv/s is conversions per second of wall time,
// cpu-ns/op the process CPU time per conversion (see adaptertest.ReportCPU).
func BenchmarkConvertADTA01(b *testing.B) {
	raw, err := os.ReadFile(filepath.Join("testdata", "a01-full-segments.hl7"))
	if err != nil {
		b.Fatal(err)
	}
	tr := newTestTranslator(b)
	env := testEnvelope("bench", raw)
	got, err := tr.Translate(env)
	if err != nil {
		b.Fatalf("Translate: %v", err)
	}
	if len(raw) < 800 || !nhs.ValidNumber(got.PatientKey) || got.PatientKey[:3] != "999" || len(got.DataQuality) != 0 {
		b.Fatalf("benchmark message must be about 1 KB with a valid 999-range NHS number and no data-quality findings (%d bytes, dq %v)", len(raw), got.DataQuality)
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
