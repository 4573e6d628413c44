package pas

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	models "github.com/samply/golang-fhir-models/fhir-models/fhir"

	"github.com/junction-fhir/junction/pkg/adapter/adaptertest"
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
	{"a01-full-segments", "9990000093", "A01", nil},
	{"a02-transfer", "9990000107", "A02", nil},
	{"a03-discharge-method-destination", "9990000263", "A03", nil},
	{"a05-preadmit", "9990000115", "A05", nil},
	{"a06-outpatient-to-inpatient", "9990000123", "A06", nil},
	{"a07-inpatient-to-outpatient", "9990000131", "A07", nil},
	{"a11-cancel-admit", "9990000158", "A11", nil},
	{"a12-cancel-transfer", "9990000107", "A12", nil},
	{"a13-cancel-discharge", "9990000166", "A13", nil},
	{"a21-leave-out", "9990000174", "A21", nil},
	{"a22-leave-return", "9990000174", "A22", nil},
	{"a28-add-person", "9990000182", "A28", nil},
	{"a31-update-person-deceased", "9990000190", "A31", nil},
	{"a34-merge-id-only", "9990000204", "A34", nil},
	{"a40-merge-two-groups", "9990000212", "A40", nil},
	{"a40-merge-invalid-old-nhs", "9990000255", "A40", nil},
	{"a02-transfer-location-identifiers", "9990000107", "A02", nil},
	{"latin1-accented-name", "9990000271", "A01", nil},
}

// goldenDialects changes DefaultDialect for the golden cases named, to
// show a setting's output; the other cases use DefaultDialect.
var goldenDialects = map[string]func(*Dialect){
	"a02-transfer-location-identifiers": func(d *Dialect) {
		d.LocationIdentifierSystem = "https://fhir.example-trust.nhs.uk/Id/location"
	},
}

func TestGolden(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.hl7"))
	if err != nil || len(files) != len(goldenCases) {
		t.Fatalf("testdata has %d .hl7 files (%v), the table %d cases", len(files), err, len(goldenCases))
	}
	for _, tc := range goldenCases {
		t.Run(tc.name, func(t *testing.T) {
			tr := newTestTranslator(t)
			if change, ok := goldenDialects[tc.name]; ok {
				d := DefaultDialect()
				change(&d)
				if tr, err = NewTranslator(d); err != nil {
					t.Fatalf("NewTranslator: %v", err)
				}
			}
			raw, err := os.ReadFile(filepath.Join("testdata", tc.name+".hl7"))
			if err != nil {
				t.Fatalf("read input: %v", err)
			}
			got, err := tr.Translate(testEnvelope(tc.name, raw))
			if err != nil {
				t.Fatalf("Translate: %v", err)
			}
			adaptertest.Golden(t, filepath.Join("testdata", tc.name+".fhir.json"), got.Bundle, *update)
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

// checkBundle checks a translated bundle with the samply models, checks
// that every reference resolves to an entry, and, when the corpus is
// present, checks it against the FHIR R4 JSON schema.
func checkBundle(t *testing.T, raw []byte) {
	t.Helper()
	b, err := models.UnmarshalBundle(raw)
	if err != nil {
		t.Fatalf("UnmarshalBundle: %v", err)
	}
	if b.Type != models.BundleTypeMessage || len(b.Entry) < 3 {
		t.Fatalf("bundle type %v with %d entries, want a message with at least 3", b.Type, len(b.Entry))
	}
	for i, e := range b.Entry {
		if e.FullUrl == nil || !strings.HasPrefix(*e.FullUrl, "urn:uuid:") {
			t.Errorf("entry %d has fullUrl %v", i, e.FullUrl)
		}
		rt, err := fhir.ResourceType(e.Resource)
		if err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
		var uerr error
		switch rt {
		case "MessageHeader":
			if i != 0 {
				t.Errorf("MessageHeader is entry %d, want 0", i)
			}
			var mh models.MessageHeader
			mh, uerr = models.UnmarshalMessageHeader(e.Resource)
			if uerr == nil && len(mh.Focus) == 0 {
				t.Error("MessageHeader has no focus")
			}
		case "Provenance":
			if i != len(b.Entry)-1 {
				t.Errorf("Provenance is entry %d, want the last", i)
			}
			var p models.Provenance
			p, uerr = models.UnmarshalProvenance(e.Resource)
			if uerr == nil && len(p.Target) != len(b.Entry)-2 && len(b.Entry) > 2 {
				t.Errorf("Provenance has %d targets, want %d", len(p.Target), len(b.Entry)-2)
			}
		case "Patient":
			_, uerr = models.UnmarshalPatient(e.Resource)
		case "Encounter":
			_, uerr = models.UnmarshalEncounter(e.Resource)
		case "Location":
			_, uerr = models.UnmarshalLocation(e.Resource)
		case "Practitioner":
			_, uerr = models.UnmarshalPractitioner(e.Resource)
		case "Organization":
			_, uerr = models.UnmarshalOrganization(e.Resource)
		case "RelatedPerson":
			_, uerr = models.UnmarshalRelatedPerson(e.Resource)
		case "AllergyIntolerance":
			_, uerr = models.UnmarshalAllergyIntolerance(e.Resource)
		case "Condition":
			_, uerr = models.UnmarshalCondition(e.Resource)
		default:
			t.Errorf("unexpected %s entry", rt)
		}
		if uerr != nil {
			t.Fatalf("unmarshal %s: %v", rt, uerr)
		}
	}
	for _, p := range unresolvedReferences(raw) {
		t.Errorf("reference %s", p)
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

// unresolvedReferences returns every Reference.reference in a bundle
// (anywhere in its entries) that is not the fullUrl of one of its
// entries, each with its JSON path, and every entry whose fullUrl is not
// unique.
func unresolvedReferences(raw []byte) []string {
	var doc struct {
		Entry []struct {
			FullURL  string         `json:"fullUrl"`
			Resource map[string]any `json:"resource"`
		} `json:"entry"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		return []string{"bundle does not decode: " + err.Error()}
	}
	var problems []string
	urls := map[string]bool{}
	for _, e := range doc.Entry {
		if urls[e.FullURL] {
			problems = append(problems, "fullUrl "+e.FullURL+" is used twice")
		}
		urls[e.FullURL] = true
	}
	var walk func(v any, path string)
	walk = func(v any, path string) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if s, ok := x.(string); ok && k == "reference" {
					if !urls[s] {
						problems = append(problems, fmt.Sprintf("%s.reference %q names no entry", path, s))
					}
					continue
				}
				walk(x, path+"."+k)
			}
		case []any:
			for i, x := range v {
				walk(x, fmt.Sprintf("%s[%d]", path, i))
			}
		}
	}
	for i, e := range doc.Entry {
		walk(e.Resource, fmt.Sprintf("entry[%d](%v)", i, e.Resource["resourceType"]))
	}
	sort.Strings(problems)
	return problems
}

// TestUnresolvedReferences makes sure the reference check can fail.
func TestUnresolvedReferences(t *testing.T) {
	const ok = `{"resourceType":"Bundle","entry":[{"fullUrl":"urn:uuid:a","resource":{"resourceType":"Patient"}},` +
		`{"fullUrl":"urn:uuid:b","resource":{"resourceType":"Encounter","subject":{"reference":"urn:uuid:a"}}}]}`
	if p := unresolvedReferences([]byte(ok)); len(p) != 0 {
		t.Errorf("resolving bundle: %q", p)
	}
	bad := strings.Replace(ok, `"reference":"urn:uuid:a"`, `"reference":"urn:uuid:c"`, 1)
	if p := unresolvedReferences([]byte(bad)); len(p) != 1 || !strings.Contains(p[0], "urn:uuid:c") {
		t.Errorf("dangling reference: %q", p)
	}
	nested := strings.Replace(ok, `"subject":{"reference":"urn:uuid:a"}`, `"participant":[{"individual":{"reference":"urn:uuid:x"}}]`, 1)
	if p := unresolvedReferences([]byte(nested)); len(p) != 1 {
		t.Errorf("nested dangling reference: %q", p)
	}
	twice := strings.Replace(ok, `"urn:uuid:b"`, `"urn:uuid:a"`, 1)
	if p := unresolvedReferences([]byte(twice)); len(p) != 1 {
		t.Errorf("duplicate fullUrl: %q", p)
	}
}

// TestAppendResourceMatchesMarshal checks that the bundles written with
// appendResource are byte for byte those written with
// fhir.MarshalResource, over every golden input and the corpus samples.
func TestAppendResourceMatchesMarshal(t *testing.T) {
	fast := newTestTranslator(t)
	slow := newTestTranslator(t)
	slow.viaModels = true
	files, _ := filepath.Glob(filepath.Join("testdata", "*.hl7"))
	more, _ := filepath.Glob(filepath.Join(corporaDir, "ms-fhir-converter/messages/ADT*.hl7"))
	files = append(files, more...)
	// Strings that encoding/json escapes.
	tricky := []byte("MSH|^~\\&|PAS|RX1|EPR|RX1|20240715093512||ADT^A01|C<1>&\"|P|2.4||||||UNICODE UTF-8\rPID|1||H1^^^RX1||O\\X0A\\BRIEN<b>^AL\\T\\EX\u2028\xff\rPV1|1|I|||||||||||||||||V1\r")
	n := 0
	check := func(name string, raw []byte) {
		a, errA := fast.Translate(testEnvelope(name, raw))
		b, errB := slow.Translate(testEnvelope(name, raw))
		if (errA == nil) != (errB == nil) {
			t.Fatalf("%s: errors %v and %v", name, errA, errB)
		}
		if errA != nil {
			if name == "tricky" {
				t.Fatalf("tricky message: %v", errA)
			}
			return
		}
		if name == "tricky" && (!bytes.Contains(a.Bundle, []byte(`\u003cb\u003e`)) || !bytes.Contains(a.Bundle, []byte(`AL\u0026EX\u2028\ufffd`)) || !bytes.Contains(a.Bundle, []byte(`\n`))) {
			t.Errorf("tricky message escapes not exercised: %s", a.Bundle)
		}
		n++
		if diff := cmp.Diff(string(b.Bundle), string(a.Bundle)); diff != "" {
			t.Errorf("%s: appendResource differs from fhir.MarshalResource (-marshal +append):\n%s", name, diff)
		}
	}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		check(filepath.Base(f), raw)
	}
	check("tricky", tricky)
	if n < len(goldenCases) {
		t.Errorf("only %d messages compared", n)
	}
}
