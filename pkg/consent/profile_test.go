package consent

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"pgregory.net/rapid"

	"github.com/junction-fhir/junction/pkg/fhir"
)

// renderPolicy writes a Policy as a FHIR R4 Consent in the profile. Period
// bounds must be at midnight in England (fhir.CalendarZone); ends are
// written as the inclusive day before.
func renderPolicy(p Policy) map[string]any {
	c := map[string]any{
		"resourceType": "Consent",
		"status":       p.Status,
		"scope":        cc(Coding{System: SystemConsentScope, Code: "patient-privacy"}),
		"category":     []any{cc(Coding{System: "http://loinc.org", Code: "59284-0"})},
		"patient":      map[string]any{"identifier": map[string]any{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": p.Patient}},
		"provision":    renderProvision(p.Root),
	}
	if p.ID != "" {
		c["id"] = p.ID
	}
	return c
}

func cc(c Coding) map[string]any {
	return map[string]any{"coding": []any{coding(c)}}
}

func coding(c Coding) map[string]any { return map[string]any{"system": c.System, "code": c.Code} }

func renderPeriod(p Period) map[string]any {
	m := map[string]any{}
	if !p.Start.IsZero() {
		m["start"] = p.Start.In(fhir.CalendarZone()).Format("2006-01-02")
	}
	if !p.End.IsZero() {
		m["end"] = p.End.In(fhir.CalendarZone()).AddDate(0, 0, -1).Format("2006-01-02")
	}
	return m
}

func renderProvision(p Provision) map[string]any {
	m := map[string]any{"type": string(p.Type)}
	if !p.Period.IsZero() {
		m["period"] = renderPeriod(p.Period)
	}
	if !p.DataPeriod.IsZero() {
		m["dataPeriod"] = renderPeriod(p.DataPeriod)
	}
	var l []any
	for _, a := range p.Actors {
		l = append(l, map[string]any{
			"role":      cc(Coding{System: SystemParticipationType, Code: "IRCP"}),
			"reference": map[string]any{"identifier": map[string]any{"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": a}},
		})
	}
	if l != nil {
		m["actor"] = l
	}
	list := func(key string, cs []Coding, f func(Coding) map[string]any) {
		var out []any
		for _, c := range cs {
			out = append(out, f(c))
		}
		if out != nil {
			m[key] = out
		}
	}
	list("purpose", p.Purposes, coding)
	list("securityLabel", p.Labels, coding)
	list("code", p.Codes, cc)
	var classes []Coding
	for _, c := range p.Classes {
		classes = append(classes, Coding{System: SystemResourceTypes, Code: c})
	}
	list("class", classes, coding)
	var kids []any
	for _, k := range p.Provisions {
		kids = append(kids, renderProvision(k))
	}
	if kids != nil {
		m["provision"] = kids
	}
	return m
}

// Every Policy in the test universe survives rendering to FHIR and
// parsing back.
func TestPropertyParseRoundTrip(t *testing.T) {
	withCases(t, 2000)
	rapid.Check(t, func(t *rapid.T) {
		want := genPolicy(t, "c1", patientA)
		raw, err := json.Marshal(renderPolicy(want))
		if err != nil {
			t.Fatal(err)
		}
		got, issues := ParsePolicy(raw)
		if len(issues) > 0 {
			t.Fatalf("issues: %v", issues)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("(-want +got):\n%s", diff)
		}
	})
}

func TestParsePolicyExample(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("testdata", "consent-valid.json"))
	if err != nil {
		t.Fatal(err)
	}
	got, issues := ParsePolicy(raw)
	if len(issues) > 0 {
		t.Fatalf("issues: %v", issues)
	}
	want := Policy{
		ID: "example-1", Status: "active", Patient: patientA,
		Root: Provision{
			Path: "Consent.provision", Type: ProvisionDeny,
			Period: Period{Start: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), End: time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)},
			Provisions: []Provision{{
				Path: "Consent.provision.provision[0]", Type: ProvisionPermit,
				Actors:   []string{"A81001"},
				Purposes: []Coding{{System: SystemActReason, Code: "TREAT"}},
				Provisions: []Provision{{
					Path: "Consent.provision.provision[0].provision[0]", Type: ProvisionDeny,
					Classes: []string{"Observation"},
					Labels:  []Coding{{System: SystemRestricted, Code: LabelSexualHealth}},
					// English calendar days: 1 April 2020 began at 00:00 BST.
					DataPeriod: Period{Start: time.Date(2020, 3, 1, 0, 0, 0, 0, time.UTC), End: time.Date(2020, 3, 31, 23, 0, 0, 0, time.UTC)},
					Codes:      []Coding{{System: "http://snomed.info/sct", Code: "1001"}},
				}},
			}},
		},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// mutate returns the valid example with f applied.
func mutate(t *testing.T, f func(c map[string]any)) []byte {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", "consent-valid.json"))
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := json.Unmarshal(raw, &c); err != nil {
		t.Fatal(err)
	}
	f(c)
	out, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func prov(c map[string]any, path ...int) map[string]any {
	p := c["provision"].(map[string]any)
	for _, i := range path {
		p = p["provision"].([]any)[i].(map[string]any)
	}
	return p
}

func TestParsePolicyRejects(t *testing.T) {
	tests := []struct {
		name string
		edit func(c map[string]any)
		want []string // "code location"
	}{
		{"wrong resource type", func(c map[string]any) { c["resourceType"] = "Patient" },
			[]string{"invalid Consent.resourceType"}},
		{"id with the NHS number", func(c map[string]any) { c["id"] = "consent-9990000018" },
			[]string{"value Consent.id"}},
		{"id not a FHIR id", func(c map[string]any) { c["id"] = "consent 1" },
			[]string{"value Consent.id"}},
		{"no status", func(c map[string]any) { delete(c, "status") },
			[]string{"required Consent.status"}},
		{"bad status", func(c map[string]any) { c["status"] = "on" },
			[]string{"code-invalid Consent.status"}},
		{"wrong scope", func(c map[string]any) { c["scope"] = cc(Coding{System: SystemConsentScope, Code: "research"}) },
			[]string{"value Consent.scope"}},
		{"no category", func(c map[string]any) { delete(c, "category") },
			[]string{"required Consent.category"}},
		{"patient by literal reference", func(c map[string]any) { c["patient"] = map[string]any{"reference": "Patient/1"} },
			[]string{"value Consent.patient.identifier"}},
		{"invalid NHS number", func(c map[string]any) {
			c["patient"].(map[string]any)["identifier"].(map[string]any)["value"] = "9990000019"
		}, []string{"value Consent.patient.identifier.value"}},
		{"modifier extension", func(c map[string]any) { c["modifierExtension"] = []any{map[string]any{"url": "x"}} },
			[]string{"not-supported Consent.modifierExtension"}},
		{"no provision", func(c map[string]any) { delete(c, "provision") },
			[]string{"required Consent.provision"}},
		{"nested without type", func(c map[string]any) { delete(prov(c, 0), "type") },
			[]string{"required Consent.provision.provision[0].type"}},
		{"actor by practitioner", func(c map[string]any) {
			prov(c, 0)["actor"].([]any)[0].(map[string]any)["reference"] = map[string]any{"reference": "Practitioner/1"}
		}, []string{"value Consent.provision.provision[0].actor[0].reference.identifier"}},
		{"actor not a recipient", func(c map[string]any) {
			prov(c, 0)["actor"].([]any)[0].(map[string]any)["role"] = cc(Coding{System: SystemParticipationType, Code: "PRCP"})
		}, []string{"value Consent.provision.provision[0].actor[0].role"}},
		{"actor bad ODS code", func(c map[string]any) {
			prov(c, 0)["actor"].([]any)[0].(map[string]any)["reference"].(map[string]any)["identifier"].(map[string]any)["value"] = "a-1"
		}, []string{"value Consent.provision.provision[0].actor[0].reference.identifier.value"}},
		{"data element", func(c map[string]any) { prov(c, 0)["data"] = []any{map[string]any{"meaning": "instance"}} },
			[]string{"not-supported Consent.provision.provision[0].data"}},
		{"third level", func(c map[string]any) {
			prov(c, 0, 0)["provision"] = []any{map[string]any{"type": "permit"}}
		}, []string{"not-supported Consent.provision.provision[0].provision[0].provision"}},
		{"period backwards", func(c map[string]any) {
			prov(c)["period"] = map[string]any{"start": "2026-02-01", "end": "2026-01-01"}
		}, []string{"invariant Consent.provision.period"}},
		{"bad date", func(c map[string]any) { prov(c, 0, 0)["dataPeriod"] = map[string]any{"start": "1 March 2020"} },
			[]string{"value Consent.provision.provision[0].provision[0].dataPeriod.start"}},
		{"class outside resource types", func(c map[string]any) {
			prov(c, 0, 0)["class"] = []any{coding(Coding{System: "http://loinc.org", Code: "1"})}
		}, []string{"value Consent.provision.provision[0].provision[0].class[0].system"}},
		{"action other than disclose", func(c map[string]any) {
			prov(c)["action"] = []any{cc(Coding{System: SystemConsentAction, Code: "collect"})}
		}, []string{"not-supported Consent.provision.action[0]"}},
		{"purpose without system", func(c map[string]any) { prov(c, 0)["purpose"] = []any{map[string]any{"code": "TREAT"}} },
			[]string{"required Consent.provision.provision[0].purpose[0]"}},
		{"purpose no route declares", func(c map[string]any) {
			prov(c, 0)["purpose"] = []any{coding(Coding{System: SystemPurpose, Code: "Research"}), coding(Coding{System: SystemPurpose, Code: "marketing"}),
				coding(Coding{System: "https://example.org/purpose", Code: "research"}), coding(Coding{System: SystemActReason, Code: "HRESCH"})}
		}, []string{
			"code-invalid Consent.provision.provision[0].purpose[0]",
			"code-invalid Consent.provision.provision[0].purpose[1]",
			"code-invalid Consent.provision.provision[0].purpose[2]",
		}},
		{"class that is not a resource type", func(c map[string]any) {
			prov(c, 0, 0)["class"] = []any{coding(Coding{System: SystemResourceTypes, Code: "encounter"}), coding(Coding{System: SystemResourceTypes, Code: "Encounter"})}
		}, []string{"code-invalid Consent.provision.provision[0].provision[0].class[0].code"}},
		{"several at once", func(c map[string]any) {
			delete(c, "status")
			prov(c, 0)["type"] = "maybe"
		}, []string{"required Consent.status", "code-invalid Consent.provision.provision[0].type"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, issues := ParsePolicy(mutate(t, tt.edit))
			var got []string
			for _, i := range issues {
				got = append(got, i.Code+" "+i.Location)
				if strings.Contains(i.Message, "9990000019") || strings.Contains(i.Message, patientA) {
					t.Errorf("issue message repeats patient data: %q", i.Message)
				}
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
			oo := issues.OperationOutcome()
			if len(oo.Issue) != len(issues) {
				t.Fatalf("OperationOutcome has %d issues, want %d", len(oo.Issue), len(issues))
			}
			for i, x := range oo.Issue {
				if len(x.Expression) != 1 || x.Expression[0] != issues[i].Location {
					t.Errorf("issue %d expression %v, want %s", i, x.Expression, issues[i].Location)
				}
			}
		})
	}
}

func TestParsePolicyNotJSON(t *testing.T) {
	for _, in := range []string{"", "[]", "{", `{"resourceType":"Consent"} {}`} {
		t.Run(fmt.Sprintf("%q", in), func(t *testing.T) {
			if _, issues := ParsePolicy([]byte(in)); len(issues) == 0 {
				t.Error("no issues")
			}
		})
	}
}

func FuzzParsePolicy(f *testing.F) {
	raw, err := os.ReadFile(filepath.Join("testdata", "consent-valid.json"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(raw)
	f.Add([]byte(`{"resourceType":"Consent","provision":{"provision":[{"provision":[{"provision":[]}]}]}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		pol, issues := ParsePolicy(data)
		if len(issues) > 0 {
			return
		}
		// An accepted Consent evaluates without panicking.
		Evaluate(Input{Now: time.Now(), Patient: pol.Patient, Policies: []Policy{pol}, Purpose: PurposeDirectCare, Basis: BasisDirectCare}, Resource{Type: "Patient"})
	})
}
