package engine

import (
	"io"
	"log/slog"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/junction-fhir/junction/pkg/access"
	"github.com/junction-fhir/junction/pkg/config"
)

func TestNewAuthenticator(t *testing.T) {
	env := map[string]string{"OPS": "ops-secret-long-enough", "ENG": "eng-secret-long-enough", "SAME": "ops-secret-long-enough", "LEGACY": "legacy-secret-long-enough"}
	ops := config.TokenConfig{Name: "ops", Role: "operator", Token: "env:OPS"}
	eng := config.TokenConfig{Name: "eng", Roles: []string{"integration_engineer", "auditor"}, Token: "env:ENG"}
	tests := []struct {
		name    string
		http    config.HTTPConfig
		token   string // presented
		want    string // principal, or "" for refused
		roles   []access.Role
		wantErr string
	}{
		{"loopback without tokens is open", config.HTTPConfig{Listen: "127.0.0.1:8080"}, "", LocalPrincipal, access.Roles(), ""},
		{"off loopback without tokens", config.HTTPConfig{Listen: "0.0.0.0:8080"}, "", "", nil, "http.tokens: at least one token is required"},
		{"tokens", config.HTTPConfig{Listen: "0.0.0.0:8080", Tokens: []config.TokenConfig{ops, eng}}, "eng-secret-long-enough", "eng", []access.Role{access.IntegrationEngineer, access.Auditor}, ""},
		{"tokens refuse others", config.HTTPConfig{Listen: "127.0.0.1:8080", Tokens: []config.TokenConfig{ops}}, "", "", nil, ""},
		{"admin token holds every role", config.HTTPConfig{Listen: "0.0.0.0:8080", AdminToken: "env:LEGACY", Tokens: []config.TokenConfig{ops}}, "legacy-secret-long-enough", config.AdminTokenName, access.Roles(), ""},
		{"same secret twice", config.HTTPConfig{Listen: "0.0.0.0:8080", Tokens: []config.TokenConfig{ops, {Name: "same", Role: "auditor", Token: "env:SAME"}}}, "", "", nil, "tokens ops and same have the same secret"},
		{"unset variable", config.HTTPConfig{Listen: "0.0.0.0:8080", Tokens: []config.TokenConfig{{Name: "x", Role: "auditor", Token: "env:UNSET"}}}, "", "", nil, "http.tokens[0] (x): token: environment variable UNSET is not set"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := &Engine{log: slog.New(slog.NewTextHandler(io.Discard, nil)), secrets: config.Secrets{Getenv: func(k string) string { return env[k] }}}
			auth, err := e.newAuthenticator(tt.http)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "ops-secret-long-enough") {
					t.Fatalf("error shows a secret: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			r := httptest.NewRequest("GET", "http://127.0.0.1:8080/api/reconcile", nil)
			if tt.token != "" {
				r.Header.Set("Authorization", "Bearer "+tt.token)
			}
			p, err := auth.Authenticate(r)
			if tt.want == "" {
				if err == nil {
					t.Fatalf("authenticated as %s, want refused", p.Name)
				}
				return
			}
			if err != nil || p.Name != tt.want || !slices.Equal(p.Roles, tt.roles) {
				t.Fatalf("principal %+v, %v; want %s with %v", p, err, tt.want, tt.roles)
			}
		})
	}
}
