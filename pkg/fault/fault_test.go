package fault

import (
	"errors"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestClassString(t *testing.T) {
	if got := Permanent.String(); got != "permanent" {
		t.Errorf("Permanent = %q", got)
	}
	if got := Transient.String(); got != "transient" {
		t.Errorf("Transient = %q", got)
	}
}

func TestErrorText(t *testing.T) {
	base := errors.New("connection refused")
	tests := []struct {
		name string
		err  *Error
		want string
	}{
		{"new", New(CodeHL7Parse, "no MSH segment"), "hl7.parse: no MSH segment"},
		{"newf", Newf(CodeRuleEval, "expression returned %s, not bool", "string"), "rule.eval: expression returned string, not bool"},
		{"wrap", Wrap(Transient, CodeStoreUnavailable, "publishing", base), "store.unavailable: publishing: connection refused"},
		// Detail may hold patient data and is never part of Error().
		{"detail is not in the text", New(CodeHL7Required, "PID-3 missing").WithDetail("TESTPATIENT^ALEX 9990000018"), "hl7.required-field-missing: PID-3 missing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, tt.err.Error()); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestConstructorsAndChain(t *testing.T) {
	base := errors.New("boom")
	w := Wrap(Transient, CodeDestUnavailable, "sending", base).WithHL7("207").WithDetail("503 from server")
	if !errors.Is(w, base) {
		t.Error("Wrap does not unwrap to its cause")
	}
	got := struct {
		Code                Code
		Class               Class
		Msg, Detail, HL7Err string
	}{w.Code, w.Class, w.Msg, w.Detail, w.HL7Err}
	want := got
	want.Code, want.Class, want.Msg, want.Detail, want.HL7Err = CodeDestUnavailable, Transient, "sending", "503 from server", "207"
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if n := New(CodeInternal, "x"); n.Class != Permanent || n.Err != nil {
		t.Errorf("New = %+v, want permanent without cause", n)
	}
	if n := Newf(CodeInternal, "x %d", 1); n.Class != Permanent {
		t.Errorf("Newf = %+v, want permanent", n)
	}
}

func TestHelpers(t *testing.T) {
	perm := New(CodeFHIRInvalid, "bad resource").WithDetail("Patient.birthDate: 1980-13-01")
	trans := Wrap(Transient, CodeStoreUnavailable, "store down", errors.New("timeout"))
	wrapped := fmt.Errorf("route r1: %w", perm)
	plain := errors.New("something")
	noDetail := New(CodeNotFound, "no such message")
	tests := []struct {
		name      string
		err       error
		as        bool
		transient bool
		code      Code
		detail    string
	}{
		{"nil", nil, false, false, CodeInternal, "internal error"},
		{"permanent", perm, true, false, CodeFHIRInvalid, "Patient.birthDate: 1980-13-01"},
		{"transient", trans, true, true, CodeStoreUnavailable, "store down"},
		{"wrapped", wrapped, true, false, CodeFHIRInvalid, "Patient.birthDate: 1980-13-01"},
		{"plain errors are transient", plain, false, true, CodeInternal, "internal error"},
		{"no detail gives the message", noDetail, true, false, CodeNotFound, "no such message"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := struct {
				As        bool
				Transient bool
				Code      Code
				Detail    string
			}{As(tt.err) != nil, IsTransient(tt.err), CodeOf(tt.err), DetailOf(tt.err)}
			want := got
			want.As, want.Transient, want.Code, want.Detail = tt.as, tt.transient, tt.code, tt.detail
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestIssueType(t *testing.T) {
	want := map[Code]string{
		CodeFHIRInvalidJSON:  "structure",
		CodeHL7Parse:         "structure",
		CodeFHIRInvalid:      "invalid",
		CodeHL7Required:      "invalid",
		CodeFHIRTooLarge:     "too-costly",
		CodeFrameTooLarge:    "too-costly",
		CodeFHIRMediaType:    "not-supported",
		CodeFHIRNotSupported: "not-supported",
		CodeHL7Unsupported:   "not-supported",
		CodeHL7Charset:       "not-supported",
		CodeFHIREmpty:        "required",
		CodeFHIRIncomplete:   "incomplete",
		CodeStoreUnavailable: "transient",
		CodeDestUnavailable:  "transient",
		CodeFrameBusy:        "transient",
		CodeNotFound:         "not-found",
		CodeUnauthorized:     "security",
		CodeDuplicate:        "duplicate",
		CodeInternal:         "exception",
		CodeRuleEval:         "exception",
		CodeTranslate:        "exception",
		Code("unknown.code"): "exception",
	}
	got := map[Code]string{}
	for c := range want {
		got[c] = IssueType(c)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}
