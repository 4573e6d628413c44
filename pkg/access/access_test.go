package access_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/junction-fhir/junction/pkg/access"
)

func TestAllowed(t *testing.T) {
	op := access.Principal{Name: "ops", Roles: []access.Role{access.Operator}}
	eng := access.Principal{Name: "eng", Roles: []access.Role{access.IntegrationEngineer}}
	aud := access.Principal{Name: "aud", Roles: []access.Role{access.Auditor}}
	pat := access.Principal{Name: "nhsapp", Roles: []access.Role{access.PatientService}}
	none := access.Principal{Name: "nobody"}
	// want lists, for each permission, who of op, eng, aud, pat is allowed.
	tests := []struct {
		perm    access.Permission
		want    [4]bool
		audited bool
	}{
		{access.Messages, [4]bool{true, true, true, false}, false},
		{access.MessagesPayload, [4]bool{false, true, false, false}, true},
		{access.FindMessages, [4]bool{true, true, true, false}, false},
		{access.DeadLetters, [4]bool{true, true, false, false}, false},
		{access.Replay, [4]bool{true, false, false, false}, false},
		{access.Quarantine, [4]bool{true, true, false, false}, false},
		{access.QuarantinePayload, [4]bool{false, true, false, false}, true},
		{access.Reconcile, [4]bool{true, false, true, false}, false},
		{access.Disclosures, [4]bool{false, false, true, true}, true},
		{access.Withhold, [4]bool{false, false, true, false}, true},
		{access.OptOuts, [4]bool{true, false, false, false}, true},
		{access.AuditEvents, [4]bool{false, false, true, false}, true},
		{access.ConsentWrite, [4]bool{false, false, false, true}, true},
		{"unknown", [4]bool{}, false},
		{access.Replay.Payload(), [4]bool{}, false},
	}
	for _, tt := range tests {
		t.Run(string(tt.perm), func(t *testing.T) {
			for i, p := range []access.Principal{op, eng, aud, pat} {
				if got := access.Allowed(p, tt.perm); got != tt.want[i] {
					t.Errorf("Allowed(%s, %s) = %v, want %v", p.Name, tt.perm, got, tt.want[i])
				}
			}
			if access.Allowed(none, tt.perm) {
				t.Errorf("a principal without roles is allowed %s", tt.perm)
			}
			rule, _ := access.RuleFor(tt.perm)
			if rule.Audited != tt.audited {
				t.Errorf("Audited = %v, want %v", rule.Audited, tt.audited)
			}
		})
	}
	all := access.Principal{Name: "all", Roles: access.Roles()}
	if !access.Allowed(all, access.MessagesPayload) || !access.Allowed(all, access.Disclosures) || !access.Allowed(all, access.Replay) || !access.Allowed(all, access.ConsentWrite) {
		t.Error("a principal with every role is refused something")
	}
}

func TestParseRole(t *testing.T) {
	tests := []struct {
		in      string
		want    access.Role
		wantErr string
	}{
		{"operator", access.Operator, ""},
		{"integration_engineer", access.IntegrationEngineer, ""},
		{"auditor", access.Auditor, ""},
		{"patient_service", access.PatientService, ""},
		{"Operator", "", `unknown role "Operator"; roles are operator, integration_engineer, auditor, patient_service`},
		{"", "", `unknown role ""`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := access.ParseRole(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseRole = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestNewBearer(t *testing.T) {
	ops := access.Token{Name: "ops", Roles: []access.Role{access.Operator}, Secret: "ops-secret-long-enough"}
	tests := []struct {
		name    string
		tokens  []access.Token
		wantErr string
	}{
		{"none", nil, ""},
		{"one", []access.Token{ops}, ""},
		{"duplicate name", []access.Token{ops, {Name: "ops", Roles: ops.Roles, Secret: "other-secret-long-enough"}}, "token ops: the name is used twice"},
		{"duplicate secret", []access.Token{ops, {Name: "eng", Roles: ops.Roles, Secret: "ops-secret-long-enough"}}, "tokens ops and eng have the same secret"},
		{"empty secret", []access.Token{{Name: "ops", Roles: ops.Roles}}, "token ops: the secret is empty"},
		{"no roles", []access.Token{{Name: "ops", Secret: "ops-secret-long-enough"}}, "token ops: no roles"},
		{"no name", []access.Token{{Roles: ops.Roles, Secret: "x"}}, "a token has no name"},
		{"short secret", []access.Token{{Name: "ops", Roles: ops.Roles, Secret: "x"}}, "token ops: the secret is shorter than 16 characters"},
		{"whitespace in the secret", []access.Token{{Name: "ops", Roles: ops.Roles, Secret: "ops secret long enough"}}, "token ops: the secret holds spaces or other whitespace"},
		{"whitespace only", []access.Token{{Name: "ops", Roles: ops.Roles, Secret: "                   "}}, "token ops: the secret holds spaces or other whitespace"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := access.NewBearer(tt.tokens)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), "ops-secret-long-enough") {
				t.Fatalf("error shows the secret: %v", err)
			}
		})
	}
}

func TestBearerAuthenticate(t *testing.T) {
	b, err := access.NewBearer([]access.Token{
		{Name: "ops", Roles: []access.Role{access.Operator}, Secret: "ops-secret-long-enough"},
		{Name: "eng", Roles: []access.Role{access.IntegrationEngineer, access.Auditor}, Secret: "eng-secret-long-enough"},
	})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		header  string
		want    string
		wantErr error
	}{
		{"ops", "Bearer ops-secret-long-enough", "ops", nil},
		{"eng", "Bearer eng-secret-long-enough", "eng", nil},
		{"scheme case", "bearer eng-secret-long-enough", "eng", nil},
		{"no header", "", "", access.ErrNoCredentials},
		{"basic", "Basic b3BzOnNlY3JldA==", "", access.ErrNoCredentials},
		{"empty token", "Bearer ", "", access.ErrNoCredentials},
		{"unknown", "Bearer nope", "", access.ErrUnknownCredentials},
		{"prefix of a token", "Bearer ops-secre", "", access.ErrUnknownCredentials},
		{"token with suffix", "Bearer ops-secret2", "", access.ErrUnknownCredentials},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/api/reconcile", nil)
			if tt.header != "" {
				r.Header.Set("Authorization", tt.header)
			}
			p, err := b.Authenticate(r)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if p.Name != tt.want {
				t.Fatalf("principal = %q, want %q", p.Name, tt.want)
			}
		})
	}
	r := httptest.NewRequest("GET", "/", nil)
	r.Header.Set("Authorization", "Bearer eng-secret-long-enough")
	p, _ := b.Authenticate(r)
	if !p.Has(access.IntegrationEngineer) || !p.Has(access.Auditor) || p.Has(access.Operator) {
		t.Fatalf("eng roles = %v", p.Roles)
	}
	// The principal is a copy: changing it changes nothing for the next
	// request.
	p.Roles[0] = access.Operator
	p, _ = b.Authenticate(r)
	if p.Has(access.Operator) {
		t.Fatal("a caller changed the configured roles")
	}
}

func TestPrincipalContext(t *testing.T) {
	if _, ok := access.PrincipalFrom(context.Background()); ok {
		t.Fatal("a principal in an empty context")
	}
	ctx := access.WithPrincipal(context.Background(), access.Principal{Name: "ops"})
	if p, ok := access.PrincipalFrom(ctx); !ok || p.Name != "ops" {
		t.Fatalf("PrincipalFrom = %v, %v", p, ok)
	}
}
