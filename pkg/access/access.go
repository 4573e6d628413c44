// Package access decides who may use the admin and audit APIs: the roles a
// caller can hold, how a caller is authenticated, and which roles each
// endpoint permits.
//
// The engine asks an Authenticator for the Principal behind a request and
// then checks the permission the request needs against the table in
// RuleFor. Today callers are authenticated by bearer tokens configured by
// reference (see Bearer). Single sign-on plugs in as another
// Authenticator, for example one that verifies an OIDC access token and
// maps its groups or claims to Roles; the permission table and everything
// after authentication stay as they are.
package access

import (
	"context"
	"fmt"
	"slices"
	"strings"
)

// Role is a set of permissions a principal holds.
type Role string

// The roles. A principal may hold several.
const (
	// Operator runs the engine: routes, queues, dead letters, replay and
	// reconciliation. Operators see message trails but no payloads.
	Operator Role = "operator"
	// IntegrationEngineer investigates messages and mappings and sees
	// payloads: the raw input, what was sent, and quarantined bytes.
	IntegrationEngineer Role = "integration_engineer"
	// Auditor reads the audit records and the disclosures of any patient,
	// and may withhold a disclosure from a patient's view.
	Auditor Role = "auditor"
	// PatientService is a patient-facing service: it reads the disclosures
	// of the one patient each request names, and records or changes the
	// Consents patients give through it.
	PatientService Role = "patient_service"
)

// Roles returns every role, in a stable order.
func Roles() []Role {
	return []Role{Operator, IntegrationEngineer, Auditor, PatientService}
}

// ParseRole returns the role s names, or an error listing the roles.
func ParseRole(s string) (Role, error) {
	r := Role(s)
	if slices.Contains(Roles(), r) {
		return r, nil
	}
	names := make([]string, 0, len(Roles()))
	for _, r := range Roles() {
		names = append(names, string(r))
	}
	return "", fmt.Errorf("unknown role %q; roles are %s", s, strings.Join(names, ", "))
}

// Principal is an authenticated caller: a configured name (a token's name,
// or later a single sign-on subject) and the roles it holds. The name is
// written to audit records; it is never a secret.
type Principal struct {
	Name  string
	Roles []Role
}

// Has reports whether p holds role r.
func (p Principal) Has(r Role) bool { return slices.Contains(p.Roles, r) }

// Permission names what a request needs: an endpoint, by the name the
// engine registers it under, or a sub-permission of one such as
// "messages.payload".
type Permission string

// The permissions.
const (
	// Messages is GET /api/messages/{id}: a message's trail.
	Messages Permission = "messages"
	// MessagesPayload adds the message's raw input and outbound bodies.
	MessagesPayload Permission = "messages.payload"
	// FindMessages is GET /api/messages: the messages received with a
	// sender's control id, by id, name and time.
	FindMessages Permission = "findmessages"
	// DeadLetters is GET /api/deadletters.
	DeadLetters Permission = "deadletters"
	// DeadLettersPayload is GET /api/deadletters?detail=true: each dead
	// letter's detail, such as the receiver's answer, which may quote
	// the payload.
	DeadLettersPayload Permission = "deadletters.payload"
	// Replay is POST /api/replay.
	Replay Permission = "replay"
	// Quarantine is GET /api/quarantine without bodies.
	Quarantine Permission = "quarantine"
	// QuarantinePayload is GET /api/quarantine?body=true: the input as
	// received.
	QuarantinePayload Permission = "quarantine.payload"
	// Reconcile is GET /api/reconcile.
	Reconcile Permission = "reconcile"
	// Disclosures is GET /api/patients/{nhs}/disclosures.
	Disclosures Permission = "disclosures"
	// Withhold is POST /api/patients/{nhs}/disclosures/withhold.
	Withhold Permission = "withhold"
	// AuditEvents is GET /fhir/AuditEvent.
	AuditEvents Permission = "auditevents"
	// OptOuts is POST /api/optouts: replacing the national data opt-out
	// list, which changes consent decisions for every patient.
	OptOuts Permission = "optouts"
	// ConsentWrite is POST /fhir/Consent with the consent engine on:
	// recording or changing a patient's Consent, which decides where that
	// patient's data may go.
	ConsentWrite Permission = "consent.write"
)

// Payload is p's payload sub-permission ("messages" gives
// "messages.payload").
func (p Permission) Payload() Permission { return p + ".payload" }

// Rule is who may use a permission.
type Rule struct {
	// Roles are the roles allowed; holding any one is enough.
	Roles []Role
	// Audited means every use (allowed, or refused to an authenticated
	// caller) is written to the audit trail, because it shows payloads or
	// disclosures.
	Audited bool
}

// RuleFor returns the rule of a permission. A permission without a rule
// is refused to everyone.
func RuleFor(p Permission) (Rule, bool) {
	switch p {
	case Messages:
		return Rule{Roles: []Role{Operator, IntegrationEngineer, Auditor}}, true
	case MessagesPayload:
		return Rule{Roles: []Role{IntegrationEngineer}, Audited: true}, true
	case FindMessages:
		return Rule{Roles: []Role{Operator, IntegrationEngineer, Auditor}}, true
	case DeadLetters:
		return Rule{Roles: []Role{Operator, IntegrationEngineer}}, true
	case Replay:
		return Rule{Roles: []Role{Operator}}, true
	case Quarantine:
		return Rule{Roles: []Role{Operator, IntegrationEngineer}}, true
	case DeadLettersPayload:
		return Rule{Roles: []Role{IntegrationEngineer}, Audited: true}, true
	case QuarantinePayload:
		return Rule{Roles: []Role{IntegrationEngineer}, Audited: true}, true
	case Reconcile:
		return Rule{Roles: []Role{Operator, Auditor}}, true
	case Disclosures:
		return Rule{Roles: []Role{Auditor, PatientService}, Audited: true}, true
	case Withhold:
		return Rule{Roles: []Role{Auditor}, Audited: true}, true
	case AuditEvents:
		return Rule{Roles: []Role{Auditor}, Audited: true}, true
	case OptOuts:
		return Rule{Roles: []Role{Operator}, Audited: true}, true
	case ConsentWrite:
		// Only the service a patient gives their Consent through: an
		// integration engineer or operator changing a Consent would be
		// deciding for the patient.
		return Rule{Roles: []Role{PatientService}, Audited: true}, true
	}
	return Rule{}, false
}

// Allowed reports whether p may use perm.
func Allowed(p Principal, perm Permission) bool {
	rule, ok := RuleFor(perm)
	if !ok {
		return false
	}
	return slices.ContainsFunc(rule.Roles, p.Has)
}

// principalKey is the context key of the request's principal.
type principalKey struct{}

// WithPrincipal returns ctx carrying p, as the engine does for each
// authorised request before its handler runs.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// PrincipalFrom returns the principal ctx carries, if any.
func PrincipalFrom(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}
