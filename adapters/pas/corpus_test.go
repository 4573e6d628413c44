package pas

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/junction-fhir/junction/pkg/corpustest"

	"github.com/junction-fhir/junction/pkg/fault"
	"github.com/junction-fhir/junction/pkg/hl7v2"
)

const corporaDir = "../../../shared/corpora"

// TestCorpusADT translates every ADT A01, A03, A04 and A08 message of the
// Microsoft FHIR Converter samples: no error, a bundle that parses and
// passes the schema check. Every other message must be refused as
// unsupported, never with a crash.
func TestCorpusADT(t *testing.T) {
	files := corpustest.Files(t, filepath.Join(corporaDir, "ms-fhir-converter/messages"), "*.hl7")
	tr := newTestTranslator(t)
	supported := 0
	for _, f := range files {
		name := filepath.Base(f)
		t.Run(name, func(t *testing.T) {
			raw, err := os.ReadFile(f)
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			m, err := hl7v2.Parse(raw)
			if err != nil {
				t.Skipf("the parser refuses this sample (%v); hl7v2 tests cover it", err)
			}
			env := testEnvelope(strings.TrimSuffix(name, ".hl7"), raw)
			got, err := tr.Translate(env)
			_, mapped := tr.events[m.Event()]
			if msh := m.Segment("MSH"); msh == nil || msh.Component(9, 1, 1, 1) != "ADT" {
				mapped = false
			}
			if !mapped {
				if fault.CodeOf(err) != fault.CodeHL7Unsupported {
					t.Errorf("%s: error %v, want %s", m.MessageType(), err, fault.CodeHL7Unsupported)
				}
				return
			}
			supported++
			if err != nil {
				t.Fatalf("Translate %s: %v", m.MessageType(), err)
			}
			checkBundle(t, got.Bundle)
			if got.PatientKey != PatientKey(m, DefaultDialect()) {
				t.Errorf("Translation.PatientKey differs from PatientKey")
			}
		})
	}
	if supported == 0 {
		t.Error("no supported ADT message found in the corpus")
	}
}

// TestCorpusOtherMessages feeds the parser edge cases of the HAPI corpus
// through Translate: any outcome but a crash or an unclassed error.
func TestCorpusOtherMessages(t *testing.T) {
	files := corpustest.Files(t, filepath.Join(corporaDir, "hapi-hl7v2"), "*.txt", "*.hl7")
	tr := newTestTranslator(t)
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			raw, err := os.ReadFile(f)
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			got, err := tr.Translate(testEnvelope("hapi", raw))
			if err != nil {
				if fault.As(err) == nil {
					t.Errorf("unclassed error %v", err)
				}
				return
			}
			checkBundle(t, got.Bundle)
		})
	}
}
