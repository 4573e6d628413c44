package engine

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/junction-fhir/junction/pkg/access"
	"github.com/junction-fhir/junction/pkg/adapter"
	"github.com/junction-fhir/junction/pkg/audit"
	"github.com/junction-fhir/junction/pkg/config"
)

// LocalPrincipal is the principal of every admin request when no token is
// configured and the listener is on loopback: it holds every role, as the
// admin API has always been open on loopback.
const LocalPrincipal = "local"

// Outcomes of an access decision, in access records and the accesses
// metric.
const (
	accessAllowed         = "allowed"
	accessDenied          = "denied"
	accessUnauthenticated = "unauthenticated"
	accessAuditFailed     = "audit_failed"
)

// newAuthenticator resolves http.tokens (and the deprecated
// http.admin_token, a token named admin_token holding every role) into a
// bearer-token authenticator. With no token it authenticates as
// LocalPrincipal every request from this machine's own users (see
// access.Local), which it allows only on a loopback listener.
func (e *Engine) newAuthenticator(hc config.HTTPConfig) (access.Authenticator, error) {
	var tokens []access.Token
	if hc.AdminToken != "" {
		v, err := e.secrets.Resolve(hc.AdminToken)
		if err != nil {
			return nil, fmt.Errorf("http.admin_token: %w", err)
		}
		tokens = append(tokens, access.Token{Name: config.AdminTokenName, Roles: access.Roles(), Secret: v})
		e.log.Warn("http.admin_token is deprecated: it is a token holding every role; configure http.tokens with a role for each caller instead", "principal", config.AdminTokenName)
	}
	for i, t := range hc.Tokens {
		roles, err := t.ParsedRoles()
		if err != nil {
			return nil, fmt.Errorf("http.tokens[%d] (%s): %w", i, t.Name, err)
		}
		v, err := e.secrets.Resolve(t.Token)
		if err != nil {
			return nil, fmt.Errorf("http.tokens[%d] (%s): token: %w", i, t.Name, err)
		}
		tokens = append(tokens, access.Token{Name: t.Name, Roles: roles, Secret: v})
	}
	if len(tokens) == 0 {
		if !config.IsLoopback(hc.Listen) {
			return nil, fmt.Errorf("http.tokens: at least one token is required when http.listen (%s) is not a loopback address", hc.Listen)
		}
		return access.Local{Principal: access.Principal{Name: LocalPrincipal, Roles: access.Roles()}}, nil
	}
	b, err := access.NewBearer(tokens)
	if err != nil {
		return nil, fmt.Errorf("http.tokens: %w", err)
	}
	return b, nil
}

// checkCallerSecrets refuses an input secret (a FHIR input's
// bearer_token) that is also an admin token: whoever the input's secret
// is given to, a supplier system say, would hold that token's roles.
func (e *Engine) checkCallerSecrets() error {
	b, ok := e.auth.(*access.Bearer)
	if !ok {
		return nil
	}
	for _, name := range sortedKeys(e.plan.Inputs) {
		cs, ok := e.plan.Inputs[name].Config.(adapter.CallerSecrets)
		if !ok {
			continue
		}
		secrets := cs.CallerSecrets()
		for _, key := range sortedKeys(secrets) {
			v, err := e.secrets.Resolve(secrets[key])
			if err != nil {
				continue // the input reports it when it starts
			}
			if p, ok := b.Holder(v); ok {
				return fmt.Errorf("inputs.%s.%s: the same secret as the admin token %s; whoever is given it would hold that token's roles: give each its own", name, key, p.Name)
			}
		}
	}
	return nil
}

// grantKey is the context key of the request's grant.
type grantKey struct{}

// grant is what authorize decided for a request.
type grant struct {
	// payload: the caller asked for the endpoint's payloads and may see
	// them, and the access has been audited.
	payload bool
}

// payloadAllowed reports whether the request's caller may see payloads of
// an endpoint that shows them only to callers allowed to (GET
// /api/messages/{id}), and asked for them.
func payloadAllowed(ctx context.Context) bool {
	g, _ := ctx.Value(grantKey{}).(grant)
	return g.payload
}

// requiredPermission is the permission a request to the endpoint
// registered as name needs: the endpoint's own, or its payload
// sub-permission when the request asks for bodies (GET
// /api/quarantine?body=true) or details (GET /api/deadletters?detail=true).
func requiredPermission(name string, r *http.Request) access.Permission {
	p := access.Permission(name)
	switch {
	case p == access.Quarantine && r.URL.Query().Get("body") == "true",
		p == access.DeadLetters && r.URL.Query().Get("detail") == "true":
		return p.Payload()
	}
	return p
}

// optionalPayload reports whether the endpoint shows payloads to callers
// holding its payload permission and leaves them out for the others,
// rather than refusing them.
func optionalPayload(name string) bool { return access.Permission(name) == access.Messages }

// wantsPayloads reports whether a request to an endpoint with optional
// payloads asks for them: it does unless its payloads parameter says
// otherwise (GET /api/messages/{id}?payloads=false, the trail alone). A
// value that is not a boolean asks for none; the handler refuses it.
func wantsPayloads(r *http.Request) bool {
	v := r.URL.Query().Get("payloads")
	if v == "" {
		return true
	}
	b, err := strconv.ParseBool(v)
	return err == nil && b
}

// authorize authenticates the request and checks its permission. On
// success it returns the request carrying the principal (see
// access.PrincipalFrom) and the grant; otherwise it has answered 401, 403
// or 503. Uses of audited permissions are written to the audit trail
// first, allowed or denied; an allowed use that cannot be recorded is
// refused.
func (e *Engine) authorize(w http.ResponseWriter, r *http.Request, name string) (*http.Request, bool) {
	r, _, ref := e.check(r, name, true)
	if ref == nil {
		return r, true
	}
	switch ref.status {
	case http.StatusUnauthorized:
		w.Header().Set("WWW-Authenticate", ref.challenge)
		writeJSON(w, ref.status, map[string]string{"error": ref.msg})
	case http.StatusForbidden:
		writeJSON(w, ref.status, map[string]any{"error": ref.msg, "permission": string(ref.perm), "roles": ref.roles})
	default:
		writeJSON(w, ref.status, map[string]string{"error": ref.msg})
	}
	return r, false
}

// refusal is a request check refused, for the caller to answer in its
// endpoint's format (JSON for the admin API, an OperationOutcome on the
// FHIR endpoint).
type refusal struct {
	status int
	msg    string
	// challenge is the WWW-Authenticate header of a 401.
	challenge string
	// perm is the permission needed and roles the roles granting it.
	perm  access.Permission
	roles []access.Role
}

// check authenticates the request and checks the permission of the
// endpoint registered as name. Refused uses of audited permissions are
// recorded (best effort). With recordAllowed an allowed use of an audited
// permission is recorded too, and refused with 503 if it cannot be;
// without it the caller records the use itself once it knows more (the
// patient a Consent is for). It returns the request carrying the
// principal and the grant, and the principal.
func (e *Engine) check(r *http.Request, name string, recordAllowed bool) (*http.Request, access.Principal, *refusal) {
	perm := requiredPermission(name, r)
	p, err := e.auth.Authenticate(r)
	if errors.Is(err, access.ErrNotLocal) {
		e.metrics.Accesses.WithLabelValues(string(perm), accessUnauthenticated, "").Inc()
		return r, p, &refusal{status: http.StatusForbidden, msg: err.Error(), perm: perm}
	}
	if err != nil {
		e.metrics.Accesses.WithLabelValues(string(perm), accessUnauthenticated, "").Inc()
		ref := &refusal{status: http.StatusUnauthorized, challenge: `Bearer realm="junction"`, msg: "a bearer token is required", perm: perm}
		if errors.Is(err, access.ErrUnknownCredentials) {
			ref.challenge += `, error="invalid_token"`
			ref.msg = "the bearer token is not recognised"
		}
		return r, p, ref
	}
	if !access.Allowed(p, perm) {
		rule, _ := access.RuleFor(perm)
		payloadRule, _ := access.RuleFor(perm.Payload())
		if rule.Audited || payloadRule.Audited {
			// Best effort: the request is refused either way.
			if err := e.recordAccess(r, p, name, perm, accessDenied, ""); err != nil {
				e.log.Warn("access denied but not recorded", "principal", p.Name, "permission", string(perm), "err", err)
			}
		}
		e.metrics.Accesses.WithLabelValues(string(perm), accessDenied, p.Name).Inc()
		return r, p, &refusal{
			status: http.StatusForbidden,
			msg:    fmt.Sprintf("permission %s is needed, which the caller's roles do not grant", perm),
			perm:   perm, roles: rule.Roles,
		}
	}
	var g grant
	if optionalPayload(name) && wantsPayloads(r) && access.Allowed(p, perm.Payload()) {
		perm, g.payload = perm.Payload(), true
	}
	if rule, _ := access.RuleFor(perm); rule.Audited && recordAllowed {
		if err := e.recordAccess(r, p, name, perm, accessAllowed, ""); err != nil {
			e.log.Error("access refused: it could not be recorded", "principal", p.Name, "permission", string(perm), "err", err)
			e.metrics.Accesses.WithLabelValues(string(perm), accessAuditFailed, p.Name).Inc()
			return r, p, &refusal{status: http.StatusServiceUnavailable, msg: "the access could not be recorded in the audit trail; try again", perm: perm}
		}
	}
	if recordAllowed {
		e.metrics.Accesses.WithLabelValues(string(perm), accessAllowed, p.Name).Inc()
	}
	ctx := access.WithPrincipal(r.Context(), p)
	ctx = context.WithValue(ctx, grantKey{}, g)
	return r.WithContext(ctx), p, nil
}

// recordAccess writes an access record: under the message's id when the
// route names one ({id}) that is not an audit subject of its own, else
// under an id of its own; with the patient's keyed hash when the route
// names a patient ({nhs}), the body does (withBodyPatient) or the caller
// does (patientKey, such as the patient of a posted Consent), never the
// NHS number.
func (e *Engine) recordAccess(r *http.Request, p access.Principal, name string, perm access.Permission, outcome, patientKey string) error {
	rec := audit.Record{
		Time: time.Now().UTC(), Event: audit.Accessed, Outcome: outcome,
		Principal: p.Name, Endpoint: r.Pattern, Rule: string(perm),
	}
	if rec.Endpoint == "" {
		rec.Endpoint = r.Method + " " + name
	}
	if id := r.PathValue("id"); validID(id) && id != "checkpoint" && id != "gap" {
		rec.MessageID = id
	} else {
		rec.MessageID = "access-" + e.accessIDs.New()
	}
	if nhs := r.PathValue("nhs"); nhs != "" {
		rec.Patient = e.patientHash(nhs)
	}
	if nhs, _ := r.Context().Value(bodyPatientKey{}).(string); nhs != "" {
		rec.Patient = e.patientHash(nhs)
	}
	if patientKey != "" {
		rec.Patient = e.patientHash(patientKey)
	}
	if err := e.audit.Write(r.Context(), rec.MessageID, "", rec); err != nil {
		return fmt.Errorf("recording access to %s: %w", strconv.Quote(name), err)
	}
	return nil
}
