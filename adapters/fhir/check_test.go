package fhir

import (
	"testing"

	"github.com/samply/golang-fhir-models/fhir-models/fhir"
)

func TestUnescapeASCII(t *testing.T) {
	tests := []struct{ in, want string }{
		{`{"gender":"male"}`, `{"gender":"male"}`},
		{`{"gender":"m\u0061le"}`, `{"gender":"male"}`},
		{`{"g\u0065nder":"\u006D\u0061le"}`, `{"gender":"male"}`},
		// Quotes, backslashes, controls and non-ASCII stay escaped.
		{`{"text":"a\u0022b\u005cc\u000ad\u00e9"}`, `{"text":"a\u0022b\u005cc\u000ad\u00e9"}`},
		// An escaped backslash before a u is not an escape of the u.
		{`{"text":"\\u0061"}`, `{"text":"\\u0061"}`},
		{`{"text":"\\\u0061"}`, `{"text":"\\a"}`},
		// Short or malformed escapes are left for the decoder to refuse.
		{`{"text":"\u00"}`, `{"text":"\u00"}`},
		{`{"text":"\u00zz"}`, `{"text":"\u00zz"}`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := string(unescapeASCII([]byte(tt.in))); got != tt.want {
				t.Errorf("unescapeASCII(%s) = %s, want %s", tt.in, got, tt.want)
			}
		})
	}
	// The reason for it: a code written with escapes is the code.
	if err := decodeAs[fhir.Patient]([]byte(`{"resourceType":"Patient","gender":"m\u0061le"}`)); err != nil {
		t.Errorf("an escaped gender code is refused: %v", err)
	}
	if err := decodeAs[fhir.Patient]([]byte(`{"resourceType":"Patient","gender":"m\u0061l"}`)); err == nil {
		t.Error("an unknown gender code written with escapes is accepted")
	}
}
