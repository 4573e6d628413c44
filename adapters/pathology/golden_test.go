package pathology

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	models "github.com/samply/golang-fhir-models/fhir-models/fhir"

	"github.com/junction-fhir/junction/adapters/pas"
	"github.com/junction-fhir/junction/pkg/adapter/adaptertest"
	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/fhir"
)

var update = flag.Bool("update", false, "rewrite the golden .fhir.json files in testdata")

// corporaDir is the shared third-party corpora, beside the repository.
const corporaDir = "../../../shared/corpora"

// testEnvelope wraps raw as the engine would at ingress, with a fixed id
// and receive time so translations are reproducible.
func testEnvelope(name string, raw []byte) *envelope.Envelope {
	return &envelope.Envelope{
		ID:          "msg-" + name,
		Source:      "pathology",
		ContentType: envelope.ContentTypeHL7v2,
		ReceivedAt:  time.Date(2024, 7, 15, 8, 36, 0, 0, time.UTC),
		Raw:         raw,
	}
}

// testLab is the default lab dialect with the test code map.
func testLab() LabDialect {
	l := DefaultLabDialect()
	l.CodeMaps = []string{filepath.Join("testdata", "codemap-lft.json")}
	return l
}

func newTestTranslator(t testing.TB) *Translator {
	t.Helper()
	tr, err := NewTranslator(pas.DefaultDialect(), testLab())
	if err != nil {
		t.Fatalf("NewTranslator: %v", err)
	}
	return tr
}

// goldenCases lists the cases in testdata with what the translation says
// besides the bundle.
var goldenCases = []struct {
	name string
	key  string
	dq   []string
}{
	{"oru-v251-fbc", "9990000018", nil},
	{"oru-v23-obr15-text", "9990000026", nil},
	{"oru-v24-multi-obr-coded", "9990000034", nil},
	{"oru-sn-nr-units", "9990000042", []string{DQUnitNotUCUM}},
	{"oru-dates-attachments", "9990000050", nil},
	{"oru-corrected", "9990000069", nil},
	{"oru-data-quality", "H100007", []string{
		pas.DQNHSNumberInvalid, DQCodeMissing, DQResultTimeInvalid, DQReportStatusUnknown, DQNumericValueInvalid,
		DQObservationStatusUnknown, DQValueTypeUnsupported,
		DQInterpretationUnknown, DQValueInvalid, DQMessageTimeInvalid,
	}},
	{"oru-code-map", "9990000077", nil},
	{"oru-performers", "9990000085", nil},
}

func TestGolden(t *testing.T) {
	tr := newTestTranslator(t)
	files, err := filepath.Glob(filepath.Join("testdata", "*.hl7"))
	if err != nil || len(files) != len(goldenCases) {
		t.Fatalf("testdata has %d .hl7 files (%v), the table %d cases", len(files), err, len(goldenCases))
	}
	for _, tc := range goldenCases {
		t.Run(tc.name, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join("testdata", tc.name+".hl7"))
			if err != nil {
				t.Fatalf("read input: %v", err)
			}
			got, err := tr.Translate(testEnvelope(tc.name, raw))
			if err != nil {
				t.Fatalf("Translate: %v", err)
			}
			adaptertest.Golden(t, filepath.Join("testdata", tc.name+".fhir.json"), got.Bundle, *update)
			if got.PatientKey != tc.key || got.Event != "R01" || got.V2 == nil {
				t.Errorf("key %q event %q V2 %v, want %q R01 and the message", got.PatientKey, got.Event, got.V2 != nil, tc.key)
			}
			if diff := cmp.Diff(tc.dq, got.DataQuality); diff != "" {
				t.Errorf("data quality (-want +got):\n%s", diff)
			}
			cr := bytes.ReplaceAll(raw, []byte("\n"), []byte("\r"))
			again, err := tr.Translate(testEnvelope(tc.name, cr))
			if err != nil || !bytes.Equal(again.Bundle, got.Bundle) {
				t.Errorf("CR-terminated input gives a different bundle (%v)", err)
			}
			checkBundle(t, got.Bundle)
		})
	}
}

// checkBundle checks a translated bundle: it decodes with the samply
// models, every fullUrl is a unique urn:uuid, every reference names an
// entry, and, when the corpus is present, it passes the FHIR R4 schema.
func checkBundle(t *testing.T, raw []byte) {
	t.Helper()
	b, err := models.UnmarshalBundle(raw)
	if err != nil {
		t.Fatalf("UnmarshalBundle: %v", err)
	}
	if b.Type != models.BundleTypeMessage || len(b.Entry) < 4 {
		t.Fatalf("bundle type %v with %d entries, want a message with at least 4", b.Type, len(b.Entry))
	}
	fullURLs := map[string]bool{}
	for i, e := range b.Entry {
		if e.FullUrl == nil || !strings.HasPrefix(*e.FullUrl, "urn:uuid:") || fullURLs[*e.FullUrl] {
			t.Errorf("entry %d has fullUrl %v (missing, not urn:uuid or repeated)", i, e.FullUrl)
			continue
		}
		fullURLs[*e.FullUrl] = true
	}
	keys := map[string]int{}
	for i, e := range b.Entry {
		rt, err := fhir.ResourceType(e.Resource)
		if err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
		if (i == 0) != (rt == "MessageHeader") {
			t.Errorf("entry %d is a %s; the MessageHeader must be first and only first", i, rt)
		}
		var unmarshalErr error
		switch rt {
		case "MessageHeader":
			_, unmarshalErr = models.UnmarshalMessageHeader(e.Resource)
		case "Patient":
			_, unmarshalErr = models.UnmarshalPatient(e.Resource)
		case "ServiceRequest":
			_, unmarshalErr = models.UnmarshalServiceRequest(e.Resource)
		case "Specimen":
			_, unmarshalErr = models.UnmarshalSpecimen(e.Resource)
		case "DiagnosticReport":
			_, unmarshalErr = models.UnmarshalDiagnosticReport(e.Resource)
		case "Observation":
			_, unmarshalErr = models.UnmarshalObservation(e.Resource)
		default:
			t.Errorf("unexpected %s entry", rt)
		}
		if unmarshalErr != nil {
			t.Errorf("entry %d (%s): %v", i, rt, unmarshalErr)
		}
		var v any
		if err := json.Unmarshal(e.Resource, &v); err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
		checkResultKey(t, keys, i, rt, v)
		for _, ref := range references(v, nil) {
			if !fullURLs[ref] {
				t.Errorf("entry %d (%s) refers to %q, which is not in the bundle", i, rt, ref)
			}
		}
	}
	if s := loadFHIRSchema(t); s != nil {
		var v any
		if err := json.Unmarshal(raw, &v); err != nil {
			t.Fatalf("unmarshal: %v", err)
		}
		for _, p := range s.check(v, "Bundle", "Bundle") {
			t.Errorf("schema: %s", p)
		}
	}
}

// checkResultKey checks that a resource's first identifier with a system
// (the one a fhir destination updates it by) is not that of an earlier
// resource of its type in the bundle (keys, by type and identifier, holds
// the entry that had it): a transaction with two entries updating one
// resource fails, and two results sharing one would overwrite each
// other. A resource with a result key must have it first.
func checkResultKey(t *testing.T, keys map[string]int, i int, rt string, v any) {
	t.Helper()
	ids, _ := v.(map[string]any)["identifier"].([]any)
	system, value := "", ""
	for j, id := range ids {
		m, _ := id.(map[string]any)
		s, _ := m["system"].(string)
		if s == DefaultResultKeySystem && j > 0 {
			t.Errorf("entry %d (%s): result key is identifier %d, not the first", i, rt, j)
		}
		if s != "" && system == "" {
			system = s
			value, _ = m["value"].(string)
		}
	}
	if system == "" {
		return
	}
	k := rt + " " + system + "|" + value
	if j, ok := keys[k]; ok {
		t.Errorf("entries %d and %d: two %s resources with the identifier %s|%s", j, i, rt, system, value)
	}
	keys[k] = i
}

// references collects every Reference.reference string in v.
func references(v any, out []string) []string {
	switch x := v.(type) {
	case map[string]any:
		for k, val := range x {
			if s, ok := val.(string); ok && k == "reference" {
				out = append(out, s)
				continue
			}
			out = references(val, out)
		}
	case []any:
		for _, val := range x {
			out = references(val, out)
		}
	}
	return out
}
