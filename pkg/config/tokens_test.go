package config

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/junction-fhir/junction/pkg/access"
)

func TestLoadTokens(t *testing.T) {
	tests := []struct {
		name    string
		src     string
		want    map[string][]access.Role
		wantErr string
	}{
		{"role and roles", `http:
  listen: 0.0.0.0:8080
  tokens:
    - {name: ops-team, role: operator, token: env:OPS_TOKEN}
    - name: ig
      roles: [auditor, integration_engineer]
      token: file:/run/secrets/ig
`, map[string][]access.Role{"ops-team": {access.Operator}, "ig": {access.Auditor, access.IntegrationEngineer}}, ""},
		{"unknown key", `http:
  tokens:
    - {name: ops, role: operator, secret: env:OPS_TOKEN}
`, nil, `unknown field "secret"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Load(writeConfig(t, tt.src))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if errs := c.Validate(); len(errs) > 0 {
				t.Fatalf("Validate: %v", errStrings(errs))
			}
			got := map[string][]access.Role{}
			for _, tok := range c.HTTP.Tokens {
				roles, err := tok.ParsedRoles()
				if err != nil {
					t.Fatal(err)
				}
				got[tok.Name] = roles
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("tokens (-want +got):\n%s", diff)
			}
		})
	}
}
