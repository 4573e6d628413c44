package conformance

import (
	"bytes"
	"errors"
	"path/filepath"
	"testing"

	"github.com/junction-fhir/junction/pkg/corpustest"

	"github.com/junction-fhir/junction/pkg/adapter"
	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/nhs"
)

// brokenPAS is a "pas" adapter whose translator does everything wrong,
// to show the checks catch it: it panics on A03, fails without a fault
// on A02, and otherwise emits a bundle with an unknown element, an
// unresolved reference, a bad NHS number and no UK Core profile.
type brokenPAS struct{}

func (brokenPAS) Type() string   { return "pas" }
func (brokenPAS) NewConfig() any { return &struct{}{} }
func (brokenPAS) NewTranslator(any) (adapter.Translator, error) {
	return brokenTranslator{}, nil
}

type brokenTranslator struct{}

func (brokenTranslator) Translate(env *envelope.Envelope) (*adapter.Translation, error) {
	switch {
	case bytes.Contains(env.Raw, []byte("ADT^A03")):
		panic("boom")
	case bytes.Contains(env.Raw, []byte("ADT^A02")):
		return nil, errors.New("something failed")
	}
	return &adapter.Translation{Bundle: []byte(`{"resourceType":"Bundle","type":"message","entry":[
		{"fullUrl":"urn:uuid:00000000-0000-4000-8000-000000000001","resource":{"resourceType":"Patient","colour":"blue",
		 "identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"1234567890"}]}},
		{"fullUrl":"urn:uuid:00000000-0000-4000-8000-000000000002","resource":{"resourceType":"Encounter","status":"finished",
		 "class":{"code":"IMP"},"subject":{"reference":"urn:uuid:00000000-0000-4000-8000-000000000009"}}}]}`)}, nil
}

func TestChecksCatchBrokenTranslator(t *testing.T) {
	root := repoRoot(t)
	rep, err := Run(Options{Corpora: DefaultCorpora(root), Factories: []adapter.Factory{brokenPAS{}}})
	if errors.Is(err, ErrNoCorpora) {
		corpustest.Missing(t, "the third-party corpora are absent; skipping")
	}
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		check, rule string
	}{
		{"schema", "schema.unknown-element"},
		{"references", "reference.unresolved"},
		{"robustness", "panic"},
		{"robustness", "rejection-without-reason"},
		{"ukcore", "Patient.meta.profile names UKCore-Patient"},
		{"ukcore", "Patient.identifier:nhsNumber.value is 10 digits with a valid check digit"},
	}
	for _, tt := range tests {
		t.Run(tt.check+" "+tt.rule, func(t *testing.T) {
			c := rep.Check(tt.check)
			if c == nil {
				t.Fatalf("no check %s", tt.check)
			}
			if c.FailuresByRule()[tt.rule] == 0 {
				t.Errorf("check %s reported no %s failure; failures by rule: %v", tt.check, tt.rule, c.FailuresByRule())
			}
			if c.Passed == c.Total {
				t.Errorf("check %s passed everything", tt.check)
			}
		})
	}
}

func TestUKCoreRules(t *testing.T) {
	dir := filepath.Join(DefaultCorpora(repoRoot(t)), "uk-core")
	uk, err := loadUKCore(dir)
	if err != nil {
		corpustest.Missing(t, "UK Core corpus not readable at %s (%v); skipping", dir, err)
	}
	valid := nhs.TestNumber(3)
	tests := []struct {
		name     string
		resource map[string]any
		wantRule string // "" for none broken
	}{
		{"conformant patient", map[string]any{"resourceType": "Patient",
			"meta":       map[string]any{"profile": []any{nhs.ProfilePatient}},
			"identifier": []any{map[string]any{"system": nhs.SystemNHSNumber, "value": valid}}}, ""},
		{"lab report without category", map[string]any{"resourceType": "DiagnosticReport", "status": "final", "code": map[string]any{"text": "x"},
			"meta": map[string]any{"profile": []any{"https://fhir.hl7.org.uk/StructureDefinition/UKCore-DiagnosticReport-Lab"}}},
			"min DiagnosticReport.category (UKCoreDiagnosticReportLab)"},
		{"observation without status", map[string]any{"resourceType": "Observation", "code": map[string]any{"text": "x"}},
			"base R4 min 1 Observation.status"},
		{"verification status outside its value set", map[string]any{"resourceType": "Patient",
			"meta": map[string]any{"profile": []any{nhs.ProfilePatient}},
			"identifier": []any{map[string]any{"system": nhs.SystemNHSNumber, "value": valid,
				"extension": []any{map[string]any{"url": "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-NHSNumberVerificationStatus",
					"valueCodeableConcept": map[string]any{"coding": []any{map[string]any{
						"system": nhs.CodeSystemNHSNumberVerificationStatusEngland, "code": "99"}}}}}}}},
			"binding Extension.value[x] (ExtensionUKCoreNHSNumberVerificationStatus)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := uk.checkBundle(map[string]any{"resourceType": "Bundle", "type": "collection",
				"entry": []any{map[string]any{"resource": tt.resource}}})
			var broken []string
			for _, f := range res.findings {
				broken = append(broken, f.rule)
			}
			if tt.wantRule == "" {
				if len(broken) > 0 {
					t.Errorf("rules broken: %v", broken)
				}
				return
			}
			for _, b := range broken {
				if b == tt.wantRule {
					return
				}
			}
			t.Errorf("want %q broken, got %v", tt.wantRule, broken)
		})
	}
}
