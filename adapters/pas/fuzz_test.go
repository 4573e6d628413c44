package pas

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	models "github.com/samply/golang-fhir-models/fhir-models/fhir"

	"github.com/junction-fhir/junction/pkg/adapter/adaptertest"
	"github.com/junction-fhir/junction/pkg/fault"
)

// Output bounds of the translator fuzz targets (pas and pathology): a
// bundle is at most maxOutputPerInputByte bytes per input byte plus
// maxOutputOverhead. The fixed resources of a bundle (MessageHeader,
// Provenance, Patient, Encounter) take under 8 KiB, and the costliest
// input bytes seen are a 4-byte "OBR\r" segment (pathology), which makes a
// ServiceRequest and a DiagnosticReport, about 1.3 KiB or 320 bytes per
// input byte, and a 2-byte "~X" repetition of PV1-7 (pas), a Practitioner
// and an Encounter participant, about 115 per byte. The bound leaves more
// than 3 times headroom on both, while anything growing faster than the
// input (a quadratic blow-up) passes it within the 64 KiB input cap.
const (
	maxOutputPerInputByte = 1024
	maxOutputOverhead     = 64 << 10
)

func FuzzTranslate(f *testing.F) {
	seeds, _ := filepath.Glob(filepath.Join("testdata", "*.hl7"))
	for _, dir := range []string{"ms-fhir-converter/messages/ADT*.hl7", "hapi-hl7v2/*.txt"} {
		more, _ := filepath.Glob(filepath.Join(corporaDir, dir))
		seeds = append(seeds, more...)
	}
	adaptertest.AddHL7Seeds(f, seeds)
	// The costliest shape known: many short XCN repetitions.
	f.Add([]byte("MSH|^~\\&|PAS|RX1|EPR|RX1|20240715120000||ADT^A01|C1|P|2.4\rPID|1||9990000271^^^NHS^NH||T^A\rPV1|1|I|W^^^RX1||||" +
		strings.Repeat("~X", 200) + "\r"))
	tr := newTestTranslator(f)
	f.Fuzz(func(t *testing.T, raw []byte) {
		if len(raw) > 1<<16 {
			return
		}
		got, err := tr.Translate(testEnvelope("fuzz", raw))
		if err != nil {
			if fault.As(err) == nil {
				t.Fatalf("unclassed error: %v", err)
			}
			return
		}
		if limit := maxOutputPerInputByte*len(raw) + maxOutputOverhead; len(got.Bundle) > limit {
			t.Fatalf("bundle of %d bytes from %d input bytes exceeds %d", len(got.Bundle), len(raw), limit)
		}
		if !json.Valid(got.Bundle) || !bytes.HasPrefix(got.Bundle, []byte(`{"resourceType":"Bundle"`)) {
			t.Fatalf("bundle is not a JSON Bundle: %.200s", got.Bundle)
		}
		b, err := models.UnmarshalBundle(got.Bundle)
		if err != nil {
			t.Fatalf("UnmarshalBundle: %v", err)
		}
		if len(b.Entry) < 2 {
			t.Fatalf("bundle has %d entries", len(b.Entry))
		}
		again, err := tr.Translate(testEnvelope("fuzz", raw))
		if err != nil || !bytes.Equal(again.Bundle, got.Bundle) {
			t.Fatalf("translation is not deterministic (%v)", err)
		}
	})
}

// BenchmarkTranslate measures parse, translate and marshal of a small
// ADT^A01 (PID and PV1 only).
func BenchmarkTranslate(b *testing.B) {
	benchmarkFile(b, "a01-v23-inpatient-nhs.hl7")
}

// BenchmarkTranslateA01Full measures parse, translate and marshal of an
// ADT^A01 of about 1 KB with PD1, NK1, AL1 and DG1 segments.
func BenchmarkTranslateA01Full(b *testing.B) {
	benchmarkFile(b, "a01-full-segments.hl7")
}

func benchmarkFile(b *testing.B, name string) {
	raw, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		b.Fatal(err)
	}
	tr := newTestTranslator(b)
	env := testEnvelope("bench", raw)
	b.ReportAllocs()
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		if _, err := tr.Translate(env); err != nil {
			b.Fatal(err)
		}
	}
}
