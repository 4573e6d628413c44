package engine

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/junction-fhir/junction/pkg/access"
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
// bearer-token authenticator. With no token it authenticates everyone as
// LocalPrincipal, which it allows only on a loopback listener.
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
		return access.Fixed{Principal: access.Principal{Name: LocalPrincipal, Roles: access.Roles()}}, nil
	}
	b, err := access.NewBearer(tokens)
	if err != nil {
		return nil, fmt.Errorf("http.tokens: %w", err)
	}
	return b, nil
}

// grantKey is the context key of the request's grant.
type grantKey struct{}

// grant is what authorize decided for a request.
type grant struct {
	// payload: the caller may see the endpoint's payloads, and the access
	// has been audited.
	payload bool
}

// payloadAllowed reports whether the request's caller may see payloads of
// an endpoint that shows them only to callers allowed to (GET
// /api/messages/{id}).
func payloadAllowed(ctx context.Context) bool {
	g, _ := ctx.Value(grantKey{}).(grant)
	return g.payload
}

// requiredPermission is the permission a request to the endpoint
// registered as name needs: the endpoint's own, or its payload
// sub-permission when the request asks for bodies (GET
// /api/quarantine?body=true).
func requiredPermission(name string, r *http.Request) access.Permission {
	p := access.Permission(name)
	if p == access.Quarantine && r.URL.Query().Get("body") == "true" {
		return p.Payload()
	}
	return p
}

// optionalPayload reports whether the endpoint shows payloads to callers
// holding its payload permission and leaves them out for the others,
// rather than refusing them.
func optionalPayload(name string) bool { return access.Permission(name) == access.Messages }

// authorize authenticates the request and checks its permission. On
// success it returns the request carrying the principal (see
// access.PrincipalFrom) and the grant; otherwise it has answered 401, 403
// or 503. Uses of audited permissions are written to the audit trail
// first, allowed or denied; an allowed use that cannot be recorded is
// refused.
func (e *Engine) authorize(w http.ResponseWriter, r *http.Request, name string) (*http.Request, bool) {
	p, err := e.auth.Authenticate(r)
	if err != nil {
		perm := requiredPermission(name, r)
		e.metrics.Accesses.WithLabelValues(string(perm), accessUnauthenticated, "").Inc()
		challenge := `Bearer realm="junction"`
		msg := "a bearer token is required"
		if errors.Is(err, access.ErrUnknownCredentials) {
			challenge += `, error="invalid_token"`
			msg = "the bearer token is not recognised"
		}
		w.Header().Set("WWW-Authenticate", challenge)
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": msg})
		return r, false
	}
	perm := requiredPermission(name, r)
	if !access.Allowed(p, perm) {
		rule, _ := access.RuleFor(perm)
		payloadRule, _ := access.RuleFor(perm.Payload())
		if rule.Audited || payloadRule.Audited {
			// Best effort: the request is refused either way.
			if err := e.recordAccess(r, p, name, perm, accessDenied); err != nil {
				e.log.Warn("access denied but not recorded", "principal", p.Name, "permission", string(perm), "err", err)
			}
		}
		e.metrics.Accesses.WithLabelValues(string(perm), accessDenied, p.Name).Inc()
		writeJSON(w, http.StatusForbidden, map[string]any{
			"error":      fmt.Sprintf("permission %s is needed, which the caller's roles do not grant", perm),
			"permission": string(perm),
			"roles":      rule.Roles,
		})
		return r, false
	}
	var g grant
	if optionalPayload(name) && access.Allowed(p, perm.Payload()) {
		perm, g.payload = perm.Payload(), true
	}
	if rule, _ := access.RuleFor(perm); rule.Audited {
		if err := e.recordAccess(r, p, name, perm, accessAllowed); err != nil {
			e.log.Error("access refused: it could not be recorded", "principal", p.Name, "permission", string(perm), "err", err)
			e.metrics.Accesses.WithLabelValues(string(perm), accessAuditFailed, p.Name).Inc()
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "the access could not be recorded in the audit trail; try again"})
			return r, false
		}
	}
	e.metrics.Accesses.WithLabelValues(string(perm), accessAllowed, p.Name).Inc()
	ctx := access.WithPrincipal(r.Context(), p)
	ctx = context.WithValue(ctx, grantKey{}, g)
	return r.WithContext(ctx), true
}

// recordAccess writes an access record: under the message's id when the
// route names one ({id}) that is not an audit subject of its own, else
// under an id of its own; with the patient's
// keyed hash when the route names a patient ({nhs}), never the NHS number.
func (e *Engine) recordAccess(r *http.Request, p access.Principal, name string, perm access.Permission, outcome string) error {
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
	if err := e.audit.Write(r.Context(), rec.MessageID, "", rec); err != nil {
		return fmt.Errorf("recording access to %s: %w", strconv.Quote(name), err)
	}
	return nil
}
