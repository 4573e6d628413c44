package route

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/junction-fhir/junction/adapters/pas"
	"github.com/junction-fhir/junction/pkg/adapter"
	"github.com/junction-fhir/junction/pkg/audit"
	"github.com/junction-fhir/junction/pkg/consent"
	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/fault"
	"github.com/junction-fhir/junction/pkg/hl7v2"
	"github.com/junction-fhir/junction/pkg/jsonmap"
	"github.com/junction-fhir/junction/pkg/nhs"
	"github.com/junction-fhir/junction/pkg/rules"
)

// Synthetic NHS numbers from the 999 range.
const (
	validNHS   = "9990000018"
	invalidNHS = "9990000019"
)

// adtMessage is a synthetic ADT message of the given event for a patient
// with the given NHS number.
func adtMessage(event, nhsNumber string) string {
	return "MSH|^~\\&|PAS|RX1|JUNCTION|RX1|20261123093000||ADT^" + event + "^ADT_A01|MSG00001|P|2.4|||AL|NE\r" +
		"EVN|" + event + "|20261123093000\r" +
		"PID|1||" + nhsNumber + "^^^NHS^NH~K123456^^^RX1^MR||TESTPATIENT^ALEX^J^^MX||19800101|F\r" +
		"PV1|1|I|WARD1^BED2^1^RX1\r"
}

// adtBundle is what a translator might make of adtMessage.
func adtBundle(nhsNumber string) []byte {
	return []byte(`{"resourceType":"Bundle","type":"message","entry":[` +
		`{"resource":{"resourceType":"MessageHeader","id":"h1"}},` +
		`{"resource":{"resourceType":"Patient","id":"p1","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"` + nhsNumber + `"}]}},` +
		`{"resource":{"resourceType":"Encounter","id":"e1","status":"in-progress"}}]}`)
}

// writeRoute writes a route file in a temp dir and loads it.
func writeRoute(t *testing.T, src string) *Route {
	t.Helper()
	path := filepath.Join(t.TempDir(), "route.yaml")
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := Load(path, testEnv(t), testCatalog)
	if err != nil {
		t.Fatalf("Load:\n%v", err)
	}
	return r
}

// v2Input is a translated ADT message of the given event.
func v2Input(t *testing.T, event, nhsNumber string) Input {
	t.Helper()
	raw := []byte(adtMessage(event, nhsNumber))
	m, err := hl7v2.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	env := TestEnvelope("pas", "01TESTMSG", raw, envelope.ContentTypeHL7v2)
	return Input{Env: env, Tr: &adapter.Translation{Bundle: adtBundle(nhsNumber), PatientKey: nhsNumber, Event: m.Event(), V2: m}}
}

// fakeDecider denies the listed destinations, or fails.
type fakeDecider struct {
	deny []string
	err  error
	reqs []consent.Request
}

func (d *fakeDecider) Decide(_ context.Context, req consent.Request) (consent.Decision, error) {
	d.reqs = append(d.reqs, req)
	if d.err != nil {
		return consent.Decision{}, d.err
	}
	for _, n := range d.deny {
		if n == req.Destination {
			return consent.Decision{Outcome: consent.Deny, Reason: "test denies", Rule: "test:deny"}, nil
		}
	}
	return consent.Decision{Outcome: consent.Permit, Reason: "test permits", Rule: "test:permit"}, nil
}

// step is a record reduced to what Process decides.
type recSummary struct {
	Event                          audit.Event
	Destination, Outcome, Rule, ID string
}

type resultSummary struct {
	Taken, Matched bool
	Deliveries     map[string]string // destination -> content type
	Denied         []string
	Records        []recSummary
}

func summarize(r *Result) resultSummary {
	s := resultSummary{Taken: r.Taken, Matched: r.Matched, Denied: r.Denied}
	for _, d := range r.Deliveries {
		if s.Deliveries == nil {
			s.Deliveries = map[string]string{}
		}
		s.Deliveries[d.Destination] = d.ContentType
	}
	for _, rec := range r.Records {
		s.Records = append(s.Records, recSummary{Event: rec.Event, Destination: rec.Destination, Outcome: rec.Outcome, Rule: rec.Rule, ID: rec.MessageID})
	}
	return s
}

const routeHead = `name: test-route
source:
  adapter: pas
`

const permit = `consent:
  purpose: direct-care
  legal_basis: direct-care
  default: permit
`

func TestProcess(t *testing.T) {
	const id = "01TESTMSG"
	matched := recSummary{Event: audit.Matched, Outcome: "matched", Rule: "match", ID: id}
	consentOK := func(dest string) recSummary {
		return recSummary{Event: audit.Consent, Destination: dest, Outcome: "permit", Rule: "route:test-route:default", ID: id}
	}
	transformed := func(dest string) recSummary {
		return recSummary{Event: audit.Transformed, Destination: dest, Outcome: "ok", Rule: "transform", ID: id}
	}
	fhirCT := envelope.ContentTypeFHIR
	tests := []struct {
		name  string
		route string
		in    func(t *testing.T) Input
		want  resultSummary
		// bundle, when set, is the JSON payload the first delivery must
		// carry (compared as JSON).
		bundle string
	}{
		{
			name:  "event taken in full form",
			route: routeHead + "  events: [ADT^A01]\n" + permit + "destinations:\n  - name: fhir-store\n",
			in:    func(t *testing.T) Input { return v2Input(t, "A01", validNHS) },
			want: resultSummary{Taken: true, Matched: true, Deliveries: map[string]string{"fhir-store": fhirCT},
				Records: []recSummary{matched, consentOK("fhir-store")}},
			bundle: string(adtBundle(validNHS)),
		},
		{
			name:  "event taken in short form",
			route: routeHead + "  events: [A03, A01]\n" + permit + "destinations:\n  - name: fhir-store\n",
			in:    func(t *testing.T) Input { return v2Input(t, "A01", validNHS) },
			want: resultSummary{Taken: true, Matched: true, Deliveries: map[string]string{"fhir-store": fhirCT},
				Records: []recSummary{matched, consentOK("fhir-store")}},
		},
		{
			name:  "event not taken",
			route: routeHead + "  events: [ADT^A01, A03]\n" + permit + "destinations:\n  - name: fhir-store\n",
			in:    func(t *testing.T) Input { return v2Input(t, "A02", validNHS) },
			want:  resultSummary{Records: []recSummary{{Event: audit.Filtered, Outcome: "not-taken", Rule: "source.events", ID: id}}},
		},
		{
			name:  "match false filters",
			route: routeHead + "match: nhsNumberValid(nhsNumber(bundle))\n" + permit + "destinations:\n  - name: fhir-store\n",
			in:    func(t *testing.T) Input { return v2Input(t, "A01", invalidNHS) },
			want:  resultSummary{Taken: true, Records: []recSummary{{Event: audit.Filtered, Outcome: "filtered", Rule: "match", ID: id}}},
		},
		{
			name:  "match true with v2 and msg",
			route: routeHead + `match: v2.get("PID-3[1].1") == "` + validNHS + `" && msg.event == "A01" && msg.type == "ADT^A01" && msg.source == "pas"` + "\n" + permit + "destinations:\n  - name: fhir-store\n",
			in:    func(t *testing.T) Input { return v2Input(t, "A01", validNHS) },
			want: resultSummary{Taken: true, Matched: true, Deliveries: map[string]string{"fhir-store": fhirCT},
				Records: []recSummary{matched, consentOK("fhir-store")}},
		},
		{
			name:  "patient variable",
			route: routeHead + `match: patient.gpPractice == "B86001"` + "\n" + permit + "destinations:\n  - name: fhir-store\n",
			in: func(t *testing.T) Input {
				in := v2Input(t, "A01", validNHS)
				in.Patient = map[string]any{"gpPractice": "B86001"}
				return in
			},
			want: resultSummary{Taken: true, Matched: true, Deliveries: map[string]string{"fhir-store": fhirCT},
				Records: []recSummary{matched, consentOK("fhir-store")}},
		},
		{
			name: "when false skips one destination",
			route: routeHead + permit + "destinations:\n" +
				"  - name: fhir-store\n    when: msg.event == \"A08\"\n" +
				"  - name: data-quality\n    when: destination.name == \"data-quality\"\n",
			in: func(t *testing.T) Input { return v2Input(t, "A01", validNHS) },
			want: resultSummary{Taken: true, Matched: true, Deliveries: map[string]string{"data-quality": fhirCT},
				Records: []recSummary{matched,
					{Event: audit.Filtered, Destination: "fhir-store", Outcome: "not-selected", Rule: "when", ID: id},
					consentOK("data-quality")}},
		},
		{
			name:  "default deny",
			route: routeHead + "consent:\n  purpose: direct-care\n  legal_basis: direct-care\n  default: deny\n" + "destinations:\n  - name: fhir-store\n",
			in:    func(t *testing.T) Input { return v2Input(t, "A01", validNHS) },
			want: resultSummary{Taken: true, Matched: true, Denied: []string{"fhir-store"},
				Records: []recSummary{matched, {Event: audit.Consent, Destination: "fhir-store", Outcome: "deny", Rule: "route:test-route:default", ID: id}}},
		},
		{
			name:  "keep removes entries",
			route: routeHead + permit + "transform:\n  - keep: resource.resourceType != \"MessageHeader\"\n" + "destinations:\n  - name: fhir-store\n",
			in:    func(t *testing.T) Input { return v2Input(t, "A01", validNHS) },
			want: resultSummary{Taken: true, Matched: true, Deliveries: map[string]string{"fhir-store": fhirCT},
				Records: []recSummary{matched, consentOK("fhir-store"), transformed("fhir-store")}},
			// Without its MessageHeader the bundle is no longer a message
			// (bdl-12): it becomes a collection.
			bundle: `{"resourceType":"Bundle","type":"collection","entry":[` +
				`{"resource":{"resourceType":"Patient","id":"p1","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"` + validNHS + `"}]}},` +
				`{"resource":{"resourceType":"Encounter","id":"e1","status":"in-progress"}}]}`,
		},
		{
			name:  "keep holding the MessageHeader first leaves a message",
			route: routeHead + permit + "transform:\n  - keep: resource.resourceType != \"Encounter\"\n" + "destinations:\n  - name: fhir-store\n",
			in:    func(t *testing.T) Input { return v2Input(t, "A01", validNHS) },
			want: resultSummary{Taken: true, Matched: true, Deliveries: map[string]string{"fhir-store": fhirCT},
				Records: []recSummary{matched, consentOK("fhir-store"), transformed("fhir-store")}},
			bundle: `{"resourceType":"Bundle","type":"message","entry":[` +
				`{"resource":{"resourceType":"MessageHeader","id":"h1"}},` +
				`{"resource":{"resourceType":"Patient","id":"p1","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"` + validNHS + `"}]}}]}`,
		},
		{
			name:  "keep removing every entry leaves no empty array",
			route: routeHead + permit + "transform:\n  - keep: resource.resourceType == \"Observation\"\n" + "destinations:\n  - name: fhir-store\n",
			in:    func(t *testing.T) Input { return v2Input(t, "A01", validNHS) },
			want: resultSummary{Taken: true, Matched: true, Deliveries: map[string]string{"fhir-store": fhirCT},
				Records: []recSummary{matched, consentOK("fhir-store"), transformed("fhir-store")}},
			bundle: `{"resourceType":"Bundle","type":"collection"}`,
		},
		{
			name: "replace builds a new bundle",
			route: routeHead + permit + "transform:\n" +
				"  - keep: resource.resourceType == \"Patient\"\n" +
				"  - replace: '{\"resourceType\": \"Bundle\", \"type\": \"collection\", \"total\": size(bundle.entry), \"entry\": bundle.entry, \"meta\": {\"tag\": [{\"code\": \"x\"}]}}'\n" +
				"destinations:\n  - name: fhir-store\n",
			in: func(t *testing.T) Input { return v2Input(t, "A01", validNHS) },
			want: resultSummary{Taken: true, Matched: true, Deliveries: map[string]string{"fhir-store": fhirCT},
				Records: []recSummary{matched, consentOK("fhir-store"), transformed("fhir-store")}},
			bundle: `{"resourceType":"Bundle","type":"collection","total":1,"meta":{"tag":[{"code":"x"}]},"entry":[` +
				`{"resource":{"resourceType":"Patient","id":"p1","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"` + validNHS + `"}]}}]}`,
		},
		{
			name:  "raw payload",
			route: routeHead + permit + "transform:\n  - keep: \"false\"\n" + "destinations:\n  - name: data-quality\n    payload: raw\n",
			in:    func(t *testing.T) Input { return v2Input(t, "A01", validNHS) },
			want: resultSummary{Taken: true, Matched: true, Deliveries: map[string]string{"data-quality": envelope.ContentTypeHL7v2},
				Records: []recSummary{matched, consentOK("data-quality")}},
			bundle: "raw",
		},
		{
			name:  "FHIR input has an empty v2",
			route: "name: test-route\nsource:\n  adapter: fhir\nmatch: v2.get(\"MSH-9\") == \"\" && msg.type == \"Bundle\"\n" + permit + "destinations:\n  - name: fhir-store\n",
			in: func(t *testing.T) Input {
				b := adtBundle(validNHS)
				return Input{Env: TestEnvelope("fhir", "01TESTMSG", b, envelope.ContentTypeFHIR), Tr: &adapter.Translation{Bundle: b}}
			},
			want: resultSummary{Taken: true, Matched: true, Deliveries: map[string]string{"fhir-store": fhirCT},
				Records: []recSummary{matched, consentOK("fhir-store")}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := writeRoute(t, tt.route)
			in := tt.in(t)
			before := string(in.Tr.Bundle)
			res, err := r.Process(context.Background(), in, consent.DefaultPolicy{})
			if err != nil {
				t.Fatalf("Process: %v (%s)", err, fault.DetailOf(err))
			}
			if diff := cmp.Diff(tt.want, summarize(res)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
			if string(in.Tr.Bundle) != before {
				t.Error("Process changed the translation's bundle")
			}
			switch {
			case tt.bundle == "raw":
				if got := res.Deliveries[0].Body; string(got) != string(in.Env.Raw) {
					t.Errorf("raw payload = %q, want the input unchanged %q", got, in.Env.Raw)
				}
			case tt.bundle != "":
				if !jsonEqual([]byte(tt.bundle), res.Deliveries[0].Body) {
					t.Errorf("payload =\n%s\nwant\n%s", res.Deliveries[0].Body, tt.bundle)
				}
			}
		})
	}
}

func TestProcessPerDestinationTransform(t *testing.T) {
	r := writeRoute(t, routeHead+permit+"transform:\n"+
		"  - keep: destination.name == \"fhir-store\" || resource.resourceType == \"Patient\"\n"+
		"destinations:\n  - name: fhir-store\n  - name: data-quality\n")
	dec := &fakeDecider{}
	in := v2Input(t, "A01", validNHS)
	res, err := r.Process(context.Background(), in, dec)
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]int{}
	for _, d := range res.Deliveries {
		var b struct{ Entry []any }
		if err := json.Unmarshal(d.Body, &b); err != nil {
			t.Fatal(err)
		}
		counts[d.Destination] = len(b.Entry)
	}
	if diff := cmp.Diff(map[string]int{"fhir-store": 3, "data-quality": 1}, counts); diff != "" {
		t.Errorf("entries per destination (-want +got):\n%s", diff)
	}
	// The decider is asked once per destination with the route's facts,
	// and the patients the bundle names, found once for all of them.
	var asked []consent.Request
	for _, q := range dec.reqs {
		q.Bundle = nil
		asked = append(asked, q)
	}
	want := []consent.Request{
		{Route: "test-route", Purpose: "direct-care", LegalBasis: "direct-care", Destination: "fhir-store", PatientKey: validNHS, BundlePatients: []string{validNHS}, Default: consent.Permit},
		{Route: "test-route", Purpose: "direct-care", LegalBasis: "direct-care", Destination: "data-quality", PatientKey: validNHS, BundlePatients: []string{validNHS}, Default: consent.Permit},
	}
	if diff := cmp.Diff(want, asked); diff != "" {
		t.Errorf("consent requests (-want +got):\n%s", diff)
	}
}

// TestProcessKeepRewritesReferences checks that a keep step leaves no
// reference dangling: one by urn: fullUrl to a dropped entry becomes a
// logical reference (type and first identifier), or goes when the entry
// has no identifier, taking an array it empties with it; Type/id
// references resolve on the server and stay. Only the destination the
// step drops entries for is changed: entries are shared with the
// translation and the other destinations.
func TestProcessKeepRewritesReferences(t *testing.T) {
	r := writeRoute(t, "name: test-route\nsource:\n  adapter: fhir\n"+permit+"transform:\n"+
		"  - keep: destination.name == \"data-quality\" || !(resource.resourceType in [\"Specimen\", \"Practitioner\"])\n"+
		"destinations:\n  - name: fhir-store\n  - name: data-quality\n")
	const (
		specimen     = `{"fullUrl":"urn:uuid:s1","resource":{"resourceType":"Specimen","id":"s1","identifier":[{"system":"https://lab.example/Id/specimen","value":"S1"}]}}`
		practitioner = `{"fullUrl":"urn:uuid:pr1","resource":{"resourceType":"Practitioner","id":"pr1"}}`
		patient      = `{"fullUrl":"urn:uuid:p1","resource":{"resourceType":"Patient","id":"p1"}}`
	)
	obs := func(refs string) string {
		return `{"fullUrl":"urn:uuid:o1","resource":{"resourceType":"Observation","subject":{"reference":"urn:uuid:p1"}` + refs + `}}`
	}
	withRefs := obs(`,"specimen":{"reference":"urn:uuid:s1","display":"blood"},"performer":[{"reference":"urn:uuid:pr1"}],` +
		`"derivedFrom":[{"reference":"Specimen/s1"},{"reference":"urn:uuid:p1"}]`)
	b := []byte(`{"resourceType":"Bundle","type":"collection","entry":[` + specimen + `,` + practitioner + `,` + patient + `,` + withRefs + `]}`)
	in := Input{Env: TestEnvelope("fhir", "01TESTMSG", b, envelope.ContentTypeFHIR), Tr: &adapter.Translation{Bundle: b}}
	res, err := r.Process(context.Background(), in, &fakeDecider{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"fhir-store": `{"resourceType":"Bundle","type":"collection","entry":[` + patient + `,` +
			obs(`,"specimen":{"type":"Specimen","identifier":{"system":"https://lab.example/Id/specimen","value":"S1"},"display":"blood"},`+
				`"derivedFrom":[{"reference":"Specimen/s1"},{"reference":"urn:uuid:p1"}]`) + `]}`,
		"data-quality": string(b),
	}
	if len(res.Deliveries) != 2 {
		t.Fatalf("%d deliveries, want 2", len(res.Deliveries))
	}
	for _, d := range res.Deliveries {
		if !jsonEqual([]byte(want[d.Destination]), d.Body) {
			t.Errorf("%s got\n%s\nwant\n%s", d.Destination, d.Body, want[d.Destination])
		}
	}
}

func TestProcessDeciderDenies(t *testing.T) {
	r := writeRoute(t, routeHead+permit+"destinations:\n  - name: fhir-store\n  - name: data-quality\n")
	res, err := r.Process(context.Background(), v2Input(t, "A01", validNHS), &fakeDecider{deny: []string{"data-quality"}})
	if err != nil {
		t.Fatal(err)
	}
	got := summarize(res)
	if diff := cmp.Diff([]string{"data-quality"}, got.Denied); diff != "" {
		t.Errorf("denied (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]string{"fhir-store": envelope.ContentTypeFHIR}, got.Deliveries); diff != "" {
		t.Errorf("deliveries (-want +got):\n%s", diff)
	}
}

func TestProcessErrors(t *testing.T) {
	deciderErr := errors.New("consent store down")
	tests := []struct {
		name    string
		route   string
		in      func(t *testing.T) Input
		decider consent.Decider
		code    fault.Code
		// where is a fragment of the error text naming the failed part.
		where string
	}{
		{"match evaluation", routeHead + "match: bundle.nope == \"x\"\n" + permit + "destinations:\n  - name: fhir-store\n",
			nil, nil, fault.CodeRuleEval, "match"},
		{"match not a bool at run time", routeHead + "match: bundle.type\n" + permit + "destinations:\n  - name: fhir-store\n",
			nil, nil, fault.CodeRuleEval, "match"},
		{"when evaluation", routeHead + permit + "destinations:\n  - name: fhir-store\n    when: int(msg.event) > 0\n",
			nil, nil, fault.CodeRuleEval, "destination fhir-store when"},
		{"keep evaluation", routeHead + permit + "transform:\n  - keep: resource.nope\n" + "destinations:\n  - name: fhir-store\n",
			nil, nil, fault.CodeRuleEval, "transform for fhir-store: step 0"},
		// Within its limits on each entry, but quadratic in the entries:
		// the step's entries share one budget.
		{"keep step over its budget across entries", routeHead + permit + "transform:\n  - keep: bundle.entry.exists(e, has(e.resource.id) && e.resource.id == resource.id + \"x\") || true\n" + "destinations:\n  - name: fhir-store\n",
			func(t *testing.T) Input {
				in := v2Input(t, "A01", validNHS)
				in.Tr.Bundle = observations(2000)
				return in
			},
			nil, fault.CodeRuleEval, "transform for fhir-store: step 0"},
		{"replace evaluation", routeHead + permit + "transform:\n  - keep: \"true\"\n  - replace: bundle.entry[9]\n" + "destinations:\n  - name: fhir-store\n",
			nil, nil, fault.CodeRuleEval, "step 1"},
		{"replace not a map at run time", routeHead + permit + "transform:\n  - replace: bundle.type\n" + "destinations:\n  - name: fhir-store\n",
			nil, nil, fault.CodeRuleEval, "step 0"},
		{"replace makes no Bundle", routeHead + permit + "transform:\n  - replace: '{\"resourceType\": \"Patient\", \"id\": \"p1\"}'\n" + "destinations:\n  - name: fhir-store\n",
			nil, nil, fault.CodeRuleEval, "step 0: rule.eval: the result is not a FHIR Bundle"},
		// An empty field read into an element is what a destination
		// would refuse, or a file destination write as it is.
		{"replace makes an empty string", routeHead + permit + "transform:\n  - replace: '{\"resourceType\": \"Bundle\", \"type\": \"collection\", \"entry\": [{\"resource\": {\"resourceType\": \"Patient\", \"identifier\": [{\"value\": v2.get(\"ZZZ-1\")}]}}]}'\n" + "destinations:\n  - name: fhir-store\n",
			nil, nil, fault.CodeRuleEval, "step 0: rule.eval: the result is not a FHIR Bundle"},
		{"bundle not JSON", routeHead + permit + "destinations:\n  - name: fhir-store\n",
			func(t *testing.T) Input {
				in := v2Input(t, "A01", validNHS)
				in.Tr.Bundle = []byte("{not json")
				return in
			}, nil, fault.CodeTranslate, "not JSON"},
		{"decider fails", routeHead + permit + "destinations:\n  - name: fhir-store\n",
			// Retried, not dead-lettered: the decision could not be made.
			nil, &fakeDecider{err: deciderErr}, fault.CodeStoreUnavailable, "consent for fhir-store"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := writeRoute(t, tt.route)
			in := v2Input(t, "A01", validNHS)
			if tt.in != nil {
				in = tt.in(t)
			}
			dec := tt.decider
			if dec == nil {
				dec = consent.DefaultPolicy{}
			}
			res, err := r.Process(context.Background(), in, dec)
			if err == nil {
				t.Fatalf("Process = %+v, want an error", summarize(res))
			}
			if got := fault.CodeOf(err); got != tt.code {
				t.Errorf("code = %s, want %s (%v)", got, tt.code, err)
			}
			if wantTransient := tt.code == fault.CodeStoreUnavailable; tt.code != fault.CodeInternal && fault.IsTransient(err) != wantTransient {
				t.Errorf("error %v: transient %v, want %v", err, fault.IsTransient(err), wantTransient)
			}
			if !strings.Contains(err.Error(), tt.where) {
				t.Errorf("error %q does not say %q", err, tt.where)
			}
			if strings.Contains(err.Error(), validNHS) {
				t.Errorf("error %q holds the NHS number", err)
			}
			if tt.decider != nil && !errors.Is(err, deciderErr) {
				t.Errorf("error %v does not wrap the decider's", err)
			}
		})
	}
}

func TestNotTakenRecord(t *testing.T) {
	r := &Route{Name: "r1"}
	rec := r.NotTakenRecord(&envelope.Envelope{ID: "01X", Source: "pas"})
	rec.Time = rec.Time.Round(0)
	got := recSummary{Event: rec.Event, Destination: rec.Destination, Outcome: rec.Outcome, Rule: rec.Rule, ID: rec.MessageID}
	if diff := cmp.Diff(recSummary{Event: audit.Filtered, Outcome: "not-taken", Rule: "source.events", ID: "01X"}, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if rec.Route != "r1" || rec.Source != "pas" || rec.Time.IsZero() {
		t.Errorf("record = %+v, want route r1, source pas and a time", rec)
	}
}

func TestMsgVars(t *testing.T) {
	env := TestEnvelope("pas", "01X", []byte(adtMessage("A01", validNHS)), envelope.ContentTypeHL7v2)
	want := map[string]any{
		"id": "01X", "source": "pas", "type": "ADT^A01", "event": "A01", "control_id": "MSG00001",
		"sender": "PAS|RX1", "received": testTime, "content_type": envelope.ContentTypeHL7v2,
	}
	got := MsgVars(env, "A01")
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	// Load checks expressions against the keys rules declares.
	if diff := cmp.Diff(slices.Sorted(maps.Keys(got)), slices.Sorted(slices.Values(rules.MsgKeys()))); diff != "" {
		t.Errorf("msg keys differ from rules.MsgKeys (-vars +declared):\n%s", diff)
	}
}

func TestTestEnvelope(t *testing.T) {
	tests := []struct {
		name string
		raw  string
		ct   string
		want envelope.Envelope
	}{
		{"hl7", adtMessage("A03", validNHS), envelope.ContentTypeHL7v2,
			envelope.Envelope{ID: "T1", Source: "src", ContentType: envelope.ContentTypeHL7v2, ReceivedAt: testTime,
				MessageType: "ADT^A03", ControlID: "MSG00001", Sender: "PAS|RX1", DedupeKey: "PAS|RX1|MSG00001"}},
		{"bad hl7 keeps raw", "not hl7", envelope.ContentTypeHL7v2,
			envelope.Envelope{ID: "T1", Source: "src", ContentType: envelope.ContentTypeHL7v2, ReceivedAt: testTime}},
		{"fhir", `{"resourceType": "Patient"}`, envelope.ContentTypeFHIR,
			envelope.Envelope{ID: "T1", Source: "src", ContentType: envelope.ContentTypeFHIR, ReceivedAt: testTime, MessageType: "Patient"}},
		{"fhir bundle with an identifier", `{"resourceType": "Bundle", "type": "message", "identifier": {"system": "https://supplier.example/Id/msg", "value": "M-1"}}`, envelope.ContentTypeFHIR,
			envelope.Envelope{ID: "T1", Source: "src", ContentType: envelope.ContentTypeFHIR, ReceivedAt: testTime, MessageType: "Bundle",
				ControlID: "M-1", DedupeKey: "bundle|https://supplier.example/Id/msg|M-1"}},
		{"fhir resource identifiers are no control id", `{"resourceType": "Patient", "identifier": [{"system": "https://x.example", "value": "P-1"}]}`, envelope.ContentTypeFHIR,
			envelope.Envelope{ID: "T1", Source: "src", ContentType: envelope.ContentTypeFHIR, ReceivedAt: testTime, MessageType: "Patient"}},
		{"bad fhir", `[`, envelope.ContentTypeFHIR,
			envelope.Envelope{ID: "T1", Source: "src", ContentType: envelope.ContentTypeFHIR, ReceivedAt: testTime}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := TestEnvelope("src", "T1", []byte(tt.raw), tt.ct)
			want := tt.want
			want.Raw = []byte(tt.raw)
			if diff := cmp.Diff(&want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func BenchmarkProcess(b *testing.B) {
	dir := b.TempDir()
	path := filepath.Join(dir, "route.yaml")
	src := routeHead + "  events: [ADT^A01]\nmatch: nhsNumberValid(nhsNumber(bundle))\n" + permit +
		"transform:\n  - keep: resource.resourceType != \"MessageHeader\"\ndestinations:\n  - name: fhir-store\n"
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		b.Fatal(err)
	}
	r, err := Load(path, testEnv(b), testCatalog)
	if err != nil {
		b.Fatal(err)
	}
	raw := []byte(adtMessage("A01", validNHS))
	m, err := hl7v2.Parse(raw)
	if err != nil {
		b.Fatal(err)
	}
	in := Input{Env: TestEnvelope("pas", "01B", raw, envelope.ContentTypeHL7v2), Tr: &adapter.Translation{Bundle: adtBundle(validNHS), Event: "A01", V2: m}}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		res, err := r.Process(ctx, in, consent.DefaultPolicy{})
		if err != nil || len(res.Deliveries) != 1 {
			b.Fatalf("Process = %v, %v", res, err)
		}
	}
}

// TestProcessLeavesSharedBundleAlone: routes of one source share the
// decoded bundle (Translation.Parsed); transforms must build new values,
// never change it, and Process must use it rather than decode again.
func TestProcessLeavesSharedBundleAlone(t *testing.T) {
	r := writeRoute(t, routeHead+permit+"transform:\n"+
		"  - keep: resource.resourceType == \"Patient\"\n"+
		"  - replace: '{\"resourceType\": \"Bundle\", \"type\": \"collection\", \"entry\": bundle.entry}'\n"+
		"destinations:\n  - name: fhir-store\n  - name: data-quality\n")
	in := v2Input(t, "A01", validNHS)
	if err := json.Unmarshal(in.Tr.Bundle, &in.Tr.Parsed); err != nil {
		t.Fatal(err)
	}
	var before map[string]any
	if err := json.Unmarshal(in.Tr.Bundle, &before); err != nil {
		t.Fatal(err)
	}
	res, err := r.Process(context.Background(), in, &fakeDecider{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Deliveries) != 2 {
		t.Fatalf("%d deliveries, want 2", len(res.Deliveries))
	}
	if diff := cmp.Diff(before, in.Tr.Parsed); diff != "" {
		t.Errorf("shared bundle changed (-before +after):\n%s", diff)
	}
	// Process reads Parsed, not Bundle: a marker only in Parsed shows up.
	in.Tr.Parsed["type"] = "collection"
	r2 := writeRoute(t, routeHead+permit+"match: bundle.type == \"collection\"\ndestinations:\n  - name: fhir-store\n")
	res, err = r2.Process(context.Background(), in, &fakeDecider{})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Matched {
		t.Error("Process decoded Bundle again instead of using Parsed")
	}
}

// TestProcessDisclosureFacts: each delivery carries the data classes of
// the payload actually queued, and the consent records the route's
// purpose and legal basis, for disclosure reports.
func TestProcessDisclosureFacts(t *testing.T) {
	tests := []struct {
		name      string
		transform string
		raw       bool
		want      []string
	}{
		{"whole bundle", "", false, []string{"Encounter", "MessageHeader", "Patient"}},
		{"after keep", "transform:\n  - keep: resource.resourceType != \"MessageHeader\"\n", false, []string{"Encounter", "Patient"}},
		{"keep removes every entry", "transform:\n  - keep: \"false\"\n", false, nil},
		{"replace", "transform:\n  - replace: '{\"resourceType\": \"Bundle\", \"type\": \"collection\", \"entry\": [{\"resource\": {\"resourceType\": \"Patient\", \"id\": \"p1\"}}]}'\n", false, []string{"Patient"}},
		{"raw", "", true, []string{"ADT^A01"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dest := "  - name: fhir-store\n"
			if tt.raw {
				dest = "  - name: data-quality\n    payload: raw\n"
			}
			r := writeRoute(t, routeHead+"consent:\n  purpose: direct-care\n  legal_basis: direct-care\n  default: permit\n"+tt.transform+"destinations:\n"+dest)
			in := v2Input(t, "A01", validNHS)
			res, err := r.Process(context.Background(), in, consent.DefaultPolicy{})
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Deliveries) != 1 {
				t.Fatalf("%d deliveries, want 1", len(res.Deliveries))
			}
			if diff := cmp.Diff(tt.want, res.Deliveries[0].Classes); diff != "" {
				t.Errorf("classes (-want +got):\n%s", diff)
			}
			for _, rec := range res.Records {
				want := [2]string{}
				if rec.Event == audit.Consent {
					want = [2]string{"direct-care", "direct-care"}
				}
				if got := [2]string{rec.Purpose, rec.LegalBasis}; got != want {
					t.Errorf("%s record: purpose and legal basis %v, want %v", rec.Event, got, want)
				}
			}
		})
	}
}

// TestProcessRedactedClasses: a resource consent withholds is not among
// the classes of what was queued.
func TestProcessRedactedClasses(t *testing.T) {
	r := writeRoute(t, routeHead+permit+"destinations:\n  - name: fhir-store\n")
	dec := consent.Decision{Outcome: consent.Redact, Reason: "test", Rule: "test:redact", Resources: []consent.ResourceDecision{
		{Index: 0, ResourceType: "MessageHeader", Verdict: consent.Verdict{Outcome: consent.Permit, Rule: "test:permit"}},
		{Index: 1, ResourceType: "Patient", Verdict: consent.Verdict{Outcome: consent.Permit, Rule: "test:permit"}},
		{Index: 2, ResourceType: "Encounter", Verdict: consent.Verdict{Outcome: consent.Deny, Reason: "test deny", Rule: "test:deny"}},
	}}
	res, err := r.Process(context.Background(), v2Input(t, "A01", validNHS), scriptedDecider{dec})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Deliveries) != 1 {
		t.Fatalf("%d deliveries, want 1", len(res.Deliveries))
	}
	if diff := cmp.Diff([]string{"MessageHeader", "Patient"}, res.Deliveries[0].Classes); diff != "" {
		t.Errorf("classes (-want +got):\n%s", diff)
	}
}

// TestProcessKeepsNumbers routes a FHIR bundle whose decimals carry
// significant trailing zeros and more digits than a double holds: a
// consent redaction and a keep step re-encode the bundle, and every
// number must reach the destination as the supplier wrote it.
func TestProcessKeepsNumbers(t *testing.T) {
	const (
		obs       = `{"fullUrl":"urn:uuid:o1","resource":{"resourceType":"Observation","referenceRange":[{"high":{"value":12345678901234567890},"low":{"value":1.000}}],"valueQuantity":{"code":"kg","value":72.50}}}`
		condition = `{"fullUrl":"urn:uuid:c1","resource":{"resourceType":"Condition","id":"c1"}}`
		msgHeader = `{"fullUrl":"urn:uuid:h1","resource":{"resourceType":"MessageHeader","id":"h1"}}`
	)
	b := []byte(`{"resourceType":"Bundle","type":"collection","entry":[` + msgHeader + `,` + obs + `,` + condition + `]}`)
	redact := consent.Decision{Outcome: consent.Redact, Reason: "test", Rule: "test:redact", Resources: []consent.ResourceDecision{
		{Index: 0, ResourceType: "MessageHeader", Verdict: consent.Verdict{Outcome: consent.Permit, Rule: "test:permit"}},
		{Index: 1, ResourceType: "Observation", Verdict: consent.Verdict{Outcome: consent.Permit, Rule: "test:permit"}},
		{Index: 2, ResourceType: "Condition", Verdict: consent.Verdict{Outcome: consent.Deny, Reason: "test deny", Rule: "test:deny"}},
	}}
	for _, tc := range []struct {
		name    string
		route   string
		decider consent.Decider
	}{
		{"redacted", "", scriptedDecider{redact}},
		{"kept by a keep step", "transform:\n  - keep: resource.resourceType != \"Condition\"\n", &fakeDecider{}},
		{"redacted and kept", "transform:\n  - keep: resource.resourceType != \"MessageHeader\"\n", scriptedDecider{redact}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := writeRoute(t, "name: test-route\nsource:\n  adapter: fhir\n"+permit+tc.route+"destinations:\n  - name: fhir-store\n")
			in := Input{Env: TestEnvelope("fhir", "01TESTMSG", b, envelope.ContentTypeFHIR), Tr: &adapter.Translation{Bundle: b}}
			res, err := r.Process(context.Background(), in, tc.decider)
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Deliveries) != 1 {
				t.Fatalf("%d deliveries, want 1", len(res.Deliveries))
			}
			body := string(res.Deliveries[0].Body)
			for _, n := range []string{`"value":72.50}`, `"value":1.000}`, `"value":12345678901234567890}`} {
				if !strings.Contains(body, n) {
					t.Errorf("delivered %s\nwant %s in it", body, n)
				}
			}
			if strings.Contains(body, `"Condition"`) {
				t.Errorf("delivered %s\nwant no Condition", body)
			}
		})
	}
}

// TestProcessTooManyPatients: a message about more than MaxPatients
// patients fails its route with a permanent fault (its payloads could not
// carry their hashes through the store), and one about MaxPatients passes.
func TestProcessTooManyPatients(t *testing.T) {
	r := writeRoute(t, "name: test-route\nsource:\n  adapter: fhir\n"+permit+"destinations:\n  - name: fhir-store\n")
	patients := func(n int) []byte {
		var b strings.Builder
		b.WriteString(`{"resourceType":"Bundle","type":"collection","entry":[`)
		for i := range n {
			if i > 0 {
				b.WriteString(",")
			}
			fmt.Fprintf(&b, `{"resource":{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"%s"}]}}`, nhs.TestNumber(i))
		}
		b.WriteString("]}")
		return []byte(b.String())
	}
	for _, tc := range []struct {
		n       int
		refused bool
	}{{MaxPatients, false}, {MaxPatients + 1, true}} {
		t.Run(fmt.Sprint(tc.n), func(t *testing.T) {
			b := patients(tc.n)
			in := Input{Env: TestEnvelope("fhir", "01TESTMSG", b, envelope.ContentTypeFHIR), Tr: &adapter.Translation{Bundle: b}}
			res, err := r.Process(context.Background(), in, &fakeDecider{})
			if !tc.refused {
				if err != nil || len(res.Deliveries) != 1 {
					t.Fatalf("Process: %v, want one delivery", err)
				}
				return
			}
			if err == nil || fault.CodeOf(err) != fault.CodeTooLarge || fault.IsTransient(err) || !strings.Contains(err.Error(), "send one message per patient") {
				t.Fatalf("Process: %v, want a permanent %s fault saying to send one message per patient", err, fault.CodeTooLarge)
			}
		})
	}
}

// observations returns a collection Bundle of n Observations.
func observations(n int) []byte {
	var b strings.Builder
	b.WriteString(`{"resourceType":"Bundle","type":"collection","entry":[`)
	for i := range n {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `{"resource":{"resourceType":"Observation","id":"o%d"}}`, i)
	}
	b.WriteString("]}")
	return []byte(b.String())
}

// TestKeepStepOnLargeBundle: a keep step that is cheap on each entry keeps
// what it should from a Bundle of 8,000 entries within its budget.
func TestKeepStepOnLargeBundle(t *testing.T) {
	r := writeRoute(t, routeHead+permit+"transform:\n  - keep: resource.id != \"o7\"\n"+"destinations:\n  - name: fhir-store\n")
	in := v2Input(t, "A01", validNHS)
	in.Tr.Bundle = observations(8000)
	res, err := r.Process(context.Background(), in, consent.DefaultPolicy{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Deliveries) != 1 || strings.Contains(string(res.Deliveries[0].Body), `"o7"`) || !strings.Contains(string(res.Deliveries[0].Body), `"o7999"`) {
		t.Errorf("the keep step did not keep all but o7")
	}
}

// TestProcessReplaceKeepsSourceTag checks that a replace step writing its
// own Bundle.meta keeps the translation's source tag, by which a merging
// FHIR destination takes empty v2 fields as no change, and adds none to
// a Bundle that had none.
func TestProcessReplaceKeepsSourceTag(t *testing.T) {
	const srcTag = `{"system":"https://junction-fhir.github.io/source","code":"hl7v2"}`
	tagged := func(t *testing.T) Input {
		in := v2Input(t, "A01", validNHS)
		b := string(adtBundle(validNHS))
		in.Tr.Bundle = []byte(`{"meta":{"tag":[` + srcTag + `]},` + b[1:])
		return in
	}
	own := `{"system":"https://fhir.example-trust.nhs.uk/tags","code":"from-pas"}`
	tests := []struct {
		name, step string
		in         func(*testing.T) Input
		wantMeta   string
	}{
		{"its own tag beside the source tag", `{"resourceType": "Bundle", "type": "collection", "meta": {"tag": [` + own + `]}, "entry": bundle.entry}`, tagged,
			`{"tag":[` + own + `,` + srcTag + `]}`},
		{"no meta at all", `{"resourceType": "Bundle", "type": "collection", "entry": bundle.entry}`, tagged,
			`{"tag":[` + srcTag + `]}`},
		{"the source tag kept by the step", `{"resourceType": "Bundle", "type": "collection", "meta": bundle.meta, "entry": bundle.entry}`, tagged,
			`{"tag":[` + srcTag + `]}`},
		{"an untagged input stays untagged", `{"resourceType": "Bundle", "type": "collection", "meta": {"tag": [` + own + `]}, "entry": bundle.entry}`,
			func(t *testing.T) Input { return v2Input(t, "A01", validNHS) }, `{"tag":[` + own + `]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := writeRoute(t, routeHead+permit+"transform:\n  - replace: '"+tt.step+"'\ndestinations:\n  - name: fhir-store\n")
			in := tt.in(t)
			before := string(in.Tr.Bundle)
			res, err := r.Process(context.Background(), in, consent.DefaultPolicy{})
			if err != nil {
				t.Fatalf("Process: %v (%s)", err, fault.DetailOf(err))
			}
			var got struct {
				Meta json.RawMessage `json:"meta"`
			}
			if err := json.Unmarshal(res.Deliveries[0].Body, &got); err != nil {
				t.Fatal(err)
			}
			if !jsonEqual([]byte(tt.wantMeta), got.Meta) {
				t.Errorf("meta = %s, want %s", got.Meta, tt.wantMeta)
			}
			if string(in.Tr.Bundle) != before {
				t.Error("Process changed the translation's bundle")
			}
		})
	}
}

// BenchmarkProcessShippedADT measures the route stage of one admission as
// the engine runs it: routes/adt_a01.hl7 translated by the pas adapter and
// decoded once (Translation.Parsed), then both shipped ADT routes, the
// store route (match, consent by the engine, keep step, encode) and the
// data-quality route (match, filtered).
func BenchmarkProcessShippedADT(b *testing.B) {
	var routes []*Route
	for _, f := range []string{"adt-to-fhir-store.yaml", "adt-data-quality.yaml"} {
		r, err := Load(filepath.Join("..", "..", "routes", f), testEnv(b), testCatalog)
		if err != nil {
			b.Fatal(err)
		}
		routes = append(routes, r)
	}
	raw, err := os.ReadFile(filepath.Join("..", "..", "routes", "testdata", "adt_a01.hl7"))
	if err != nil {
		b.Fatal(err)
	}
	f := pas.Factory{}
	tr, err := f.NewTranslator(f.NewConfig())
	if err != nil {
		b.Fatal(err)
	}
	env := TestEnvelope("pas", "01BENCH", raw, envelope.ContentTypeHL7v2)
	t, err := tr.Translate(env)
	if err != nil {
		b.Fatal(err)
	}
	if t.Parsed, err = jsonmap.Decode(t.Bundle); err != nil {
		b.Fatal(err)
	}
	t.PatientKey = LocalKey(t.PatientKey, t.Parsed)
	in := Input{Env: env, Tr: t}
	decider := &consent.Engine{Source: optOutList{}}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		delivered := 0
		for _, r := range routes {
			res, err := r.Process(ctx, in, decider)
			if err != nil {
				b.Fatal(err)
			}
			delivered += len(res.Deliveries)
		}
		if delivered != 1 {
			b.Fatalf("%d deliveries, want 1", delivered)
		}
	}
}

// threePatients returns NHS numbers a, b and c and a collection Bundle
// of an Observation about b (by a logical reference), a's Patient, an
// Observation about a (by the Patient's fullUrl) and one about c.
func threePatients() (a, b, c string, bundle []byte) {
	a, b, c = nhs.TestNumber(1), nhs.TestNumber(2), nhs.TestNumber(3)
	about := func(n string) string {
		return `{"identifier":{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"` + n + `"}}`
	}
	bundle = []byte(`{"resourceType":"Bundle","type":"collection","entry":[` +
		`{"fullUrl":"urn:uuid:ob","resource":{"resourceType":"Observation","id":"ob","subject":` + about(b) + `}},` +
		`{"fullUrl":"urn:uuid:pa","resource":{"resourceType":"Patient","id":"pa","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"` + a + `"}],"name":[{"family":"TESTPATIENT"}]}},` +
		`{"fullUrl":"urn:uuid:oa","resource":{"resourceType":"Observation","id":"oa","subject":{"reference":"urn:uuid:pa"}}},` +
		`{"fullUrl":"urn:uuid:oc","resource":{"resourceType":"Observation","id":"oc","subject":` + about(c) + `}}]}`)
	return a, b, c, bundle
}

// processOne runs the route src on an A01 of patient a whose translation
// is bundle, and returns the result and its one delivery.
func processOne(t *testing.T, src, a string, bundle []byte) (*Result, Delivery) {
	t.Helper()
	r := writeRoute(t, src+"destinations:\n  - name: fhir-store\n")
	in := v2Input(t, "A01", a)
	in.Tr.Bundle = bundle
	res, err := r.Process(context.Background(), in, &consent.Engine{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Deliveries) != 1 {
		t.Fatalf("%d deliveries, want 1", len(res.Deliveries))
	}
	return res, res.Deliveries[0]
}

// TestProcessPatientsThroughReplace: a replace step that takes the NHS
// number out of what it sends still sends those patients' data, so the
// delivery names the patients of the translation's entries it carries
// (by fullUrl, or type and id); one that rebuilds the Bundle from
// scratch and names no one counts as about all the message's patients;
// one that sends no entries names none.
func TestProcessPatientsThroughReplace(t *testing.T) {
	a, b, c, bundle := threePatients()
	const head = `{"resourceType": "Bundle", "type": "collection", "entry": `
	tests := []struct {
		name, replace string
		want          []string
	}{
		{
			"the Patient's NHS number taken out, its fullUrl kept",
			head + `bundle.entry.map(e, e.resource.resourceType == "Patient" ? {"fullUrl": e.fullUrl, "resource": {"resourceType": "Patient", "id": "pa", "name": e.resource.name}} : e)}`,
			[]string{b, c, a},
		},
		{
			"the Patient alone, without its NHS number or fullUrl, by type and id",
			head + `[{"resource": {"resourceType": "Patient", "id": "pa", "name": bundle.entry[1].resource.name}}]}`,
			[]string{a},
		},
		{
			"rebuilt with new ids, naming no one",
			head + `[{"fullUrl": "urn:uuid:new", "resource": {"resourceType": "Patient", "id": "new", "name": bundle.entry[1].resource.name}}]}`,
			[]string{b, a, c},
		},
		{
			"one Observation kept, rebuilt",
			head + `[{"fullUrl": "urn:uuid:oc", "resource": {"resourceType": "Observation", "id": "oc", "status": "final"}}]}`,
			[]string{c},
		},
		{
			"an entry of the translation that names no one, kept",
			head + `[{"fullUrl": "urn:uuid:oa", "resource": {"resourceType": "Observation", "id": "oa", "status": "final"}}]}`,
			nil,
		},
		{
			"no entries",
			`{"resourceType": "Bundle", "type": "collection"}`,
			nil,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, d := processOne(t, routeHead+permit+"transform:\n  - replace: '"+tt.replace+"'\n", a, bundle)
			if diff := cmp.Diff(tt.want, d.Patients); diff != "" {
				t.Errorf("patients (-want +got):\n%s", diff)
			}
		})
	}
}

// TestProcessPatientsOfDataNotNamedByNHSNumber: a delivery carrying a
// patient's data that no longer names them by NHS number still names
// them: an entry sent unchanged that refers to their Patient by its
// fullUrl (a replace step that filters entries, leaving the reference
// dangling), a Patient a replace step rebuilt from their fields beside
// another patient's entry, or contained in it, an entry a keep step kept
// that refers to their dropped Patient by type and id (which the
// destination server resolves), and one whose reference to their
// dropped Patient a keep step rewrote to the Patient's first identifier,
// a local one.
func TestProcessPatientsOfDataNotNamedByNHSNumber(t *testing.T) {
	a, b, c, bundle := threePatients()
	// oa refers to a's Patient by type and id rather than fullUrl.
	relative := bytes.Replace(bundle, []byte(`"reference":"urn:uuid:pa"`), []byte(`"reference":"Patient/pa"`), 1)
	// a's Patient has a local identifier before its NHS number.
	localFirst := bytes.Replace(bundle, []byte(`"identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number"`),
		[]byte(`"identifier":[{"system":"https://trust.example/Id/mrn","value":"MRN0042"},{"system":"https://fhir.nhs.uk/Id/nhs-number"`), 1)
	for _, variant := range [][]byte{relative, localFirst} {
		if bytes.Equal(variant, bundle) {
			t.Fatal("a variant of the bundle is not changed")
		}
	}
	const head = `{"resourceType": "Bundle", "type": "collection", "entry": `
	replace := func(expr string) string { return "  - replace: '" + head + expr + "}'\n" }
	tests := []struct {
		name, transform string
		bundle          []byte
		want            []string
	}{
		{
			"a replace keeping an Observation that refers to its Patient by fullUrl",
			replace(`bundle.entry.filter(e, e.resource.id == "oa")`),
			bundle, []string{a},
		},
		{
			"a replace rebuilding a Patient with a new id beside another patient's Observation",
			replace(`[bundle.entry[0], {"fullUrl": "urn:uuid:new", "resource": {"resourceType": "Patient", "id": "new", "name": bundle.entry[1].resource.name}}]`),
			bundle, []string{b, a},
		},
		{
			"a replace putting a rebuilt Patient in another patient's Observation",
			replace(`[{"fullUrl": "urn:uuid:ob", "resource": {"resourceType": "Observation", "id": "ob", "subject": bundle.entry[0].resource.subject, "contained": [{"resourceType": "Patient", "id": "p", "name": bundle.entry[1].resource.name}]}}]`),
			bundle, []string{b, a},
		},
		{
			"a keep dropping a Patient referred to by type and id",
			"  - keep: resource.resourceType != \"Patient\"\n",
			relative, []string{b, a, c},
		},
		{
			"a keep rewriting a reference to a dropped Patient to its local identifier",
			"  - keep: resource.resourceType != \"Patient\"\n",
			localFirst, []string{b, c, a},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, d := processOne(t, routeHead+permit+"transform:\n"+tt.transform, a, tt.bundle)
			if diff := cmp.Diff(tt.want, d.Patients); diff != "" {
				t.Errorf("patients (-want +got):\n%s\nsent: %s", diff, d.Body)
			}
		})
	}
}

// TestProcessPatientsOfWhatIsSent: each delivery names the patients of
// the bundle it sends, in the order consent.BundleNHSNumbers gives them,
// after keep steps that drop entries, one that rewrites a reference to a
// dropped Patient into one by its NHS number, and a replace step.
func TestProcessPatientsOfWhatIsSent(t *testing.T) {
	a, b, c, bundle := threePatients()
	tests := []struct {
		name      string
		transform string
		want      []string
	}{
		{"no transform", "", []string{b, a, c}},
		{"keep the Patient", "  - keep: resource.resourceType == \"Patient\"\n", []string{a}},
		{"keep two Observations", "  - keep: resource.id in [\"ob\", \"oc\"]\n", []string{b, c}},
		{"keep steps in turn", "  - keep: resource.id != \"ob\"\n  - keep: resource.id != \"pa\"\n  - keep: resource.id != \"oc\"\n", []string{a}},
		{"a dropped Patient's reference becomes its NHS number", "  - keep: resource.resourceType != \"Patient\"\n", []string{b, a, c}},
		{"keep none", "  - keep: false\n", nil},
		{"keep then replace", "  - keep: resource.id != \"ob\"\n  - replace: '{\"resourceType\": \"Bundle\", \"type\": \"collection\", \"entry\": bundle.entry}'\n", []string{a, c}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := routeHead + permit
			if tt.transform != "" {
				src += "transform:\n" + tt.transform
			}
			res, d := processOne(t, src, a, bundle)
			if diff := cmp.Diff(tt.want, d.Patients); diff != "" {
				t.Errorf("patients (-want +got):\n%s", diff)
			}
			sent, err := jsonmap.Decode(d.Body)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(consent.BundleNHSNumbers(sent), d.Patients); diff != "" {
				t.Errorf("patients differ from those of what is sent (-sent +got):\n%s", diff)
			}
			if diff := cmp.Diff([]string{b, a, c}, res.Patients); diff != "" {
				t.Errorf("message patients (-want +got):\n%s", diff)
			}
		})
	}
}
