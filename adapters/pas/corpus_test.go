package pas

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/junction-fhir/junction/pkg/corpustest"

	"github.com/junction-fhir/junction/pkg/fault"
	"github.com/junction-fhir/junction/pkg/hl7v2"
)

const corporaDir = "../../../shared/corpora"

// corpusMessages returns the files of a corpus folder, or skips the test
// when the corpora are absent.
func corpusMessages(t testing.TB, dir string, patterns ...string) []string {
	t.Helper()
	full := filepath.Join(corporaDir, dir)
	if _, err := os.Stat(full); errors.Is(err, fs.ErrNotExist) {
		corpustest.Missing(t, "corpus %s not present; skipping", full)
	}
	var files []string
	for _, p := range patterns {
		m, err := filepath.Glob(filepath.Join(full, p))
		if err != nil {
			t.Fatalf("glob: %v", err)
		}
		files = append(files, m...)
	}
	sort.Strings(files)
	return files
}

// TestCorpusADT translates every ADT A01, A03, A04 and A08 message of the
// Microsoft FHIR Converter samples: no error, a bundle that parses and
// passes the schema check. Every other message must be refused as
// unsupported, never with a crash.
func TestCorpusADT(t *testing.T) {
	files := corpusMessages(t, "ms-fhir-converter/messages", "*.hl7")
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
	files := corpusMessages(t, "hapi-hl7v2", "*.txt", "*.hl7")
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
