package pas

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

	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/fhir"
)

var update = flag.Bool("update", false, "rewrite the golden .fhir.json files in testdata")

// testEnvelope wraps raw as the engine would at ingress, with a fixed id
// and receive time so translations are reproducible.
func testEnvelope(name string, raw []byte) *envelope.Envelope {
	return &envelope.Envelope{
		ID:          "msg-" + name,
		Source:      "pas",
		ContentType: envelope.ContentTypeHL7v2,
		ReceivedAt:  time.Date(2024, 7, 15, 8, 36, 0, 0, time.UTC),
		Raw:         raw,
	}
}

func newTestTranslator(t testing.TB) *Translator {
	t.Helper()
	tr, err := NewTranslator(DefaultDialect())
	if err != nil {
		t.Fatalf("NewTranslator: %v", err)
	}
	return tr
}

// goldenCases lists the cases in testdata with what the translation says
// besides the bundle.
var goldenCases = []struct {
	name        string
	key         string
	event       string
	dataQuality []string
}{
	{"a01-v23-inpatient-nhs", "9990000018", "A01", nil},
	{"a01-v251-mrn-only", "H234567", "A01", []string{DQNHSNumberMissing}},
	{"a03-discharge", "9990000026", "A03", nil},
	{"a04-ed-registration", "9990000034", "A04", nil},
	{"a08-update-no-visit", "9990000042", "A08", nil},
	{"a08-update-discharged-visit", "9990000050", "A08", nil},
	{"invalid-nhs-number", "H567890", "A01", []string{DQNHSNumberInvalid}},
	{"nhs-bare-authority", "9990000069", "A01", nil},
	{"timestamps-bst-gmt", "9990000077", "A03", nil},
	{"escaped-name", "9990000085", "A01", nil},
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
			var pretty bytes.Buffer
			if err := json.Indent(&pretty, got.Bundle, "", "  "); err != nil {
				t.Fatalf("bundle is not JSON: %v", err)
			}
			pretty.WriteByte('\n')
			goldenPath := filepath.Join("testdata", tc.name+".fhir.json")
			if *update {
				if err := os.WriteFile(goldenPath, pretty.Bytes(), 0o644); err != nil {
					t.Fatalf("write golden: %v", err)
				}
			}
			want, err := os.ReadFile(goldenPath)
			if err != nil {
				t.Fatalf("read golden (run go test ./adapters/pas -update): %v", err)
			}
			if diff := cmp.Diff(string(want), pretty.String()); diff != "" {
				t.Errorf("bundle differs from %s (-want +got):\n%s", goldenPath, diff)
			}
			meta := struct {
				Key   string
				Event string
				DQ    []string
			}{got.PatientKey, got.Event, got.DataQuality}
			wantMeta := struct {
				Key   string
				Event string
				DQ    []string
			}{tc.key, tc.event, tc.dataQuality}
			if diff := cmp.Diff(wantMeta, meta); diff != "" {
				t.Errorf("translation metadata (-want +got):\n%s", diff)
			}
			if got.V2 == nil {
				t.Error("Translation.V2 is nil")
			}

			// Carriage returns, the segment terminator on the wire, give
			// the same bundle as the newlines the files use.
			cr := bytes.ReplaceAll(raw, []byte("\n"), []byte("\r"))
			again, err := tr.Translate(testEnvelope(tc.name, cr))
			if err != nil {
				t.Fatalf("Translate with CR: %v", err)
			}
			if !bytes.Equal(again.Bundle, got.Bundle) {
				t.Error("CR-terminated input gives a different bundle")
			}
			checkBundle(t, got.Bundle)
		})
	}
}

// checkBundle checks a translated bundle with the samply models and, when
// the corpus is present, the FHIR R4 JSON schema.
func checkBundle(t *testing.T, raw []byte) {
	t.Helper()
	b, err := models.UnmarshalBundle(raw)
	if err != nil {
		t.Fatalf("UnmarshalBundle: %v", err)
	}
	if b.Type != models.BundleTypeMessage || len(b.Entry) < 2 {
		t.Fatalf("bundle type %v with %d entries, want a message with at least 2", b.Type, len(b.Entry))
	}
	fullURLs := map[string]bool{}
	for i, e := range b.Entry {
		if e.FullUrl == nil || !strings.HasPrefix(*e.FullUrl, "urn:uuid:") {
			t.Errorf("entry %d has fullUrl %v", i, e.FullUrl)
		} else {
			fullURLs[*e.FullUrl] = true
		}
		rt, err := fhir.ResourceType(e.Resource)
		if err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
		switch rt {
		case "MessageHeader":
			if i != 0 {
				t.Errorf("MessageHeader is entry %d, want 0", i)
			}
			mh, err := models.UnmarshalMessageHeader(e.Resource)
			if err != nil {
				t.Fatalf("UnmarshalMessageHeader: %v", err)
			}
			for _, f := range mh.Focus {
				if f.Reference == nil || !fullURLs[*f.Reference] && !containsEntry(b, *f.Reference) {
					t.Errorf("MessageHeader.focus %v names no entry", f.Reference)
				}
			}
		case "Patient":
			if _, err := models.UnmarshalPatient(e.Resource); err != nil {
				t.Fatalf("UnmarshalPatient: %v", err)
			}
		case "Encounter":
			enc, err := models.UnmarshalEncounter(e.Resource)
			if err != nil {
				t.Fatalf("UnmarshalEncounter: %v", err)
			}
			if enc.Subject != nil && !containsEntry(b, *enc.Subject.Reference) {
				t.Errorf("Encounter.subject names no entry")
			}
		default:
			t.Errorf("unexpected %s entry", rt)
		}
	}
	if s := loadSchema(t); s != nil {
		var v any
		if err := json.Unmarshal(raw, &v); err != nil {
			t.Fatalf("unmarshal: %v", err)
		}
		for _, p := range s.check(v, "Bundle", "Bundle") {
			t.Errorf("schema: %s", p)
		}
	}
}

func containsEntry(b models.Bundle, fullURL string) bool {
	for _, e := range b.Entry {
		if e.FullUrl != nil && *e.FullUrl == fullURL {
			return true
		}
	}
	return false
}
