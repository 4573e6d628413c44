package fhirschema

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/junction-fhir/junction/pkg/corpustest"

	"github.com/google/go-cmp/cmp"
)

// miniSchema is a hand-written schema in the shape of the FHIR one: a
// root oneOf over resources, primitives with patterns, a closed object
// type, an enum, a const and a required element.
const miniSchema = `{
  "$schema": "http://json-schema.org/draft-06/schema#",
  "id": "http://example.org/mini",
  "discriminator": {"propertyName": "resourceType", "mapping": {}},
  "oneOf": [{"$ref": "#/definitions/Patient"}, {"$ref": "#/definitions/Bundle"}],
  "definitions": {
    "ResourceList": {"oneOf": [{"$ref": "#/definitions/Patient"}, {"$ref": "#/definitions/Bundle"}]},
    "date": {"type": "string", "pattern": "^[0-9]{4}(-[0-9]{2}(-[0-9]{2})?)?$"},
    "string": {"type": "string", "pattern": "^[ \\r\\n\\t\\S]+$"},
    "boolean": {"type": "boolean"},
    "integer": {"type": "number", "pattern": "^-?([0]|([1-9][0-9]*))$"},
    "HumanName": {
      "properties": {"family": {"$ref": "#/definitions/string"}, "given": {"type": "array", "items": {"$ref": "#/definitions/string"}}},
      "additionalProperties": false
    },
    "Patient": {
      "properties": {
        "resourceType": {"const": "Patient"},
        "active": {"$ref": "#/definitions/boolean"},
        "birthDate": {"$ref": "#/definitions/date"},
        "multipleBirthInteger": {"$ref": "#/definitions/integer"},
        "gender": {"enum": ["male", "female", "other", "unknown"]},
        "name": {"type": "array", "items": {"$ref": "#/definitions/HumanName"}}
      },
      "additionalProperties": false,
      "required": ["resourceType"]
    },
    "Bundle": {
      "properties": {
        "resourceType": {"const": "Bundle"},
        "type": {"enum": ["message", "collection"]},
        "entry": {"type": "array", "items": {"$ref": "#/definitions/Bundle_Entry"}}
      },
      "additionalProperties": false,
      "required": ["resourceType", "type"]
    },
    "Bundle_Entry": {
      "properties": {"fullUrl": {"$ref": "#/definitions/string"}, "resource": {"$ref": "#/definitions/ResourceList"}},
      "additionalProperties": false
    }
  }
}`

func TestValidateMini(t *testing.T) {
	s, err := Compile([]byte(miniSchema))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		doc  string
		want []string // "path rule"
	}{
		{"valid patient", `{"resourceType":"Patient","active":true,"birthDate":"1970-01-02","gender":"female","name":[{"family":"X","given":["Y"]}]}`, nil},
		{"unknown resource type", `{"resourceType":"Banana"}`, []string{"Banana resourceType"}},
		{"no resource type", `{"active":true}`, []string{"(document) resourceType"}},
		{"unknown element", `{"resourceType":"Patient","colour":"blue"}`, []string{"Patient.colour unknown-element"}},
		{"unsafe key not quoted", `{"resourceType":"Patient","9990000018 x":"y"}`, []string{"Patient.(a key that is not a FHIR name) unknown-element"}},
		{"pattern", `{"resourceType":"Patient","birthDate":"02/01/1970"}`, []string{"Patient.birthDate pattern"}},
		{"type", `{"resourceType":"Patient","active":"yes"}`, []string{"Patient.active type"}},
		{"enum", `{"resourceType":"Patient","gender":"F"}`, []string{"Patient.gender enum"}},
		{"integer literal", `{"resourceType":"Patient","multipleBirthInteger":1.5}`, []string{"Patient.multipleBirthInteger pattern"}},
		{"integer ok", `{"resourceType":"Patient","multipleBirthInteger":2}`, nil},
		{"null", `{"resourceType":"Patient","active":null}`, []string{"Patient.active null"}},
		// FHIR JSON lines a repeating primitive up with its extensions so.
		{"null as an array's item", `{"resourceType":"Patient","name":[{"given":["Y",null]}]}`, nil},
		{"empty array", `{"resourceType":"Patient","name":[]}`, []string{"Patient.name empty"}},
		{"empty object", `{"resourceType":"Patient","name":[{}]}`, []string{"Patient.name[0] empty"}},
		{"empty string", `{"resourceType":"Patient","name":[{"family":""}]}`, []string{"Patient.name[0].family pattern"}},
		{"nested in bundle", `{"resourceType":"Bundle","type":"message","entry":[{"fullUrl":"urn:uuid:1","resource":{"resourceType":"Patient","birthDate":"x"}}]}`,
			[]string{"Bundle.entry[0].resource(Patient).birthDate pattern"}},
		{"required", `{"resourceType":"Bundle"}`, []string{"Bundle.type required"}},
		{"not json", `{"resourceType":`, []string{"(document) json"}},
		{"two values", `{} {}`, []string{"(document) json"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, is := range s.Validate([]byte(tt.doc)) {
				got = append(got, is.Path+" "+is.Rule)
				if strings.Contains(is.Msg, "9990000018") || strings.Contains(is.Path, "9990000018") {
					t.Errorf("issue quotes input: %v", is)
				}
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("issues (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCompileErrors(t *testing.T) {
	tests := []struct{ name, doc string }{
		{"not json", `{`},
		{"missing ref", `{"definitions":{"A":{"$ref":"#/definitions/B"}}}`},
		{"remote ref", `{"definitions":{"A":{"$ref":"http://x/y"}}}`},
		{"bad pattern", `{"definitions":{"A":{"type":"string","pattern":"(?<=x)"}}}`},
		{"unknown keyword", `{"definitions":{"A":{"anyOf":[]}}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Compile([]byte(tt.doc)); err == nil {
				t.Fatal("Compile succeeded, want an error")
			}
		})
	}
}

// corpusSchema loads the real FHIR R4 schema from the shared corpora, or
// skips.
var (
	corpusOnce sync.Once
	corpus     *Schema
	corpusErr  error
)

func corpusDir() string { return filepath.Join("..", "..", "..", "shared", "corpora") }

func loadCorpusSchema(t *testing.T) *Schema {
	t.Helper()
	path := filepath.Join(corpusDir(), "fhir-r4-schema", "fhir.schema.json")
	if _, err := os.Stat(path); err != nil {
		corpustest.Missing(t, "FHIR R4 JSON schema not present at %s (the shared corpora are absent); skipping", path)
	}
	corpusOnce.Do(func() { corpus, corpusErr = Load(path) })
	if corpusErr != nil {
		t.Fatal(corpusErr)
	}
	return corpus
}

// TestOfficialExamples validates the official FHIR R4 examples: every one
// should pass (they are what the schema was published with).
func TestOfficialExamples(t *testing.T) {
	s := loadCorpusSchema(t)
	files, _ := filepath.Glob(filepath.Join(corpusDir(), "fhir-r4-examples", "*.json"))
	if len(files) == 0 {
		corpustest.Missing(t, "no FHIR R4 examples in the corpora")
	}
	bad := 0
	for _, f := range files {
		if filepath.Base(f) == "package.json" {
			continue // the npm manifest, not a resource
		}
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if issues := s.Validate(data); len(issues) > 0 {
			bad++
			if bad <= 10 {
				t.Errorf("%s: %d issues, first %v", filepath.Base(f), len(issues), issues[0])
			}
		}
	}
	t.Logf("%d examples, %d invalid", len(files), bad)
}

func TestCorpusSchemaCatches(t *testing.T) {
	s := loadCorpusSchema(t)
	tests := []struct {
		name, doc, wantPath, wantRule string
	}{
		{"dateTime without zone", `{"resourceType":"Patient","deceasedDateTime":"2020-01-01T10:00:00"}`, "Patient.deceasedDateTime", "pattern"},
		{"gender code", `{"resourceType":"Patient","gender":"M"}`, "Patient.gender", "enum"},
		{"bundle entry resource element", `{"resourceType":"Bundle","type":"message","entry":[{"resource":{"resourceType":"Encounter","status":"finished","class":{"code":"IMP"},"colour":1}}]}`, "Bundle.entry[0].resource(Encounter).colour", "unknown-element"},
		{"encounter class required", `{"resourceType":"Encounter","status":"finished"}`, "Encounter.class", "required"},
		{"reference with bad element", `{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"ref":"Patient/1"}}`, "Observation.subject.ref", "unknown-element"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			issues := s.Validate([]byte(tt.doc))
			for _, is := range issues {
				if is.Path == tt.wantPath && is.Rule == tt.wantRule {
					return
				}
			}
			t.Errorf("want %s %s, got %v", tt.wantPath, tt.wantRule, issues)
		})
	}
}

func BenchmarkValidateBundle(b *testing.B) {
	path := filepath.Join(corpusDir(), "fhir-r4-schema", "fhir.schema.json")
	s, err := Load(path)
	if err != nil {
		b.Skipf("schema: %v", err)
	}
	doc := []byte(`{"resourceType":"Bundle","type":"message","entry":[{"fullUrl":"urn:uuid:0b0e4a2c-1111-4d4d-8e8e-000000000001","resource":{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9990000042"}],"name":[{"family":"Test","given":["Alex"]}],"gender":"female","birthDate":"1970-01-02"}}]}`)
	b.ReportAllocs()
	for b.Loop() {
		if issues := s.Validate(doc); len(issues) > 0 {
			b.Fatal(issues)
		}
	}
}
