package consent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/junction-fhir/junction/pkg/fhir"
	"github.com/junction-fhir/junction/pkg/nhs"
)

// memSource is a Source held in memory.
type memSource struct {
	policies map[string][]Policy
	optOut   map[string]OptOutStatus
	err      error
}

func (m memSource) Policies(_ context.Context, p string) ([]Policy, error) {
	return m.policies[p], m.err
}

func (m memSource) OptOut(_ context.Context, p string, _ time.Time) (OptOutStatus, error) {
	return m.optOut[p], m.err
}

// testBundle has a restricted Patient, a sexual-health Observation that
// references it, and an Encounter referenced by the Observation.
func testBundle() map[string]any {
	return map[string]any{"resourceType": "Bundle", "type": "message", "entry": []any{
		map[string]any{"fullUrl": "urn:uuid:p", "resource": map[string]any{
			"resourceType": "Patient", "id": "p",
			"meta":    map[string]any{"security": []any{map[string]any{"system": SystemConfidentiality, "code": "R"}}},
			"name":    []any{map[string]any{"family": "TESTPATIENT"}},
			"address": []any{map[string]any{"line": []any{"1 Test Street"}}},
			"telecom": []any{map[string]any{"value": "01632 960000"}},
		}},
		map[string]any{"fullUrl": "urn:uuid:e", "resource": map[string]any{
			"resourceType": "Encounter", "id": "e", "period": map[string]any{"start": "2026-05-01T09:00:00Z"},
			"subject": map[string]any{"reference": "urn:uuid:p"},
		}},
		map[string]any{"fullUrl": "urn:uuid:o", "resource": map[string]any{
			"resourceType": "Observation", "id": "o", "effectiveDateTime": "2026-05-01",
			"meta":      map[string]any{"security": []any{map[string]any{"system": SystemRestricted, "code": LabelSexualHealth}}},
			"subject":   map[string]any{"reference": "urn:uuid:p"},
			"encounter": map[string]any{"reference": "urn:uuid:e"},
		}},
		map[string]any{"fullUrl": "urn:uuid:c", "resource": map[string]any{
			"resourceType": "Composition", "id": "c",
			"section": []any{map[string]any{"entry": []any{
				map[string]any{"reference": "urn:uuid:o"}, map[string]any{"reference": "urn:uuid:e"},
			}}},
		}},
	}}
}

func TestEngineDecide(t *testing.T) {
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	src := memSource{
		policies: map[string][]Policy{patientA: {{ID: "p1", Status: "active", Patient: patientA,
			Root: Provision{Path: "Consent.provision", Type: ProvisionPermit, Provisions: []Provision{
				{Path: "Consent.provision.provision[0]", Type: ProvisionDeny, Actors: []string{"B82002"}},
			}}}}},
		optOut: map[string]OptOutStatus{patientA: {OptedOut: true}},
	}
	e := &Engine{
		Source: src,
		Destinations: map[string]Destination{
			"gp":       {Name: "gp", ODS: "A81001"},
			"clinic":   {Name: "clinic", ODS: "C83003", Allow: []Clearance{ClearSexualHealth, ClearRestrictedPatient}},
			"other-gp": {Name: "other-gp", ODS: "B82002"},
		},
		Now: func() time.Time { return now },
	}
	tests := []struct {
		name      string
		req       Request
		want      Outcome
		wantRule  string
		perEntry  []Outcome
		wantStrip bool
	}{
		{"gp: patient stripped, sexual health withheld", Request{Route: "r", Purpose: "direct-care", LegalBasis: "direct-care", Destination: "gp", PatientKey: "999 000 0018", Default: Permit},
			Redact, "gate:restricted-patient", []Outcome{Redact, Permit, Deny, Permit}, true},
		{"clinic: allow-listed for both", Request{Route: "r", Purpose: "direct-care", LegalBasis: "direct-care", Destination: "clinic", PatientKey: patientA, Default: Permit},
			Permit, "consent:p1:Consent.provision", []Outcome{Permit, Permit, Permit, Permit}, false},
		{"other gp: consent denies", Request{Route: "r", Purpose: "direct-care", LegalBasis: "direct-care", Destination: "other-gp", PatientKey: patientA, Default: Permit},
			Deny, "consent:p1:Consent.provision.provision[0]", []Outcome{Deny, Deny, Deny, Deny}, false},
		{"research: opted out", Request{Route: "r", Purpose: "research", LegalBasis: "s251", Destination: "clinic", PatientKey: patientA, Default: Permit},
			Deny, "gate:opt-out", []Outcome{Deny, Deny, Deny, Deny}, false},
		{"unknown destination has no allow-list", Request{Route: "r", Purpose: "direct-care", LegalBasis: "direct-care", Destination: "nowhere", PatientKey: patientA, Default: Permit},
			Redact, "gate:restricted-patient", []Outcome{Redact, Permit, Deny, Permit}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.req.Bundle = testBundle()
			d, err := e.Decide(context.Background(), tt.req)
			if err != nil {
				t.Fatal(err)
			}
			var per []Outcome
			for _, r := range d.Resources {
				per = append(per, r.Outcome)
			}
			if diff := cmp.Diff([]any{tt.want, tt.wantRule, tt.perEntry}, []any{d.Outcome, d.Rule, per}); diff != "" {
				t.Errorf("(-want +got):\n%s\nreason: %s", diff, d.Reason)
			}
			for _, s := range []string{d.Reason, d.Rule} {
				if strings.Contains(s, patientA) || strings.Contains(s, "TESTPATIENT") || strings.Contains(s, "Test Street") {
					t.Errorf("%q holds patient data", s)
				}
			}
			out, err := Apply(tt.req.Bundle, d)
			if err != nil {
				t.Fatal(err)
			}
			checkApplied(t, out, per)
		})
	}
}

// checkApplied checks that denied entries and every reference to them are
// gone and stripped entries lost their contact details.
func checkApplied(t *testing.T, out map[string]any, per []Outcome) {
	t.Helper()
	orig := testBundle()["entry"].([]any)
	var keptURLs []string
	dropped := map[string]bool{}
	for i, x := range orig {
		u := x.(map[string]any)["fullUrl"].(string)
		if per[i] == Deny {
			dropped[u] = true
		} else {
			keptURLs = append(keptURLs, u)
		}
	}
	var gotURLs []string
	for _, x := range out["entry"].([]any) {
		m := x.(map[string]any)
		gotURLs = append(gotURLs, m["fullUrl"].(string))
		res := m["resource"].(map[string]any)
		if res["resourceType"] == "Patient" {
			_, hasAddr := res["address"]
			if hasAddr != (per[0] == Permit) {
				t.Errorf("Patient address kept=%v with verdict %s", hasAddr, per[0])
			}
			if _, ok := res["name"]; !ok {
				t.Error("Patient name was stripped")
			}
			labelled := false
			meta, _ := res["meta"].(map[string]any)
			sec, _ := meta["security"].([]any)
			for _, x := range sec {
				if c := x.(map[string]any); c["system"] == fhir.SystemObservationValue && c["code"] == "REDACTED" {
					labelled = true
				}
			}
			if labelled != (per[0] == Redact) {
				t.Errorf("Patient labelled REDACTED = %v with verdict %s", labelled, per[0])
			}
			var cleared []string
			exts, _ := res["extension"].([]any)
			for _, x := range exts {
				if e := x.(map[string]any); e["url"] == nhs.JunctionExtClearedElement {
					cleared = append(cleared, e["valueCode"].(string))
				}
			}
			var wantCleared []string
			if per[0] == Redact {
				wantCleared = restrictedStrip("Patient")
			}
			if diff := cmp.Diff(wantCleared, cleared); diff != "" {
				t.Errorf("Patient marked cleared (-want +got):\n%s", diff)
			}
		}
	}
	if diff := cmp.Diff(keptURLs, gotURLs); diff != "" {
		t.Errorf("entries (-want +got):\n%s", diff)
	}
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			if r, ok := x["reference"].(string); ok && dropped[r] {
				t.Errorf("reference to dropped %s survives", r)
			}
			for _, y := range x {
				walk(y)
			}
		case []any:
			for _, y := range x {
				walk(y)
			}
		}
	}
	walk(out)
}

// TestApplyRedactsWhatIsNotThere: a restricted patient's Patient that
// carries none of the withheld elements (an A02 without PID-11 or PD1) is
// still labelled REDACTED and marked as deleting them, so a destination
// merging into what it holds drops the address and GP it held before.
func TestApplyRedactsWhatIsNotThere(t *testing.T) {
	b := map[string]any{"resourceType": "Bundle", "type": "message", "entry": []any{
		map[string]any{"fullUrl": "urn:uuid:p", "resource": map[string]any{
			"resourceType": "Patient",
			"identifier":   []any{map[string]any{"system": nhs.SystemNHSNumber, "value": "9990000018"}},
			"name":         []any{map[string]any{"family": "TESTPATIENT"}},
		}},
	}}
	d := Decision{Outcome: Redact, Resources: []ResourceDecision{{Index: 0, ResourceType: "Patient",
		Verdict: Verdict{Outcome: Redact, Strip: restrictedStrip("Patient"), Gate: GateRestricted, Rule: "gate:restricted-patient"}}}}
	out, err := Apply(b, d)
	if err != nil {
		t.Fatal(err)
	}
	res := out["entry"].([]any)[0].(map[string]any)["resource"].(map[string]any)
	raw, _ := json.Marshal(res)
	if !fhir.IsRedacted(raw) {
		t.Errorf("not labelled REDACTED: %s", raw)
	}
	for _, el := range restrictedStrip("Patient") {
		if !strings.Contains(string(raw), `"valueCode":"`+el+`"`) {
			t.Errorf("not marked as deleting %s: %s", el, raw)
		}
	}
}

func TestApplyLeavesInputAlone(t *testing.T) {
	b := testBundle()
	d := Decision{Outcome: Redact, Resources: []ResourceDecision{
		{Index: 0, Verdict: Verdict{Outcome: Redact, Strip: []string{"address"}}},
		{Index: 1, Verdict: Verdict{Outcome: Deny}},
		{Index: 2, Verdict: Verdict{Outcome: Permit}},
		{Index: 3, Verdict: Verdict{Outcome: Permit}},
	}}
	out, err := Apply(b, d)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(testBundle(), b); diff != "" {
		t.Errorf("Apply changed its input (-want +got):\n%s", diff)
	}
	obs := out["entry"].([]any)[1].(map[string]any)["resource"].(map[string]any)
	if _, ok := obs["encounter"]; ok {
		t.Error("Observation.encounter still references the dropped Encounter")
	}
	sec := out["entry"].([]any)[2].(map[string]any)["resource"].(map[string]any)["section"].([]any)[0].(map[string]any)["entry"].([]any)
	if len(sec) != 1 {
		t.Errorf("Composition section keeps %d entries, want 1", len(sec))
	}
	if _, err := Apply(b, Decision{Resources: d.Resources[:2]}); err == nil {
		t.Error("Apply accepted a decision that does not cover the bundle")
	}
}

func TestEngineSourceError(t *testing.T) {
	e := &Engine{Source: memSource{err: errors.New("bucket unavailable")}}
	_, err := e.Decide(context.Background(), Request{Purpose: "direct-care", LegalBasis: "direct-care", PatientKey: patientA, Bundle: testBundle()})
	if err == nil || !strings.Contains(err.Error(), "bucket unavailable") {
		t.Fatalf("err = %v, want the source's error", err)
	}
}

// countingSource counts the reads a decision makes.
type countingSource struct {
	memSource
	policies, optOuts int
}

func (c *countingSource) Policies(ctx context.Context, p string) ([]Policy, error) {
	c.policies++
	return c.memSource.Policies(ctx, p)
}

func (c *countingSource) OptOut(ctx context.Context, p string, now time.Time) (OptOutStatus, error) {
	c.optOuts++
	return c.memSource.OptOut(ctx, p, now)
}

// TestEngineReadsOnlyWhatItUses checks that a decision reads the opt-out
// state only for purposes the opt-out applies to and the Consents only
// when the route does not skip them, and that what it skips cannot change
// the outcome: a stale opt-out list is irrelevant to direct care.
func TestEngineReadsOnlyWhatItUses(t *testing.T) {
	tests := []struct {
		name                   string
		req                    Request
		wantPolicies, wantOpts int
		want                   Outcome
	}{
		{"direct care", Request{Purpose: "direct-care", LegalBasis: "direct-care", Default: Permit}, 1, 0, Permit},
		{"research under s251", Request{Purpose: "research", LegalBasis: "s251", Default: Permit}, 1, 1, Deny},
		{"research by explicit consent", Request{Purpose: "research", LegalBasis: "explicit-consent", Default: Permit}, 1, 0, Deny},
		{"statutory safeguarding skips consent", Request{Purpose: "safeguarding", LegalBasis: "statutory", SkipConsent: true}, 0, 0, Permit},
		{"planning under s251", Request{Purpose: "planning", LegalBasis: "s251", Default: Permit}, 1, 1, Deny},
		{"public health skips consent and the opt-out", Request{Purpose: "public-health", LegalBasis: "statutory", SkipConsent: true}, 0, 0, Permit},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := &countingSource{memSource: memSource{optOut: map[string]OptOutStatus{patientA: {Stale: true}}}}
			e := &Engine{Source: src}
			tt.req.PatientKey = patientA
			tt.req.Bundle = map[string]any{"resourceType": "Bundle", "entry": []any{
				map[string]any{"resource": map[string]any{"resourceType": "Encounter", "id": "e"}},
			}}
			d, err := e.Decide(context.Background(), tt.req)
			if err != nil {
				t.Fatal(err)
			}
			if src.policies != tt.wantPolicies || src.optOuts != tt.wantOpts {
				t.Errorf("read Consents %d times and the opt-out %d times, want %d and %d", src.policies, src.optOuts, tt.wantPolicies, tt.wantOpts)
			}
			if d.Outcome != tt.want {
				t.Errorf("outcome %s, want %s (%s)", d.Outcome, tt.want, d.Rule)
			}
		})
	}
}

func TestEngineEmptyBundle(t *testing.T) {
	e := &Engine{Source: memSource{}}
	tests := []struct {
		name string
		req  Request
		want Outcome
	}{
		{"direct care", Request{Purpose: "direct-care", LegalBasis: "direct-care", PatientKey: patientA, Default: Permit}, Permit},
		{"no legal basis", Request{Purpose: "direct-care", PatientKey: patientA, Default: Permit}, Deny},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := e.Decide(context.Background(), tt.req)
			if err != nil {
				t.Fatal(err)
			}
			if d.Outcome != tt.want {
				t.Errorf("outcome %s, want %s (%s)", d.Outcome, tt.want, d.Rule)
			}
		})
	}
}

func TestResourceOf(t *testing.T) {
	got := ResourceOf(map[string]any{
		"resourceType": "Observation", "effectivePeriod": map[string]any{"start": "2025-02"},
		"meta": map[string]any{"security": []any{map[string]any{"system": SystemConfidentiality, "code": "V"}}},
		"code": map[string]any{"coding": []any{map[string]any{"system": "http://snomed.info/sct", "code": "1001"}}},
	})
	want := Resource{Type: "Observation", Labels: []Coding{{System: SystemConfidentiality, Code: "V"}},
		Codes: []Coding{{System: "http://snomed.info/sct", Code: "1001"}}, Date: time.Date(2025, 2, 1, 0, 0, 0, 0, time.UTC)}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// twoPatientBundle holds a Patient for each NHS number with an
// Observation about each.
func twoPatientBundle(first, second string) map[string]any {
	patient := func(id, nhsNumber string) map[string]any {
		return map[string]any{"fullUrl": "urn:uuid:" + id, "resource": map[string]any{
			"resourceType": "Patient", "id": id,
			"identifier": []any{map[string]any{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": nhsNumber}},
		}}
	}
	obs := func(id, subject string) map[string]any {
		return map[string]any{"fullUrl": "urn:uuid:" + id, "resource": map[string]any{
			"resourceType": "Observation", "id": id, "subject": map[string]any{"reference": "urn:uuid:" + subject},
		}}
	}
	return map[string]any{"resourceType": "Bundle", "type": "collection", "entry": []any{
		patient("p1", first), obs("o1", "p1"), patient("p2", second), obs("o2", "p2"),
	}}
}

// TestEngineDecidesForEveryPatient checks that a bundle about two
// patients is decided for both: the second patient's refusal or opt-out
// holds although the message's key is the first patient's.
func TestEngineDecidesForEveryPatient(t *testing.T) {
	const first, second = patientA, patientB
	deny := []Policy{{ID: "deny-all", Status: "active", Patient: second,
		Root: Provision{Path: "Consent.provision", Type: ProvisionDeny}}}
	tests := []struct {
		name    string
		src     memSource
		purpose string
		basis   string
		key     string
		want    Outcome
		rule    string
	}{
		{"second patient's consent denies", memSource{policies: map[string][]Policy{second: deny}},
			"direct-care", "direct-care", first, Deny, "consent:deny-all:Consent.provision"},
		{"second patient opted out", memSource{optOut: map[string]OptOutStatus{second: {OptedOut: true}}},
			"research", "s251", first, Deny, "gate:opt-out"},
		{"neither refuses", memSource{}, "direct-care", "direct-care", first, Permit, "consent:none:route-default-permit"},
		{"key is the second patient", memSource{policies: map[string][]Policy{second: deny}},
			"direct-care", "direct-care", second, Deny, "consent:deny-all:Consent.provision"},
	}
	// The second patient named in each way a bundle can name a patient:
	// a Patient entry, a logical reference by NHS number (in an older
	// spelling of the system too), a contained Patient.
	bundles := map[string]map[string]any{
		"patient entries":    twoPatientBundle(first, second),
		"logical references": twoPatientBundleBy(first, second, "logical"),
		"older NHS system":   twoPatientBundleBy(first, second, "older system"),
		"contained Patient":  twoPatientBundleBy(first, second, "contained"),
	}
	for _, tt := range tests {
		for shape, bundle := range bundles {
			t.Run(tt.name+"/"+shape, func(t *testing.T) {
				e := &Engine{Source: tt.src}
				d, err := e.Decide(context.Background(), Request{Route: "r", Purpose: tt.purpose, LegalBasis: tt.basis,
					Destination: "d", PatientKey: tt.key, Bundle: bundle, Default: Permit})
				if err != nil {
					t.Fatal(err)
				}
				if d.Outcome != tt.want || d.Rule != tt.rule {
					t.Errorf("decision %s by %s (%s), want %s by %s", d.Outcome, d.Rule, d.Reason, tt.want, tt.rule)
				}
			})
		}
	}
}

// twoPatientBundleBy is a batch of two Observations, the first about
// first by a logical reference, the second about second named as how
// says: "logical" (subject.identifier), "older system" (the same with
// the http fhir.nhs.net system) or "contained" (a contained Patient).
func twoPatientBundleBy(first, second, how string) map[string]any {
	logical := func(system, nhsNumber string) map[string]any {
		return map[string]any{"identifier": map[string]any{"system": system, "value": nhsNumber}}
	}
	obs := func(id string, extra map[string]any) map[string]any {
		r := map[string]any{"resourceType": "Observation", "id": id, "status": "final"}
		for k, v := range extra {
			r[k] = v
		}
		return map[string]any{"fullUrl": "urn:uuid:" + id, "resource": r}
	}
	var o2 map[string]any
	switch how {
	case "logical":
		o2 = obs("o2", map[string]any{"subject": logical(nhs.SystemNHSNumber, second)})
	case "older system":
		o2 = obs("o2", map[string]any{"subject": logical("http://fhir.nhs.net/Id/nhs-number", second)})
	case "contained":
		o2 = obs("o2", map[string]any{
			"contained": []any{map[string]any{"resourceType": "Patient", "id": "p",
				"identifier": []any{map[string]any{"system": nhs.SystemNHSNumber, "value": second}}}},
			"subject": map[string]any{"reference": "#p"},
		})
	}
	return map[string]any{"resourceType": "Bundle", "type": "batch", "entry": []any{
		obs("o1", map[string]any{"subject": logical(nhs.SystemNHSNumber, first)}), o2,
	}}
}

// TestEngineLocalKeyIsUnknownPatient checks that a message known only by
// a local identifier is decided as one whose patient is unknown: the
// opt-out cannot be checked, so a research route may not have it.
func TestEngineLocalKeyIsUnknownPatient(t *testing.T) {
	bundle := map[string]any{"resourceType": "Bundle", "type": "collection", "entry": []any{
		map[string]any{"fullUrl": "urn:uuid:p", "resource": map[string]any{
			"resourceType": "Patient", "id": "p",
			"identifier": []any{map[string]any{"system": "https://fhir.example-trust.nhs.uk/Id/local-patient-identifier", "value": "MRNONLY1"}},
		}},
	}}
	src := &countingSource{}
	e := &Engine{Source: src}
	d, err := e.Decide(context.Background(), Request{Route: "r", Purpose: "research", LegalBasis: "s251",
		Destination: "d", PatientKey: "MRNONLY1", Bundle: bundle, Default: Permit})
	if err != nil {
		t.Fatal(err)
	}
	if d.Outcome != Deny || d.Rule != "gate:opt-out:unknown-patient" {
		t.Errorf("decision %s by %s, want deny by gate:opt-out:unknown-patient", d.Outcome, d.Rule)
	}
	if src.policies+src.optOuts != 0 {
		t.Errorf("the store was asked about a local identifier (%d consent and %d opt-out reads)", src.policies, src.optOuts)
	}
}

// TestEngineLabelsWrittenLoosely checks that a legal label holds back its
// resource however it reaches the engine: on the Bundle, on a contained
// resource, in lower case or without its system.
func TestEngineLabelsWrittenLoosely(t *testing.T) {
	obs := func(meta map[string]any, contained []any) map[string]any {
		res := map[string]any{"resourceType": "Observation", "id": "o"}
		if meta != nil {
			res["meta"] = meta
		}
		if contained != nil {
			res["contained"] = contained
		}
		return res
	}
	security := func(system, code string) map[string]any {
		l := map[string]any{"code": code}
		if system != "" {
			l["system"] = system
		}
		return map[string]any{"security": []any{l}}
	}
	tests := []struct {
		name   string
		bundle map[string]any
	}{
		{"on the Bundle", map[string]any{"resourceType": "Bundle", "meta": security(SystemConfidentiality, "V"),
			"entry": []any{map[string]any{"resource": obs(nil, nil)}}}},
		{"on a contained resource", map[string]any{"resourceType": "Bundle",
			"entry": []any{map[string]any{"resource": obs(nil, []any{map[string]any{"resourceType": "Condition", "meta": security(SystemRestricted, LabelGRA)}})}}}},
		{"lower case", map[string]any{"resourceType": "Bundle",
			"entry": []any{map[string]any{"resource": obs(security(SystemConfidentiality, "v"), nil)}}}},
		{"no system", map[string]any{"resourceType": "Bundle",
			"entry": []any{map[string]any{"resource": obs(security("", LabelGRA), nil)}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := &Engine{Source: memSource{}}
			d, err := e.Decide(context.Background(), Request{Route: "r", Purpose: "direct-care", LegalBasis: "direct-care",
				Destination: "gp", PatientKey: patientA, Bundle: tt.bundle, Default: Permit})
			if err != nil {
				t.Fatal(err)
			}
			if d.Outcome != Deny || !strings.HasPrefix(d.Rule, "gate:legal-label:") {
				t.Errorf("decision %s by %s, want deny by a legal label", d.Outcome, d.Rule)
			}
		})
	}
}

// urnEntry is a Bundle entry of a resource of type rt with id full, at
// fullUrl urn:uuid:full, holding fields.
func urnEntry(full, rt string, fields map[string]any) map[string]any {
	r := map[string]any{"resourceType": rt, "id": full}
	for k, v := range fields {
		r[k] = v
	}
	return map[string]any{"fullUrl": "urn:uuid:" + full, "resource": r}
}

// urnRef is a Reference to the entry urnEntry made for full.
func urnRef(full string) map[string]any { return map[string]any{"reference": "urn:uuid:" + full} }

// TestEngineWithholdsWhatOnlyWithheldResourcesUse checks that a Location
// used only by a withheld Encounter (and named by the Provenance) goes
// with it, while a Practitioner a sent Observation also names stays.
func TestEngineWithholdsWhatOnlyWithheldResourcesUse(t *testing.T) {
	res, ref := urnEntry, urnRef
	bundle := map[string]any{"resourceType": "Bundle", "type": "message", "entry": []any{
		res("h", "MessageHeader", map[string]any{"focus": []any{ref("e")}}),
		res("p", "Patient", map[string]any{"identifier": []any{map[string]any{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": patientA}}}),
		res("e", "Encounter", map[string]any{"subject": ref("p"), "location": []any{map[string]any{"location": ref("l")}},
			"participant": []any{map[string]any{"individual": ref("dr")}}}),
		res("l", "Location", map[string]any{"name": "WARD 1, BED 2"}),
		res("dr", "Practitioner", nil),
		res("o", "Observation", map[string]any{"subject": ref("p"), "performer": []any{ref("dr")}}),
		res("prov", "Provenance", map[string]any{"target": []any{ref("p"), ref("e"), ref("l")}}),
	}}
	deny := []Policy{{ID: "no-enc", Status: "active", Patient: patientA, Root: Provision{Path: "Consent.provision", Type: ProvisionPermit,
		Provisions: []Provision{{Path: "Consent.provision.provision[0]", Type: ProvisionDeny, Classes: []string{"Encounter"}}}}}}
	e := &Engine{Source: memSource{policies: map[string][]Policy{patientA: deny}}}
	d, err := e.Decide(context.Background(), Request{Route: "r", Purpose: "direct-care", LegalBasis: "direct-care",
		Destination: "gp", PatientKey: patientA, Bundle: bundle, Default: Permit})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range d.Resources {
		got = append(got, r.ResourceType+":"+string(r.Outcome))
	}
	want := []string{"MessageHeader:permit", "Patient:permit", "Encounter:deny", "Location:deny", "Practitioner:permit", "Observation:permit", "Provenance:permit"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("verdicts (-want +got):\n%s", diff)
	}
	if r := d.Resources[3]; r.Rule != "consent:no-enc:Consent.provision.provision[0]" || r.Reason != "used only by withheld entry 2 (Encounter)" {
		t.Errorf("the Location's verdict: rule %q, reason %q", r.Rule, r.Reason)
	}
	out, err := Apply(bundle, d)
	if err != nil {
		t.Fatal(err)
	}
	if s := fmt.Sprint(out); strings.Contains(s, "WARD 1") {
		t.Errorf("the withheld admission's ward was sent: %v", s)
	}
}

// TestEngineWithholdsWhatIsAboutWithheldResources checks that resources
// whose subject or patient is withheld go with it (an Observation of a
// withheld Patient would be sent about nobody), with what they in turn
// are the subject of, while a resource merely naming a withheld one in
// another element stays, without that element, and a diagnosis naming a
// withheld Condition goes whole from the Encounter.
func TestEngineWithholdsWhatIsAboutWithheldResources(t *testing.T) {
	res, ref := urnEntry, urnRef
	decide := func(t *testing.T, bundle map[string]any, class string) (Decision, map[string]any) {
		t.Helper()
		deny := []Policy{{ID: "no-" + class, Status: "active", Patient: patientA, Root: Provision{Path: "Consent.provision", Type: ProvisionPermit,
			Provisions: []Provision{{Path: "Consent.provision.provision[0]", Type: ProvisionDeny, Classes: []string{class}}}}}}
		e := &Engine{Source: memSource{policies: map[string][]Policy{patientA: deny}}}
		d, err := e.Decide(context.Background(), Request{Route: "r", Purpose: "direct-care", LegalBasis: "direct-care",
			Destination: "gp", PatientKey: patientA, Bundle: bundle, Default: Permit})
		if err != nil {
			t.Fatal(err)
		}
		out, err := Apply(bundle, d)
		if err != nil {
			t.Fatal(err)
		}
		return d, out
	}
	verdicts := func(d Decision) []string {
		var got []string
		for _, r := range d.Resources {
			got = append(got, r.ResourceType+":"+string(r.Outcome))
		}
		return got
	}
	nhsID := []any{map[string]any{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": patientA}}

	t.Run("withheld patient", func(t *testing.T) {
		bundle := map[string]any{"resourceType": "Bundle", "type": "collection", "entry": []any{
			res("p", "Patient", map[string]any{"identifier": nhsID}),
			res("o", "Observation", map[string]any{"subject": ref("p"), "code": map[string]any{"text": "HbA1c"}}),
			res("a", "AllergyIntolerance", map[string]any{"patient": ref("p")}),
			res("d", "DiagnosticReport", map[string]any{"subject": ref("o")}),
			res("org", "Organization", map[string]any{"name": "Test Surgery"}),
		}}
		d, _ := decide(t, bundle, "Patient")
		want := []string{"Patient:deny", "Observation:deny", "AllergyIntolerance:deny", "DiagnosticReport:deny", "Organization:permit"}
		if diff := cmp.Diff(want, verdicts(d)); diff != "" {
			t.Errorf("verdicts (-want +got):\n%s", diff)
		}
		if r := d.Resources[1]; r.Rule != "consent:no-Patient:Consent.provision.provision[0]" || r.Reason != "its subject is withheld entry 0 (Patient)" {
			t.Errorf("the Observation's verdict: rule %q, reason %q", r.Rule, r.Reason)
		}
		if d.Outcome != Redact {
			t.Errorf("outcome %s, want redact (the Organization goes)", d.Outcome)
		}
	})
	t.Run("withheld diagnosis", func(t *testing.T) {
		bundle := map[string]any{"resourceType": "Bundle", "type": "collection", "entry": []any{
			res("p", "Patient", map[string]any{"identifier": nhsID}),
			res("c", "Condition", map[string]any{"subject": ref("p")}),
			res("e", "Encounter", map[string]any{"subject": ref("p"), "diagnosis": []any{
				map[string]any{"condition": ref("c"), "rank": 1.0}, map[string]any{"condition": map[string]any{"reference": "Condition/other"}, "rank": 2.0}}}),
		}}
		d, out := decide(t, bundle, "Condition")
		want := []string{"Patient:permit", "Condition:deny", "Encounter:permit"}
		if diff := cmp.Diff(want, verdicts(d)); diff != "" {
			t.Errorf("verdicts (-want +got):\n%s", diff)
		}
		enc := out["entry"].([]any)[1].(map[string]any)["resource"].(map[string]any)
		if diff := cmp.Diff([]any{map[string]any{"condition": map[string]any{"reference": "Condition/other"}, "rank": 2.0}}, enc["diagnosis"]); diff != "" {
			t.Errorf("Encounter.diagnosis sent (-want +got):\n%s", diff)
		}
	})
}

// TestEngineTooManyPatients checks that a bundle about more patients than
// MaxPatients is denied whole, without a store read for each.
func TestEngineTooManyPatients(t *testing.T) {
	var entries []any
	for n := 1; len(entries) <= MaxPatients; n++ {
		v := fmt.Sprintf("999%06d", n)
		v += strconv.Itoa(nhsCheckDigit(v))
		if !nhs.ValidNumber(v) {
			continue
		}
		entries = append(entries, map[string]any{"resource": map[string]any{"resourceType": "Patient",
			"identifier": []any{map[string]any{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": v}}}})
	}
	src := &countingSource{}
	d, err := (&Engine{Source: src}).Decide(context.Background(), Request{Route: "r", Purpose: "direct-care", LegalBasis: "direct-care",
		Destination: "d", Bundle: map[string]any{"resourceType": "Bundle", "entry": entries}, Default: Permit})
	if err != nil {
		t.Fatal(err)
	}
	if d.Outcome != Deny || d.Rule != "gate:too-many-patients" || len(d.Resources) != len(entries) {
		t.Errorf("decision %s by %s over %d entries, want deny by gate:too-many-patients over %d", d.Outcome, d.Rule, len(d.Resources), len(entries))
	}
	if src.policies+src.optOuts != 0 {
		t.Errorf("%d store reads for a bundle refused whole", src.policies+src.optOuts)
	}
}

// nhsCheckDigit is the Modulus 11 check digit of the first nine digits,
// or 10 when there is none.
func nhsCheckDigit(nine string) int {
	sum := 0
	for i, c := range nine {
		sum += int(c-'0') * (10 - i)
	}
	d := 11 - sum%11
	if d == 11 {
		d = 0
	}
	return d
}

func TestBundleNHSNumbers(t *testing.T) {
	patient := func(ids ...string) string {
		return `{"resourceType":"Patient","identifier":[` + strings.Join(ids, ",") + `]}`
	}
	nhsID := func(v string) string { return `{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"` + v + `"}` }
	mrn := `{"system":"https://fhir.example-trust.nhs.uk/Id/mrn","value":"9990000018"}`
	bundle := func(resources ...string) string {
		var entries []string
		for _, r := range resources {
			entries = append(entries, `{"resource":`+r+`}`)
		}
		return `{"resourceType":"Bundle","type":"message","entry":[` + strings.Join(entries, ",") + `]}`
	}
	tests := []struct {
		name string
		json string
		want []string
	}{
		{"one patient", bundle(patient(nhsID("9990000018")), `{"resourceType":"Encounter"}`), []string{"9990000018"}},
		{"two patients in order", bundle(patient(nhsID("9990000034")), patient(nhsID("999 000 0018"))), []string{"9990000034", "9990000018"}},
		{"repeated number once", bundle(patient(nhsID("9990000018")), patient(nhsID("9990000018"))), []string{"9990000018"}},
		{"non-breaking spaces and a zero-width space", bundle(patient(nhsID(`999\u00a0000\u200b0018`))), []string{"9990000018"}},
		{"invalid check digit left out", bundle(patient(nhsID("9990000019"))), nil},
		{"other identifier systems left out", bundle(patient(mrn)), nil},
		{"numbers on other resources left out", bundle(`{"resourceType":"RelatedPerson","identifier":[` + nhsID("9990000018") + `]}`), nil},
		{"logical references", bundle(`{"resourceType":"Observation","subject":{"identifier":` + nhsID("9990000034") + `},"performer":[{"identifier":` + nhsID("9990000018") + `}]}`),
			[]string{"9990000018", "9990000034"}},
		{"conditional references", bundle(`{"resourceType":"Condition","subject":{"reference":"Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|9990000085"},"asserter":{"reference":"Patient?identifier=https%3A%2F%2Ffhir.nhs.uk%2FId%2Fnhs-number%7C9990000018"}}`),
			[]string{"9990000018", "9990000085"}},
		{"conditional reference by another system left out", bundle(`{"resourceType":"Condition","subject":{"reference":"Patient?identifier=https://fhir.example-trust.nhs.uk/Id/mrn|9990000085"}}`), nil},
		{"logical reference by another system left out", bundle(`{"resourceType":"Observation","subject":{"identifier":` + mrn + `}}`), nil},
		{"contained Patient", bundle(`{"resourceType":"Observation","contained":[` + patient(nhsID("9990000026")) + `],"subject":{"reference":"#p"}}`), []string{"9990000026"}},
		{"older system spelling", bundle(patient(`{"system":"http://fhir.nhs.net/Id/nhs-number","value":"9990000018"}`)), []string{"9990000018"}},
		{"a single resource", `{"resourceType":"Observation","subject":{"identifier":` + nhsID("9990000018") + `}}`, []string{"9990000018"}},
		{"a Patient alone", patient(nhsID("9990000026")), []string{"9990000026"}},
		{"no entries", `{"resourceType":"Bundle","type":"collection"}`, nil},
		{"Patient in a Bundle an entry carries", bundle(`{"resourceType":"MessageHeader"}`, bundle(patient(nhsID("9990000026")))), []string{"9990000026"}},
		{"Patient two Bundles down", bundle(bundle(bundle(patient(nhsID("9990000034"))))), []string{"9990000034"}},
		{"Patient in a Parameters part", bundle(`{"resourceType":"Parameters","parameter":[{"name":"a","part":[{"name":"b","resource":` + patient(nhsID("9990000018")) + `}]}]}`), []string{"9990000018"}},
		{"Parameters alone", `{"resourceType":"Parameters","parameter":[{"name":"p","resource":` + patient(nhsID("9990000026")) + `}]}`, []string{"9990000026"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var m map[string]any
			if err := json.Unmarshal([]byte(tc.json), &m); err != nil {
				t.Fatal(err)
			}
			got := BundleNHSNumbers(m)
			if !slices.Equal(got, tc.want) {
				t.Errorf("BundleNHSNumbers = %v, want %v", got, tc.want)
			}
			checkEntryNHSNumbers(t, m)
			// The engine decides for the same patients whether it finds
			// them or is given them.
			e := &Engine{Source: memSource{optOut: map[string]OptOutStatus{"9990000034": {OptedOut: true}}}}
			req := Request{Route: "r", Purpose: string(PurposeResearch), LegalBasis: string(BasisS251), Destination: "d", PatientKey: "9990000026", Bundle: m, Default: Permit}
			want, err := e.Decide(context.Background(), req)
			if err != nil {
				t.Fatal(err)
			}
			req.BundlePatients = got
			if dec, err := e.Decide(context.Background(), req); err != nil {
				t.Fatal(err)
			} else if diff := cmp.Diff(want, dec); diff != "" {
				t.Errorf("decision given the patients differs (-found +given):\n%s", diff)
			}
		})
	}
}

// checkEntryNHSNumbers checks that the NHS numbers EntryNHSNumbers finds
// entry by entry join into those BundleNHSNumbers finds, for the bundle
// m and for Bundles of its entries but one, or that it finds none when m
// is not a Bundle.
func checkEntryNHSNumbers(t *testing.T, m map[string]any) {
	t.Helper()
	per := EntryNHSNumbers(m)
	if m["resourceType"] != "Bundle" {
		if per != nil {
			t.Errorf("EntryNHSNumbers of a %v = %v, want nil", m["resourceType"], per)
		}
		return
	}
	if got, want := JoinNHSNumbers(per...), BundleNHSNumbers(m); !slices.Equal(got, want) {
		t.Errorf("joined entry numbers %v, BundleNHSNumbers %v", got, want)
	}
	entries, _ := m["entry"].([]any)
	for i := range entries {
		part := maps.Clone(m)
		part["entry"] = slices.Delete(slices.Clone(entries), i, i+1)
		lists := slices.Delete(slices.Clone(per), i, i+1)
		if got, want := JoinNHSNumbers(lists...), BundleNHSNumbers(part); !slices.Equal(got, want) {
			t.Errorf("without entry %d: joined entry numbers %v, BundleNHSNumbers %v", i, got, want)
		}
	}
}

// TestEngineDecidesForWhatEntriesCarry checks that an entry carrying
// other resources (a document Bundle in a message Bundle, a Parameters)
// goes only as everything it carries may: a refusing patient, a legal
// label or a restricted patient inside it withholds the entry, as they
// would withhold the same resources given as entries. Before, the
// engine saw only the carrier, and all three went out.
func TestEngineDecidesForWhatEntriesCarry(t *testing.T) {
	label := func(code string) map[string]any {
		return map[string]any{"security": []any{map[string]any{"system": SystemConfidentiality, "code": code}}}
	}
	patient := func(nhsNumber string, meta map[string]any) map[string]any {
		p := map[string]any{"resourceType": "Patient", "identifier": []any{map[string]any{"system": nhs.SystemNHSNumber, "value": nhsNumber}},
			"address": []any{map[string]any{"line": []any{"1 Test Street"}}}}
		if meta != nil {
			p["meta"] = meta
		}
		return p
	}
	observation := func(meta map[string]any) map[string]any {
		o := map[string]any{"resourceType": "Observation", "status": "final",
			"subject": map[string]any{"identifier": map[string]any{"system": nhs.SystemNHSNumber, "value": patientA}}}
		if meta != nil {
			o["meta"] = meta
		}
		return o
	}
	document := func(resources ...map[string]any) map[string]any {
		var entries []any
		for _, r := range resources {
			entries = append(entries, map[string]any{"resource": r})
		}
		return map[string]any{"resourceType": "Bundle", "type": "document", "entry": entries}
	}
	parameters := func(r map[string]any) map[string]any {
		return map[string]any{"resourceType": "Parameters", "parameter": []any{map[string]any{"name": "a", "part": []any{map[string]any{"name": "b", "resource": r}}}}}
	}
	withContained := func(r, c map[string]any) map[string]any {
		r["contained"] = []any{c}
		return r
	}
	message := func(carried map[string]any) map[string]any {
		return map[string]any{"resourceType": "Bundle", "type": "message", "entry": []any{
			map[string]any{"resource": map[string]any{"resourceType": "MessageHeader"}},
			map[string]any{"resource": carried},
		}}
	}
	denyB := memSource{policies: map[string][]Policy{patientB: {{ID: "deny-all", Status: "active", Patient: patientB,
		Root: Provision{Path: "Consent.provision", Type: ProvisionDeny}}}}}
	tests := []struct {
		name     string
		src      memSource
		carried  map[string]any
		wantRule string
		want     Outcome
	}{
		{"nothing refused", memSource{}, document(patient(patientA, nil), observation(nil)), "consent:none:route-default-permit", Permit},
		{"a refusing patient in a document", denyB, document(patient(patientB, nil)), "consent:deny-all:Consent.provision", Deny},
		{"a refusing patient in a Parameters", denyB, parameters(patient(patientB, nil)), "consent:deny-all:Consent.provision", Deny},
		{"a refusing patient two Bundles down", denyB, document(document(patient(patientB, nil))), "consent:deny-all:Consent.provision", Deny},
		{"a labelled Observation in a document", memSource{}, document(patient(patientA, nil), observation(label("V"))), "gate:legal-label:V", Deny},
		{"a labelled Observation in a Parameters", memSource{}, parameters(observation(label("V"))), "gate:legal-label:V", Deny},
		// A restricted patient's Patient, carried, loses its contact
		// details as it would as an entry; the document still goes.
		{"a restricted patient in a document", memSource{}, document(patient(patientA, label("R")), observation(nil)), "gate:restricted-patient:nested", Redact},
		// Carried through contained resources as well.
		{"a labelled Observation in a Bundle in a Parameters contained", memSource{},
			withContained(observation(nil), parameters(document(observation(label("V"))))), "gate:legal-label:V", Deny},
		{"a labelled Observation in a contained Bundle", memSource{}, withContained(observation(nil), document(observation(label("V")))), "gate:legal-label:V", Deny},
		{"a restricted patient in a contained Parameters", memSource{}, withContained(observation(nil), parameters(patient(patientA, label("R")))), "gate:restricted-patient:nested", Redact},
		{"a refusing patient in a contained Bundle", denyB, withContained(observation(nil), document(patient(patientB, nil))), "consent:deny-all:Consent.provision", Deny},
		{"a labelled outcome of a response", memSource{}, map[string]any{"resourceType": "Bundle", "type": "batch-response", "entry": []any{
			map[string]any{"response": map[string]any{"status": "201", "outcome": observation(label("V"))}}}}, "gate:legal-label:V", Deny},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := &Engine{Source: tt.src}
			d, err := e.Decide(context.Background(), Request{Route: "r", Purpose: "direct-care", LegalBasis: "direct-care",
				Destination: "d", Bundle: message(tt.carried), Default: Permit})
			if err != nil {
				t.Fatal(err)
			}
			if len(d.Resources) != 2 {
				t.Fatalf("%d verdicts, want 2", len(d.Resources))
			}
			got := d.Resources[1]
			if got.Outcome != tt.want || got.Rule != tt.wantRule {
				t.Errorf("carrying entry: %s by %s (%s), want %s by %s", got.Outcome, got.Rule, got.Reason, tt.want, tt.wantRule)
			}
			applied, err := Apply(message(tt.carried), d)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := json.Marshal(applied)
			switch tt.want {
			case Deny:
				if strings.Contains(string(b), "Test Street") || strings.Contains(string(b), `"Observation"`) {
					t.Errorf("withheld data still sent: %s", b)
				}
			case Redact:
				if strings.Contains(string(b), "Test Street") {
					t.Errorf("a restricted patient's address still sent: %s", b)
				}
				if !strings.Contains(string(b), `"Patient"`) || !strings.Contains(string(b), `"valueCode":"address"`) {
					t.Errorf("the carried Patient was not sent marked as losing its address: %s", b)
				}
			}
		})
	}
}

// relayedBundle is the minimal translation of a relayed HL7 v2 message
// about patients: its MessageHeader, a Patient per NHS number and the
// Provenance, and nothing of the data the message itself carries.
func relayedBundle(nhsNumbers ...string) map[string]any {
	entries := []any{map[string]any{"fullUrl": "urn:uuid:h", "resource": map[string]any{"resourceType": "MessageHeader", "id": "h"}}}
	for i, n := range nhsNumbers {
		id := "p" + strconv.Itoa(i+1)
		entries = append(entries, map[string]any{"fullUrl": "urn:uuid:" + id, "resource": map[string]any{
			"resourceType": "Patient", "id": id,
			"identifier": []any{map[string]any{"system": nhs.SystemNHSNumber, "value": n}},
		}})
	}
	entries = append(entries, map[string]any{"fullUrl": "urn:uuid:v", "resource": map[string]any{"resourceType": "Provenance", "id": "v"}})
	return map[string]any{"resourceType": "Bundle", "type": "message", "entry": entries}
}

// TestEngineOpaque checks that a relayed message (Request.Opaque), whose
// data Junction cannot see, is denied whole by a Consent provision
// refusing a kind of data (type, code, label, data period) that it may
// hold, while the provisions' other conditions (period, recipient,
// purpose) are checked as ever, and that a provision permitting a kind
// of data does not permit it.
func TestEngineOpaque(t *testing.T) {
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	orders := []string{"ServiceRequest"}
	snomed := []Coding{{System: "http://snomed.info/sct", Code: "1001"}}
	permitBut := func(child Provision) Provision {
		child.Path = "Consent.provision.provision[0]"
		return Provision{Path: "Consent.provision", Type: ProvisionPermit, Provisions: []Provision{child}}
	}
	tests := []struct {
		name       string
		root       Provision
		patient    string // whose Consent it is
		def        Outcome
		wantOpaque Outcome
		wantRule   string
		wantPlain  Outcome // the same bundle, not opaque
	}{
		{"no Consent speaks", Provision{}, "", Permit, Permit, "consent:none:route-default-permit", Permit},
		{"a kind of data refused", permitBut(Provision{Type: ProvisionDeny, Classes: orders}), patientA, Permit,
			Deny, "consent:c:Consent.provision.provision[0]", Permit},
		{"a code refused", permitBut(Provision{Type: ProvisionDeny, Codes: snomed}), patientA, Permit,
			Deny, "consent:c:Consent.provision.provision[0]", Permit},
		{"a label refused", permitBut(Provision{Type: ProvisionDeny, Labels: []Coding{{System: SystemRestricted, Code: LabelSexualHealth}}}), patientA, Permit,
			Deny, "consent:c:Consent.provision.provision[0]", Permit},
		{"data of a period refused", permitBut(Provision{Type: ProvisionDeny, DataPeriod: Period{Start: time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)}}), patientA, Permit,
			Deny, "consent:c:Consent.provision.provision[0]", Permit},
		{"the second patient refuses a kind of data", permitBut(Provision{Type: ProvisionDeny, Classes: orders}), patientB, Permit,
			Deny, "consent:c:Consent.provision.provision[0]", Permit},
		{"refused to another recipient", permitBut(Provision{Type: ProvisionDeny, Classes: orders, Actors: []string{"B82002"}}), patientA, Permit,
			Permit, "consent:c:Consent.provision", Permit},
		{"refused for another purpose", permitBut(Provision{Type: ProvisionDeny, Classes: orders,
			Purposes: []Coding{{System: "http://terminology.hl7.org/CodeSystem/v3-ActReason", Code: "HRESCH"}}}), patientA, Permit,
			Permit, "consent:c:Consent.provision", Permit},
		{"a refusal no longer in force", permitBut(Provision{Type: ProvisionDeny, Classes: orders,
			Period: Period{End: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}}), patientA, Permit,
			Permit, "consent:c:Consent.provision", Permit},
		{"only a kind of data permitted, default deny", Provision{Path: "Consent.provision", Type: ProvisionPermit, Classes: []string{"Patient", "MessageHeader", "Provenance"}}, patientA, Deny,
			Deny, "consent:none:route-default-deny", Permit},
		{"all refused but a kind of data", Provision{Path: "Consent.provision", Type: ProvisionDeny,
			Provisions: []Provision{{Path: "Consent.provision.provision[0]", Type: ProvisionPermit, Classes: []string{"Patient", "MessageHeader", "Provenance"}}}}, patientA, Permit,
			Deny, "consent:c:Consent.provision", Permit},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := memSource{}
			if tt.patient != "" {
				src.policies = map[string][]Policy{tt.patient: {{ID: "c", Status: "active", Patient: tt.patient, Root: tt.root}}}
			}
			// The message is about patientA, and about patientB too when
			// it is patientB's Consent.
			patients := []string{patientA}
			if tt.patient == patientB {
				patients = append(patients, patientB)
			}
			e := &Engine{Source: src, Now: func() time.Time { return now },
				Destinations: map[string]Destination{"lims": {Name: "lims", ODS: "A81001"}}}
			for _, opaque := range []bool{true, false} {
				d, err := e.Decide(context.Background(), Request{Route: "r", Purpose: "direct-care", LegalBasis: "direct-care",
					Destination: "lims", PatientKey: patientA, Bundle: relayedBundle(patients...), Default: tt.def, Opaque: opaque})
				if err != nil {
					t.Fatal(err)
				}
				want := tt.wantPlain
				if opaque {
					want = tt.wantOpaque
				}
				if d.Outcome != want {
					t.Errorf("opaque %v: decision %s by %s (%s), want %s", opaque, d.Outcome, d.Rule, d.Reason, want)
				}
				if opaque && d.Rule != tt.wantRule {
					t.Errorf("opaque: rule %s, want %s", d.Rule, tt.wantRule)
				}
				if n := len(patients) + 2; opaque && d.Outcome == Deny && len(d.Resources) != n {
					t.Errorf("opaque: %d entry verdicts, want one for each of the %d entries", len(d.Resources), n)
				}
			}
		})
	}
}

// TestEngineOtherPatients checks that the patients a message carries
// beyond those its Bundle names (Request.OtherPatients: a relayed
// message's PID named by a local identifier the patient index knows;
// Request.UnidentifiedPatient: one nobody knows) are decided for too: an
// opted-out one denies a research disclosure, as does one whose opt-out
// cannot be checked, while for direct care an unknown patient is decided
// by the route's default.
func TestEngineOtherPatients(t *testing.T) {
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name         string
		purpose      string
		basis        string
		def          Outcome
		others       []string
		unidentified bool
		want         Outcome
		wantRule     string
	}{
		{"research, no other patient", "research", "s251", Permit, nil, false, Permit, "consent:none:route-default-permit"},
		{"research, another patient opted out", "research", "s251", Permit, []string{patientB}, false, Deny, "gate:opt-out"},
		{"research, another patient unknown", "research", "s251", Permit, nil, true, Deny, "gate:opt-out:unknown-patient"},
		{"direct care, another patient opted out", "direct-care", "direct-care", Permit, []string{patientB}, false, Permit, "consent:none:route-default-permit"},
		{"direct care, another patient unknown", "direct-care", "direct-care", Permit, nil, true, Permit, "consent:none:route-default-permit"},
		{"direct care by default deny, another patient unknown", "direct-care", "direct-care", Deny, nil, true, Deny, "consent:none:route-default-deny"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := memSource{optOut: map[string]OptOutStatus{patientB: {OptedOut: true}}}
			e := &Engine{Source: src, Now: func() time.Time { return now },
				Destinations: map[string]Destination{"lis": {Name: "lis", ODS: "A81001"}}}
			d, err := e.Decide(context.Background(), Request{Route: "r", Purpose: tt.purpose, LegalBasis: tt.basis,
				Destination: "lis", PatientKey: patientA, Bundle: relayedBundle(patientA), Default: tt.def, Opaque: true,
				OtherPatients: tt.others, UnidentifiedPatient: tt.unidentified})
			if err != nil {
				t.Fatal(err)
			}
			if d.Outcome != tt.want || d.Rule != tt.wantRule {
				t.Errorf("decision %s by %s (%s), want %s by %s", d.Outcome, d.Rule, d.Reason, tt.want, tt.wantRule)
			}
		})
	}
}
