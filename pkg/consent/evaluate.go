package consent

import (
	"fmt"
	"slices"
	"time"
)

// Input is the message-level context of a decision: who the data is
// about, what the patient said, where it goes and why.
type Input struct {
	// Now is the time of the decision.
	Now time.Time
	// Patient is the patient's NHS number (normalised). Policies of other
	// patients are ignored.
	Patient string
	// Policies are the patient's Consents in the profile, any status.
	Policies []Policy
	// OptOut is the national data opt-out state of the patient.
	OptOut OptOutStatus
	// Restricted reports a restricted (S-flag) patient.
	Restricted bool
	// Purpose and Basis are the route's declared purpose and legal basis.
	Purpose Purpose
	Basis   LegalBasis
	// SkipConsent is the route's declared statutory skip of the Consent
	// gate; only a safeguarding or statutory basis may declare it.
	SkipConsent bool
	// Destination is the receiving organisation.
	Destination Destination
	// Default is the route's declared outcome when no Consent provision
	// applies (Permit or Deny; empty denies).
	Default Outcome
}

// Destination is a receiver: its ODS organisation code and the restricted
// data it is allow-listed to receive.
type Destination struct {
	Name  string
	ODS   string
	Allow []Clearance
}

// allows reports whether the destination is allow-listed for c.
func (d Destination) allows(c Clearance) bool { return slices.Contains(d.Allow, c) }

// OptOutStatus is a patient's national data opt-out state.
type OptOutStatus struct {
	// OptedOut reports that the patient is on the list.
	OptedOut bool
	// Stale reports that the list is missing or older than its allowed
	// age, so OptedOut cannot be trusted.
	Stale bool
}

// Resource is what the engine needs to know about one resource.
type Resource struct {
	// Type is the FHIR resource type.
	Type string
	// Labels are the resource's security labels (meta.security).
	Labels []Coding
	// Codes are the codings of the resource's main code, if any.
	Codes []Coding
	// Date is the clinically relevant date of the data; zero if unknown.
	Date time.Time
	// Opaque marks data whose type, codes, labels and date are unknown:
	// a relayed HL7 v2 message, sent as it came, may carry data of any
	// kind. A provision that restricts those is taken to apply to it when
	// it denies and not to when it permits, so a Consent refusing some
	// kind of data refuses data that may be of that kind.
	Opaque bool
}

// Verdict is the decision for one resource to one destination. Reason and
// Rule never hold patient data.
type Verdict struct {
	// Outcome is Permit, Redact (send with Strip removed) or Deny (do not
	// send this resource).
	Outcome Outcome
	// Strip lists top-level elements to remove when Outcome is Redact.
	Strip []string
	// Gate names the gate that decided.
	Gate   string
	Reason string
	Rule   string
	// ConsentSkipped reports that a statutory route skipped the Consent
	// gate; audit and count it.
	ConsentSkipped bool
}

// Gates, in the order they run.
const (
	GateLegalBasis = "legal-basis"
	GateLegalLabel = "legal-label"
	GateOptOut     = "opt-out"
	GateConsent    = "consent"
	GateRestricted = "restricted-patient"
)

// mutation deliberately breaks the engine; the property tests check that
// each break is caught. Zero is the correct engine.
type mutation int

const (
	mutNone mutation = iota
	mutPermitOverrides
	mutIgnorePeriod
	mutIgnoreNesting
	mutRAsN
)

// Evaluator evaluates consent. The zero value is the engine.
type Evaluator struct {
	mut mutation
}

// Evaluate decides one resource with the zero Evaluator.
func Evaluate(in Input, r Resource) Verdict { return Evaluator{}.Evaluate(in, r) }

// restrictedStrip lists, per resource type, the elements removed for a
// restricted patient when the destination is not allow-listed for them.
func restrictedStrip(resourceType string) []string {
	switch resourceType {
	case "Patient":
		return []string{"address", "telecom", "contact", "generalPractitioner"}
	case "RelatedPerson":
		return []string{"address", "telecom"}
	}
	return nil
}

func (e Evaluator) clearance(c Coding) (Clearance, bool) {
	cl, legal := clearance(c)
	if e.mut == mutRAsN && cl == ClearR {
		return "", false
	}
	return cl, legal
}

// Evaluate runs the gates in order (legal basis and purpose, legal labels,
// opt-out, Consent, restricted-patient redaction) and returns the first
// gate's refusal, or the final outcome.
func (e Evaluator) Evaluate(in Input, r Resource) Verdict {
	deny := func(gate, rule, reason string, args ...any) Verdict {
		return Verdict{Outcome: Deny, Gate: gate, Rule: rule, Reason: fmt.Sprintf(reason, args...), ConsentSkipped: in.SkipConsent}
	}
	// 1. Legal basis and purpose.
	if !in.Basis.Supports(in.Purpose) {
		return deny(GateLegalBasis, "gate:legal-basis", "legal basis %q does not support purpose %q", in.Basis, in.Purpose)
	}
	if in.SkipConsent && !in.Basis.mayGateSkip() {
		return deny(GateLegalBasis, "gate:legal-basis:skip", "legal basis %q may not skip the consent gate", in.Basis)
	}
	// 2. Legal labels: only an allow-list opens them.
	var protected []Clearance
	for _, l := range r.Labels {
		cl, legal := e.clearance(l)
		switch {
		case cl == "" || in.Destination.allows(cl):
		case legal:
			return deny(GateLegalLabel, "gate:legal-label:"+string(cl), "%s data may go only to allow-listed destinations", cl)
		default:
			protected = append(protected, cl)
		}
	}
	// 3. National data opt-out, for purposes beyond individual care.
	if OptOutApplies(in.Purpose, in.Basis) {
		switch {
		case in.OptOut.Stale:
			return deny(GateOptOut, "gate:opt-out:stale", "the national data opt-out list is stale")
		case in.Patient == "":
			return deny(GateOptOut, "gate:opt-out:unknown-patient", "the opt-out cannot be checked without the patient's NHS number")
		case in.OptOut.OptedOut:
			return deny(GateOptOut, "gate:opt-out", "the patient has opted out of %s", in.Purpose)
		}
	}
	// 4. Consent. The rule a permit is audited under is made only once
	// known (this runs for every resource of every delivery).
	var permitRule string
	if !in.SkipConsent {
		res := e.consents(in, r)
		switch res.decision {
		case ProvisionDeny:
			return deny(GateConsent, res.rule, "a consent provision denies")
		case ProvisionPermit:
			permitRule = res.rule
		default:
			switch {
			case in.Basis == BasisExplicitConsent:
				return deny(GateConsent, "consent:none:explicit-required", "legal basis explicit-consent needs a consent that permits")
			case in.Default != Permit:
				return deny(GateConsent, "consent:none:route-default-deny", "no consent provision applies and the route default is deny")
			}
			permitRule = "consent:none:route-default-permit"
		}
		for _, cl := range protected {
			if res.decision != ProvisionPermit || !slices.Contains(res.opened, cl) {
				return deny(GateConsent, "gate:protected-label:"+string(cl), "%s data needs an allow-listed destination or the patient's explicit consent", cl)
			}
		}
	} else if len(protected) > 0 {
		cl := protected[0]
		return deny(GateConsent, "gate:protected-label:"+string(cl), "%s data needs an allow-listed destination on a route that skips consent", cl)
	} else {
		permitRule = "consent:skipped:" + string(in.Basis)
	}
	// 5. Restricted-patient redaction.
	if in.Restricted && !in.Destination.allows(ClearRestrictedPatient) {
		if strip := restrictedStrip(r.Type); strip != nil {
			return Verdict{Outcome: Redact, Strip: strip, Gate: GateRestricted, Rule: "gate:restricted-patient",
				Reason: "restricted patient: contact details withheld", ConsentSkipped: in.SkipConsent}
		}
	}
	gate := GateConsent
	reason := "permitted"
	if in.SkipConsent {
		reason = "statutory route skips the consent gate"
	}
	return Verdict{Outcome: Permit, Gate: gate, Rule: permitRule, Reason: reason, ConsentSkipped: in.SkipConsent}
}

// consentResult is the combined answer of a patient's Consents.
type consentResult struct {
	// decision is "" when no provision applies.
	decision ProvisionType
	// rule names the deciding provision.
	rule string
	// opened lists the protected clearances named by the deciding permit
	// provisions.
	opened []Clearance
}

// consents combines the patient's in-force Consents: deny overrides permit.
func (e Evaluator) consents(in Input, r Resource) consentResult {
	var out consentResult
	for _, pol := range in.Policies {
		if pol.Status != "active" || pol.Patient == "" || pol.Patient != in.Patient {
			continue
		}
		res := e.provision(pol.Root, in, r, 0, false)
		if res.decision == "" {
			continue
		}
		res.rule = "consent:" + pol.ID + ":" + res.rule
		out = e.combine(out, res)
	}
	return out
}

// combine merges two sibling results: deny overrides permit (or the
// reverse under mutPermitOverrides).
func (e Evaluator) combine(a, b consentResult) consentResult {
	strong, weak := ProvisionDeny, ProvisionPermit
	if e.mut == mutPermitOverrides {
		strong, weak = ProvisionPermit, ProvisionDeny
	}
	switch {
	case a.decision == "":
		return b
	case b.decision == "":
		return a
	case a.decision == strong && b.decision == weak:
		return a
	case b.decision == strong && a.decision == weak:
		return b
	}
	// Same decision: keep the first rule, pool what permits opened.
	a.opened = append(a.opened, b.opened...)
	return a
}

// provision evaluates p and its children: a provision that does not apply
// says nothing; one that applies is overridden by whatever its applicable
// children decide, and otherwise decides by its type. For an opaque
// resource a provision restricted by the data's type, code, label or date
// may or may not apply (unsure, passed down to its children): one that may
// denies, and one that may permit says nothing.
func (e Evaluator) provision(p Provision, in Input, r Resource, depth int, unsure bool) consentResult {
	ok, maybe := e.applies(p, in, r)
	if !ok {
		return consentResult{}
	}
	unsure = unsure || maybe
	var kids consentResult
	if e.mut != mutIgnoreNesting && depth < MaxDepth {
		for _, c := range p.Provisions {
			kids = e.combine(kids, e.provision(c, in, r, depth+1, unsure))
		}
	}
	if kids.decision != "" {
		return kids
	}
	if unsure && p.Type == ProvisionPermit {
		return consentResult{}
	}
	res := consentResult{decision: p.Type, rule: p.Path}
	if p.Type == ProvisionPermit {
		for _, l := range p.Labels {
			if cl, _ := e.clearance(l); cl != "" {
				res.opened = append(res.opened, cl)
			}
		}
	}
	return res
}

// applies reports whether every condition of p holds. For an opaque
// resource (Resource.Opaque) the conditions on the data itself (class,
// code, security label, data period) cannot be checked: p then applies
// only maybe, which the second result reports.
func (e Evaluator) applies(p Provision, in Input, r Resource) (ok, maybe bool) {
	if e.mut != mutIgnorePeriod && !p.Period.Contains(in.Now) {
		return false, false
	}
	if len(p.Actors) > 0 && (in.Destination.ODS == "" || !slices.Contains(p.Actors, in.Destination.ODS)) {
		return false, false
	}
	if len(p.Purposes) > 0 && !anyShared(p.Purposes, in.Purpose.codings()) {
		return false, false
	}
	if r.Opaque {
		maybe = len(p.Classes) > 0 || len(p.Codes) > 0 || len(p.Labels) > 0 || !p.DataPeriod.IsZero()
		return true, maybe
	}
	if len(p.Classes) > 0 && !slices.Contains(p.Classes, r.Type) {
		return false, false
	}
	if len(p.Codes) > 0 && !anyShared(p.Codes, r.Codes) {
		return false, false
	}
	if len(p.Labels) > 0 && !anyShared(p.Labels, r.Labels) {
		return false, false
	}
	if !p.DataPeriod.IsZero() && (r.Date.IsZero() || !p.DataPeriod.Contains(r.Date)) {
		return false, false
	}
	return true, false
}

// anyShared reports whether a and b share a coding.
func anyShared(a, b []Coding) bool {
	for _, x := range a {
		if slices.Contains(b, x) {
			return true
		}
	}
	return false
}
