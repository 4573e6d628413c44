package route

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/junction-fhir/junction/pkg/adapter"
	"github.com/junction-fhir/junction/pkg/audit"
	"github.com/junction-fhir/junction/pkg/consent"
	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/hl7v2"
)

// memSource is a consent.Source held in memory.
type memSource struct {
	policies map[string][]consent.Policy
}

func (m memSource) Policies(_ context.Context, patient string) ([]consent.Policy, error) {
	return m.policies[patient], nil
}

func (m memSource) OptOut(context.Context, string, time.Time) (consent.OptOutStatus, error) {
	return consent.OptOutStatus{}, nil
}

// consentDoc returns a Consent in the Junction profile for patient with
// the given root provision, parsed as the store would.
func consentDoc(t testing.TB, id, patient string, provision map[string]any) consent.Policy {
	t.Helper()
	doc := map[string]any{
		"resourceType": "Consent", "id": id, "status": "active",
		"scope":     map[string]any{"coding": []any{map[string]any{"system": consent.SystemConsentScope, "code": "patient-privacy"}}},
		"category":  []any{map[string]any{"coding": []any{map[string]any{"system": "http://loinc.org", "code": "59284-0"}}}},
		"patient":   map[string]any{"identifier": map[string]any{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": patient}},
		"provision": provision,
	}
	raw, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	pol, issues := consent.ParsePolicy(raw)
	if len(issues) > 0 {
		t.Fatalf("test Consent outside the profile: %v", issues)
	}
	return pol
}

// denyClass is a root permit with a nested deny of one resource type.
func denyClass(resourceType string) map[string]any {
	return map[string]any{"type": "permit", "provision": []any{map[string]any{
		"type":  "deny",
		"class": []any{map[string]any{"system": consent.SystemResourceTypes, "code": resourceType}},
	}}}
}

// linkedBundle is a translated ADT message whose resources reference each
// other: MessageHeader.focus names the Encounter and the Patient, and the
// Observation names both in subject and encounter.
func linkedBundle(nhsNumber string) []byte {
	return []byte(`{"resourceType":"Bundle","type":"message","entry":[` +
		`{"fullUrl":"urn:uuid:h1","resource":{"resourceType":"MessageHeader","id":"h1","focus":[{"reference":"Encounter/e1"},{"reference":"Patient/p1"}]}},` +
		`{"fullUrl":"urn:uuid:p1","resource":{"resourceType":"Patient","id":"p1","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"` + nhsNumber + `"}]}},` +
		`{"fullUrl":"urn:uuid:e1","resource":{"resourceType":"Encounter","id":"e1","status":"in-progress","subject":{"reference":"Patient/p1"}}},` +
		`{"fullUrl":"urn:uuid:o1","resource":{"resourceType":"Observation","id":"o1","status":"final","subject":{"reference":"Patient/p1"},"encounter":{"reference":"Encounter/e1"}}}]}`)
}

// linkedInput is linkedBundle as the translation of an ADT^A01.
func linkedInput(t *testing.T, nhsNumber string) Input {
	t.Helper()
	raw := []byte(adtMessage("A01", nhsNumber))
	m, err := hl7v2.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	env := TestEnvelope("pas", "01TESTMSG", raw, envelope.ContentTypeHL7v2)
	return Input{Env: env, Tr: &adapter.Translation{Bundle: linkedBundle(nhsNumber), PatientKey: nhsNumber, Event: m.Event(), V2: m}}
}

// consentRecord is a consent audit record reduced to what the tests check.
type consentRecord struct {
	Destination, Outcome, Rule, Reason string
}

func consentRecords(res *Result) []consentRecord {
	var out []consentRecord
	for _, r := range res.Records {
		if r.Event == audit.Consent {
			out = append(out, consentRecord{Destination: r.Destination, Outcome: r.Outcome, Rule: r.Rule, Reason: r.Reason})
		}
	}
	return out
}

// types lists the resource types of a bundle's entries in order.
func types(t *testing.T, body []byte) []string {
	t.Helper()
	var b struct {
		Entry []struct {
			Resource map[string]any `json:"resource"`
		} `json:"entry"`
	}
	if err := json.Unmarshal(body, &b); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range b.Entry {
		out = append(out, e.Resource["resourceType"].(string))
	}
	return out
}

func TestProcessConsentEngine(t *testing.T) {
	const patient = "9990000026"
	other := "9990000034"
	routeFHIR := routeHead + permit + "destinations:\n  - name: fhir-store\n"
	routeRaw := routeHead + permit + "destinations:\n  - name: data-quality\n    payload: raw\n"
	routeKeep := routeHead + permit + "transform:\n  - keep: resource.resourceType != \"MessageHeader\"\ndestinations:\n  - name: fhir-store\n"
	routeV2 := routeHead + permit + "transform:\n  - replace: '{\"resourceType\": \"Bundle\", \"type\": bundle.type, \"entry\": bundle.entry + [{\"resource\": {\"resourceType\": \"Basic\", \"code\": {\"text\": \"address: \" + v2.get(\"PID-11\")}}}]}'\ndestinations:\n  - name: fhir-store\n"
	routeSkip := routeHead + "consent:\n  purpose: safeguarding\n  legal_basis: safeguarding\n  default: deny\n  skip_consent_gate: true\ndestinations:\n  - name: fhir-store\n"
	denyAll := map[string]any{"type": "deny"}
	tests := []struct {
		name     string
		route    string
		consents []consent.Policy
		// wantTypes are the resource types delivered to fhir-store; nil
		// means nothing is delivered.
		wantTypes  []string
		wantDenied []string
		wantRecs   []consentRecord
		// check inspects the delivered body.
		check func(t *testing.T, body []byte)
	}{
		{
			name: "no consent: route default permits", route: routeFHIR,
			wantTypes: []string{"MessageHeader", "Patient", "Encounter", "Observation"},
			wantRecs:  []consentRecord{{"fhir-store", "permit", "consent:none:route-default-permit", "all 4 resources permitted"}},
			check: func(t *testing.T, body []byte) {
				if string(body) != string(linkedBundle(patient)) {
					t.Errorf("a permitted bundle must go unchanged, got %s", body)
				}
			},
		},
		{
			name: "another patient's deny changes nothing", route: routeFHIR,
			consents:  []consent.Policy{consentDoc(t, "c-other", other, denyAll)},
			wantTypes: []string{"MessageHeader", "Patient", "Encounter", "Observation"},
			wantRecs:  []consentRecord{{"fhir-store", "permit", "consent:none:route-default-permit", "all 4 resources permitted"}},
		},
		{
			name: "a deny of everything denies the destination", route: routeFHIR,
			consents:   []consent.Policy{consentDoc(t, "c-deny", patient, denyAll)},
			wantDenied: []string{"fhir-store"},
			wantRecs: []consentRecord{
				{"fhir-store", "deny", "consent:c-deny:Consent.provision", "a consent provision denies"},
				{"fhir-store", OutcomeWithheld, "consent:c-deny:Consent.provision", "entry 0 (MessageHeader): a consent provision denies"},
				{"fhir-store", OutcomeWithheld, "consent:c-deny:Consent.provision", "entry 1 (Patient): a consent provision denies"},
				{"fhir-store", OutcomeWithheld, "consent:c-deny:Consent.provision", "entry 2 (Encounter): a consent provision denies"},
				{"fhir-store", OutcomeWithheld, "consent:c-deny:Consent.provision", "entry 3 (Observation): a consent provision denies"},
			},
		},
		{
			name: "a deny of one type drops it and references to it", route: routeFHIR,
			consents:  []consent.Policy{consentDoc(t, "c-enc", patient, denyClass("Encounter"))},
			wantTypes: []string{"MessageHeader", "Patient", "Observation"},
			wantRecs: []consentRecord{
				{"fhir-store", "redact", "consent:c-enc:Consent.provision.provision[0]", "1 of 4 resources withheld, 0 stripped; first: a consent provision denies"},
				{"fhir-store", OutcomeWithheld, "consent:c-enc:Consent.provision.provision[0]", "entry 2 (Encounter): a consent provision denies"},
			},
			check: func(t *testing.T, body []byte) {
				if strings.Contains(string(body), "Encounter/e1") || strings.Contains(string(body), `"e1"`) {
					t.Errorf("redacted bundle still names the Encounter: %s", body)
				}
				if !strings.Contains(string(body), `"focus":[{"reference":"Patient/p1"}]`) {
					t.Errorf("MessageHeader.focus should keep only the Patient: %s", body)
				}
			},
		},
		{
			name: "transform runs on the redacted bundle", route: routeKeep,
			consents:  []consent.Policy{consentDoc(t, "c-obs", patient, denyClass("Observation"))},
			wantTypes: []string{"Patient", "Encounter"},
			wantRecs: []consentRecord{
				{"fhir-store", "redact", "consent:c-obs:Consent.provision.provision[0]", "1 of 4 resources withheld, 0 stripped; first: a consent provision denies"},
				{"fhir-store", OutcomeWithheld, "consent:c-obs:Consent.provision.provision[0]", "entry 3 (Observation): a consent provision denies"},
			},
		},
		{
			name: "a transform reading v2 after a redaction is denied", route: routeV2,
			consents:   []consent.Policy{consentDoc(t, "c-enc", patient, denyClass("Encounter"))},
			wantDenied: []string{"fhir-store"},
			wantRecs: []consentRecord{
				{"fhir-store", "deny", "consent:c-enc:Consent.provision.provision[0]", "a replace step reads v2 or patient, which consent cannot redact: 1 of 4 resources withheld, 0 stripped; first: a consent provision denies"},
				{"fhir-store", OutcomeWithheld, "consent:c-enc:Consent.provision.provision[0]", "entry 2 (Encounter): a consent provision denies"},
			},
		},
		{
			name: "a transform reading v2 runs when nothing is redacted", route: routeV2,
			wantTypes: []string{"MessageHeader", "Patient", "Encounter", "Observation", "Basic"},
			wantRecs:  []consentRecord{{"fhir-store", "permit", "consent:none:route-default-permit", "all 4 resources permitted"}},
		},
		{
			name: "a raw payload that would be redacted is denied", route: routeRaw,
			consents:   []consent.Policy{consentDoc(t, "c-enc", patient, denyClass("Encounter"))},
			wantDenied: []string{"data-quality"},
			wantRecs: []consentRecord{
				{"data-quality", "deny", "consent:c-enc:Consent.provision.provision[0]", "raw payload cannot be redacted: 1 of 4 resources withheld, 0 stripped; first: a consent provision denies"},
				{"data-quality", OutcomeWithheld, "consent:c-enc:Consent.provision.provision[0]", "entry 2 (Encounter): a consent provision denies"},
			},
		},
		{
			// The raw message may carry what the translation does not
			// map (an AL1 it leaves out, a Z segment).
			name: "a raw payload is denied by a deny of data its translation does not show", route: routeRaw,
			consents:   []consent.Policy{consentDoc(t, "c-alg", patient, denyClass("AllergyIntolerance"))},
			wantDenied: []string{"data-quality"},
			wantRecs: []consentRecord{
				{"data-quality", "deny", "consent:c-alg:Consent.provision.provision[0]", "a consent provision denies what the message, sent as it came, may hold beyond its translation"},
				{"data-quality", OutcomeWithheld, "consent:c-alg:Consent.provision.provision[0]", "entry 0 (MessageHeader): a consent provision denies what the message, sent as it came, may hold beyond its translation"},
				{"data-quality", OutcomeWithheld, "consent:c-alg:Consent.provision.provision[0]", "entry 1 (Patient): a consent provision denies what the message, sent as it came, may hold beyond its translation"},
				{"data-quality", OutcomeWithheld, "consent:c-alg:Consent.provision.provision[0]", "entry 2 (Encounter): a consent provision denies what the message, sent as it came, may hold beyond its translation"},
				{"data-quality", OutcomeWithheld, "consent:c-alg:Consent.provision.provision[0]", "entry 3 (Observation): a consent provision denies what the message, sent as it came, may hold beyond its translation"},
			},
		},
		{
			name: "the same deny leaves the translation whole", route: routeFHIR,
			consents:  []consent.Policy{consentDoc(t, "c-alg", patient, denyClass("AllergyIntolerance"))},
			wantTypes: []string{"MessageHeader", "Patient", "Encounter", "Observation"},
			wantRecs:  []consentRecord{{"fhir-store", "permit", "consent:c-alg:Consent.provision", "all 4 resources permitted"}},
		},
		{
			name: "a statutory route skips the consent gate, audited", route: routeSkip,
			consents:  []consent.Policy{consentDoc(t, "c-deny", patient, denyAll)},
			wantTypes: []string{"MessageHeader", "Patient", "Encounter", "Observation"},
			wantRecs: []consentRecord{
				{"fhir-store", "permit", "consent:skipped:safeguarding", "all 4 resources permitted (statutory route: consent gate skipped)"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := writeRoute(t, tt.route)
			src := memSource{policies: map[string][]consent.Policy{}}
			for _, p := range tt.consents {
				src.policies[p.Patient] = append(src.policies[p.Patient], p)
			}
			eng := &consent.Engine{Source: src}
			res, err := r.Process(context.Background(), linkedInput(t, patient), eng)
			if err != nil {
				t.Fatalf("Process: %v", err)
			}
			if diff := cmp.Diff(tt.wantRecs, consentRecords(res)); diff != "" {
				t.Errorf("consent records (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantDenied, res.Denied); diff != "" {
				t.Errorf("denied (-want +got):\n%s", diff)
			}
			if tt.wantTypes == nil {
				if len(res.Deliveries) != 0 {
					t.Fatalf("delivered %d payloads, want none", len(res.Deliveries))
				}
				return
			}
			if len(res.Deliveries) != 1 {
				t.Fatalf("delivered %d payloads, want 1", len(res.Deliveries))
			}
			body := res.Deliveries[0].Body
			if diff := cmp.Diff(tt.wantTypes, types(t, body)); diff != "" {
				t.Errorf("delivered resource types (-want +got):\n%s", diff)
			}
			if tt.check != nil {
				tt.check(t, body)
			}
		})
	}
}

// skipCounter records decisions that skipped the consent gate.
type skipCounter struct {
	consent.Decider
	skipped []string
}

func (s *skipCounter) Decide(ctx context.Context, req consent.Request) (consent.Decision, error) {
	d, err := s.Decider.Decide(ctx, req)
	if d.ConsentSkipped {
		s.skipped = append(s.skipped, req.Route+"/"+req.Destination)
	}
	return d, err
}

// TestProcessPassesRouteDeclaration checks that the route's legal basis
// and skip reach the decider, and that a route which does not declare a
// skip never skips.
func TestProcessPassesRouteDeclaration(t *testing.T) {
	tests := []struct {
		name, consent string
		wantSkipped   []string
	}{
		{"direct care does not skip", "consent:\n  purpose: direct-care\n  legal_basis: direct-care\n  default: permit\n", nil},
		{"statutory public health skips", "consent:\n  purpose: public-health\n  legal_basis: statutory\n  default: permit\n  skip_consent_gate: true\n", []string{"test-route/fhir-store"}},
		{"safeguarding without skip does not skip", "consent:\n  purpose: safeguarding\n  legal_basis: safeguarding\n  default: permit\n", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := writeRoute(t, routeHead+tt.consent+"destinations:\n  - name: fhir-store\n")
			sc := &skipCounter{Decider: &consent.Engine{Source: memSource{}}}
			res, err := r.Process(context.Background(), linkedInput(t, "9990000026"), sc)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.wantSkipped, sc.skipped); diff != "" {
				t.Errorf("skipped (-want +got):\n%s", diff)
			}
			if len(res.Deliveries) != 1 {
				t.Errorf("delivered %d payloads, want 1", len(res.Deliveries))
			}
		})
	}
}

// scriptedDecider returns a fixed decision.
type scriptedDecider struct{ dec consent.Decision }

func (s scriptedDecider) Decide(context.Context, consent.Request) (consent.Decision, error) {
	return s.dec, nil
}

// TestProcessRedactionEdges checks that a redaction without per-resource
// verdicts is refused rather than sent whole, and that the per-resource
// records of a huge bundle are bounded, the rest counted.
func TestProcessRedactionEdges(t *testing.T) {
	const entries = 301
	var list []string
	for i := range entries {
		list = append(list, fmt.Sprintf(`{"fullUrl":"urn:uuid:o%d","resource":{"resourceType":"Observation","id":"o%d","status":"final"}}`, i, i))
	}
	big := []byte(`{"resourceType":"Bundle","type":"collection","entry":[` + strings.Join(list, ",") + `]}`)
	bigDecision := consent.Decision{Outcome: consent.Redact, Reason: "test", Rule: "test:redact"}
	for i := range entries {
		v := consent.Verdict{Outcome: consent.Deny, Reason: "test deny", Rule: "test:deny"}
		if i == 0 {
			v = consent.Verdict{Outcome: consent.Permit, Reason: "test permit", Rule: "test:permit"}
		}
		bigDecision.Resources = append(bigDecision.Resources, consent.ResourceDecision{Index: i, ResourceType: "Observation", Verdict: v})
	}
	tests := []struct {
		name       string
		dec        consent.Decision
		body       []byte
		wantDenied bool
		// wantOutcomes counts consent records by outcome.
		wantOutcomes map[string]int
		wantLast     string // reason of the last consent record
	}{
		{
			name: "redact without verdicts is denied", dec: consent.Decision{Outcome: consent.Redact, Reason: "vague", Rule: "test:vague"},
			body: linkedBundle("9990000026"), wantDenied: true,
			wantOutcomes: map[string]int{"deny": 1}, wantLast: "redaction without per-resource verdicts: vague",
		},
		{
			name: "per-resource records are bounded", dec: bigDecision, body: big,
			wantOutcomes: map[string]int{"redact": 1, OutcomeWithheld: maxResourceRecords + 1},
			wantLast:     fmt.Sprintf("%d more resources withheld, not listed one by one", entries-1-maxResourceRecords),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := writeRoute(t, routeHead+permit+"destinations:\n  - name: fhir-store\n")
			in := linkedInput(t, "9990000026")
			in.Tr.Bundle = tt.body
			res, err := r.Process(context.Background(), in, scriptedDecider{tt.dec})
			if err != nil {
				t.Fatal(err)
			}
			recs := consentRecords(res)
			got := map[string]int{}
			for _, c := range recs {
				got[c.Outcome]++
			}
			if diff := cmp.Diff(tt.wantOutcomes, got); diff != "" {
				t.Errorf("consent records by outcome (-want +got):\n%s", diff)
			}
			if last := recs[len(recs)-1].Reason; last != tt.wantLast {
				t.Errorf("last record reason %q, want %q", last, tt.wantLast)
			}
			if tt.wantDenied != (len(res.Deliveries) == 0) {
				t.Errorf("delivered %d payloads; denied should be %v", len(res.Deliveries), tt.wantDenied)
			}
			if !tt.wantDenied {
				if n := len(types(t, res.Deliveries[0].Body)); n != 1 {
					t.Errorf("redacted payload has %d entries, want 1", n)
				}
			}
		})
	}
}
