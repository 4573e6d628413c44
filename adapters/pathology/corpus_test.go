package pathology

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/junction-fhir/junction/pkg/corpustest"

	"github.com/junction-fhir/junction/pkg/fault"
	"github.com/junction-fhir/junction/pkg/hl7v2"
)

// corpusRefused lists the corpus's ORU^R01 samples the translator refuses,
// with the field it names: ORU-R01-01 has an OBX with an encapsulated
// value and no OBX-3, a result nobody could tell the test of.
var corpusRefused = map[string]string{"ORU-R01-01.hl7": "OBX-3"}

// TestCorpusMessages translates every sample of the Microsoft FHIR
// Converter corpus. Each ORU^R01 must convert to a bundle that passes
// checkBundle (references resolve, FHIR R4 schema), except those in
// corpusRefused, which the translator and the listener's Screen must both
// refuse as a required field missing; every other message must be refused
// as unsupported (or, for a sample the parser refuses, as a parse fault).
func TestCorpusMessages(t *testing.T) {
	files := corpustest.Files(t, filepath.Join(corporaDir, "ms-fhir-converter/messages"), "*.hl7")
	tr := newTestTranslator(t)
	converted := 0
	for _, f := range files {
		name := filepath.Base(f)
		t.Run(name, func(t *testing.T) {
			raw, err := os.ReadFile(f)
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			got, err := tr.Translate(testEnvelope(strings.TrimSuffix(name, ".hl7"), raw))
			m, perr := hl7v2.Parse(raw)
			if perr != nil {
				if fault.CodeOf(err) != fault.CodeHL7Parse {
					t.Errorf("parser refuses the sample but Translate says %v", err)
				}
				return
			}
			if m.MessageType() != "ORU^R01" {
				if fault.CodeOf(err) != fault.CodeHL7Unsupported {
					t.Errorf("%s: error %v, want %s", m.MessageType(), err, fault.CodeHL7Unsupported)
				}
				return
			}
			if field, ok := corpusRefused[name]; ok {
				ae := Screen(m)
				if fault.CodeOf(err) != fault.CodeHL7Required || !strings.Contains(err.Error(), field) ||
					ae == nil || ae.Code != hl7v2.ErrCodeRequiredField || fmt.Sprintf("%s-%d", ae.Segment, ae.Field) != field {
					t.Errorf("error %v, screen %+v; want both to refuse it for %s", err, ae, field)
				}
				return
			}
			if err != nil {
				t.Fatalf("ORU^R01 not converted: %v", err)
			}
			converted++
			checkBundle(t, got.Bundle)
		})
	}
	if converted < 4 {
		t.Errorf("converted %d ORU^R01 samples, want the corpus's 4 or more (5, of which %d refused)", converted, len(corpusRefused))
	}
}

// TestCorpusHAPI feeds the HAPI parser edge cases through Translate, whole
// files and (for the files holding several messages) each message: each
// converts or is refused with a classed fault, never a crash.
func TestCorpusHAPI(t *testing.T) {
	files := corpustest.Files(t, filepath.Join(corporaDir, "hapi-hl7v2"), "*.txt", "*.hl7")
	tr := newTestTranslator(t)
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		inputs := [][]byte{raw}
		inputs = append(inputs, splitMessages(raw)...)
		for i, in := range inputs {
			got, err := tr.Translate(testEnvelope("hapi", in))
			if err != nil {
				if fault.As(err) == nil {
					t.Errorf("%s[%d]: unclassed error %v", filepath.Base(f), i, err)
				}
				continue
			}
			t.Run(filepath.Base(f), func(t *testing.T) { checkBundle(t, got.Bundle) })
		}
	}
}

// splitMessages splits a file of several messages at each line starting
// with MSH.
func splitMessages(raw []byte) [][]byte {
	lines := bytes.Split(bytes.ReplaceAll(raw, []byte("\r\n"), []byte("\n")), []byte("\n"))
	var out [][]byte
	var cur []byte
	for _, l := range lines {
		if bytes.HasPrefix(l, []byte("MSH")) && len(cur) > 0 {
			out = append(out, cur)
			cur = nil
		}
		cur = append(append(cur, l...), '\r')
	}
	if len(out) == 0 {
		return nil
	}
	return append(out, cur)
}
