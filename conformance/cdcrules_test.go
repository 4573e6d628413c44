package conformance

import (
	"os"
	"strings"
	"testing"

	"github.com/junction-fhir/junction/pkg/hl7v2"
)

// TestJudgeValue checks that each kind of disagreement is classed by its
// rule, and that a difference no rule explains stays "differs".
func TestJudgeValue(t *testing.T) {
	oru := func(orc, obx string) string {
		return strings.Join([]string{
			"MSH|^~\\&|LIMS|RX1LAB|EPR|RX1|20240715093512||ORU^R01|C1|P|2.5",
			"PID|1||H123^^^RX1^MR||JUDGETEST^ALEX",
			orc,
			"OBR|1|PL1|FL1|1234^FBC^L|||202407150900||||||||||||||||||F",
			obx,
		}, "\r") + "\r"
	}
	adt := strings.Join([]string{
		"MSH|^~\\&|PAS|RX1|EPR|RX1|20240715093512||ADT^A01|C2|P|2.4",
		"PID|1||H123^^^RX1^MR||JUDGETEST^ALEX",
		"NK1|1|JUDGETEST^SAM|SPO|1 HIGH STREET^^LEEDS|^PRN^PH^^44^113^4960000",
	}, "\r") + "\r"
	tests := []struct {
		name     string
		msg      string
		path     string
		want     string
		have     []string
		wantCat  string
		wantRule string
	}{
		{"request status without ORC-5", oru("ORC|RE|PL1|FL1", "OBX|1|NM|5678^HB^L||140|g/L|||||F"),
			"ServiceRequest.status", "unknown", []string{"completed"}, catChoice, "request-status"},
		{"request status with ORC-5 is not explained", oru("ORC|RE|PL1|FL1||CM", "OBX|1|NM|5678^HB^L||140|g/L|||||F"),
			"ServiceRequest.status", "unknown", []string{"completed"}, catDiffers, ""},
		{"local time read in the dialect's zone", oru("ORC|RE", "OBX|1|NM|5678^HB^L||140|g/L|||||F"),
			"DiagnosticReport.issued", "2024-07-15T09:00:00Z", []string{"2024-07-15T09:00:00+01:00"}, catUKOverride, "time-zone"},
		{"another instant is not a time zone", oru("ORC|RE", "OBX|1|NM|5678^HB^L||140|g/L|||||F"),
			"DiagnosticReport.issued", "2024-07-15T09:00:00Z", []string{"2024-07-15T11:00:00+01:00"}, catDiffers, ""},
		{"local code system", oru("ORC|RE", "OBX|1|NM|5678^HB^L||140|g/L|||||F"),
			"Observation.code.coding.system", rsLocalSystem, []string{"https://fhir.example-trust.nhs.uk/CodeSystem/local-pathology-code"}, catUKOverride, "local-code-system"},
		{"phone number written another way", adt,
			"RelatedPerson.telecom.value", "+44 113 496 0000", []string{"+44 113 4960000"}, catChoice, "telecom-format"},
		{"another phone number", adt,
			"RelatedPerson.telecom.value", "+44 113 496 0999", []string{"+44 113 4960000"}, catDiffers, ""},
		{"SN kept as text", oru("ORC|RE", "OBX|1|SN|5678^HB^L||-^1^+^3||||||F"),
			"Observation.valueString", "- 1 + 3", []string{"-1+3"}, catGap, "sn-as-string"},
		{"ST value differs", oru("ORC|RE", "OBX|1|ST|5678^HB^L||NORMAL||||||F"),
			"Observation.valueString", "NORMAL ", []string{"NORMAL"}, catDiffers, ""},
		{"expected urn:oid of no OID", adt,
			"MessageHeader.destination.endpoint", "urn:oid:Receiving App Universal", []string{"urn:hl7v2:EPR:RX1"}, catInventory, "hd-not-an-oid"},
		{"expected urn:oid of an OID", adt,
			"MessageHeader.destination.endpoint", "urn:oid:2.16.840.1.113883", []string{"urn:hl7v2:EPR:RX1"}, catDiffers, ""},
		{"identifier system (UK marker)", adt,
			"Patient.identifier.system", "urn:oid:2.1.1", []string{"https://fhir.nhs.uk/Id/nhs-number"}, catUKOverride, ""},
		{"US extension (US marker)", adt,
			"Patient.extension(http://hl7.org/fhir/us/core/StructureDefinition/us-core-race).valueString", "x", []string{"y"}, catUSOnly, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := hl7v2.Parse([]byte(tt.msg))
			if err != nil {
				t.Fatalf("synthetic message does not parse: %v", err)
			}
			ctx := &cdcContext{msg: m, got: map[string][]string{tt.path: tt.have}}
			d := judgeValue(ctx, leaf{tt.path, tt.want}, tt.have)
			if d.cat != tt.wantCat || d.rule != tt.wantRule {
				t.Errorf("classed %s by rule %q (%s), want %s by rule %q", d.cat, d.rule, d.reason, tt.wantCat, tt.wantRule)
			}
			if d.reason == "" {
				t.Error("no reason given")
			}
		})
	}
}

// TestCDCRulesDocumented checks that every rule has a known category, a
// reason, a unique id, and is explained in conformance/README.md.
func TestCDCRulesDocumented(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{catUKOverride: true, catNotSupported: true, catChoice: true, catInventory: true, catGap: true}
	seen := map[string]bool{}
	for _, r := range cdcRules {
		t.Run(r.id, func(t *testing.T) {
			if seen[r.id] {
				t.Errorf("rule id %q used twice", r.id)
			}
			seen[r.id] = true
			if !known[r.cat] {
				t.Errorf("category %q is not one a rule may give", r.cat)
			}
			if r.reason == "" {
				t.Error("no reason")
			}
			if !strings.Contains(string(readme), "`"+r.id+"`") {
				t.Errorf("conformance/README.md does not explain rule `%s`", r.id)
			}
		})
	}
}
