package consent

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// Named scenarios, one or more per gate, so a reader sees each rule at
// work; the property tests cover the combinations.
func TestEvaluateScenarios(t *testing.T) {
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	gp := Destination{Name: "gp", ODS: "A81001"}
	warehouse := Destination{Name: "warehouse", ODS: "X26"}
	direct := Input{Now: now, Patient: patientA, Purpose: PurposeDirectCare, Basis: BasisDirectCare, Destination: gp, Default: Permit}
	research := Input{Now: now, Patient: patientA, Purpose: PurposeResearch, Basis: BasisS251, Destination: warehouse, Default: Permit}
	obs := Resource{Type: "Observation", Date: time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)}
	label := func(r Resource, c Coding) Resource { r.Labels = append(r.Labels, c); return r }
	with := func(in Input, f func(*Input)) Input { f(&in); return in }
	policy := func(root Provision) []Policy {
		return []Policy{{ID: "p1", Status: "active", Patient: patientA, Root: root}}
	}
	denyAll := Provision{Path: "Consent.provision", Type: ProvisionDeny}
	grd := Coding{System: SystemRestricted, Code: LabelGRA}
	rLabel := Coding{System: SystemConfidentiality, Code: "R"}

	tests := []struct {
		name     string
		in       Input
		res      Resource
		want     Outcome
		wantRule string
	}{
		{"direct care, nothing recorded: route default", direct, obs, Permit, "consent:none:route-default-permit"},
		{"route default deny", with(direct, func(i *Input) { i.Default = "" }), obs, Deny, "consent:none:route-default-deny"},
		{"basis does not support purpose", with(direct, func(i *Input) { i.Purpose = PurposeResearch }), obs, Deny, "gate:legal-basis"},
		{"unknown basis", with(direct, func(i *Input) { i.Basis = "" }), obs, Deny, "gate:legal-basis"},
		{"skip declared on direct care", with(direct, func(i *Input) { i.SkipConsent = true }), obs, Deny, "gate:legal-basis:skip"},
		{"GRA data to a destination not allow-listed", direct, label(obs, grd), Deny, "gate:legal-label:GRA-S22"},
		{"GRA data: a consent cannot open it", with(direct, func(i *Input) {
			i.Policies = policy(Provision{Path: "Consent.provision", Type: ProvisionPermit, Labels: []Coding{grd}})
		}), label(obs, grd), Deny, "gate:legal-label:GRA-S22"},
		{"GRA data to an allow-listed destination", with(direct, func(i *Input) { i.Destination.Allow = []Clearance{ClearGRA} }), label(obs, grd), Permit, "consent:none:route-default-permit"},
		{"opt-out applies to research", with(research, func(i *Input) { i.OptOut.OptedOut = true }), obs, Deny, "gate:opt-out"},
		{"stale list denies research", with(research, func(i *Input) { i.OptOut.Stale = true }), obs, Deny, "gate:opt-out:stale"},
		{"opt-out does not apply to direct care", with(direct, func(i *Input) { i.OptOut = OptOutStatus{OptedOut: true, Stale: true} }), obs, Permit, "consent:none:route-default-permit"},
		{"research, not opted out", research, obs, Permit, "consent:none:route-default-permit"},
		{"consent denies everything", with(direct, func(i *Input) { i.Policies = policy(denyAll) }), obs, Deny, "consent:p1:Consent.provision"},
		{"inactive consent counts as absent", with(direct, func(i *Input) {
			i.Policies = policy(denyAll)
			i.Policies[0].Status = "inactive"
		}), obs, Permit, "consent:none:route-default-permit"},
		{"expired consent counts as absent", with(direct, func(i *Input) {
			d := denyAll
			d.Period = Period{End: now.Add(-time.Hour)}
			i.Policies = policy(d)
		}), obs, Permit, "consent:none:route-default-permit"},
		{"more specific permit wins over base deny", with(direct, func(i *Input) {
			d := denyAll
			d.Provisions = []Provision{{Path: "Consent.provision.provision[0]", Type: ProvisionPermit, Actors: []string{"A81001"}}}
			i.Policies = policy(d)
		}), obs, Permit, "consent:p1:Consent.provision.provision[0]"},
		{"exception does not apply to another actor", with(direct, func(i *Input) {
			d := denyAll
			d.Provisions = []Provision{{Path: "Consent.provision.provision[0]", Type: ProvisionPermit, Actors: []string{"B82002"}}}
			i.Policies = policy(d)
		}), obs, Deny, "consent:p1:Consent.provision"},
		{"deny overrides permit among siblings", with(direct, func(i *Input) {
			d := denyAll
			d.Provisions = []Provision{
				{Path: "Consent.provision.provision[0]", Type: ProvisionPermit, Actors: []string{"A81001"}},
				{Path: "Consent.provision.provision[1]", Type: ProvisionDeny, Classes: []string{"Observation"}},
			}
			i.Policies = policy(d)
		}), obs, Deny, "consent:p1:Consent.provision.provision[1]"},
		{"deny overrides permit across consents", with(direct, func(i *Input) {
			i.Default = ""
			i.Policies = []Policy{
				{ID: "p1", Status: "active", Patient: patientA, Root: Provision{Path: "Consent.provision", Type: ProvisionPermit}},
				{ID: "p2", Status: "active", Patient: patientA, Root: Provision{Path: "Consent.provision", Type: ProvisionDeny, Purposes: []Coding{{System: SystemActReason, Code: "TREAT"}}}},
			}
		}), obs, Deny, "consent:p2:Consent.provision"},
		{"data period outside", with(direct, func(i *Input) {
			i.Policies = policy(Provision{Path: "Consent.provision", Type: ProvisionDeny, DataPeriod: Period{End: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}})
		}), obs, Permit, "consent:none:route-default-permit"},
		{"another patient's consent is ignored", with(direct, func(i *Input) {
			i.Policies = policy(denyAll)
			i.Policies[0].Patient = patientB
		}), obs, Permit, "consent:none:route-default-permit"},
		{"explicit consent basis needs a permit", with(research, func(i *Input) { i.Basis = BasisExplicitConsent }), obs, Deny, "consent:none:explicit-required"},
		{"explicit consent given; opt-out does not apply", with(research, func(i *Input) {
			i.Basis = BasisExplicitConsent
			i.OptOut.OptedOut = true
			i.Policies = policy(Provision{Path: "Consent.provision", Type: ProvisionPermit, Purposes: []Coding{{System: SystemPurpose, Code: "research"}}})
		}), obs, Permit, "consent:p1:Consent.provision"},
		{"R data needs allow-list or consent", direct, label(obs, rLabel), Deny, "gate:protected-label:R"},
		{"R data opened by a consent naming it", with(direct, func(i *Input) {
			i.Policies = policy(Provision{Path: "Consent.provision", Type: ProvisionPermit, Labels: []Coding{rLabel}})
		}), label(obs, rLabel), Permit, "consent:p1:Consent.provision"},
		{"R data to an allow-listed destination", with(direct, func(i *Input) { i.Destination.Allow = []Clearance{ClearR} }), label(obs, rLabel), Permit, "consent:none:route-default-permit"},
		{"safeguarding skips consent", with(direct, func(i *Input) {
			i.Purpose, i.Basis, i.SkipConsent = PurposeSafeguarding, BasisSafeguarding, true
			i.Policies = policy(denyAll)
		}), obs, Permit, "consent:skipped:safeguarding"},
		{"skipping does not open protected data", with(direct, func(i *Input) {
			i.Purpose, i.Basis, i.SkipConsent = PurposeSafeguarding, BasisSafeguarding, true
		}), label(obs, Coding{System: SystemRestricted, Code: LabelSexualHealth}), Deny, "gate:protected-label:SEXUAL-HEALTH"},
		{"restricted patient: Patient stripped", with(direct, func(i *Input) { i.Restricted = true }), Resource{Type: "Patient"}, Redact, "gate:restricted-patient"},
		{"restricted patient: Observation untouched", with(direct, func(i *Input) { i.Restricted = true }), obs, Permit, "consent:none:route-default-permit"},
		{"restricted patient: allow-listed destination", with(direct, func(i *Input) {
			i.Restricted = true
			i.Destination.Allow = []Clearance{ClearRestrictedPatient}
		}), Resource{Type: "Patient"}, Permit, "consent:none:route-default-permit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Evaluate(tt.in, tt.res)
			if diff := cmp.Diff([]string{string(tt.want), tt.wantRule}, []string{string(got.Outcome), got.Rule}); diff != "" {
				t.Errorf("(-want +got):\n%s\nreason: %s", diff, got.Reason)
			}
			// The oracle agrees on every scenario.
			o := oracle(tt.in, tt.res)
			if o.forbidden != (got.Outcome == Deny) || (!o.forbidden && o.strip != (got.Outcome == Redact)) {
				t.Errorf("oracle disagrees: %+v", o)
			}
		})
	}
}

func TestCheckRoute(t *testing.T) {
	tests := []struct {
		purpose, basis string
		skip           bool
		wantErr        string
	}{
		{"direct-care", "direct-care", false, ""},
		{"safeguarding", "safeguarding", true, ""},
		{"public-health", "statutory", true, ""},
		{"research", "s251", false, ""},
		{"research", "direct-care", false, "consent legal basis direct-care does not support purpose research"},
		{"direct-care", "direct-care", true, "only a safeguarding or statutory legal basis may skip the consent gate, not direct-care"},
		{"marketing", "direct-care", false, `consent purpose must be one of direct-care, safeguarding, research, planning, public-health, got "marketing"`},
		{"direct-care", "", false, `consent legal basis must be one of direct-care, safeguarding, s251, explicit-consent, statutory, got ""`},
	}
	for _, tt := range tests {
		t.Run(tt.purpose+"/"+tt.basis, func(t *testing.T) {
			err := CheckRoute(tt.purpose, tt.basis, tt.skip)
			got := ""
			if err != nil {
				got = err.Error()
			}
			if got != tt.wantErr {
				t.Errorf("got %q, want %q", got, tt.wantErr)
			}
		})
	}
}

// TestEvaluateDecidesWithoutAllocating checks that deciding a resource
// permitted with no Consent recorded, as nearly every resource of every
// delivery is, allocates nothing: Evaluate runs once for each. (A
// Consent's rule names it, and is made when one decides.)
func TestEvaluateDecidesWithoutAllocating(t *testing.T) {
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	direct := Input{Now: now, Patient: patientA, Purpose: PurposeDirectCare, Basis: BasisDirectCare, Destination: Destination{Name: "gp", ODS: "A81001"}, Default: Permit}
	research := Input{Now: now, Patient: patientA, Purpose: PurposeResearch, Basis: BasisS251, Destination: Destination{Name: "warehouse", ODS: "X26"}, Default: Permit}
	obs := Resource{Type: "Observation", Date: time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)}
	for _, tt := range []struct {
		name string
		in   Input
	}{
		{"route default", direct},
		{"research, not opted out", research},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if v := Evaluate(tt.in, obs); v.Outcome != Permit {
				t.Fatalf("outcome %s (%s), want permit", v.Outcome, v.Reason)
			}
			if n := testing.AllocsPerRun(50, func() { Evaluate(tt.in, obs) }); n != 0 {
				t.Errorf("%v allocations a decision", n)
			}
		})
	}
}
