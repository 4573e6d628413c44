package pathology

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	models "github.com/samply/golang-fhir-models/fhir-models/fhir"

	"github.com/junction-fhir/junction/adapters/pas"
	"github.com/junction-fhir/junction/pkg/fault"
	"github.com/junction-fhir/junction/pkg/hl7v2"
)

// hl7 joins segments with carriage returns.
func hl7(segments ...string) []byte {
	return []byte(strings.Join(segments, "\r") + "\r")
}

const (
	testMSH = `MSH|^~\&|LIMS|RX1|EPR|RX1|20240715093512||ORU^R01|C1|P|2.5.1`
	testPID = `PID|1||9990000018^^^NHS^NH||TESTPATIENT^ALEX`
	testOBR = `OBR|1|P1|F1|GLU^Glucose^L|||20240715081500|||||||||||||||20240715093000|||F`
)

func TestTranslateFaults(t *testing.T) {
	tr := newTestTranslator(t)
	tests := []struct {
		name string
		raw  []byte
		code fault.Code
		hl7  string
	}{
		{"not HL7", []byte("hello"), fault.CodeHL7Parse, "100"},
		{"ADT", hl7(strings.Replace(testMSH, "ORU^R01", "ADT^A01", 1), testPID), fault.CodeHL7Unsupported, "200"},
		{"ORU R30", hl7(strings.Replace(testMSH, "ORU^R01", "ORU^R30", 1), testPID, testOBR), fault.CodeHL7Unsupported, "201"},
		{"no PID", hl7(testMSH, testOBR), fault.CodeHL7Required, "100"},
		{"no OBR", hl7(testMSH, testPID, `OBX|1|NM|GLU^Glucose^L||5.2|mmol/L`), fault.CodeHL7Required, "100"},
		{"two patients", hl7(testMSH, testPID, testOBR, `PID|1||9990000026^^^NHS^NH`, testOBR), fault.CodeHL7Unsupported, "100"},
		{"charset 8859/15", hl7(testMSH+"||||||8859/15", testPID, testOBR), fault.CodeHL7Charset, "103"},
		{"charset UTF-16", hl7(testMSH+"||||||UNICODE UTF-16", testPID, testOBR), fault.CodeHL7Charset, "103"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tr.Translate(testEnvelope("fault", tt.raw))
			f := fault.As(err)
			if f == nil || f.Code != tt.code || f.HL7Err != tt.hl7 || f.Class != fault.Permanent {
				t.Fatalf("error %v, want permanent %s with HL7 error %s", err, tt.code, tt.hl7)
			}
			if strings.Contains(f.Msg, "9990000018") || strings.Contains(f.Msg, "TESTPATIENT") {
				t.Errorf("fault message holds patient data: %q", f.Msg)
			}
		})
	}
	if _, err := tr.Translate(nil); fault.CodeOf(err) != fault.CodeInternal {
		t.Errorf("Translate(nil) error %v", err)
	}
}

// TestTranslateRepeatedPatient checks that a result message repeating the
// patient before each group of results (ORU^R01's PATIENT_RESULT) is
// translated as one patient's: one Patient, every report about it.
func TestTranslateRepeatedPatient(t *testing.T) {
	tr := newTestTranslator(t)
	got, err := tr.Translate(testEnvelope("repeat", hl7(testMSH, testPID, testOBR, `OBX|1|NM|GLU^Glucose^L||5.2|mmol/L`,
		testPID, `OBR|2|P2|F2|UE^U and E^L|||20240715081500|||||||||||||||20240715093000|||F`, `OBX|1|NM|NA^Sodium^L||140|mmol/L`)))
	if err != nil {
		t.Fatalf("Translate: %v", err)
	}
	if got.PatientKey != "9990000018" {
		t.Errorf("patient key %q", got.PatientKey)
	}
	b, err := models.UnmarshalBundle(got.Bundle)
	if err != nil {
		t.Fatalf("UnmarshalBundle: %v", err)
	}
	var patientURL string
	var subjects []string
	for _, e := range b.Entry {
		var probe struct {
			ResourceType string `json:"resourceType"`
			Subject      struct {
				Reference string `json:"reference"`
			} `json:"subject"`
		}
		if err := json.Unmarshal(e.Resource, &probe); err != nil {
			t.Fatal(err)
		}
		switch probe.ResourceType {
		case "Patient":
			if patientURL != "" {
				t.Error("two Patients")
			}
			patientURL = *e.FullUrl
		case "DiagnosticReport":
			subjects = append(subjects, probe.Subject.Reference)
		}
	}
	if len(subjects) != 2 || subjects[0] != patientURL || subjects[1] != patientURL {
		t.Errorf("reports' subjects %q, want two, both %q", subjects, patientURL)
	}
}

// translateOBX translates a one-OBX message and returns its Observation
// and the data-quality codes.
func translateOBX(t *testing.T, obx string) (models.Observation, []string) {
	t.Helper()
	tr := newTestTranslator(t)
	got, err := tr.Translate(testEnvelope("obx", hl7(testMSH, testPID, testOBR, obx)))
	if err != nil {
		t.Fatalf("Translate: %v", err)
	}
	b, err := models.UnmarshalBundle(got.Bundle)
	if err != nil {
		t.Fatalf("UnmarshalBundle: %v", err)
	}
	obs, err := models.UnmarshalObservation(b.Entry[len(b.Entry)-1].Resource)
	if err != nil {
		t.Fatalf("last entry is not an Observation: %v", err)
	}
	return obs, got.DataQuality
}

func TestObservationValues(t *testing.T) {
	tests := []struct {
		name  string
		obx   string
		check func(models.Observation) bool
		dq    []string
	}{
		{"NM with comparator", `OBX|1|NM|GLU^Glucose^L||<0.5|mmol/L|||||F`, func(o models.Observation) bool {
			return o.ValueQuantity != nil && o.ValueQuantity.Value.String() == "0.5" && *o.ValueQuantity.Comparator == models.QuantityComparatorLessThan
		}, nil},
		{"NM normalised", `OBX|1|NM|GLU^Glucose^L||+007.50|mmol/L|||||F`, func(o models.Observation) bool {
			return o.ValueQuantity.Value.String() == "7.50" && *o.ValueQuantity.Code == "mmol/L"
		}, nil},
		{"NM not a number", `OBX|1|NM|GLU^Glucose^L||haemolysed|mmol/L|||||F`, func(o models.Observation) bool {
			return o.ValueString != nil && *o.ValueString == "haemolysed" && o.ValueQuantity == nil
		}, []string{DQNumericValueInvalid}},
		{"power of ten with its caret unescaped", `OBX|1|NM|WBC^White cells^L||1.3|x10^9/l|||||F`, func(o models.Observation) bool {
			return *o.ValueQuantity.Unit == "x10^9/l" && *o.ValueQuantity.Code == "10*9/L"
		}, nil},
		{"power of ten without x, caret unescaped", `OBX|1|NM|RBC^Red cells^L||4.5|10^12/L|||||F`, func(o models.Observation) bool {
			return *o.ValueQuantity.Unit == "10^12/L" && *o.ValueQuantity.Code == "10*12/L"
		}, nil},
		{"unit with code and text is not joined", `OBX|1|NM|GLU^Glucose^L||5.2|mmol/L^millimoles per litre^UCUM|||||F`, func(o models.Observation) bool {
			return *o.ValueQuantity.Unit == "mmol/L" && *o.ValueQuantity.Code == "mmol/L"
		}, nil},
		{"unit not UCUM", `OBX|1|NM|GLU^Glucose^L||5|tera.l-1|||||F`, func(o models.Observation) bool {
			return o.ValueQuantity.System == nil && *o.ValueQuantity.Unit == "tera.l-1"
		}, []string{DQUnitNotUCUM}},
		{"SN bad number", `OBX|1|SN|GLU^Glucose^L||<^x|mmol/L|||||F`, func(o models.Observation) bool {
			return o.ValueString != nil && *o.ValueString == "<x"
		}, []string{DQNumericValueInvalid}},
		{"SN decimal", `OBX|1|SN|GLU^Glucose^L||^1^.^5|mmol/L|||||F`, func(o models.Observation) bool {
			return o.ValueQuantity != nil && o.ValueQuantity.Value.String() == "1.5"
		}, nil},
		{"FT repetitions", `OBX|1|FT|REP^Report^L||Line one~Line \E\two\E\||||||F`, func(o models.Observation) bool {
			return *o.ValueString == "Line one\nLine \\two\\"
		}, nil},
		{"CWE repetitions are components", `OBX|1|CWE|ABO^Blood group^L||A^Group A^L~RHPOS^Rh D positive^L||||||F`, func(o models.Observation) bool {
			return o.ValueCodeableConcept == nil && o.DataAbsentReason == nil && len(o.Component) == 2 &&
				*o.Component[0].ValueCodeableConcept.Coding[0].Code == "A" && *o.Component[1].ValueCodeableConcept.Coding[0].Code == "RHPOS" &&
				*o.Component[1].Code.Coding[0].Code == "ABO"
		}, nil},
		{"NM repetitions are components, empty ones left out", `OBX|1|NM|GLU^Glucose^L||4.2~~<4.3|mmol/L|||||F`, func(o models.Observation) bool {
			return o.ValueQuantity == nil && len(o.Component) == 2 && o.Component[0].ValueQuantity.Value.String() == "4.2" &&
				*o.Component[1].ValueQuantity.Comparator == models.QuantityComparatorLessThan && *o.Component[1].ValueQuantity.Code == "mmol/L"
		}, nil},
		{"time in the hour the clocks skip", `OBX|1|NM|GLU^Glucose^L||5.2|mmol/L|||||F|||20240331013000`, func(o models.Observation) bool {
			return o.EffectiveDateTime != nil
		}, []string{DQLocalTimeAmbiguous}},
		{"time in the hour the clocks repeat", `OBX|1|NM|GLU^Glucose^L||5.2|mmol/L|||||F|||20241027013000`, func(o models.Observation) bool {
			return o.EffectiveDateTime != nil
		}, []string{DQLocalTimeAmbiguous}},
		{"DTM value in the hour the clocks repeat", `OBX|1|DTM|LD^Last dose^L||20241027013000||||||F`, func(o models.Observation) bool {
			return o.ValueDateTime != nil && *o.ValueDateTime == "2024-10-27T01:30:00+00:00"
		}, []string{DQLocalTimeAmbiguous}},
		{"DR value begun in the repeated hour's first pass", `OBX|1|DR|INF^Infusion^L||20241027015000^20241027011000||||||F`, func(o models.Observation) bool {
			return o.ValuePeriod != nil && *o.ValuePeriod.Start == "2024-10-27T01:50:00+01:00" && *o.ValuePeriod.End == "2024-10-27T01:10:00+00:00"
		}, []string{DQLocalTimeAmbiguous}},
		{"DR value out of order in summer", `OBX|1|DR|INF^Infusion^L||20240715100000^20240715090000||||||F`, func(o models.Observation) bool {
			return o.ValuePeriod != nil && *o.ValuePeriod.Start == "2024-07-15T10:00:00+01:00"
		}, nil},
		{"time with its offset is not a guess", `OBX|1|NM|GLU^Glucose^L||5.2|mmol/L|||||F|||20241027013000+0100`, func(o models.Observation) bool {
			return *o.EffectiveDateTime == "2024-10-27T01:30:00+01:00"
		}, nil},
		{"pending, no value", `OBX|1|NM|GLU^Glucose^L|||mmol/L|||||P`, func(o models.Observation) bool {
			return o.Status == models.ObservationStatusPreliminary && *o.DataAbsentReason.Coding[0].Code == "temp-unknown"
		}, nil},
		{"not asked", `OBX|1|ST|GLU^Glucose^L||||||||N`, func(o models.Observation) bool {
			return *o.DataAbsentReason.Coding[0].Code == "not-asked"
		}, nil},
		{"TM invalid", `OBX|1|TM|T^Time^L||2599||||||F`, func(o models.Observation) bool {
			return o.ValueTime == nil && o.DataAbsentReason != nil
		}, []string{DQValueInvalid}},
		{"ED bad base64", `OBX|1|ED|PDF^PDF^L||^AP^PDF^Base64^!!notbase64||||||F`, func(o models.Observation) bool {
			return len(o.Extension) == 0
		}, []string{DQValueInvalid}},
		{"ED hex", `OBX|1|ED|PDF^PDF^L||^AP^PDF^Hex^48656c6c6f||||||F`, func(o models.Observation) bool {
			return len(o.Extension) == 1 && *o.Extension[0].ValueAttachment.Data == "SGVsbG8="
		}, nil},
		{"RP not a URI", `OBX|1|RP|IMG^Image^L||slide 12^LIMS^IM^JPEG||||||F`, func(o models.Observation) bool {
			return len(o.Extension) == 0
		}, []string{DQValueInvalid}},
		{"IS", `OBX|1|IS|GRP^Group^L||O||||||F`, func(o models.Observation) bool {
			return *o.ValueCodeableConcept.Coding[0].Code == "O" && o.ValueCodeableConcept.Coding[0].System == nil
		}, nil},
		{"missing value type", `OBX|1||GLU^Glucose^L||5.2||||||F`, func(o models.Observation) bool {
			return *o.ValueString == "5.2"
		}, []string{DQValueTypeUnsupported}},
		{"missing value type, with a unit", `OBX|1||K^Potassium^L||6.1|mmol/L|3.5-5.3|H|||F`, func(o models.Observation) bool {
			return o.ValueQuantity != nil && o.ValueQuantity.Value.String() == "6.1" && *o.ValueQuantity.Code == "mmol/L" &&
				*o.ReferenceRange[0].High.Code == "mmol/L"
		}, []string{DQValueTypeUnsupported}},
		{"ST number with a unit", `OBX|1|ST|G^Glucose^L||14.2|mmol/L|3-7|H|||F`, func(o models.Observation) bool {
			return o.ValueQuantity != nil && o.ValueQuantity.Value.String() == "14.2" && *o.ValueQuantity.Unit == "mmol/L" && o.ValueString == nil
		}, nil},
		{"ST comparator with a unit", `OBX|1|ST|TROP^Troponin^L||<5|ng/L|0-14|N|||F`, func(o models.Observation) bool {
			return o.ValueQuantity != nil && o.ValueQuantity.Value.String() == "5" && *o.ValueQuantity.Comparator == models.QuantityComparatorLessThan &&
				*o.ValueQuantity.Unit == "ng/L"
		}, nil},
		{"ST text with a unit keeps it", `OBX|1|ST|TROP^Troponin^L||see comment|ng/L|||||F`, func(o models.Observation) bool {
			return o.ValueString != nil && *o.ValueString == "see comment ng/L"
		}, nil},
		{"ST without a unit stays text", `OBX|1|ST|GRP^Group^L||14.2||||||F`, func(o models.Observation) bool {
			return o.ValueString != nil && *o.ValueString == "14.2" && o.ValueQuantity == nil
		}, nil},
		{"SN sent as text", `OBX|1|SN|CRP^CRP^L||<5|mg/L|0-5|N|||F`, func(o models.Observation) bool {
			return o.ValueQuantity != nil && o.ValueQuantity.Value.String() == "5" && *o.ValueQuantity.Comparator == models.QuantityComparatorLessThan &&
				*o.ValueQuantity.Code == "mg/L"
		}, nil},
		{"FT skip and centre", `OBX|1|FT|REP^Report^L||Result 4.1\.sk 3\3.5-5.3\.ce\CENTRED||||||F`, func(o models.Observation) bool {
			return o.ValueString != nil && *o.ValueString == "Result 4.1   3.5-5.3\nCENTRED"
		}, nil},
		// .sp with its count written without the space, or signed.
		{"FT line feeds counted loosely", `OBX|1|FT|REP^Report^L||A\.sp2\B\.sp+2\C\.sp\D\.spx\E||||||F`, func(o models.Observation) bool {
			return o.ValueString != nil && *o.ValueString == "A\n\nB\n\nC\nD\\.spx\\E"
		}, nil},
		{"lower-case flag", `OBX|1|NM|K^Potassium^L||6.1|mmol/L|3.5-5.3|h|||F`, func(o models.Observation) bool {
			return len(o.Interpretation) == 1 && *o.Interpretation[0].Coding[0].Code == "H"
		}, nil},
		{"unknown flag kept as text", `OBX|1|NM|K^Potassium^L||6.1|mmol/L|3.5-5.3|ZZ|||F`, func(o models.Observation) bool {
			return len(o.Interpretation) == 1 && o.Interpretation[0].Coding == nil && *o.Interpretation[0].Text == "ZZ"
		}, []string{DQInterpretationUnknown}},
		// An "&" the laboratory did not escape in a code's text is the
		// text's, not a subcomponent separator: "U&E", not "U".
		{"unescaped ampersand in code texts", `OBX|1|CE|UE^U&E comment^L||ORG1^Strep A & B^L||||||F`, func(o models.Observation) bool {
			return *o.Code.Text == "U&E comment" && *o.Code.Coding[0].Display == "U&E comment" &&
				*o.ValueCodeableConcept.Text == "Strep A & B" && *o.ValueCodeableConcept.Coding[0].Display == "Strep A & B"
		}, nil},
		{"observation time", `OBX|1|NM|GLU^Glucose^L||5|mmol/L|||||F|||20240715090000+0000`, func(o models.Observation) bool {
			return *o.EffectiveDateTime == "2024-07-15T09:00:00+00:00"
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, dq := translateOBX(t, tt.obx)
			if !tt.check(o) {
				t.Errorf("observation does not match: %+v", o)
			}
			if diff := cmp.Diff(tt.dq, dq); diff != "" {
				t.Errorf("data quality (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecimal(t *testing.T) {
	for in, want := range map[string]string{
		"5": "5", "+007.50": "7.50", ".5": "0.5", "-.5": "-0.5", "12.": "12", " 3 ": "3", "-0": "-0",
	} {
		if got, ok := decimal(in); !ok || got != want {
			t.Errorf("decimal(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
	for _, in := range []string{"", ".", "+", "1e5", "1.2.3", "abc", "1,5", "--1", "0x10"} {
		if got, ok := decimal(in); ok {
			t.Errorf("decimal(%q) = %q, want not a number", in, got)
		}
	}
}

func TestIsUCUM(t *testing.T) {
	for _, s := range []string{"mmol/L", "g/L", "10*9/L", "10^9/L", "fL", "pg", "%", "mL/min/{1.73_m2}", "{cells}/uL",
		"/[HPF]", "mm[Hg]", "kg/m2", "m[IU]/L", "umol/L", "U/L", "mg/dL", "(mL/min)/{1.73_m2}", "s", "L/L", "g.L-1"} {
		if !isUCUM(s) {
			t.Errorf("isUCUM(%q) = false", s)
		}
	}
	for _, s := range []string{"", "tera.l-1", "beats/min", "x10^9/L", "IU/L", "mmHg", "cells", "mg/", "{open", "mm Hg", "((((((((((L))))))))))"} {
		if isUCUM(s) {
			t.Errorf("isUCUM(%q) = true", s)
		}
	}
}

func TestReferenceRange(t *testing.T) {
	u := unit{text: "mmol/L", code: "mmol/L"}
	tests := []struct{ in, low, high string }{
		{"3.5-5.3", "3.5", "5.3"},
		{"3.5 - 5.3", "3.5", "5.3"},
		{"-2 to 2", "-2", "2"},
		{"-5--1", "-5", "-1"},
		{"70_105", "70", "105"},
		// FHIR's bounds are inclusive: a strict comparator is kept as
		// text only.
		{"<5", "", ""},
		{"<= 5", "", "5"},
		{">60", "", ""},
		{">= 60", "60", ""},
		{"Negative", "", ""},
		{"3.5-5.3 mmol/L", "", ""},
		{"", "", ""},
	}
	str := func(q *models.Quantity) string {
		if q == nil {
			return ""
		}
		return q.Value.String()
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			lo, hi := referenceRange(tt.in, u)
			if str(lo) != tt.low || str(hi) != tt.high {
				t.Errorf("referenceRange(%q) = %q, %q; want %q, %q", tt.in, str(lo), str(hi), tt.low, tt.high)
			}
		})
	}
}

func TestTimeOfDay(t *testing.T) {
	for in, want := range map[string]string{"09": "09:00:00", "0930": "09:30:00", "093015": "09:30:15", "093015.25": "09:30:15.25", "2359+0100": "23:59:00"} {
		if got, ok := timeOfDay(in); !ok || got != want {
			t.Errorf("timeOfDay(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
	for _, in := range []string{"", "9", "2400", "0960", "12:30", "0930.5", "093015.x"} {
		if got, ok := timeOfDay(in); ok {
			t.Errorf("timeOfDay(%q) = %q, want invalid", in, got)
		}
	}
}

func TestCodeSystemURI(t *testing.T) {
	b := &builder{t: newTestTranslator(t)}
	for in, want := range map[string]string{
		"LN": systemLOINC, "sct": systemSNOMED, "": DefaultLocalCodeSystem, "L": DefaultLocalCodeSystem,
		"99WP": DefaultLocalCodeSystem, "HL70078": "http://terminology.hl7.org/CodeSystem/v2-0078",
		"XYZ": "urn:hl7v2:coding-system:XYZ", "A B": "urn:hl7v2:coding-system:A%20B",
	} {
		if got := b.codeSystemURI(in); got != want {
			t.Errorf("codeSystemURI(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestCodingSystems checks lab.coding_systems: a laboratory's own names
// map, without regard to case, to the local code system or a URI ahead of
// HL7's names, and a value that is neither is refused.
func TestCodingSystems(t *testing.T) {
	lab := testLab()
	lab.CodingSystems = map[string]string{"WINPATH": LocalSystem, "telepath": "https://fhir.example-trust.nhs.uk/CodeSystem/telepath", "LN": "https://x.example/not-loinc"}
	tr, err := NewTranslator(pas.DefaultDialect(), lab)
	if err != nil {
		t.Fatal(err)
	}
	b := &builder{t: tr}
	for in, want := range map[string]string{
		"WINPATH": lab.LocalCodeSystem, "winpath": lab.LocalCodeSystem, "TELEPATH": "https://fhir.example-trust.nhs.uk/CodeSystem/telepath",
		"LN": "https://x.example/not-loinc", "SCT": systemSNOMED, "XYZ": "urn:hl7v2:coding-system:XYZ", "": lab.LocalCodeSystem,
	} {
		if got := b.codeSystemURI(in); got != want {
			t.Errorf("codeSystemURI(%q) = %q, want %q", in, got, want)
		}
	}
	lab.CodingSystems = map[string]string{"WINPATH": "winpath codes"}
	if errs := lab.Validate(); len(errs) != 1 || !strings.Contains(errs[0].Error(), "lab.coding_systems (WINPATH):") {
		t.Errorf("Validate = %v, want lab.coding_systems.WINPATH refused", errs)
	}
}

func TestMediaType(t *testing.T) {
	for _, tt := range []struct{ typ, sub, want string }{
		{"AP", "PDF", "application/pdf"}, {"IM", "JPEG", "image/jpeg"}, {"TEXT", "HTML", "text/html"},
		{"AP", "", ""}, {"XX", "PDF", ""}, {"AP", "p d f", ""},
	} {
		got := mediaType(tt.typ, tt.sub)
		if (got == nil) != (tt.want == "") || got != nil && *got != tt.want {
			t.Errorf("mediaType(%q, %q) = %v, want %q", tt.typ, tt.sub, got, tt.want)
		}
	}
}

func TestAppendUnescapedHTML(t *testing.T) {
	for in, want := range map[string]string{
		`{"a":"\u003c5"}`:    `{"a":"<5"}`,
		`{"a":"x\u0026y"}`:   `{"a":"x&y"}`,
		`{"a":"\\u003c"}`:    `{"a":"\\u003c"}`,
		`{"a":"\\\u003e"}`:   `{"a":"\\>"}`,
		`{"a":"\u00e9"}`:     `{"a":"\u00e9"}`,
		`{"a":"plain text"}`: `{"a":"plain text"}`,
	} {
		if got := string(appendUnescapedHTML(nil, []byte(in))); got != want {
			t.Errorf("appendUnescapedHTML(%s) = %s, want %s", in, got, want)
		}
	}
}

func TestDeterministicAndDistinct(t *testing.T) {
	tr := newTestTranslator(t)
	raw := hl7(testMSH, testPID, testOBR, `OBX|1|NM|GLU^Glucose^L||5.2|mmol/L|||||F`)
	a, err := tr.Translate(testEnvelope("a", raw))
	if err != nil {
		t.Fatal(err)
	}
	again, _ := tr.Translate(testEnvelope("a", raw))
	other, _ := tr.Translate(testEnvelope("b", raw))
	if !bytes.Equal(a.Bundle, again.Bundle) {
		t.Error("same message and id give different bundles")
	}
	if bytes.Equal(a.Bundle, other.Bundle) {
		t.Error("different message ids give the same bundle")
	}
	m, _ := hl7v2.Parse(raw)
	if a.PatientKey != pas.PatientKey(m, pas.DefaultDialect()) {
		t.Errorf("PatientKey %q differs from pas.PatientKey", a.PatientKey)
	}
	checkBundle(t, a.Bundle)
}

func TestNotesAndOrdersGrouping(t *testing.T) {
	tr := newTestTranslator(t)
	raw := hl7(testMSH, testPID, `NTE|1||Patient note, not mapped`,
		`ORC|RE|P1|F1`, testOBR, `NTE|1||Report note`,
		`OBX|1|NM|GLU^Glucose^L||5.2|mmol/L|||||F`, `NTE|1||First result note`, `NTE|2||Second result note`,
		`OBR|2|P2|F2|HBA1C^HbA1c^L|||20240715081500|||||||||||||||20240715093000|||F`,
		`OBX|1|NM|HBA1C^HbA1c^L||48|mmol/mol|||||F`)
	got, err := tr.Translate(testEnvelope("notes", raw))
	if err != nil {
		t.Fatal(err)
	}
	checkBundle(t, got.Bundle)
	b, _ := models.UnmarshalBundle(got.Bundle)
	var reports []models.DiagnosticReport
	var obs []models.Observation
	for _, e := range b.Entry {
		if r, err := models.UnmarshalDiagnosticReport(e.Resource); err == nil && r.Code.Coding != nil && strings.Contains(string(e.Resource), `"DiagnosticReport"`) {
			reports = append(reports, r)
		}
		if o, err := models.UnmarshalObservation(e.Resource); err == nil && strings.Contains(string(e.Resource), `"resourceType":"Observation"`) {
			obs = append(obs, o)
		}
	}
	if len(reports) != 2 || len(obs) != 2 {
		t.Fatalf("%d reports and %d observations, want 2 and 2", len(reports), len(obs))
	}
	if len(reports[0].Extension) != 1 || reports[0].Extension[0].ValueAnnotation.Text != "Report note" {
		t.Errorf("first report notes %+v", reports[0].Extension)
	}
	if len(reports[1].Extension) != 0 || len(reports[1].Result) != 1 || len(reports[0].Result) != 1 {
		t.Errorf("second report has notes %v or results are misassigned", reports[1].Extension)
	}
	if len(obs[0].Note) != 2 || obs[0].Note[1].Text != "Second result note" || len(obs[1].Note) != 0 {
		t.Errorf("observation notes %+v / %+v", obs[0].Note, obs[1].Note)
	}
	if *obs[1].Code.Coding[0].Code != "HBA1C" || *obs[1].BasedOn[0].Reference != *reports[1].BasedOn[0].Reference {
		t.Error("second OBX is not tied to the second order")
	}
	if !slices.Contains(got.DataQuality, DQNoteNotMapped) {
		t.Errorf("data quality %q, want %s for the note after PID", got.DataQuality, DQNoteNotMapped)
	}
}

// TestNotesOfOrdersAndSpecimens checks that notes after an ORC reach the
// ServiceRequest and notes after an SPM the Specimen, and that an OBX
// before the first OBR is kept as an Observation of the patient.
func TestNotesOfOrdersAndSpecimens(t *testing.T) {
	raw := hl7(testMSH, testPID,
		`OBX|1|NM|K^Potassium^L||4.0|mmol/L|3.5-5.3|N|||F`, `NTE|1||Patient-level result note`,
		`ORC|RE|P1|F1`, `NTE|1||Order note: urgent`, testOBR,
		`OBX|1|NM|NA^Sodium^L||140|mmol/L|133-146|N|||F`,
		`PRT|1|AD||RO^Responsible Observer^HL70912|1234^SMITH^JO`, `NTE|1||Interpret with caution`,
		`SPM|1|SP1||SER^Serum^L`, `ZSP|1|local`, `NTE|1||Sample haemolysed`)
	got, err := newTestTranslator(t).Translate(testEnvelope("order-notes", raw))
	if err != nil {
		t.Fatal(err)
	}
	checkBundle(t, got.Bundle)
	b, _ := models.UnmarshalBundle(got.Bundle)
	var notes []string
	var obs []models.Observation
	for _, e := range b.Entry {
		raw := string(e.Resource)
		switch {
		case strings.Contains(raw, `"resourceType":"ServiceRequest"`):
			sr, _ := models.UnmarshalServiceRequest(e.Resource)
			for _, n := range sr.Note {
				notes = append(notes, "ServiceRequest: "+n.Text)
			}
		case strings.Contains(raw, `"resourceType":"Specimen"`):
			sp, _ := models.UnmarshalSpecimen(e.Resource)
			for _, n := range sp.Note {
				notes = append(notes, "Specimen: "+n.Text)
			}
		case strings.Contains(raw, `"resourceType":"Observation"`):
			o, _ := models.UnmarshalObservation(e.Resource)
			obs = append(obs, o)
		}
	}
	if want := []string{"ServiceRequest: Order note: urgent", "Specimen: Sample haemolysed"}; !slices.Equal(notes, want) {
		t.Errorf("notes %q, want %q", notes, want)
	}
	if len(obs) != 2 {
		t.Fatalf("%d observations, want the patient-level one and the order's", len(obs))
	}
	if len(obs[1].Note) != 1 || obs[1].Note[0].Text != "Interpret with caution" {
		t.Errorf("the note after the OBX's PRT: %+v, want it on the Observation", obs[1].Note)
	}
	if slices.Contains(got.DataQuality, DQNoteNotMapped) {
		t.Errorf("data quality %q: a note was dropped", got.DataQuality)
	}
	p := obs[0]
	if *p.Code.Coding[0].Code != "K" || p.ValueQuantity == nil || *p.ValueQuantity.Value != json.Number("4.0") ||
		len(p.BasedOn) != 0 || len(p.Note) != 1 || p.Subject == nil {
		t.Errorf("patient-level observation %+v", p)
	}
	if !slices.Contains(got.DataQuality, DQObservationOutsideOrder) {
		t.Errorf("data quality %q, want %s", got.DataQuality, DQObservationOutsideOrder)
	}
}

// TestLatin1Text checks that an 8859/1 message's text, raw bytes and
// \Xhh\ escapes alike, reaches the Observation as UTF-8, in coded and in
// formatted text.
func TestLatin1Text(t *testing.T) {
	tests := []struct {
		name  string
		msh18 string
		want  string
		dq    bool
	}{
		{"latin1", "8859/1", "Caf\u00e9 cr\u00e8me \u00e0 la carte", false},
		{"utf8 with latin1 bytes", "UNICODE UTF-8", "Caf\ufffd cr\ufffdme \ufffd la carte", true},
		// No MSH-18: text that is not UTF-8 is read as 8859/1.
		{"undeclared latin1", "", "Caf\u00e9 cr\u00e8me \u00e0 la carte", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := newTestTranslator(t)
			raw := hl7(testMSH+"||||||"+tt.msh18, testPID, testOBR, "OBX|1|TX|NOTE^Caf\xe9 note^L||Caf\xe9 cr\xe8me \\XE0\\ la carte|||N|||F")
			got, err := tr.Translate(testEnvelope("latin1", raw))
			if err != nil {
				t.Fatalf("Translate: %v", err)
			}
			if flagged := slices.Contains(got.DataQuality, pas.DQTextInvalidUTF8); flagged != tt.dq {
				t.Errorf("data quality %v, want %s flagged %v", got.DataQuality, pas.DQTextInvalidUTF8, tt.dq)
			}
			b, err := models.UnmarshalBundle(got.Bundle)
			if err != nil {
				t.Fatalf("UnmarshalBundle: %v", err)
			}
			obs, err := models.UnmarshalObservation(b.Entry[len(b.Entry)-1].Resource)
			if err != nil {
				t.Fatalf("last entry is not an Observation: %v", err)
			}
			if obs.ValueString == nil || *obs.ValueString != tt.want {
				t.Errorf("valueString = %v, want %q", obs.ValueString, tt.want)
			}
			if !tt.dq && (len(obs.Code.Coding) == 0 || obs.Code.Coding[0].Display == nil || *obs.Code.Coding[0].Display != "Caf\u00e9 note") {
				t.Errorf("code = %+v, want display %q", obs.Code.Coding, "Caf\u00e9 note")
			}
		})
	}
}

// TestMicrobiologyLinks checks that a susceptibility report names its
// parent order (OBR-29) by identifiers equal to the parent's own, and
// that OBX-4 sub-ids are kept.
func TestMicrobiologyLinks(t *testing.T) {
	obr := func(set, placer, filler, code string, more map[int]string) string {
		f := make([]string, 30)
		f[0], f[1], f[2], f[3], f[4], f[7], f[25] = "OBR", set, placer, filler, code, "20240715081500", "F"
		for i, v := range more {
			f[i] = v
		}
		return strings.Join(f, "|")
	}
	raw := hl7(testMSH, testPID,
		obr("1", "PL7001^EPR", "FL7001^WINPATH", "MCS^Urine culture^L", nil),
		`OBX|1|CWE|ORG^Organism^L|1|112283007^Escherichia coli^SCT||||||F`,
		obr("2", "PL7001^EPR", "FL7002^WINPATH", "SENS^Susceptibility^L", map[int]string{11: "G", 26: "ORG&Organism&L^1^Escherichia coli", 29: "PL7001&EPR^FL7001&WINPATH"}),
		`OBX|1|CWE|AMOX^Amoxicillin^L|1|R^Resistant^L|||R|||F`)
	got, err := newTestTranslator(t).Translate(testEnvelope("micro", raw))
	if err != nil {
		t.Fatal(err)
	}
	checkBundle(t, got.Bundle)
	b, _ := models.UnmarshalBundle(got.Bundle)
	var requests []models.ServiceRequest
	var obs []models.Observation
	for _, e := range b.Entry {
		switch {
		case strings.Contains(string(e.Resource), `"resourceType":"ServiceRequest"`):
			r, err := models.UnmarshalServiceRequest(e.Resource)
			if err != nil {
				t.Fatal(err)
			}
			requests = append(requests, r)
		case strings.Contains(string(e.Resource), `"resourceType":"Observation"`):
			o, err := models.UnmarshalObservation(e.Resource)
			if err != nil {
				t.Fatal(err)
			}
			obs = append(obs, o)
		}
	}
	if len(requests) != 2 || len(obs) != 2 {
		t.Fatalf("%d requests and %d observations, want 2 and 2", len(requests), len(obs))
	}
	if len(requests[0].BasedOn) != 0 {
		t.Errorf("the parent order is based on %+v", requests[0].BasedOn)
	}
	if requests[0].Intent != models.RequestIntentOrder || requests[1].Intent != models.RequestIntentReflexOrder {
		t.Errorf("intents %s and %s, want order and, for the generated susceptibility order (OBR-11 G), reflex-order", requests[0].Intent.Code(), requests[1].Intent.Code())
	}
	idKey := func(id models.Identifier) string { return *id.System + "|" + *id.Value }
	var parentIDs, childBasedOn []string
	for _, id := range requests[0].Identifier {
		if id.Type != nil {
			parentIDs = append(parentIDs, idKey(id))
		}
	}
	for _, ref := range requests[1].BasedOn {
		if ref.Identifier == nil || ref.Reference != nil || *ref.Type != "ServiceRequest" {
			t.Fatalf("basedOn %+v, want a logical reference to a ServiceRequest", ref)
		}
		childBasedOn = append(childBasedOn, idKey(*ref.Identifier))
	}
	if len(parentIDs) != 2 || !slices.Equal(parentIDs, childBasedOn) {
		t.Errorf("the child is based on %q, the parent is %q", childBasedOn, parentIDs)
	}
	for i, o := range obs {
		if len(o.Extension) != 1 || o.Extension[0].Url != extObservationSubID || *o.Extension[0].Extension[0].ValueString != "1" {
			t.Errorf("observation %d extensions %+v, want the sub-id 1", i+1, o.Extension)
		}
		if o.ValueCodeableConcept == nil || o.DataAbsentReason != nil {
			t.Errorf("observation %d lost its value beside the sub-id", i+1)
		}
	}
}

// TestSpecimenObservations checks that an OBX after an SPM (v2.5's
// SPECIMEN group) observes that specimen, and one before any SPM the
// order's first.
func TestSpecimenObservations(t *testing.T) {
	raw := hl7(testMSH, testPID, testOBR,
		`OBX|1|ST|CULT^Blood culture^L||No growth at 48 hours||||||F`,
		`SPM|1|SP1||119297000^Blood specimen^SCT|||||||||||||20240715081500`,
		`OBX|1|ST|VOL^Volume^L||10 mL||||||F`,
		`SPM|2|SP2||119297000^Blood specimen^SCT|||||||||||||20240715081600`,
		`OBX|1|ST|VOL^Volume^L||3 mL||||||F`, `NTE|1||Anaerobic bottle underfilled`)
	got, err := newTestTranslator(t).Translate(testEnvelope("specimens", raw))
	if err != nil {
		t.Fatal(err)
	}
	checkBundle(t, got.Bundle)
	b, _ := models.UnmarshalBundle(got.Bundle)
	var specimens []string
	var obs []models.Observation
	for _, e := range b.Entry {
		switch {
		case strings.Contains(string(e.Resource), `"resourceType":"Specimen"`):
			specimens = append(specimens, *e.FullUrl)
		case strings.Contains(string(e.Resource), `"resourceType":"Observation"`):
			o, err := models.UnmarshalObservation(e.Resource)
			if err != nil {
				t.Fatal(err)
			}
			obs = append(obs, o)
		}
	}
	if len(specimens) != 2 || len(obs) != 3 {
		t.Fatalf("%d specimens and %d observations, want 2 and 3", len(specimens), len(obs))
	}
	for i, want := range []string{specimens[0], specimens[0], specimens[1]} {
		if obs[i].Specimen == nil || *obs[i].Specimen.Reference != want {
			t.Errorf("observation %d observes %+v, want %s", i+1, obs[i].Specimen, want)
		}
	}
	if len(obs[2].Note) != 1 {
		t.Errorf("the anaerobic bottle's observation lost its note: %+v", obs[2].Note)
	}
}

// TestSpecimenIdentifiers checks SPM-2 and SPM-30 as the HL7 v2-to-FHIR
// mapping has them: the placer and filler assigned identifiers typed PGN
// and FGN, with their universal ids as systems, and the accession
// identifier from SPM-30 with its assigning authority's.
func TestSpecimenIdentifiers(t *testing.T) {
	raw := hl7(testMSH, testPID, testOBR,
		`SPM|1|PS1&ICE&1.2.826.0.1.11&ISO^FS1&WINPATH||119297000^Blood specimen^SCT||||||||||||||||||||||||||ACC9^^^LAB&1.2.826.0.1.12&ISO`,
		`OBX|1|ST|VOL^Volume^L||10 mL||||||F`)
	got, err := newTestTranslator(t).Translate(testEnvelope("specimen-ids", raw))
	if err != nil {
		t.Fatal(err)
	}
	checkBundle(t, got.Bundle)
	b, _ := models.UnmarshalBundle(got.Bundle)
	var sp *models.Specimen
	for _, e := range b.Entry {
		if strings.Contains(string(e.Resource), `"resourceType":"Specimen"`) {
			s, err := models.UnmarshalSpecimen(e.Resource)
			if err != nil {
				t.Fatal(err)
			}
			sp = &s
		}
	}
	if sp == nil {
		t.Fatal("no Specimen")
	}
	var ids []string
	for _, id := range sp.Identifier[1:] { // after the result key
		typ := ""
		if id.Type != nil {
			typ = *id.Type.Coding[0].Code
		}
		sys := ""
		if id.System != nil {
			sys = *id.System
		}
		ids = append(ids, typ+" "+sys+" "+*id.Value)
	}
	if want := []string{"PGN urn:oid:1.2.826.0.1.11 PS1", "FGN  FS1"}; !slices.Equal(ids, want) {
		t.Errorf("identifiers %q, want %q", ids, want)
	}
	if a := sp.AccessionIdentifier; a == nil || *a.Value != "ACC9" || a.System == nil || *a.System != "urn:oid:1.2.826.0.1.12" {
		t.Errorf("accessionIdentifier %+v, want ACC9 in urn:oid:1.2.826.0.1.12", a)
	}
}

// TestSpecimenFromReceivedTimeAlone: an order with neither SPM nor OBR-15
// but an OBR-14 (the specimen received time) keeps it on a Specimen, and
// one with none of them has no Specimen.
func TestSpecimenFromReceivedTimeAlone(t *testing.T) {
	for _, tc := range []struct {
		obr  string
		want int
	}{
		{`OBR|1|PL1^EPR|FL1^WINPATH|UE^U and E^L|||20240715081500|||||||20240715091000||||||||20240715101000|||F`, 1},
		{`OBR|1|PL1^EPR|FL1^WINPATH|UE^U and E^L|||20240715081500||||||||||||||||20240715101000|||F`, 0},
	} {
		got, err := newTestTranslator(t).Translate(testEnvelope("received", hl7(testMSH, testPID, tc.obr, `OBX|1|NM|NA^Sodium^L||140|mmol/L|133-146|N|||F`)))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := models.UnmarshalBundle(got.Bundle)
		var specimens []models.Specimen
		for _, e := range b.Entry {
			if strings.Contains(string(e.Resource), `"resourceType":"Specimen"`) {
				s, err := models.UnmarshalSpecimen(e.Resource)
				if err != nil {
					t.Fatal(err)
				}
				specimens = append(specimens, s)
			}
		}
		if len(specimens) != tc.want {
			t.Fatalf("%d Specimens, want %d", len(specimens), tc.want)
		}
		if tc.want == 1 && (specimens[0].ReceivedTime == nil || !strings.HasPrefix(*specimens[0].ReceivedTime, "2024-07-15T09:10:00")) {
			t.Errorf("receivedTime %v, want OBR-14's 2024-07-15T09:10:00", specimens[0].ReceivedTime)
		}
	}
}
