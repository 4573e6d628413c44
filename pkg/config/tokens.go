package config

import (
	"fmt"

	"github.com/junction-fhir/junction/pkg/access"
)

// AdminTokenName is the principal name of the deprecated http.admin_token,
// which holds every role.
const AdminTokenName = "admin_token"

// TokenConfig is one bearer token of the admin and audit APIs.
type TokenConfig struct {
	// Name identifies the token's holder in audit records and metrics
	// (letters, digits, '-' and '_'). It is not secret.
	Name string `yaml:"name"`
	// Role is the token's one role; Roles lists several. Give one of them.
	Role  string   `yaml:"role"`
	Roles []string `yaml:"roles"`
	// Token is a reference (env:NAME or file:PATH) to the token itself.
	Token string `yaml:"token"`
}

// RoleNames returns the token's roles as configured, Role first.
func (t TokenConfig) RoleNames() []string {
	if t.Role == "" {
		return t.Roles
	}
	return append([]string{t.Role}, t.Roles...)
}

// ParsedRoles returns the token's roles; Validate has checked them.
func (t TokenConfig) ParsedRoles() ([]access.Role, error) {
	var out []access.Role
	for _, s := range t.RoleNames() {
		r, err := access.ParseRole(s)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// validateTokens checks http.tokens: names, roles and references. Two
// tokens resolving to the same secret are caught when the engine resolves
// them.
func (h HTTPConfig) validateTokens() []error {
	var errs []error
	names := map[string]bool{}
	refs := map[string]string{}
	if h.AdminToken != "" {
		names[AdminTokenName] = true
		refs[h.AdminToken] = "http.admin_token"
	}
	for i, t := range h.Tokens {
		at := fmt.Sprintf("http.tokens[%d]", i)
		if t.Name != "" {
			at += " (" + t.Name + ")"
		}
		switch {
		case t.Name == "":
			errs = append(errs, fmt.Errorf("%s: name: required", at))
		case !validName(t.Name):
			errs = append(errs, fmt.Errorf("%s: name: may hold only letters, digits, '-' and '_'", at))
		case names[t.Name] && t.Name == AdminTokenName:
			errs = append(errs, fmt.Errorf("%s: name: %s is the name of http.admin_token; choose another", at, AdminTokenName))
		case names[t.Name]:
			errs = append(errs, fmt.Errorf("%s: name: used by another token", at))
		}
		names[t.Name] = true
		switch {
		case t.Role != "" && len(t.Roles) > 0:
			errs = append(errs, fmt.Errorf("%s: give role or roles, not both", at))
		case len(t.RoleNames()) == 0:
			errs = append(errs, fmt.Errorf("%s: roles: at least one role is required", at))
		}
		seen := map[string]bool{}
		for _, r := range t.RoleNames() {
			if _, err := access.ParseRole(r); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", at, err))
			} else if seen[r] {
				errs = append(errs, fmt.Errorf("%s: role %s is listed twice", at, r))
			}
			seen[r] = true
		}
		switch {
		case t.Token == "":
			errs = append(errs, fmt.Errorf("%s: token: required (env:NAME or file:PATH)", at))
		case !IsRef(t.Token):
			errs = append(errs, fmt.Errorf("%s: token: must be a reference (env:NAME or file:PATH), never the token itself", at))
		case refs[t.Token] != "":
			errs = append(errs, fmt.Errorf("%s: token: %s names the same secret; give each token its own", at, refs[t.Token]))
		default:
			refs[t.Token] = at
		}
	}
	return errs
}
