package fhir

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	models "github.com/samply/golang-fhir-models/fhir-models/fhir"

	"github.com/junction-fhir/junction/pkg/fault"
)

// outcomeJSON marshals v and decodes it into generic JSON for comparison.
func outcomeJSON(t *testing.T, v any) map[string]any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("unmarshal %s: %v", b, err)
	}
	return m
}

func TestOutcome(t *testing.T) {
	tests := []struct {
		name                 string
		severity, code, diag string
		expr                 []string
		want                 map[string]any
	}{
		{
			name: "error invalid with expression", severity: "error", code: "invalid", diag: "bad gender",
			expr: []string{"Patient.gender"},
			want: map[string]any{"resourceType": "OperationOutcome", "issue": []any{map[string]any{
				"severity": "error", "code": "invalid", "diagnostics": "bad gender", "expression": []any{"Patient.gender"},
			}}},
		},
		{
			name: "information", severity: "information", code: "informational", diag: "stored",
			want: map[string]any{"resourceType": "OperationOutcome", "issue": []any{map[string]any{
				"severity": "information", "code": "informational", "diagnostics": "stored",
			}}},
		},
		{
			name: "unknown severity and code fall back", severity: "loud", code: "oops",
			want: map[string]any{"resourceType": "OperationOutcome", "issue": []any{map[string]any{
				"severity": "error", "code": "exception",
			}}},
		},
		{
			name: "transient warning", severity: "warning", code: "transient", diag: "later",
			want: map[string]any{"resourceType": "OperationOutcome", "issue": []any{map[string]any{
				"severity": "warning", "code": "transient", "diagnostics": "later",
			}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := outcomeJSON(t, Outcome(tt.severity, tt.code, tt.diag, tt.expr...))
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Outcome (-want +got):\n%s", diff)
			}
		})
	}
}

func TestOutcomeFromError(t *testing.T) {
	tests := []struct {
		name     string
		err      error
		wantCode string
		wantDiag string
		wantSev  string
		wantDet  string
	}{
		{"detail preferred", fault.New(fault.CodeFHIRInvalid, "resource invalid").WithDetail("Patient.gender: unknown code"),
			"invalid", "Patient.gender: unknown code", "error", "fhir.invalid-resource"},
		{"msg when no detail", fault.New(fault.CodeFHIRInvalidJSON, "invalid JSON"), "structure", "invalid JSON", "error", "fhir.invalid-json"},
		{"wrapped transient", fmt.Errorf("ingest: %w", fault.Wrap(fault.Transient, fault.CodeStoreUnavailable, "store unavailable", errors.New("nats: timeout"))),
			"transient", "store unavailable", "error", "store.unavailable"},
		{"plain error hides text", errors.New("secret TESTPATIENT"), "exception", "internal error", "error", "internal"},
		{"nil", nil, "informational", "ok", "information", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			oo := OutcomeFromError(tt.err)
			if len(oo.Issue) != 1 {
				t.Fatalf("issues = %d, want 1", len(oo.Issue))
			}
			is := oo.Issue[0]
			got := []string{is.Severity.Code(), is.Code.Code(), deref(is.Diagnostics), ""}
			if is.Details != nil {
				got[3] = deref(is.Details.Text)
			}
			want := []string{tt.wantSev, tt.wantCode, tt.wantDiag, tt.wantDet}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("severity, code, diagnostics, details (-want +got):\n%s", diff)
			}
		})
	}
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func TestStatusOf(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want int
	}{
		{"nil", nil, 200},
		{"invalid json", fault.New(fault.CodeFHIRInvalidJSON, "x"), 400},
		{"empty", fault.New(fault.CodeFHIREmpty, "x"), 400},
		{"too large", fault.New(fault.CodeFHIRTooLarge, "x"), 413},
		{"media type", fault.New(fault.CodeFHIRMediaType, "x"), 415},
		{"hl7 charset", fault.New(fault.CodeHL7Charset, "x"), 415},
		{"transient store", fault.Wrap(fault.Transient, fault.CodeStoreUnavailable, "x", nil), 503},
		{"permanent internal", fault.New(fault.CodeInternal, "x"), 500},
		{"plain", errors.New("x"), 500},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := StatusOf(tt.err); got != tt.want {
				t.Errorf("StatusOf = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestWriteOutcome(t *testing.T) {
	tests := []struct {
		name     string
		status   int
		oo       *models.OperationOutcome
		wantDiag string
		wantCode string
	}{
		{"given outcome", http.StatusBadRequest, Outcome("error", "structure", "invalid JSON at offset 3"), "invalid JSON at offset 3", "structure"},
		{"nil error status", http.StatusNotFound, nil, "Not Found", "exception"},
		{"nil success status", http.StatusAccepted, nil, "Accepted", "informational"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			WriteOutcome(rec, tt.status, tt.oo)
			if rec.Code != tt.status {
				t.Errorf("status = %d, want %d", rec.Code, tt.status)
			}
			if ct := rec.Header().Get("Content-Type"); ct != MediaTypeJSON {
				t.Errorf("Content-Type = %q, want %q", ct, MediaTypeJSON)
			}
			var got struct {
				ResourceType string
				Issue        []struct{ Code, Diagnostics string }
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
				t.Fatalf("body %q: %v", rec.Body.String(), err)
			}
			if got.ResourceType != "OperationOutcome" || len(got.Issue) != 1 {
				t.Fatalf("body = %s", rec.Body.String())
			}
			if got.Issue[0].Diagnostics != tt.wantDiag || got.Issue[0].Code != tt.wantCode {
				t.Errorf("issue = %+v, want code %q diagnostics %q", got.Issue[0], tt.wantCode, tt.wantDiag)
			}
		})
	}
}

func TestOutcomeText(t *testing.T) {
	tests := []struct {
		name string
		body string
		want string
	}{
		{"one issue", `{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"invalid","diagnostics":"bad date","expression":["Patient.birthDate"]}]}`,
			"error invalid: bad date (at Patient.birthDate)"},
		{"details text", `{"resourceType":"OperationOutcome","issue":[{"severity":"warning","code":"processing","details":{"text":"dup"}},{"severity":"error","code":"required"}]}`,
			"warning processing: dup; error required"},
		{"not an outcome", `<html>oops</html>`, ""},
		{"no issues", `{"resourceType":"OperationOutcome","issue":[]}`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := OutcomeText([]byte(tt.body)); got != tt.want {
				t.Errorf("OutcomeText = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestOutcomeFromErrorNeverLeaksErrorText(t *testing.T) {
	err := fault.Wrap(fault.Permanent, fault.CodeTranslate, "translate failed", errors.New("PID-5 TESTPATIENT^ALEX"))
	b, merr := json.Marshal(OutcomeFromError(err))
	if merr != nil {
		t.Fatal(merr)
	}
	if strings.Contains(string(b), "TESTPATIENT") {
		t.Errorf("outcome holds the wrapped error's text: %s", b)
	}
}

func BenchmarkWriteOutcome(b *testing.B) {
	oo := Outcome("information", "informational", "stored as message 01J000000000000000000000")
	for b.Loop() {
		WriteOutcome(httptest.NewRecorder(), http.StatusAccepted, oo)
	}
}

func FuzzOutcomeText(f *testing.F) {
	f.Add([]byte(`{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"invalid","diagnostics":"x","expression":["Patient.gender"]}]}`))
	f.Add([]byte(`{"issue":[{"severity":"fatal","code":"nope"}]}`))
	f.Add([]byte(`<html/>`))
	f.Fuzz(func(t *testing.T, body []byte) {
		s := OutcomeText(body)
		if s != "" && !json.Valid(body) {
			t.Errorf("text %q from invalid JSON", s)
		}
	})
}
