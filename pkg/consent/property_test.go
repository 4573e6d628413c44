package consent

import (
	"context"
	"flag"
	"fmt"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"pgregory.net/rapid"
)

// casesEnv raises the number of property cases, for example to 1000000.
const casesEnv = "JUNCTION_CONSENT_CASES"

// defaultCases is how many cases each property runs in CI.
const defaultCases = 100000

// mutationCases is the budget within which each broken engine must be
// caught.
const mutationCases = 10000

// setRapidFlag sets one of rapid's command-line flags for the rest of the
// test, unless the command line set it, and restores it afterwards.
func setRapidFlag(t *testing.T, name, value string) {
	t.Helper()
	explicit := false
	flag.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == name })
	if explicit {
		return
	}
	f := flag.Lookup(name)
	if f == nil {
		t.Fatalf("rapid flag %s not registered", name)
	}
	old := f.Value.String()
	if err := f.Value.Set(value); err != nil {
		t.Fatalf("setting %s: %v", name, err)
	}
	t.Cleanup(func() {
		if err := f.Value.Set(old); err != nil {
			t.Errorf("restoring %s: %v", name, err)
		}
	})
}

// propertyCases returns the number of cases: JUNCTION_CONSENT_CASES if set,
// otherwise defaultCases (a fifth of it under -short, as rapid divides).
func propertyCases(t *testing.T) int {
	t.Helper()
	if s := os.Getenv(casesEnv); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			t.Fatalf("%s must be a positive integer", casesEnv)
		}
		return n
	}
	return defaultCases
}

// withCases makes rapid run n cases in this test (-rapid.checks on the
// command line still wins).
func withCases(t *testing.T, n int) {
	t.Helper()
	setRapidFlag(t, "rapid.checks", strconv.Itoa(n))
}

func delivered(v Verdict) bool { return v.Outcome != Deny }

// safety is the central property: the engine e never lets through what the
// oracle forbids, and strips exactly where the oracle strips.
func safety(e Evaluator) func(*rapid.T) {
	return func(t *rapid.T) {
		in := genInput(t)
		r := genResource(t)
		got := e.Evaluate(in, r)
		want := oracle(in, r)
		if want.forbidden && delivered(got) {
			t.Fatalf("engine delivers (%s, rule %s) what the oracle forbids (%s)", got.Outcome, got.Rule, want.why)
		}
		if !want.forbidden && delivered(got) && want.strip != (got.Outcome == Redact) {
			t.Fatalf("strip: engine %s, oracle strip=%v", got.Outcome, want.strip)
		}
	}
}

func TestPropertyEngineNeverExceedsOracle(t *testing.T) {
	withCases(t, propertyCases(t))
	rapid.Check(t, safety(Evaluator{}))
}

// The engine and the oracle agree both ways: the engine forbids nothing
// the oracle allows either, so the safety property is not met by denying
// everything.
func TestPropertyEngineAgreesWithOracle(t *testing.T) {
	withCases(t, propertyCases(t))
	rapid.Check(t, func(t *rapid.T) {
		in := genInput(t)
		r := genResource(t)
		got := Evaluate(in, r)
		want := oracle(in, r)
		if want.forbidden == delivered(got) {
			t.Fatalf("engine %s (rule %s), oracle forbidden=%v (%s)", got.Outcome, got.Rule, want.forbidden, want.why)
		}
	})
}

// addDeny returns a copy of in with one more deny: a new Consent, or a deny
// provision nested somewhere in an existing one.
func addDeny(t *rapid.T, in Input) Input {
	out := in
	out.Policies = append([]Policy(nil), in.Policies...)
	deny := genProvision(t, "added", MaxDepth)
	deny.Type = ProvisionDeny
	if len(out.Policies) == 0 || rapid.Bool().Draw(t, "new-consent") {
		out.Policies = append(out.Policies, Policy{ID: "added", Status: "active", Patient: in.Patient, Root: deny})
		return out
	}
	i := rapid.IntRange(0, len(out.Policies)-1).Draw(t, "into")
	pol := out.Policies[i]
	// Nest under the root or under one of its children, keeping depth.
	root := cloneProvision(pol.Root)
	if len(root.Provisions) > 0 && rapid.Bool().Draw(t, "grandchild") {
		j := rapid.IntRange(0, len(root.Provisions)-1).Draw(t, "child")
		root.Provisions[j].Provisions = append(root.Provisions[j].Provisions, deny)
	} else {
		root.Provisions = append(root.Provisions, deny)
	}
	pol.Root = root
	out.Policies[i] = pol
	return out
}

func cloneProvision(p Provision) Provision {
	c := p
	c.Provisions = nil
	for _, k := range p.Provisions {
		c.Provisions = append(c.Provisions, cloneProvision(k))
	}
	return c
}

func TestPropertyAddingDenyNeverAddsDelivery(t *testing.T) {
	withCases(t, propertyCases(t))
	rapid.Check(t, func(t *rapid.T) {
		in := genInput(t)
		r := genResource(t)
		before := Evaluate(in, r)
		after := Evaluate(addDeny(t, in), r)
		if delivered(after) && !delivered(before) {
			t.Fatalf("adding a deny turned %s (%s) into %s (%s)", before.Outcome, before.Rule, after.Outcome, after.Rule)
		}
	})
}

func TestPropertyOtherPatientsChangeNothing(t *testing.T) {
	withCases(t, propertyCases(t))
	rapid.Check(t, func(t *rapid.T) {
		in := genInput(t)
		r := genResource(t)
		before := Evaluate(in, r)
		other := in
		other.Policies = append([]Policy(nil), in.Policies...)
		n := rapid.IntRange(1, 3).Draw(t, "others")
		for i := range n {
			p := genPolicy(t, fmt.Sprintf("other%d", i), rapid.SampledFrom([]string{patientB, ""}).Draw(t, "other-patient"))
			at := rapid.IntRange(0, len(other.Policies)).Draw(t, "at")
			other.Policies = append(other.Policies[:at], append([]Policy{p}, other.Policies[at:]...)...)
		}
		after := Evaluate(other, r)
		if diff := cmp.Diff(before, after); diff != "" {
			t.Fatalf("another patient's consents changed the verdict (-before +after):\n%s", diff)
		}
	})
}

// failRecorder is a rapid.TB that records failure instead of failing the
// test, so a test can require that rapid finds a counterexample.
type failRecorder struct {
	name   string
	failed bool
	msgs   []string
}

func (f *failRecorder) Helper()              {}
func (f *failRecorder) Name() string         { return f.name }
func (f *failRecorder) Logf(string, ...any)  {}
func (f *failRecorder) Log(...any)           {}
func (f *failRecorder) Skipf(string, ...any) {}
func (f *failRecorder) Skip(...any)          {}
func (f *failRecorder) SkipNow()             {}
func (f *failRecorder) Errorf(s string, a ...any) {
	f.failed = true
	f.msgs = append(f.msgs, fmt.Sprintf(s, a...))
}
func (f *failRecorder) Error(a ...any)            { f.failed = true; f.msgs = append(f.msgs, fmt.Sprint(a...)) }
func (f *failRecorder) Fatalf(s string, a ...any) { f.Errorf(s, a...) }
func (f *failRecorder) Fatal(a ...any)            { f.Error(a...) }
func (f *failRecorder) FailNow()                  { f.failed = true }
func (f *failRecorder) Fail()                     { f.failed = true }
func (f *failRecorder) Failed() bool              { return f.failed }

// Each deliberately broken engine must be caught by the safety property
// within mutationCases cases.
func TestPropertyCatchesBrokenEngines(t *testing.T) {
	tests := []struct {
		name string
		mut  mutation
	}{
		{"deny-overrides flipped", mutPermitOverrides},
		{"period ignored", mutIgnorePeriod},
		{"nesting ignored", mutIgnoreNesting},
		{"R treated as N", mutRAsN},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			withCases(t, mutationCases)
			setRapidFlag(t, "rapid.nofailfile", "true")
			setRapidFlag(t, "rapid.shrinktime", "2s")
			rec := &failRecorder{name: t.Name()}
			rapid.Check(rec, safety(Evaluator{mut: tt.mut}))
			if !rec.failed {
				t.Fatalf("the broken engine (%s) passed %d cases", tt.name, mutationCases)
			}
			if testing.Verbose() && len(rec.msgs) > 0 {
				t.Logf("caught: %.300s", rec.msgs[0])
			}
		})
	}
}

// renderResource writes a generated Resource as FHIR JSON.
func renderResource(r Resource, id string) map[string]any {
	m := map[string]any{"resourceType": r.Type, "id": id}
	var sec []any
	for _, l := range r.Labels {
		sec = append(sec, coding(l))
	}
	if sec != nil {
		m["meta"] = map[string]any{"security": sec}
	}
	if len(r.Codes) > 0 {
		var cs []any
		for _, c := range r.Codes {
			cs = append(cs, coding(c))
		}
		m["code"] = map[string]any{"coding": cs}
	}
	if !r.Date.IsZero() {
		m["effectiveDateTime"] = r.Date.Format(time.RFC3339)
	}
	if r.Type == "Patient" {
		m["address"] = []any{map[string]any{"city": "Testtown"}}
	} else {
		m["subject"] = map[string]any{"reference": "urn:uuid:r0"}
	}
	return m
}

// Through the Decider and Apply: what reaches the destination is exactly
// what the oracle allows, resource by resource.
func TestPropertyDeciderAndApplyMatchOracle(t *testing.T) {
	withCases(t, propertyCases(t)/5)
	rapid.Check(t, func(t *rapid.T) {
		in := genInput(t)
		n := rapid.IntRange(1, 4).Draw(t, "resources")
		var res []Resource
		var entries []any
		for i := range n {
			r := genResource(t)
			if r.Type == "Patient" {
				// On a Patient, R marks the patient restricted: Restricted
				// models that.
				r.Labels = slices.DeleteFunc(r.Labels, isRestrictedLabel)
			}
			res = append(res, r)
			entries = append(entries, map[string]any{"fullUrl": fmt.Sprintf("urn:uuid:r%d", i), "resource": renderResource(r, fmt.Sprintf("r%d", i))})
		}
		e := &Engine{
			Source:       memSource{policies: map[string][]Policy{in.Patient: in.Policies}, optOut: map[string]OptOutStatus{in.Patient: in.OptOut}},
			Destinations: map[string]Destination{"dest": in.Destination},
			Now:          func() time.Time { return in.Now },
		}
		req := Request{Route: "r", Purpose: string(in.Purpose), LegalBasis: string(in.Basis), SkipConsent: in.SkipConsent,
			Restricted: in.Restricted, Destination: "dest", PatientKey: in.Patient, Default: in.Default,
			Bundle: map[string]any{"resourceType": "Bundle", "entry": entries}}
		d, err := e.Decide(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		out, err := Apply(req.Bundle, d)
		if err != nil {
			t.Fatal(err)
		}
		sent := map[string]map[string]any{}
		for _, x := range out["entry"].([]any) {
			m := x.(map[string]any)
			sent[m["fullUrl"].(string)] = m["resource"].(map[string]any)
		}
		allowed := 0
		// Every resource but a Patient has r0 as its subject: withheld,
		// it takes them with it (withholdDependents).
		subjectWithheld := oracle(in, res[0]).forbidden
		for i, r := range res {
			o := oracle(in, r)
			got, ok := sent[fmt.Sprintf("urn:uuid:r%d", i)]
			if o.forbidden {
				if ok {
					t.Fatalf("resource %d (%s) sent; the oracle forbids it (%s)", i, r.Type, o.why)
				}
				continue
			}
			if i > 0 && r.Type != "Patient" && subjectWithheld {
				if ok {
					t.Fatalf("resource %d (%s) sent without its subject, which the oracle forbids", i, r.Type)
				}
				continue
			}
			allowed++
			if !ok {
				t.Fatalf("resource %d (%s) withheld (%s); the oracle allows it", i, r.Type, d.Resources[i].Rule)
			}
			if _, hasAddr := got["address"]; r.Type == "Patient" && hasAddr == o.strip {
				t.Fatalf("Patient address kept=%v, oracle strip=%v", hasAddr, o.strip)
			}
		}
		if (allowed == 0) != (d.Outcome == Deny) {
			t.Fatalf("message outcome %s with %d of %d resources allowed", d.Outcome, allowed, n)
		}
	})
}
