package route

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/junction-fhir/junction/adapters/fhir"
	"github.com/junction-fhir/junction/adapters/pas"
	"github.com/junction-fhir/junction/adapters/pathology"
	"github.com/junction-fhir/junction/pkg/adapter"
	"github.com/junction-fhir/junction/pkg/audit"
	"github.com/junction-fhir/junction/pkg/consent"
	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/jsonmap"
	"github.com/junction-fhir/junction/pkg/nhs"
)

// everyPatient is a consent.Source that gives every patient with a valid
// NHS number one Consent with the given root provision.
type everyPatient struct{ provision map[string]any }

func (s everyPatient) Policies(_ context.Context, patient string) ([]consent.Policy, error) {
	if !nhs.ValidNumber(patient) {
		return nil, nil
	}
	doc := map[string]any{
		"resourceType": "Consent", "id": "c-every", "status": "active",
		"scope":     map[string]any{"coding": []any{map[string]any{"system": consent.SystemConsentScope, "code": "patient-privacy"}}},
		"category":  []any{map[string]any{"coding": []any{map[string]any{"system": "http://loinc.org", "code": "59284-0"}}}},
		"patient":   map[string]any{"identifier": map[string]any{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": patient}},
		"provision": s.provision,
	}
	raw, err := json.Marshal(doc)
	if err != nil {
		return nil, err
	}
	pol, issues := consent.ParsePolicy(raw)
	if len(issues) > 0 {
		return nil, issues
	}
	return []consent.Policy{pol}, nil
}

func (everyPatient) OptOut(context.Context, string, time.Time) (consent.OptOutStatus, error) {
	return consent.OptOutStatus{}, nil
}

// mixedDecider answers with a per-entry mixture of permit, deny and
// redact that depends on the destination, as no real policy would, to
// drive every branch of Process.
type mixedDecider struct{}

func (mixedDecider) Decide(_ context.Context, req consent.Request) (consent.Decision, error) {
	entries, _ := req.Bundle["entry"].([]any)
	d := consent.Decision{Outcome: consent.Permit, Reason: "mixed", Rule: "test:mixed"}
	denied := 0
	for i := range entries {
		v := consent.Verdict{Outcome: consent.Permit, Rule: "test:mixed:permit", Reason: "mixed permit"}
		switch (i + len(req.Destination)) % 3 {
		case 1:
			v = consent.Verdict{Outcome: consent.Deny, Rule: "test:mixed:deny", Reason: "mixed deny"}
			denied++
		case 2:
			v = consent.Verdict{Outcome: consent.Redact, Strip: []string{"text"}, Rule: "test:mixed:redact", Reason: "mixed redact"}
		}
		d.Resources = append(d.Resources, consent.ResourceDecision{Index: i, Verdict: v})
		if v.Outcome != consent.Permit {
			d.Outcome = consent.Redact
		}
	}
	if len(entries) > 0 && denied == len(entries) {
		d.Outcome = consent.Deny
	}
	return d, nil
}

// fixtureDirs are every directory of route files in the repository that
// hold routes expected to load.
var fixtureDirs = []string{
	"../../routes",
	"testdata/good",
	"testdata/runtests",
	"../engine/testdata/routes",
	"../faultsuite/testdata/routes",
	"../faultsuite/testdata/routes-fhir",
	"../../cmd/junction/testdata/durability/routes",
}

// translators are the real translators of the sources the fixtures use.
func translators(t *testing.T) map[string]adapter.Translator {
	t.Helper()
	out := map[string]adapter.Translator{}
	for name, f := range map[string]adapter.TranslatorFactory{"pas": pas.Factory{}, "fhir": fhir.Factory{}, "pathology": pathology.Factory{}} {
		tr, err := f.NewTranslator(f.(interface{ NewConfig() any }).NewConfig())
		if err != nil {
			t.Fatalf("%s translator: %v", name, err)
		}
		out[name] = tr
	}
	return out
}

// fixtureInputs returns the route's own test inputs and synthetic messages
// for its source, as envelopes.
func fixtureInputs(t *testing.T, r *Route) []*envelope.Envelope {
	t.Helper()
	var out []*envelope.Envelope
	add := func(raw []byte, ct string) {
		out = append(out, TestEnvelope(r.Source, fmt.Sprintf("01FIXTURE%04d", len(out)), raw, ct))
	}
	for _, tc := range r.Tests {
		raw, ct, err := testInput(filepath.Dir(r.File), tc.Input)
		if err != nil {
			continue // a test about a missing input
		}
		add(raw, ct)
	}
	switch r.Source {
	case "pas":
		for _, ev := range []string{"A01", "A03", "A04", "A08", "A02"} {
			add([]byte(adtMessage(ev, "9990000026")), envelope.ContentTypeHL7v2)
		}
		add([]byte(adtMessage("A01", "9990000019")), envelope.ContentTypeHL7v2)
	case "pathology":
		files, _ := filepath.Glob("../../adapters/pathology/testdata/*.hl7")
		for _, f := range files {
			raw, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			add(raw, envelope.ContentTypeHL7v2)
		}
	case "fhir":
		add([]byte(`{"resourceType":"Patient","id":"p1","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9990000026"}]}`), envelope.ContentTypeFHIR)
		add(linkedBundle("9990000026"), envelope.ContentTypeFHIR)
	}
	return out
}

// TestEveryDeliveryHasARecordedDecision runs every route fixture of the
// repository over its test inputs and synthetic messages with several
// deciders, and checks that no payload reaches Result.Deliveries without a
// consent audit record for its destination that permits or redacts, made
// before any transform for it; that every denial is recorded; and that a
// redacted payload lacks what the Consent withheld.
func TestEveryDeliveryHasARecordedDecision(t *testing.T) {
	deciders := []struct {
		name string
		d    consent.Decider
		// gone is a resource type that must not appear in any FHIR
		// payload delivered for a patient with a valid NHS number.
		gone string
	}{
		{"route default", consent.DefaultPolicy{}, ""},
		{"engine, no consents", &consent.Engine{}, ""},
		{"engine, deny all", &consent.Engine{Source: everyPatient{map[string]any{"type": "deny"}}}, ""},
		{"engine, deny Encounter", &consent.Engine{Source: everyPatient{denyClass("Encounter")}}, "Encounter"},
		{"engine, deny Observation", &consent.Engine{Source: everyPatient{denyClass("Observation")}}, "Observation"},
		{"engine, deny Patient", &consent.Engine{Source: everyPatient{denyClass("Patient")}}, "Patient"},
		{"mixed verdicts", mixedDecider{}, ""},
	}
	trs := translators(t)
	env := testEnv(t)
	routes := 0
	for _, dir := range fixtureDirs {
		files, _ := filepath.Glob(filepath.Join(dir, "*.y*ml"))
		if len(files) == 0 {
			t.Fatalf("no route files in %s", dir)
		}
		for _, file := range files {
			r, err := Load(file, env, nil)
			if err != nil {
				t.Fatalf("fixture %s does not load: %v", file, err)
			}
			tr := trs[r.Source]
			if tr == nil {
				t.Fatalf("%s: no translator for source %q in this test", file, r.Source)
			}
			routes++
			for _, dc := range deciders {
				t.Run(file+"/"+dc.name, func(t *testing.T) {
					for _, e := range fixtureInputs(t, r) {
						res, _, _, err := r.runOneWith(context.Background(), tr, e, dc.d, nil, false)
						if err != nil {
							continue // dead-lettered: nothing delivered
						}
						gone := dc.gone
						if tl, err := tr.Translate(e); err != nil || !nhs.ValidNumber(tl.PatientKey) {
							gone = "" // no Consent can be found for this patient
						}
						checkDecisions(t, e.ID, res, gone)
					}
				})
			}
		}
	}
	if routes < 10 {
		t.Fatalf("only %d fixture routes found", routes)
	}
}

// checkDecisions checks one result against the invariant.
func checkDecisions(t *testing.T, id string, res *Result, gone string) {
	t.Helper()
	decided := map[string]string{}
	decidedAt := map[string]int{}
	for i, rec := range res.Records {
		if rec.Event != audit.Consent {
			continue
		}
		switch rec.Outcome {
		case string(consent.Permit), string(consent.Deny), string(consent.Redact):
			if _, dup := decided[rec.Destination]; dup {
				t.Errorf("%s: two consent decisions for %s", id, rec.Destination)
			}
			decided[rec.Destination], decidedAt[rec.Destination] = rec.Outcome, i
		case OutcomeWithheld, OutcomeStripped:
			if _, ok := decided[rec.Destination]; !ok {
				t.Errorf("%s: resource record for %s before its decision", id, rec.Destination)
			}
		default:
			t.Errorf("%s: consent record with outcome %q", id, rec.Outcome)
		}
		if rec.Rule == "" || rec.Reason == "" {
			t.Errorf("%s: consent record for %s without rule or reason", id, rec.Destination)
		}
	}
	for i, rec := range res.Records {
		if rec.Event == audit.Transformed {
			if at, ok := decidedAt[rec.Destination]; !ok || at > i {
				t.Errorf("%s: transform for %s before a consent decision", id, rec.Destination)
			}
		}
	}
	for _, d := range res.Deliveries {
		out, ok := decided[d.Destination]
		if !ok {
			t.Errorf("%s: payload for %s without a recorded consent decision", id, d.Destination)
			continue
		}
		if out != string(consent.Permit) && out != string(consent.Redact) {
			t.Errorf("%s: payload for %s whose recorded decision is %s", id, d.Destination, out)
		}
		if d.ContentType != envelope.ContentTypeFHIR {
			if out != string(consent.Permit) {
				t.Errorf("%s: raw payload for %s under decision %s", id, d.Destination, out)
			}
			continue
		}
		if gone != "" && slices.Contains(bundleTypes(t, d.Body), gone) {
			t.Errorf("%s: payload for %s holds a %s the consent withheld", id, d.Destination, gone)
		}
		// Whoever the payload is about is told of it: the patients of
		// what is sent, however the route found them.
		if b, err := jsonmap.Decode(d.Body); err != nil {
			t.Errorf("%s: payload for %s is not JSON: %v", id, d.Destination, err)
		} else if want := consent.BundleNHSNumbers(b); !slices.Equal(d.Patients, want) {
			t.Errorf("%s: payload for %s has patients %v, its bundle names %v", id, d.Destination, d.Patients, want)
		}
	}
	for _, dest := range res.Denied {
		if decided[dest] != string(consent.Deny) {
			t.Errorf("%s: %s denied but its recorded decision is %q", id, dest, decided[dest])
		}
	}
	if len(decided) != len(res.Deliveries)+len(res.Denied) {
		t.Errorf("%s: %d consent decisions for %d deliveries and %d denials", id, len(decided), len(res.Deliveries), len(res.Denied))
	}
}

// bundleTypes lists the resource types in a bundle or resource payload.
func bundleTypes(t *testing.T, body []byte) []string {
	t.Helper()
	var b struct {
		ResourceType string `json:"resourceType"`
		Entry        []struct {
			Resource struct {
				ResourceType string `json:"resourceType"`
			} `json:"resource"`
		} `json:"entry"`
	}
	if err := json.Unmarshal(body, &b); err != nil {
		t.Fatalf("payload is not JSON: %v", err)
	}
	out := []string{b.ResourceType}
	for _, e := range b.Entry {
		out = append(out, e.Resource.ResourceType)
	}
	return out
}
