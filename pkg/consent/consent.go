// Package consent decides, per patient, destination and resource, whether
// data may leave.
//
// DefaultPolicy applies a route's declared default alone. Engine is the
// consent engine: it reads the patient's FHIR Consents (in the profile of
// PROFILE.md, parsed by ParsePolicy) and national data opt-out state from
// a Source such as Store, and runs Evaluate on each resource of a bundle.
// Evaluate runs gates in a fixed order: legal basis and purpose, legal
// labels, opt-out, Consent, restricted-patient redaction. Apply makes the
// redactions a Decision asks for.
package consent

import (
	"context"
	"fmt"
)

// Outcome is what a decision allows.
type Outcome string

// Outcomes.
const (
	Permit Outcome = "permit"
	Deny   Outcome = "deny"
	Redact Outcome = "redact"
)

// ParseOutcome reads a policy name.
func ParseOutcome(s string) (Outcome, error) {
	switch Outcome(s) {
	case Permit, Deny:
		return Outcome(s), nil
	}
	return "", fmt.Errorf("consent policy must be permit or deny, got %q", s)
}

// Request is one question: may this message go to this destination?
type Request struct {
	Route       string
	Purpose     string
	Destination string
	// PatientKey identifies the patient; never logged.
	PatientKey string
	// Bundle is the FHIR bundle as JSON-shaped maps.
	Bundle map[string]any
	// BundlePatients, when not nil, is BundleNHSNumbers(Bundle), found
	// by the caller already (a route has them for the message's
	// disclosure list): the engine takes them rather than walk every
	// resource of Bundle again for each destination. Nil: the engine
	// finds them.
	BundlePatients []string
	// Default is the route's declared policy for when nothing else decides.
	Default Outcome
	// LegalBasis is the route's declared legal basis (see LegalBasis).
	LegalBasis string
	// SkipConsent is the route's declared statutory skip of the Consent
	// gate.
	SkipConsent bool
	// Restricted reports a restricted (S-flag) patient, for example from
	// the patient index; a Patient labelled R in the bundle also counts.
	Restricted bool
	// Opaque reports that what is sent carries more than Bundle shows: an
	// HL7 v2 message sent as it came, which may hold segments its
	// translation does not map (a relayed one's Bundle holds only its
	// header and patients). Its other data, of unknown kind, is decided
	// as Resource.Opaque: a Consent provision refusing some kind of data
	// denies the whole message.
	Opaque bool
	// OtherPatients are the NHS numbers of patients the message is about
	// that Bundle does not name (a relayed message's later PID known to
	// the patient index by a local identifier alone, or the survivor a
	// merged NHS number the message gives was merged into): each is
	// decided for, as the patients Bundle names are.
	OtherPatients []string
	// UnidentifiedPatient reports that the message is also about a
	// patient whose NHS number is known to nobody (a relayed message's
	// PID with a local identifier the patient index does not know): that
	// patient is decided for as an unknown patient is, so a purpose the
	// national data opt-out applies to is denied, as it is for a message
	// about that patient alone.
	UnidentifiedPatient bool
}

// Decision is the answer, with the reason and the rule that decided. Both
// are audited; neither may hold patient data.
type Decision struct {
	Outcome Outcome
	Reason  string
	Rule    string
	// Resources holds one verdict per Bundle.entry when the Engine
	// decided; Apply uses it to redact.
	Resources []ResourceDecision
	// ConsentSkipped reports that a statutory route skipped the Consent
	// gate; the skip is audited and counted.
	ConsentSkipped bool
}

// Decider makes consent decisions.
type Decider interface {
	Decide(ctx context.Context, req Request) (Decision, error)
}

// DefaultPolicy decides by the route's declared default alone.
type DefaultPolicy struct{}

// Decide returns the route's default.
func (DefaultPolicy) Decide(_ context.Context, req Request) (Decision, error) {
	out := req.Default
	if out == "" {
		out = Deny
	}
	return Decision{
		Outcome: out,
		Reason:  fmt.Sprintf("route default policy %s for purpose %q", out, req.Purpose),
		Rule:    "route:" + req.Route + ":default",
	}, nil
}
