package consent

import (
	"context"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseOutcome(t *testing.T) {
	tests := []struct {
		in      string
		want    Outcome
		wantErr string
	}{
		{"permit", Permit, ""},
		{"deny", Deny, ""},
		{"redact", "", `consent policy must be permit or deny, got "redact"`},
		{"Permit", "", `consent policy must be permit or deny, got "Permit"`},
		{"", "", `consent policy must be permit or deny, got ""`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseOutcome(tt.in)
			gotErr := ""
			if err != nil {
				gotErr = err.Error()
			}
			if diff := cmp.Diff([]string{string(tt.want), tt.wantErr}, []string{string(got), gotErr}); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestDefaultPolicy(t *testing.T) {
	bundle := map[string]any{"resourceType": "Bundle", "entry": []any{
		map[string]any{"resource": map[string]any{"resourceType": "Patient", "name": []any{map[string]any{"family": "TESTPATIENT"}}}},
	}}
	tests := []struct {
		name string
		req  Request
		want Decision
	}{
		{"permit", Request{Route: "adt", Purpose: "direct-care", Destination: "ehr", PatientKey: "9990000018", Bundle: bundle, Default: Permit},
			Decision{Outcome: Permit, Reason: `route default policy permit for purpose "direct-care"`, Rule: "route:adt:default"}},
		{"deny", Request{Route: "research", Purpose: "secondary-use", Destination: "warehouse", PatientKey: "9990000018", Default: Deny},
			Decision{Outcome: Deny, Reason: `route default policy deny for purpose "secondary-use"`, Rule: "route:research:default"}},
		{"no default denies", Request{Route: "r", Purpose: "direct-care", Destination: "ehr", PatientKey: "9990000018"},
			Decision{Outcome: Deny, Reason: `route default policy deny for purpose "direct-care"`, Rule: "route:r:default"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var d Decider = DefaultPolicy{}
			got, err := d.Decide(context.Background(), tt.req)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
			// Reasons and rules are audited: they must not hold patient data.
			for _, s := range []string{got.Reason, got.Rule} {
				if strings.Contains(s, tt.req.PatientKey) || strings.Contains(s, "TESTPATIENT") {
					t.Errorf("%q holds patient data", s)
				}
			}
		})
	}
}
