// Package consent decides, per patient, destination and message, whether
// data may leave. This first cut applies each route's declared default
// policy; the full consent engine (FHIR Consent resources, the national
// data opt-out, security labels) plugs in behind the same Decider without
// changing the flow.
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
	// Default is the route's declared policy for when nothing else decides.
	Default Outcome
}

// Decision is the answer, with the reason and the rule that decided. Both
// are audited; neither may hold patient data.
type Decision struct {
	Outcome Outcome
	Reason  string
	Rule    string
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
