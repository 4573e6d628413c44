package adaptertest

import (
	"os"
	"sync"
	"testing"

	"github.com/junction-fhir/junction/pkg/corpustest"
	"github.com/junction-fhir/junction/pkg/fhirschema"
)

// schemas holds the schemas FHIRSchema has compiled, by path, each
// compiled once per test binary.
var schemas sync.Map // path -> func() (*fhirschema.Schema, error)

// FHIRSchema returns the FHIR R4 JSON schema at path (in the shared
// corpora), compiled by pkg/fhirschema once per test binary, or nil,
// after corpustest.Note says why, when the file is absent. It fails t
// if the schema does not compile.
func FHIRSchema(t testing.TB, path string) *fhirschema.Schema {
	t.Helper()
	if _, err := os.Stat(path); os.IsNotExist(err) {
		corpustest.Note(t, "FHIR R4 JSON schema not present at %s; skipping the schema check", path)
		return nil
	}
	load, _ := schemas.LoadOrStore(path, sync.OnceValues(func() (*fhirschema.Schema, error) { return fhirschema.Load(path) }))
	s, err := load.(func() (*fhirschema.Schema, error))()
	if err != nil {
		t.Fatalf("FHIR schema: %v", err)
	}
	return s
}
