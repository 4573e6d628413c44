package pathology

import (
	"testing"

	"github.com/junction-fhir/junction/pkg/hl7v2"
)

// TestUnitOf: OBX-6 is a UCUM unit when OBX-6.3 says so, or names no
// system and the code reads as UCUM; a code in another named system stays
// that system's text, flagged, even when it reads like UCUM.
func TestUnitOf(t *testing.T) {
	tests := []struct {
		obx6     string
		wantText string
		wantCode string
		flagged  bool
	}{
		{"mmol/L^millimole per litre^UCUM", "mmol/L", "mmol/L", false},
		{"mmol/L", "mmol/L", "mmol/L", false},
		{"1^^METRIC", "1", "", true},
		{"mmol/L^^99LOCAL", "mmol/L", "", true},
		{"IU/L^^99LOCAL", "IU/L", "[IU]/L", false},
		{"^cells per high power field", "cells per high power field", "", true},
		{"", "", "", false},
		{"\u00b5mol/L", "\u00b5mol/L", "umol/L", false},
		{"\u03bcg/L^^UCUM", "\u03bcg/L", "ug/L", false},
		{"\u00b5mol/L^^99LOCAL", "\u00b5mol/L", "", true},
		{"\u00b5 per box", "\u00b5 per box", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.obx6, func(t *testing.T) {
			m, err := hl7v2.Parse([]byte("MSH|^~\\&|LAB|RX1|EPR|RX1|20261202120000||ORU^R01|U1|P|2.4\rOBX|1|NM|X^Y^L||5|" + tt.obx6 + "\r"))
			if err != nil {
				t.Fatal(err)
			}
			b := &builder{}
			u := b.unitOf(m.Segment("OBX"))
			if u.text != tt.wantText || u.code != tt.wantCode {
				t.Errorf("unit = {%q %q}, want {%q %q}", u.text, u.code, tt.wantText, tt.wantCode)
			}
			if got := len(b.dq) > 0; got != tt.flagged {
				t.Errorf("flagged %v (%v), want %v", got, b.dq, tt.flagged)
			}
		})
	}
}
