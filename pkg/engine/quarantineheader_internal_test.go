package engine

import (
	"strings"
	"testing"
)

// TestQuarantinedHeader checks what a refused input gives to be found by:
// an HL7 v2 header's control id, sender and type, or a FHIR Bundle's
// identifier value and resourceType, also from a body kept only in part.
func TestQuarantinedHeader(t *testing.T) {
	bundle := `{"resourceType":"Bundle","identifier":{"system":"https://supplier.example/id","value":"REJ-0001"},"type":"collection","entry":[` +
		strings.Repeat(`{"resource":{"resourceType":"Basic"}},`, 50)
	for _, tc := range []struct {
		name, raw         string
		ctrl, sender, typ string
		ok                bool
	}{
		{"hl7 v2", "MSH|^~\\&|PAS|RX1|EHR|RX1|20260101||ADT^A01|C1|P|2.4\rPID|1\r", "C1", "PAS|RX1", "ADT^A01", true},
		// A type that is no HL7 type may be anything a sender put there.
		{"hl7 v2, MSH-9 not a type", "MSH|^~\\&|PAS|RX1|EHR|RX1|20260101||SMITHSON^9990000018|C2|P|2.4\rPID|1\r", "C2", "PAS|RX1", "", true},
		{"hl7 v2, type without event", "MSH|^~\\&|PAS|RX1|EHR|RX1|20260101||ACK|C3|P|2.4\r", "C3", "PAS|RX1", "ACK", true},
		{"bundle cut short", bundle, "REJ-0001", "", "Bundle", true},
		{"identifier first, byte order mark", "\xef\xbb\xbf {\"identifier\":{\"value\":\"REJ-2\"},\"resourceType\":\"Bundle\"}", "REJ-2", "", "Bundle", true},
		{"a resource's identifier list", `{"resourceType":"Patient","identifier":[{"value":"X"}]}`, "", "", "", false},
		{"another resource's identifier", `{"resourceType":"Observation","identifier":{"value":"SMITH John"}}`, "", "", "", false},
		{"type after the identifier", `{"identifier":{"value":"9990000018"},"resourceType":"Patient"}`, "", "", "", false},
		{"a Bundle's NHS number identifier", `{"resourceType":"Bundle","identifier":{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9990000018"}}`, "", "", "", false},
		{"no identifier", `{"resourceType":"Bundle","type":"batch"}`, "", "", "", false},
		{"too long", `{"resourceType":"Bundle","identifier":{"value":"` + strings.Repeat("x", 513) + `"}}`, "", "", "", false},
		{"not json", "{not json", "", "", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctrl, sender, typ, ok := quarantinedHeader([]byte(tc.raw))
			if ctrl != tc.ctrl || sender != tc.sender || typ != tc.typ || ok != tc.ok {
				t.Errorf("quarantinedHeader = %q, %q, %q, %v; want %q, %q, %q, %v", ctrl, sender, typ, ok, tc.ctrl, tc.sender, tc.typ, tc.ok)
			}
		})
	}
}
