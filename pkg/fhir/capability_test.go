package fhir

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	models "github.com/samply/golang-fhir-models/fhir-models/fhir"
)

func TestCapabilityStatement(t *testing.T) {
	date := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name      string
		opts      CapabilityOptions
		wantTypes []string
		wantVer   string
	}{
		{
			name:      "listed types sorted after Bundle",
			opts:      CapabilityOptions{SoftwareVersion: "1.2.3", ResourceTypes: []string{"Patient", "Encounter", "Observation"}, Date: date},
			wantTypes: []string{"Bundle", "Encounter", "Observation", "Patient"},
			wantVer:   "1.2.3",
		},
		{
			name:      "unknown, duplicate and Bundle entries dropped",
			opts:      CapabilityOptions{ResourceTypes: []string{"Patient", "Patient", "NotAType", "patient", "Bundle", ""}, Date: date},
			wantTypes: []string{"Bundle", "Patient"},
			wantVer:   "dev",
		},
		{
			name:      "bearer token",
			opts:      CapabilityOptions{ResourceTypes: []string{"Patient"}, Date: date, BearerToken: true},
			wantTypes: []string{"Bundle", "Patient"},
			wantVer:   "dev",
		},
		{
			name:      "AuditEvent search listed after the accepted types",
			opts:      CapabilityOptions{SoftwareVersion: "v1", ResourceTypes: []string{"Patient"}, Date: date, AuditEventSearch: true},
			wantTypes: []string{"Bundle", "Patient"},
			wantVer:   "v1",
		},
		{
			name:      "Consent stored for the consent engine",
			opts:      CapabilityOptions{SoftwareVersion: "v2", ResourceTypes: []string{"Patient"}, Date: date, ConsentStore: true},
			wantTypes: []string{"Bundle", "Consent", "Patient"},
			wantVer:   "v2",
		},
		{
			name:      "no types: Bundle only",
			opts:      CapabilityOptions{SoftwareVersion: "v0", Date: date},
			wantTypes: []string{"Bundle"},
			wantVer:   "v0",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := json.Marshal(CapabilityStatement(tt.opts))
			if err != nil {
				t.Fatalf("marshal: %v", err)
			}
			cs, err := models.UnmarshalCapabilityStatement(b)
			if err != nil {
				t.Fatalf("round trip of %s: %v", b, err)
			}
			var raw map[string]any
			if err := json.Unmarshal(b, &raw); err != nil {
				t.Fatal(err)
			}
			if raw["resourceType"] != "CapabilityStatement" {
				t.Errorf("resourceType = %v", raw["resourceType"])
			}
			gotTop := []string{cs.Kind.Code(), cs.FhirVersion.Code(), strings.Join(cs.Format, ","), cs.Software.Name, deref(cs.Software.Version), cs.Date, cs.Status.Code()}
			wantTop := []string{"instance", "4.0.1", "json", "Junction", tt.wantVer, "2025-03-01T12:00:00Z", "active"}
			if diff := cmp.Diff(wantTop, gotTop); diff != "" {
				t.Errorf("kind, fhirVersion, format, software, version, date, status (-want +got):\n%s", diff)
			}
			if cs.Implementation == nil || cs.Implementation.Description == "" {
				t.Errorf("kind instance needs implementation.description")
			}
			if len(cs.Rest) != 1 {
				t.Fatalf("rest = %d entries, want 1", len(cs.Rest))
			}
			rest := cs.Rest[0]
			if rest.Mode != models.RestfulCapabilityModeServer {
				t.Errorf("rest.mode = %s", rest.Mode.Code())
			}
			if tt.opts.AuditEventSearch {
				last := rest.Resource[len(rest.Resource)-1]
				if last.Type != models.ResourceTypeAuditEvent || len(last.Interaction) != 1 || last.Interaction[0].Code != models.TypeRestfulInteractionSearchType || len(last.SearchParam) != 3 {
					t.Errorf("AuditEvent search not described: %s", b)
				}
				rest.Resource = rest.Resource[:len(rest.Resource)-1]
			}
			// The one operation is FHIR messaging's endpoint, which
			// POST [base]/$process-message serves.
			if len(rest.Operation) != 1 || rest.Operation[0].Name != "process-message" ||
				rest.Operation[0].Definition != "http://hl7.org/fhir/OperationDefinition/MessageHeader-process-message" {
				t.Errorf("rest.operation is not process-message alone: %s", b)
			}
			if len(rest.Interaction) != 0 || len(rest.SearchParam) != 0 {
				t.Errorf("rest claims system interactions or search: %s", b)
			}
			doc := deref(rest.Documentation)
			if !strings.Contains(doc, "202 Accepted") || !strings.Contains(doc, "transaction") {
				t.Errorf("rest.documentation does not describe the bundle handling: %q", doc)
			}
			// A resend's reply may carry its own id (group commit), so the
			// statement must not promise the original's.
			if !strings.Contains(doc, "an id of the resend's own") {
				t.Errorf("rest.documentation does not say what a resend's reply names: %q", doc)
			}
			if sec := rest.Security; sec == nil || sec.Cors == nil || *sec.Cors ||
				strings.Contains(deref(sec.Description), "Authorization: Bearer") != tt.opts.BearerToken ||
				// Without a token the endpoint takes local posts only,
				// and must not say a proxy in front will do.
				!tt.opts.BearerToken && !tt.opts.ClientCerts && !strings.Contains(deref(sec.Description), "only from this machine") {
				t.Errorf("rest.security %+v does not say how posts are authenticated (bearer token: %v)", sec, tt.opts.BearerToken)
			}
			if got := strings.Contains(doc, "not routed itself"); got != tt.opts.ConsentStore {
				t.Errorf("rest.documentation describes stored Consents: %v, want %v", got, tt.opts.ConsentStore)
			}
			var gotTypes []string
			for _, r := range rest.Resource {
				gotTypes = append(gotTypes, r.Type.Code())
				if r.Type == models.ResourceTypeConsent && tt.opts.ConsentStore && !strings.Contains(deref(r.Documentation), "201 Created") {
					t.Errorf("Consent documentation does not say it is stored: %q", deref(r.Documentation))
				}
				var codes []string
				for _, in := range r.Interaction {
					codes = append(codes, in.Code.Code())
				}
				if diff := cmp.Diff([]string{"create"}, codes); diff != "" {
					t.Errorf("%s interactions (-want +got):\n%s", r.Type.Code(), diff)
				}
				if len(r.SearchParam) != 0 || len(r.Operation) != 0 {
					t.Errorf("%s claims search or operations", r.Type.Code())
				}
			}
			if diff := cmp.Diff(tt.wantTypes, gotTypes); diff != "" {
				t.Errorf("resource types (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCapabilityStatementDefaultsDate(t *testing.T) {
	before := time.Now().UTC().Truncate(time.Second)
	cs := CapabilityStatement(CapabilityOptions{BaseURL: "https://junction.example/fhir"})
	got, err := time.Parse(time.RFC3339, cs.Date)
	if err != nil {
		t.Fatalf("date %q: %v", cs.Date, err)
	}
	if got.Before(before) {
		t.Errorf("date %v is before the call (%v)", got, before)
	}
	if cs.Implementation.Url == nil || *cs.Implementation.Url != "https://junction.example/fhir" {
		t.Errorf("implementation.url = %v", cs.Implementation.Url)
	}
}

func TestResourceTypeOf(t *testing.T) {
	tests := []struct {
		in     string
		wantOK bool
	}{
		{"Patient", true}, {"Bundle", true}, {"AllergyIntolerance", true},
		{"patient", false}, {"", false}, {`"Patient"`, false}, {"Patient ", false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, ok := ResourceTypeOf(tt.in)
			if ok != tt.wantOK {
				t.Fatalf("ok = %v, want %v", ok, tt.wantOK)
			}
			if ok && got.Code() != tt.in {
				t.Errorf("type = %s, want %s", got.Code(), tt.in)
			}
		})
	}
}
