package pathology

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
	"github.com/junction-fhir/junction/pkg/hl7v2"
)

// Output bounds of FuzzTranslate: a bundle is at most
// maxOutputPerInputByte bytes per input byte plus maxOutputOverhead. They
// are the bounds of the pas fuzz target, whose comment gives the
// reasoning: here the costliest input seen is a bare "OBR\r" segment, a
// ServiceRequest and a DiagnosticReport of about 1.3 KiB from 4 bytes.
const (
	maxOutputPerInputByte = 1024
	maxOutputOverhead     = 64 << 10
)

func FuzzTranslate(f *testing.F) {
	seeds, _ := filepath.Glob(filepath.Join("testdata", "*.hl7"))
	for _, pattern := range []string{"ms-fhir-converter/messages/*ORU*.hl7", "ms-fhir-converter/messages/LRI*.hl7"} {
		more, _ := filepath.Glob(filepath.Join(corporaDir, pattern))
		seeds = append(seeds, more...)
	}
	adaptertest.AddHL7Seeds(f, seeds)
	f.Add([]byte("MSH|^~\\&|LAB|RX1|EPR|RX1|20240715120000||ORU^R01|C1|P|2.4\rPID|1||9990000271^^^NHS^NH||T^A\r" +
		strings.Repeat("OBR\r", 200)))
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
		if !json.Valid(got.Bundle) {
			t.Fatalf("bundle is not JSON: %.200s", got.Bundle)
		}
		b, err := models.UnmarshalBundle(got.Bundle)
		if err != nil || len(b.Entry) < 4 {
			t.Fatalf("bundle does not decode (%v) or has %d entries", err, len(b.Entry))
		}
		again, err := tr.Translate(testEnvelope("fuzz", raw))
		if err != nil || !bytes.Equal(again.Bundle, got.Bundle) {
			t.Fatalf("translation is not deterministic (%v)", err)
		}
	})
}

// BenchmarkTranslate measures parse, translate and marshal of an ORU^R01
// with 10 OBX (testdata/oru-v251-fbc.hl7).
func BenchmarkTranslate(b *testing.B) {
	raw, err := os.ReadFile(filepath.Join("testdata", "oru-v251-fbc.hl7"))
	if err != nil {
		b.Fatal(err)
	}
	if m, err := hl7v2.Parse(raw); err != nil || len(m.SegmentsNamed("OBX")) != 10 {
		b.Fatalf("benchmark message must parse and hold 10 OBX (%v)", err)
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
