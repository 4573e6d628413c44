package pas

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	models "github.com/samply/golang-fhir-models/fhir-models/fhir"

	"github.com/junction-fhir/junction/pkg/fault"
	"github.com/junction-fhir/junction/pkg/fhir"
	"github.com/junction-fhir/junction/pkg/hl7v2"
	"github.com/junction-fhir/junction/pkg/nhs"
)

// hl7 joins segments with carriage returns.
func hl7(segments ...string) []byte {
	return []byte(strings.Join(segments, "\r") + "\r")
}

const testMSH = `MSH|^~\&|PAS|RX1|EPR|RX1|20240715093512||ADT^A01|CTRL1|P|2.4`

var testPV1 = pv1(map[int]string{2: "I", 3: "WARD1^^^RX1", 19: "V1", 44: "20240715093000"})

// segment builds a segment from its fields by number.
func segment(name string, fields map[int]string) string {
	n := 0
	for i := range fields {
		n = max(n, i)
	}
	f := make([]string, n+1)
	f[0] = name
	for i, v := range fields {
		f[i] = v
	}
	return strings.Join(f, "|")
}

// pv1 builds a PV1 with set id 1 and the given fields.
func pv1(fields map[int]string) string {
	fields[1] = "1"
	return segment("PV1", fields)
}

// pid builds a PID with the given identifiers (PID-3) and extra fields.
func pid(ids string, extra map[int]string) string {
	fields := map[int]string{1: "1", 3: ids, 5: "TESTPATIENT^ALEX"}
	for i, v := range extra {
		fields[i] = v
	}
	return segment("PID", fields)
}

func translate(t *testing.T, d Dialect, raw []byte) *models.Bundle {
	t.Helper()
	tr, err := NewTranslator(d)
	if err != nil {
		t.Fatalf("NewTranslator: %v", err)
	}
	got, err := tr.Translate(testEnvelope("unit", raw))
	if err != nil {
		t.Fatalf("Translate: %v", err)
	}
	b, err := models.UnmarshalBundle(got.Bundle)
	if err != nil {
		t.Fatalf("UnmarshalBundle: %v", err)
	}
	return &b
}

func resourceOf[T any](t *testing.T, b *models.Bundle, typ string, unmarshal func([]byte) (T, error)) (T, bool) {
	t.Helper()
	var zero T
	for _, e := range b.Entry {
		if rt, _ := fhir.ResourceType(e.Resource); rt == typ {
			r, err := unmarshal(e.Resource)
			if err != nil {
				t.Fatalf("unmarshal %s: %v", typ, err)
			}
			return r, true
		}
	}
	return zero, false
}

func TestTranslateErrors(t *testing.T) {
	tests := []struct {
		name   string
		raw    []byte
		code   fault.Code
		hl7Err string
	}{
		{"not HL7", []byte("TESTPATIENT ALEX 9990000018"), fault.CodeHL7Parse, ""},
		{"empty", nil, fault.CodeHL7Parse, ""},
		{"not ADT", hl7(strings.Replace(testMSH, "ADT^A01", "ORU^R01", 1), pid("9990000018^^^NHS^NH", nil)), fault.CodeHL7Unsupported, "200"},
		{"unsupported event", hl7(strings.Replace(testMSH, "ADT^A01", "ADT^A17", 1), pid("9990000018^^^NHS^NH", nil)), fault.CodeHL7Unsupported, "201"},
		{"no event", hl7(strings.Replace(testMSH, "ADT^A01", "ADT", 1), pid("9990000018^^^NHS^NH", nil)), fault.CodeHL7Unsupported, "201"},
		{"A01 without PID", hl7(testMSH, testPV1), fault.CodeHL7Required, "100"},
		{"A01 without PV1", hl7(testMSH, pid("9990000018^^^NHS^NH", nil)), fault.CodeHL7Required, "100"},
		{"A03 without PV1", hl7(strings.Replace(testMSH, "A01", "A03", 1), pid("9990000018^^^NHS^NH", nil)), fault.CodeHL7Required, "100"},
		{"charset 8859/15", hl7(testMSH+"||||||8859/15", pid("9990000018^^^NHS^NH", map[int]string{5: "TESTPATIENT^ZO\xa4"}), testPV1), fault.CodeHL7Charset, "103"},
		{"charset UTF-16", hl7(testMSH+"||||||UNICODE UTF-16", pid("9990000018^^^NHS^NH", nil), testPV1), fault.CodeHL7Charset, "103"},
		{"charset ISO IR87", hl7(testMSH+"||||||ISO IR87", pid("9990000018^^^NHS^NH", nil), testPV1), fault.CodeHL7Charset, "103"},
	}
	tr := newTestTranslator(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tr.Translate(testEnvelope("err", tt.raw))
			f := fault.As(err)
			if f == nil {
				t.Fatalf("Translate error = %v, want a fault", err)
			}
			if f.Code != tt.code || f.Class != fault.Permanent {
				t.Errorf("fault %s/%s, want %s/permanent", f.Code, f.Class, tt.code)
			}
			if tt.hl7Err != "" && f.HL7Err != tt.hl7Err {
				t.Errorf("HL7 error code %q, want %q", f.HL7Err, tt.hl7Err)
			}
			for _, secret := range []string{"TESTPATIENT", "9990000018"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error text %q holds patient data", err)
				}
			}
		})
	}
	if _, err := tr.Translate(nil); fault.CodeOf(err) != fault.CodeInternal {
		t.Errorf("Translate(nil) error = %v", err)
	}
	if _, err := tr.TranslateMessage(testEnvelope("x", nil), nil); fault.CodeOf(err) != fault.CodeInternal {
		t.Errorf("TranslateMessage(nil message) error = %v", err)
	}
}

func TestPatientKey(t *testing.T) {
	keep, drop := DefaultDialect(), DefaultDialect()
	drop.InvalidNHSNumber = InvalidNHSNumberDrop
	custom := DefaultDialect()
	custom.NHSNumberAuthorities = []string{"NHSNO"}
	external := DefaultDialect()
	external.ExternalIDIsNHSNumber = true
	tests := []struct {
		name    string
		pid     string
		dialect Dialect
		want    string
	}{
		{"NHS number first", pid("9990000018^^^NHS^NH~H1^^^RX1^MR", nil), keep, "9990000018"},
		{"NHS number second", pid("H1^^^RX1^MR~9990000018^^^NHS^NH", nil), keep, "9990000018"},
		{"MRN only", pid("H1^^^RX1^MR", nil), keep, "H1"},
		{"type code only", pid("9990000018^^^^NH", nil), keep, "9990000018"},
		{"authority case-insensitive", pid("9990000018^^^nhs", nil), keep, "9990000018"},
		{"spaced number", pid("999 000 0018^^^NHSNBR", nil), keep, "9990000018"},
		{"NHS number in PID-2", pid("H1^^^RX1^MR", map[int]string{2: "9990000018^^^NHS"}), keep, "9990000018"},
		{"PID-2 only", pid("", map[int]string{2: "H9^^^RX1"}), keep, "H9"},
		{"bare PID-2, default", pid("H1^^^RX1^MR", map[int]string{2: "9990000018"}), keep, "H1"},
		{"bare PID-2 as the NHS number", pid("H1^^^RX1^MR", map[int]string{2: "9990000018"}), external, "9990000018"},
		{"invalid NHS then MRN", pid("9990000017^^^NHS^NH~H1^^^RX1^MR", nil), keep, "H1"},
		{"invalid NHS only, kept", pid("9990000017^^^NHS^NH", nil), keep, "9990000017"},
		{"invalid NHS only, dropped", pid("9990000017^^^NHS^NH", nil), drop, ""},
		{"unflagged NHS-looking number", pid("9990000018^^^RX1^MR", nil), keep, "9990000018"},
		{"dialect authority", pid("H1^^^RX1^MR~9990000026^^^NHSNO", nil), custom, "9990000026"},
		{"default authority unknown to dialect", pid("H1^^^RX1^MR~9990000026^^^NHS", nil), custom, "H1"},
		{"explicit null", pid(`""`, nil), keep, ""},
		{"no identifiers", pid("", nil), keep, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := hl7(testMSH, tt.pid, testPV1)
			m, err := hl7v2.Parse(raw)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got := PatientKey(m, tt.dialect); got != tt.want {
				t.Errorf("PatientKey = %q, want %q", got, tt.want)
			}
			tr, err := NewTranslator(tt.dialect)
			if err != nil {
				t.Fatalf("NewTranslator: %v", err)
			}
			tl, err := tr.Translate(testEnvelope("key", raw))
			if err != nil {
				t.Fatalf("Translate: %v", err)
			}
			if tl.PatientKey != tt.want {
				t.Errorf("Translation.PatientKey = %q, want %q", tl.PatientKey, tt.want)
			}
		})
	}
	if got := PatientKey(nil, keep); got != "" {
		t.Errorf("PatientKey(nil) = %q", got)
	}
	m, _ := hl7v2.Parse(hl7(testMSH))
	if got := PatientKey(m, keep); got != "" {
		t.Errorf("PatientKey without PID = %q", got)
	}
}

func TestNHSNumberHandling(t *testing.T) {
	drop := DefaultDialect()
	drop.InvalidNHSNumber = InvalidNHSNumberDrop
	local := DefaultLocalIdentifierSystem
	const nino, rx2 = "https://fhir.hmrc.gov.uk/Id/national-insurance-number", "https://fhir.rx2.example.org/Id/hospital-number"
	mapped := DefaultDialect()
	mapped.IdentifierSystems = map[string]string{"ni": nino, "RX2": rx2}
	external := DefaultDialect()
	external.ExternalIDIsNHSNumber = true
	tests := []struct {
		name    string
		dialect Dialect
		pid     string
		want    [][2]string // system, value
		dq      []string
	}{
		{"valid", DefaultDialect(), pid("9990000018^^^NHS^NH~H1^^^RX1^MR", nil),
			[][2]string{{nhs.SystemNHSNumber, "9990000018"}, {local, "H1"}}, nil},
		{"invalid kept", DefaultDialect(), pid("9990000017^^^NHS^NH~H1^^^RX1^MR", nil),
			[][2]string{{"", "9990000017"}, {local, "H1"}}, []string{DQNHSNumberInvalid}},
		// A number failing its check that equals a hospital number is not
		// taken for it, nor it for the NHS number.
		{"invalid, the hospital number's value", DefaultDialect(), pid("1234567890^^^NHS^NH~1234567890^^^RX1^MR", nil),
			[][2]string{{"", "1234567890"}, {local, "1234567890"}}, []string{DQNHSNumberInvalid}},
		{"by the NHS number's OID", DefaultDialect(), pid("9990000018^^^&2.16.840.1.113883.2.1.4.1&ISO~H1^^^RX1^MR", nil),
			[][2]string{{nhs.SystemNHSNumber, "9990000018"}, {local, "H1"}}, nil},
		{"invalid dropped", drop, pid("9990000017^^^NHS^NH~H1^^^RX1^MR", nil),
			[][2]string{{local, "H1"}}, []string{DQNHSNumberInvalid}},
		{"invalid beside valid", DefaultDialect(), pid("9990000017^^^NHS^NH~9990000018^^^NHS^NH", nil),
			[][2]string{{"", "9990000017"}, {nhs.SystemNHSNumber, "9990000018"}}, nil},
		{"missing", DefaultDialect(), pid("H1^^^RX1^MR", nil),
			[][2]string{{local, "H1"}}, []string{DQNHSNumberMissing}},
		{"conflict", DefaultDialect(), pid("9990000018^^^NHS^NH~9990000026^^^NHS^NH", nil),
			[][2]string{{nhs.SystemNHSNumber, "9990000018"}, {"", "9990000026"}}, []string{DQNHSNumberConflict}},
		{"repeated", DefaultDialect(), pid("9990000018^^^NHS^NH~999-000-0018^^^NHS", map[int]string{2: "9990000018^^^NHS"}),
			[][2]string{{nhs.SystemNHSNumber, "9990000018"}}, nil},
		{"letters are invalid", DefaultDialect(), pid("99900000AB^^^NHS", nil),
			[][2]string{{"", "99900000AB"}}, []string{DQNHSNumberInvalid}},
		// Mapped authorities get their own systems, the rest stay local,
		// and NHS numbers not taken as the NHS number get none.
		{"mapped authorities", mapped, pid("9990000018^^^NHS^NH~AB123456C^^^NI^NI~H1^^^RX2^MR~H2^^^RX1^MR~9990000026^^^NHS^NH", nil),
			[][2]string{{nhs.SystemNHSNumber, "9990000018"}, {nino, "AB123456C"}, {rx2, "H1"}, {local, "H2"}, {"", "9990000026"}}, []string{DQNHSNumberConflict}},
		// A v2.3 feed's bare PID-2 is an NHS number only when the
		// dialect says so; one with an authority or a type stays local.
		{"bare PID-2, default", DefaultDialect(), pid("H1^^^RX1^MR", map[int]string{2: "9990000018"}),
			[][2]string{{local, "H1"}, {local, "9990000018"}}, []string{DQNHSNumberMissing}},
		{"bare PID-2, external NHS number", external, pid("H1^^^RX1^MR", map[int]string{2: "999 000 0018"}),
			[][2]string{{local, "H1"}, {nhs.SystemNHSNumber, "9990000018"}}, nil},
		{"bare PID-2 failing its check", external, pid("H1^^^RX1^MR", map[int]string{2: "9990000019"}),
			[][2]string{{local, "H1"}, {"", "9990000019"}}, []string{DQNHSNumberInvalid}},
		{"PID-2 with an authority", external, pid("H1^^^RX1^MR", map[int]string{2: "9990000018^^^RX1"}),
			[][2]string{{local, "H1"}, {local, "9990000018"}}, []string{DQNHSNumberMissing}},
		{"PID-2 with a type", external, pid("H1^^^RX1^MR", map[int]string{2: "9990000018^^^^MR"}),
			[][2]string{{local, "H1"}, {local, "9990000018"}}, []string{DQNHSNumberMissing}},
		{"bare PID-3 stays local", external, pid("9990000018", nil),
			[][2]string{{local, "9990000018"}}, []string{DQNHSNumberMissing}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr, err := NewTranslator(tt.dialect)
			if err != nil {
				t.Fatalf("NewTranslator: %v", err)
			}
			tl, err := tr.Translate(testEnvelope("nhs", hl7(testMSH, tt.pid, testPV1)))
			if err != nil {
				t.Fatalf("Translate: %v", err)
			}
			pats, err := fhir.FindResources(tl.Bundle, "Patient")
			if err != nil || len(pats) != 1 {
				t.Fatalf("FindResources: %d, %v", len(pats), err)
			}
			p, err := models.UnmarshalPatient(pats[0])
			if err != nil {
				t.Fatalf("UnmarshalPatient: %v", err)
			}
			var got [][2]string
			for _, id := range p.Identifier {
				got = append(got, [2]string{deref(id.System), *id.Value})
				if id.System == nil && (id.Type == nil || !strings.Contains(deref(id.Type.Text), "NHS number")) {
					t.Errorf("identifier %s without a system does not say it is an unverified NHS number", *id.Value)
				}
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("identifiers (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.dq, tl.DataQuality); diff != "" {
				t.Errorf("data quality (-want +got):\n%s", diff)
			}
		})
	}
}

func TestVerificationStatus(t *testing.T) {
	tests := []struct {
		name  string
		pid32 string
		want  string
	}{
		{"verified", "01", "01"},
		{"traced later repetition", "XX~03", "03"},
		{"unknown code", "99", ""},
		{"none", "", ""},
		{"single digit is not a status code", "1", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := translate(t, DefaultDialect(), hl7(testMSH, pid("9990000018^^^NHS^NH", map[int]string{32: tt.pid32}), testPV1))
			p, _ := resourceOf(t, b, "Patient", models.UnmarshalPatient)
			got := ""
			for _, ext := range p.Identifier[0].Extension {
				if ext.Url == nhs.ExtNHSNumberVerificationStatus {
					c := ext.ValueCodeableConcept.Coding[0]
					if *c.System != nhs.CodeSystemNHSNumberVerificationStatusEngland {
						t.Errorf("system %q", *c.System)
					}
					got = *c.Code
				}
			}
			if got != tt.want {
				t.Errorf("verification status %q, want %q", got, tt.want)
			}
		})
	}
}

// translatedGender translates an ADT whose PID-3 is id and PID-8 code under d, and
// returns the Patient's gender code ("" for none).
func translatedGender(t *testing.T, d Dialect, id, code string) string {
	t.Helper()
	b := translate(t, d, hl7(testMSH, pid(id, map[int]string{8: code}), testPV1))
	p, _ := resourceOf(t, b, "Patient", models.UnmarshalPatient)
	if p.Gender == nil {
		return ""
	}
	return p.Gender.Code()
}

func TestGender(t *testing.T) {
	tests := []struct {
		code string
		want string
	}{
		{"M", "male"}, {"F", "female"}, {"U", "unknown"}, {"O", "other"}, {"A", "other"}, {"N", "other"},
		{"1", "male"}, {"2", "female"}, {"9", "other"}, {"X", "unknown"}, {"0", "unknown"},
		{"m", "male"}, {"Z", ""}, {"", ""}, {`""`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.code, func(t *testing.T) {
			if got := translatedGender(t, DefaultDialect(), "H1^^^RX1", tt.code); got != tt.want {
				t.Errorf("gender(%q) = %q, want %q", tt.code, got, tt.want)
			}
		})
	}
}

func TestEncounterStatusAndClass(t *testing.T) {
	tests := []struct {
		name   string
		event  string
		pv1    string
		status string // "" means no Encounter
		class  string
		focus  string
	}{
		{"A01", "A01", pv1(map[int]string{2: "I", 19: "V1"}), "in-progress", "IMP", "Encounter"},
		{"A03", "A03", pv1(map[int]string{2: "I", 19: "V1"}), "finished", "IMP", "Encounter"},
		{"A04 emergency", "A04", pv1(map[int]string{2: "E", 19: "V1"}), "in-progress", "EMER", "Encounter"},
		{"A04 outpatient", "A04", pv1(map[int]string{2: "O", 19: "V1"}), "in-progress", "AMB", "Encounter"},
		{"A08 current", "A08", pv1(map[int]string{2: "I", 19: "V1"}), "in-progress", "IMP", "Encounter"},
		{"A08 discharged", "A08", pv1(map[int]string{2: "I", 19: "V1", 44: "20240101", 45: "20240102"}), "finished", "IMP", "Encounter"},
		{"A08 pre-admission", "A08", pv1(map[int]string{2: "P", 19: "V1"}), "planned", "PRENC", "Encounter"},
		{"A08 class N", "A08", "PV1|1|N", "", "", "Patient"},
		{"A08 empty PV1", "A08", "PV1|1", "", "", "Patient"},
		{"A08 no PV1", "A08", "", "", "", "Patient"},
		{"A08 visit number only", "A08", pv1(map[int]string{19: "V1"}), "in-progress", "UNK", "Encounter"},
		{"recurring", "A01", pv1(map[int]string{2: "R", 19: "V1"}), "in-progress", "R", "Encounter"},
		{"local class", "A01", pv1(map[int]string{2: "Q", 19: "V1"}), "in-progress", "UNK", "Encounter"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			segs := []string{strings.Replace(testMSH, "A01", tt.event, 1), pid("9990000018^^^NHS^NH", nil)}
			if tt.pv1 != "" {
				segs = append(segs, tt.pv1)
			}
			b := translate(t, DefaultDialect(), hl7(segs...))
			enc, ok := resourceOf(t, b, "Encounter", models.UnmarshalEncounter)
			if (tt.status != "") != ok {
				t.Fatalf("Encounter present = %v, want %v", ok, tt.status != "")
			}
			if ok {
				if got := enc.Status.Code(); got != tt.status {
					t.Errorf("status %q, want %q", got, tt.status)
				}
				if got := *enc.Class.Code; got != tt.class {
					t.Errorf("class %q, want %q", got, tt.class)
				}
			}
			mh, _ := resourceOf(t, b, "MessageHeader", models.UnmarshalMessageHeader)
			if len(mh.Focus) != 1 || *mh.Focus[0].Type != tt.focus {
				t.Errorf("focus %+v, want one %s", mh.Focus, tt.focus)
			}
			if *mh.EventCoding.Code != tt.event {
				t.Errorf("event code %q", *mh.EventCoding.Code)
			}
		})
	}
}

func TestDataQuality(t *testing.T) {
	tests := []struct {
		name string
		msh  string
		pid  string
		pv1  string
		want []string
	}{
		{"clean", testMSH, pid("9990000018^^^NHS", map[int]string{7: "19700101"}), testPV1, nil},
		{"bad birth date", testMSH, pid("9990000018^^^NHS", map[int]string{7: "19701301"}), testPV1, []string{DQBirthDateInvalid}},
		{"bad death date", testMSH, pid("9990000018^^^NHS", map[int]string{29: "2024"}), testPV1, nil},
		{"worse death date", testMSH, pid("9990000018^^^NHS", map[int]string{29: "soon"}), testPV1, []string{DQDeathDateInvalid}},
		{"death date, not deceased", testMSH, pid("9990000018^^^NHS", map[int]string{29: "20240715", 30: "N"}), testPV1, []string{DQDeathIndicatorConflict}},
		{"death date, deceased", testMSH, pid("9990000018^^^NHS", map[int]string{29: "20240715", 30: "Y"}), testPV1, nil},
		{"bad admit time", testMSH, pid("9990000018^^^NHS", nil), pv1(map[int]string{2: "I", 19: "V1", 44: "20241345"}), []string{DQVisitTimeInvalid}},
		{"discharge in the repeated hour", testMSH, pid("9990000018^^^NHS", nil), pv1(map[int]string{2: "I", 19: "V1", 45: "20241027013000"}), []string{DQLocalTimeAmbiguous}},
		{"birth in the repeated hour", testMSH, pid("9990000018^^^NHS", map[int]string{7: "202410270130"}), testPV1, []string{DQLocalTimeAmbiguous}},
		{"birth date alone on the day the clocks go back", testMSH, pid("9990000018^^^NHS", map[int]string{7: "20241027"}), testPV1, nil},
		{"death in the skipped hour", testMSH, pid("9990000018^^^NHS", map[int]string{29: "20240331013000"}), testPV1, []string{DQLocalTimeAmbiguous}},
		{"death in the repeated hour with its offset", testMSH, pid("9990000018^^^NHS", map[int]string{29: "20241027013000+0100"}), testPV1, nil},
		{"admission in the skipped hour", testMSH, pid("9990000018^^^NHS", nil), pv1(map[int]string{2: "I", 19: "V1", 44: "202403310130"}), []string{DQLocalTimeAmbiguous}},
		{"no visit number", testMSH, pid("9990000018^^^NHS", nil), "PV1|1|I", []string{DQVisitNumberMissing}},
		{"no class", testMSH, pid("9990000018^^^NHS", nil), pv1(map[int]string{19: "V1"}), []string{DQPatientClassMissing}},
		{"no message time", strings.Replace(testMSH, "20240715093512", "", 1), pid("9990000018^^^NHS", nil), testPV1, []string{DQMessageTimeInvalid}},
		{"date-only message time", strings.Replace(testMSH, "20240715093512", "20240715", 1), pid("9990000018^^^NHS", nil), testPV1, []string{DQMessageTimeInvalid}},
		{"several", testMSH, pid("H1", map[int]string{7: "x"}), "PV1|1", []string{DQNHSNumberMissing, DQBirthDateInvalid, DQPatientClassMissing, DQVisitNumberMissing}},
	}
	tr := newTestTranslator(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tl, err := tr.Translate(testEnvelope("dq", hl7(tt.msh, tt.pid, tt.pv1)))
			if err != nil {
				t.Fatalf("Translate: %v", err)
			}
			if diff := cmp.Diff(tt.want, tl.DataQuality); diff != "" {
				t.Errorf("data quality (-want +got):\n%s", diff)
			}
		})
	}
}

// TestDataQualityCodedFields covers the issues for a coded or timed
// field sent with a value its table or type does not allow (PID-8 sex,
// PV1-2 patient class, EVN-2 recorded time), beside an empty field and
// valid values, which raise none. The message is translated either way.
func TestDataQualityCodedFields(t *testing.T) {
	withEVN := func(evn2 string) string {
		return segment("EVN", map[int]string{1: "A01", 2: evn2})
	}
	tests := []struct {
		name string
		segs []string // after MSH
		want []string
	}{
		{"sex M", []string{pid("9990000018^^^NHS", map[int]string{8: "M"}), testPV1}, nil},
		{"sex f lower case", []string{pid("9990000018^^^NHS", map[int]string{8: "f"}), testPV1}, nil},
		{"sex U", []string{pid("9990000018^^^NHS", map[int]string{8: "U"}), testPV1}, nil},
		{"sex NHS code 9", []string{pid("9990000018^^^NHS", map[int]string{8: "9"}), testPV1}, nil},
		{"sex empty", []string{pid("9990000018^^^NHS", map[int]string{8: ""}), testPV1}, nil},
		{"sex explicit null", []string{pid("9990000018^^^NHS", map[int]string{8: `""`}), testPV1}, nil},
		{"sex blank", []string{pid("9990000018^^^NHS", map[int]string{8: " "}), testPV1}, nil},
		{"sex Q", []string{pid("9990000018^^^NHS", map[int]string{8: "Q"}), testPV1}, []string{DQSexInvalid}},
		{"sex word", []string{pid("9990000018^^^NHS", map[int]string{8: "MALE"}), testPV1}, []string{DQSexInvalid}},
		{"next of kin sex F", []string{pid("9990000018^^^NHS", nil), segment("NK1", map[int]string{1: "1", 2: "TESTKIN^SAM", 3: "SPO", 15: "F"}), testPV1}, nil},
		{"next of kin sex empty", []string{pid("9990000018^^^NHS", nil), segment("NK1", map[int]string{1: "1", 2: "TESTKIN^SAM", 3: "SPO"}), testPV1}, nil},
		{"next of kin sex Q", []string{pid("9990000018^^^NHS", nil), segment("NK1", map[int]string{1: "1", 2: "TESTKIN^SAM", 3: "SPO", 15: "Q"}), testPV1},
			[]string{DQNextOfKinSexInvalid}},
		// An NK1 with nothing else to map makes no RelatedPerson: nothing
		// was dropped from one.
		{"next of kin sex Q alone", []string{pid("9990000018^^^NHS", nil), segment("NK1", map[int]string{1: "1", 15: "Q"}), testPV1}, nil},
		{"patient and next of kin sex Q", []string{pid("9990000018^^^NHS", map[int]string{8: "Q"}), segment("NK1", map[int]string{1: "1", 2: "TESTKIN^SAM", 15: "Q"}), testPV1},
			[]string{DQSexInvalid, DQNextOfKinSexInvalid}},
		{"class I", []string{pid("9990000018^^^NHS", nil), pv1(map[int]string{2: "I", 19: "V1"})}, nil},
		{"class e lower case", []string{pid("9990000018^^^NHS", nil), pv1(map[int]string{2: "e", 19: "V1"})}, nil},
		{"class U", []string{pid("9990000018^^^NHS", nil), pv1(map[int]string{2: "U", 19: "V1"})}, nil},
		{"class empty", []string{pid("9990000018^^^NHS", nil), pv1(map[int]string{2: "", 19: "V1"})}, []string{DQPatientClassMissing}},
		{"class explicit null", []string{pid("9990000018^^^NHS", nil), pv1(map[int]string{2: `""`, 19: "V1"})}, []string{DQPatientClassMissing}},
		{"class SECRETCLASS", []string{pid("9990000018^^^NHS", nil), pv1(map[int]string{2: "SECRETCLASS", 19: "V1"})}, []string{DQPatientClassInvalid}},
		{"class Q", []string{pid("9990000018^^^NHS", nil), pv1(map[int]string{2: "Q", 19: "V1"})}, []string{DQPatientClassInvalid}},
		{"no EVN", []string{pid("9990000018^^^NHS", nil), testPV1}, nil},
		{"event time", []string{withEVN("20240715093000"), pid("9990000018^^^NHS", nil), testPV1}, nil},
		{"event time with offset", []string{withEVN("20240715093000+0100"), pid("9990000018^^^NHS", nil), testPV1}, nil},
		{"event date only", []string{withEVN("20240715"), pid("9990000018^^^NHS", nil), testPV1}, nil},
		{"event time empty", []string{withEVN(""), pid("9990000018^^^NHS", nil), testPV1}, nil},
		{"event time explicit null", []string{withEVN(`""`), pid("9990000018^^^NHS", nil), testPV1}, nil},
		{"event time letters", []string{withEVN("2026XX0101"), pid("9990000018^^^NHS", nil), testPV1}, []string{DQEventTimeInvalid}},
		{"event time month 13", []string{withEVN("20241301"), pid("9990000018^^^NHS", nil), testPV1}, []string{DQEventTimeInvalid}},
		{"all three", []string{withEVN("2026XX0101"), pid("9990000018^^^NHS", map[int]string{8: "Q"}), pv1(map[int]string{2: "SECRETCLASS", 19: "V1"})},
			[]string{DQEventTimeInvalid, DQSexInvalid, DQPatientClassInvalid}},
		{"transfer with event time letters", []string{segment("EVN", map[int]string{1: "A02", 2: "2026XX0101", 6: "20240715093000"}),
			pid("9990000018^^^NHS", nil), pv1(map[int]string{2: "I", 3: "WARD2^^^RX1", 6: "WARD1^^^RX1", 19: "V1"})},
			[]string{DQEventTimeInvalid}},
		{"transfer in the repeated hour", []string{segment("EVN", map[int]string{1: "A02", 2: "20241027014500", 6: "20241027013000"}),
			pid("9990000018^^^NHS", nil), pv1(map[int]string{2: "I", 3: "WARD2^^^RX1", 6: "WARD1^^^RX1", 19: "V1"})},
			[]string{DQLocalTimeAmbiguous}},
		{"transfer in the skipped hour, recorded time only", []string{segment("EVN", map[int]string{1: "A02", 2: "20240331013000"}),
			pid("9990000018^^^NHS", nil), pv1(map[int]string{2: "I", 3: "WARD2^^^RX1", 6: "WARD1^^^RX1", 19: "V1"})},
			[]string{DQLocalTimeAmbiguous}},
		{"transfer in the repeated hour with its offset", []string{segment("EVN", map[int]string{1: "A02", 6: "20241027013000+0100"}),
			pid("9990000018^^^NHS", nil), pv1(map[int]string{2: "I", 3: "WARD2^^^RX1", 6: "WARD1^^^RX1", 19: "V1"})},
			nil},
	}
	// What the issues flag is otherwise mapped as before: no gender, class
	// UNK, and an A02's old location still ended at EVN-6.
	output := map[string]func(*testing.T, *models.Patient, *models.Encounter){
		"sex Q": func(t *testing.T, p *models.Patient, _ *models.Encounter) {
			if p.Gender != nil {
				t.Errorf("gender %q, want none", p.Gender.Code())
			}
		},
		"class SECRETCLASS": func(t *testing.T, _ *models.Patient, e *models.Encounter) {
			if *e.Class.System != systemNullFlavor || *e.Class.Code != "UNK" {
				t.Errorf("class %s|%s, want NullFlavor UNK", *e.Class.System, *e.Class.Code)
			}
		},
		"transfer with event time letters": func(t *testing.T, _ *models.Patient, e *models.Encounter) {
			if len(e.Location) != 2 || e.Location[1].Period == nil || e.Location[1].Period.End == nil ||
				*e.Location[1].Period.End != "2024-07-15T09:30:00+01:00" {
				t.Errorf("locations %+v, want the old one ended at EVN-6", e.Location)
			}
		},
	}
	tr := newTestTranslator(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msh := testMSH
			if strings.HasPrefix(tt.name, "transfer") {
				msh = strings.Replace(msh, "ADT^A01", "ADT^A02", 1)
			}
			tl, err := tr.Translate(testEnvelope("dq", hl7(append([]string{msh}, tt.segs...)...)))
			if err != nil {
				t.Fatalf("Translate: %v", err)
			}
			if diff := cmp.Diff(tt.want, tl.DataQuality); diff != "" {
				t.Errorf("data quality (-want +got):\n%s", diff)
			}
			if check := output[tt.name]; check != nil {
				b, err := models.UnmarshalBundle(tl.Bundle)
				if err != nil {
					t.Fatalf("UnmarshalBundle: %v", err)
				}
				p, _ := resourceOf(t, &b, "Patient", models.UnmarshalPatient)
				e, ok := resourceOf(t, &b, "Encounter", models.UnmarshalEncounter)
				if !ok {
					t.Fatal("no Encounter")
				}
				check(t, &p, &e)
			}
		})
	}
}

func TestDeterministic(t *testing.T) {
	tr := newTestTranslator(t)
	raw := hl7(testMSH, pid("9990000018^^^NHS", nil), testPV1)
	a, err := tr.Translate(testEnvelope("same", raw))
	if err != nil {
		t.Fatal(err)
	}
	b, err := tr.Translate(testEnvelope("same", raw))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(a.Bundle), string(b.Bundle)); diff != "" {
		t.Errorf("same input, different output (-first +second):\n%s", diff)
	}
	later := testEnvelope("same", raw)
	later.ReceivedAt = later.ReceivedAt.Add(48 * time.Hour)
	c, err := tr.Translate(later)
	if err != nil {
		t.Fatal(err)
	}
	if string(c.Bundle) != string(a.Bundle) {
		t.Error("receive time changed a bundle whose MSH-7 is valid")
	}
	other, err := tr.Translate(testEnvelope("other", raw))
	if err != nil {
		t.Fatal(err)
	}
	ba, _ := models.UnmarshalBundle(a.Bundle)
	bo, _ := models.UnmarshalBundle(other.Bundle)
	for i := range ba.Entry {
		if *ba.Entry[i].FullUrl == *bo.Entry[i].FullUrl {
			t.Errorf("entry %d has the same fullUrl for two message ids", i)
		}
	}
	if *bo.Id != "msg-other" {
		t.Errorf("Bundle.id = %q", *bo.Id)
	}
}

func TestMessageTimeFallback(t *testing.T) {
	tr := newTestTranslator(t)
	tests := []struct {
		name     string
		received time.Time
		want     string
	}{
		{"UTC", time.Date(2024, 7, 15, 8, 36, 0, 0, time.UTC), "2024-07-15T08:36:00.000Z"},
		{"other zone", time.Date(2024, 1, 15, 8, 36, 0, 500e6, time.FixedZone("X", 3600)), "2024-01-15T07:36:00.500Z"},
		{"zero", time.Time{}, "0001-01-01T00:00:00.000Z"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := testEnvelope("ts", hl7(strings.Replace(testMSH, "20240715093512", "", 1), pid("H1", nil), testPV1))
			env.ReceivedAt = tt.received
			tl, err := tr.Translate(env)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := models.UnmarshalBundle(tl.Bundle)
			if diff := cmp.Diff(tt.want, *b.Timestamp); diff != "" {
				t.Errorf("timestamp (-want +got):\n%s", diff)
			}
		})
	}
}

func TestEndpoints(t *testing.T) {
	tests := []struct {
		name       string
		msh        string
		source     string
		wantSource string
		wantSender string
		wantDest   string
	}{
		{"names", testMSH, "pas", "urn:hl7v2:PAS:RX1", "RX1", "urn:hl7v2:EPR:RX1"},
		{"OID", `MSH|^~\&|PAS^1.2.826.0.1.999^ISO|RX1|EPR|RX1|20240715093512||ADT^A01|C|P|2.4`, "pas", "urn:oid:1.2.826.0.1.999", "RX1", "urn:hl7v2:EPR:RX1"},
		{"bad OID", `MSH|^~\&|PAS^1..2^ISO|RX1|EPR|RX1|20240715093512||ADT^A01|C|P|2.4`, "pas", "urn:hl7v2:PAS:RX1", "RX1", "urn:hl7v2:EPR:RX1"},
		{"UUID", `MSH|^~\&|PAS^A1B2C3D4-0000-4000-8000-000000000001^UUID|RX1|EPR|RX1|20240715093512||ADT^A01|C|P|2.4`, "pas", "urn:uuid:a1b2c3d4-0000-4000-8000-000000000001", "RX1", "urn:hl7v2:EPR:RX1"},
		{"URI", `MSH|^~\&|PAS^https://pas.example.org^URI|RX1|EPR|RX1|20240715093512||ADT^A01|C|P|2.4`, "pas", "https://pas.example.org", "RX1", "urn:hl7v2:EPR:RX1"},
		{"no application", `MSH|^~\&||Riverside Hospital|||20240715093512||ADT^A01|C|P|2.4`, "pas-east", "urn:hl7v2:pas-east:Riverside%20Hospital", "", ""},
		{"nothing", `MSH|^~\&|||||||ADT^A01|C|P|2.4`, "", "urn:hl7v2:unknown", "", ""},
		{"escaped", `MSH|^~\&|P\T\S|RX1|EPR||20240715093512||ADT^A01|C|P|2.4`, "pas", "urn:hl7v2:P%26S:RX1", "RX1", "urn:hl7v2:EPR"},
	}
	tr := newTestTranslator(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := testEnvelope("ep", hl7(tt.msh, pid("H1", nil), testPV1))
			env.Source = tt.source
			tl, err := tr.Translate(env)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := models.UnmarshalBundle(tl.Bundle)
			mh, _ := resourceOf(t, &b, "MessageHeader", models.UnmarshalMessageHeader)
			enc, _ := resourceOf(t, &b, "Encounter", models.UnmarshalEncounter)
			if mh.Source.Endpoint != tt.wantSource {
				t.Errorf("source.endpoint %q, want %q", mh.Source.Endpoint, tt.wantSource)
			}
			if *b.Identifier.System != tt.wantSource {
				t.Errorf("Bundle.identifier.system %q, want the source endpoint", *b.Identifier.System)
			}
			sender, provider := "", ""
			if mh.Sender != nil && mh.Sender.Identifier != nil {
				sender = *mh.Sender.Identifier.Value
			}
			if enc.ServiceProvider != nil {
				provider = *enc.ServiceProvider.Identifier.Value
			}
			if sender != tt.wantSender || provider != tt.wantSender {
				t.Errorf("sender %q, service provider %q, want %q", sender, provider, tt.wantSender)
			}
			dest := ""
			if len(mh.Destination) > 0 {
				dest = mh.Destination[0].Endpoint
			}
			if dest != tt.wantDest {
				t.Errorf("destination %q, want %q", dest, tt.wantDest)
			}
		})
	}
}

func TestBundleIdentifierWithoutControlID(t *testing.T) {
	b := translate(t, DefaultDialect(), hl7(strings.Replace(testMSH, "CTRL1", "", 1), pid("H1", nil), testPV1))
	if *b.Identifier.System != "urn:ietf:rfc:3986" || !strings.HasPrefix(*b.Identifier.Value, "urn:uuid:") {
		t.Errorf("Bundle.identifier = %s|%s", *b.Identifier.System, *b.Identifier.Value)
	}
}

func TestTelecomAddressAndName(t *testing.T) {
	b := translate(t, DefaultDialect(), hl7(testMSH, pid("H1", map[int]string{
		5:  `TESTPATIENT^ALEX^B^JR^MR^PHD^D~^^^^^^L~TESTALIAS^SAM^^^^^N`,
		11: `1 ROAD^^TOWN^COUNTY^ZZ1 1ZZ^GBR^C~^^^^^^H~""`,
		13: `^NET^X.400^alex@example.org~01234^^FX~^ORN^BP^^^^5550~alex.home@example.org`,
		14: `0113^WPN^CP~alex@work.example.org^WPN`,
	}), testPV1))
	p, _ := resourceOf(t, b, "Patient", models.UnmarshalPatient)
	type name struct {
		Use, Family           string
		Given, Prefix, Suffix []string
	}
	var names []name
	for _, n := range p.Name {
		names = append(names, name{n.Use.Code(), deref(n.Family), n.Given, n.Prefix, n.Suffix})
	}
	wantNames := []name{
		{"usual", "TESTPATIENT", []string{"ALEX", "B"}, []string{"MR"}, []string{"JR", "PHD"}},
		{"nickname", "TESTALIAS", []string{"SAM"}, nil, nil},
	}
	if diff := cmp.Diff(wantNames, names); diff != "" {
		t.Errorf("names (-want +got):\n%s", diff)
	}
	var telecoms [][3]string
	for _, c := range p.Telecom {
		telecoms = append(telecoms, [3]string{c.System.Code(), *c.Value, c.Use.Code()})
	}
	wantTelecoms := [][3]string{
		{"email", "alex@example.org", "home"},
		{"fax", "01234", "home"},
		{"pager", "5550", "home"},
		// An e-mail address sent as a number (v2.3 feeds) is e-mail.
		{"email", "alex.home@example.org", "home"},
		{"phone", "0113", "work"},
		{"email", "alex@work.example.org", "work"},
	}
	if diff := cmp.Diff(wantTelecoms, telecoms); diff != "" {
		t.Errorf("telecoms (-want +got):\n%s", diff)
	}
	if len(p.Address) != 1 || p.Address[0].Use.Code() != "temp" || deref(p.Address[0].District) != "COUNTY" {
		t.Errorf("addresses %+v", p.Address)
	}
}

func TestDialectValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(*Dialect)
		want   []string
	}{
		{"default", func(*Dialect) {}, nil},
		{"no authorities is allowed", func(d *Dialect) { d.NHSNumberAuthorities = nil }, nil},
		{"blank authority", func(d *Dialect) { d.NHSNumberAuthorities = []string{"NHS", " "} }, []string{"nhs_number_authorities[1]"}},
		{"relative system", func(d *Dialect) { d.LocalIdentifierSystem = "local-ids" }, []string{"local_identifier_system"}},
		{"no visit system", func(d *Dialect) { d.VisitNumberSystem = "" }, []string{"visit_number_system"}},
		{"bad zone", func(d *Dialect) { d.TimeZone = "Europe/Atlantis" }, []string{"time_zone"}},
		{"no zone", func(d *Dialect) { d.TimeZone = "" }, []string{"time_zone"}},
		{"bad policy", func(d *Dialect) { d.InvalidNHSNumber = "reject" }, []string{"invalid_nhs_number"}},
		{"all at once", func(d *Dialect) { *d = Dialect{} }, []string{"local_identifier_system", "visit_number_system", "time_zone", "invalid_nhs_number", "cancel_admit_status", "marital_status_codes"}},
		{"bad marital status table", func(d *Dialect) { d.MaritalStatusCodes = "nhs-dd" }, []string{"marital_status_codes"}},
		{"bad sex code", func(d *Dialect) { d.SexCodes["Q"] = "neuter" }, []string{"sex_codes.Q"}},
		{"blank sex code", func(d *Dialect) { d.SexCodes[" "] = "male" }, []string{"sex_codes: empty code"}},
		{"duplicate sex code", func(d *Dialect) { d.SexCodes["m"] = "male" }, []string{"same code"}},
		{"no sex codes is allowed", func(d *Dialect) { d.SexCodes = nil }, nil},
		{"cancelled A11", func(d *Dialect) { d.CancelAdmitStatus = CancelAdmitCancelled }, nil},
		{"bad A11 status", func(d *Dialect) { d.CancelAdmitStatus = "deleted" }, []string{"cancel_admit_status"}},
		{"identifier systems", func(d *Dialect) {
			d.IdentifierSystems = map[string]string{"NI": "https://fhir.hmrc.gov.uk/Id/national-insurance-number"}
		}, nil},
		{"bad identifier systems", func(d *Dialect) {
			d.IdentifierSystems = map[string]string{" ": "https://a.example/Id/x", "RX2": "hospital-numbers", "nh": "https://b.example/Id/x", "rx2": "https://c.example/Id/x"}
		}, []string{"empty assigning authority", "RX2: ", "an NHS number authority", "same assigning authority"}},
		{"location system", func(d *Dialect) { d.LocationIdentifierSystem = "https://fhir.example-trust.nhs.uk/Id/location" }, nil},
		{"relative location system", func(d *Dialect) { d.LocationIdentifierSystem = "wards" }, []string{"location_identifier_system"}},
		{"location system with a delimiter", func(d *Dialect) { d.LocationIdentifierSystem = "https://x.nhs.uk/Id/loc^1" }, []string{"location_identifier_system"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := DefaultDialect()
			tt.change(&d)
			errs := d.Validate()
			var got []string
			for i, err := range errs {
				if i < len(tt.want) && !strings.Contains(err.Error(), tt.want[i]) {
					t.Errorf("error %d = %v, want one about %s", i, err, tt.want[i])
				}
				got = append(got, err.Error())
			}
			if len(errs) != len(tt.want) {
				t.Errorf("got %d errors %q, want %d", len(errs), got, len(tt.want))
			}
			_, err := NewTranslator(d)
			if (err != nil) != (len(tt.want) > 0) {
				t.Errorf("NewTranslator error = %v", err)
			}
			if err != nil && fault.CodeOf(err) != fault.CodeConfig {
				t.Errorf("NewTranslator error code %s, want %s", fault.CodeOf(err), fault.CodeConfig)
			}
		})
	}
}

func TestTranslatorKeepsItsDialect(t *testing.T) {
	d := DefaultDialect()
	tr, err := NewTranslator(d)
	if err != nil {
		t.Fatal(err)
	}
	d.NHSNumberAuthorities[0] = "CHANGED"
	raw := hl7(testMSH, pid("9990000018^^^NHS", nil), testPV1)
	tl, err := tr.Translate(testEnvelope("k", raw))
	if err != nil {
		t.Fatal(err)
	}
	if tl.PatientKey != "9990000018" {
		t.Errorf("changing the caller's dialect changed the translator: key %q", tl.PatientKey)
	}
}

func TestTranslateMessageMatchesTranslate(t *testing.T) {
	tr := newTestTranslator(t)
	raw := hl7(testMSH, pid("9990000018^^^NHS", nil), testPV1)
	m, err := hl7v2.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	env := testEnvelope("tm", raw)
	a, err := tr.Translate(env)
	if err != nil {
		t.Fatal(err)
	}
	b, err := tr.TranslateMessage(env, m)
	if err != nil {
		t.Fatal(err)
	}
	if string(a.Bundle) != string(b.Bundle) || b.V2 != any(m) {
		t.Error("TranslateMessage differs from Translate")
	}
}

// TestCharset checks that MSH-18 decides how PID-5 bytes are read: 8859/1
// is decoded to UTF-8 (raw bytes and \Xhh\ alike), UTF-8 passes through,
// and bytes that are not UTF-8 in a UTF-8 or undeclared message, sent
// raw or escaped, are flagged.
func TestCharset(t *testing.T) {
	tests := []struct {
		name   string
		msh18  string
		name5  string
		family string
		given  string
		dq     []string
	}{
		{"latin1 raw and escaped", "8859/1", "ZO\xc9^\\XE9\\", "ZO\u00c9", "\u00e9", nil},
		{"latin1 umlaut", "8859/1", "M\xdcLLER^J\xfcRGEN", "M\u00dcLLER", "J\u00fcRGEN", nil},
		// A curly apostrophe typed on Windows (Windows-1252 0x92), not
		// the invisible C1 control U+0092.
		{"latin1 Windows-1252 apostrophe", "8859/1", "O\x92BRIEN^ALEX", "O\u2019BRIEN", "ALEX", nil},
		{"utf8 declared", "UNICODE UTF-8", "ZO\u00c9^\u00e9", "ZO\u00c9", "\u00e9", nil},
		// UTF-8 sent under 8859/1 is read as Latin-1, garbled: flagged.
		{"utf8 declared latin1", "8859/1", "ZO\u00cb^ALEX", "ZO\u00c3\u2039", "ALEX", []string{DQTextLooksUTF8}},
		// Latin-1 letters side by side are not UTF-8.
		{"latin1 letters side by side", "8859/1", "B\xc9\xc9^ALEX", "B\u00c9\u00c9", "ALEX", nil},
		{"undeclared utf8", "", "ZO\u00c9^\u00e9", "ZO\u00c9", "\u00e9", nil},
		// Latin-1 from a feed that declares no character set (Si\xe2n,
		// Zo\xeb) is read as 8859/1, not lost, and flagged as a guess.
		{"undeclared latin1 bytes", "", "ZO\xcb^SI\xe2N", "ZO\u00cb", "SI\u00e2N", []string{DQTextLatin1Assumed}},
		{"undeclared latin1 byte escaped", "", "ZO\\XCB\\^ALEX", "ZO\u00cb", "ALEX", []string{DQTextLatin1Assumed}},
		{"ascii declared latin1 bytes", "ASCII", "O\x92BRIEN^ZO\xeb", "O\u2019BRIEN", "ZO\u00eb", []string{DQTextLatin1Assumed}},
		{"utf8 declared latin1 bytes", "UNICODE UTF-8", "ZO\xc9^ALEX", "ZO\ufffd", "ALEX", []string{DQTextInvalidUTF8}},
		// FHIR strings may not hold control characters.
		{"a NUL in a name", "", "TEST^AL\x00EX", "TEST", "AL\ufffdEX", []string{DQTextControlChars}},
		{"a control character escaped", "", "TEST^AL\\X07\\EX", "TEST", "AL\ufffdEX", []string{DQTextControlChars}},
		// A Latin-1 byte escaped in a message that declares UTF-8 is
		// lost as surely as one sent raw.
		{"utf8 declared latin1 byte escaped", "UNICODE UTF-8", "ZO\\XC9\\^ALEX", "ZO\ufffd", "ALEX", []string{DQTextInvalidUTF8}},
	}
	tr := newTestTranslator(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := hl7(testMSH+"||||||"+tt.msh18, pid("9990000271^^^NHS^NH", map[int]string{5: tt.name5}), testPV1)
			got, err := tr.Translate(testEnvelope("cs", raw))
			if err != nil {
				t.Fatalf("Translate: %v", err)
			}
			if diff := cmp.Diff(tt.dq, got.DataQuality); diff != "" {
				t.Errorf("data quality (-want +got):\n%s", diff)
			}
			b, err := models.UnmarshalBundle(got.Bundle)
			if err != nil {
				t.Fatalf("UnmarshalBundle: %v", err)
			}
			p, ok := resourceOf(t, &b, "Patient", models.UnmarshalPatient)
			if !ok || len(p.Name) == 0 {
				t.Fatal("no Patient name")
			}
			n := p.Name[0]
			if n.Family == nil || *n.Family != tt.family || len(n.Given) != 1 || n.Given[0] != tt.given {
				t.Errorf("name = %v %q, want %q %q", n.Family, n.Given, tt.family, tt.given)
			}
		})
	}
}

// TestEscapedText checks that escape sequences in names and addresses
// reach FHIR as the text the sender meant: delimiters decoded,
// highlighting (\H\, \N\), which plain text cannot show, dropped.
func TestEscapedText(t *testing.T) {
	tests := []struct {
		name   string
		msh    string
		name5  string
		addr   string
		family string
		given  string
		line   string
	}{
		{"delimiters", testMSH, `O\E\BRIEN\F\X^A\S\B\T\C\R\D`, `1 TEST STREET`, `O\BRIEN|X`, `A^B&C~D`, "1 TEST STREET"},
		{"highlighting dropped", testMSH, `\H\TESTPATIENT\N\^ALEX`, `1 \H\TEST\N\ STREET`, "TESTPATIENT", "ALEX", "1 TEST STREET"},
		{"unknown sequence kept", testMSH, `TEST\Q\PATIENT^ALEX`, `1 TEST STREET`, `TEST\Q\PATIENT`, "ALEX", "1 TEST STREET"},
		// v2.7's fifth encoding character, the truncation character, is
		// escaped as \P\ in data.
		{"truncation character escaped", "MSH|^~\\&#|PAS|RX1|EPR|RX1|20240715093512||ADT^A01|CTRL1|P|2.7", `TESTPATIENT^ALEX`, `FLAT \P\3^^LEEDS`, "TESTPATIENT", "ALEX", "FLAT #3"},
		{"unterminated sequence kept", testMSH, `TESTPATIENT\F^ALEX`, `1 TEST STREET`, `TESTPATIENT\F`, "ALEX", "1 TEST STREET"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := hl7(tt.msh, pid("9990000271^^^NHS^NH", map[int]string{5: tt.name5, 11: tt.addr}), testPV1)
			p, ok := resourceOf(t, translate(t, DefaultDialect(), raw), "Patient", models.UnmarshalPatient)
			if !ok || len(p.Name) == 0 || len(p.Address) == 0 {
				t.Fatal("no Patient name or address")
			}
			n := p.Name[0]
			if n.Family == nil || *n.Family != tt.family || len(n.Given) != 1 || n.Given[0] != tt.given {
				t.Errorf("name = %q %q, want %q %q", deref(n.Family), n.Given, tt.family, tt.given)
			}
			if a := p.Address[0]; len(a.Line) != 1 || a.Line[0] != tt.line {
				t.Errorf("address lines = %q, want [%q]", a.Line, tt.line)
			}
		})
	}
}

// TestBirthTime checks the patient-birthTime extension made from a PID-7
// with a time of day, in the feed's time zone (Europe/London).
func TestBirthTime(t *testing.T) {
	tests := []struct {
		name      string
		pid7      string
		birthDate string
		birthTime string // "" for no _birthDate
	}{
		{"date only", "19800102", "1980-01-02", ""},
		{"month only", "198001", "1980-01", ""},
		{"GMT", "19800102153000", "1980-01-02", "1980-01-02T15:30:00+00:00"},
		{"BST", "19800702153000", "1980-07-02", "1980-07-02T15:30:00+01:00"},
		{"minutes", "198007021530", "1980-07-02", "1980-07-02T15:30:00+01:00"},
		{"offset sent", "19800702003000-0500", "1980-07-02", "1980-07-02T00:30:00-05:00"},
		{"fraction", "19800102153000.25", "1980-01-02", "1980-01-02T15:30:00.25+00:00"},
		{"invalid", "19801302", "", ""},
	}
	tr := newTestTranslator(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := hl7(testMSH, pid("9990000271^^^NHS^NH", map[int]string{7: tt.pid7}), testPV1)
			got, err := tr.Translate(testEnvelope("bt", raw))
			if err != nil {
				t.Fatalf("Translate: %v", err)
			}
			var bundle struct {
				Entry []struct {
					Resource struct {
						ResourceType string `json:"resourceType"`
						BirthDate    string `json:"birthDate"`
						BirthDateExt *struct {
							Extension []struct {
								URL           string `json:"url"`
								ValueDateTime string `json:"valueDateTime"`
							} `json:"extension"`
						} `json:"_birthDate"`
					} `json:"resource"`
				} `json:"entry"`
			}
			if err := json.Unmarshal(got.Bundle, &bundle); err != nil {
				t.Fatalf("bundle: %v", err)
			}
			found := false
			for _, e := range bundle.Entry {
				r := e.Resource
				if r.ResourceType != "Patient" {
					if r.BirthDateExt != nil {
						t.Errorf("%s has _birthDate", r.ResourceType)
					}
					continue
				}
				found = true
				if r.BirthDate != tt.birthDate {
					t.Errorf("birthDate = %q, want %q", r.BirthDate, tt.birthDate)
				}
				if tt.birthTime == "" {
					if r.BirthDateExt != nil {
						t.Errorf("_birthDate = %+v, want none", r.BirthDateExt)
					}
					continue
				}
				if r.BirthDateExt == nil || len(r.BirthDateExt.Extension) != 1 {
					t.Fatalf("_birthDate = %+v, want one extension", r.BirthDateExt)
				}
				ext := r.BirthDateExt.Extension[0]
				if ext.URL != fhir.ExtensionPatientBirthTime || ext.ValueDateTime != tt.birthTime {
					t.Errorf("extension = %+v, want %s %s", ext, fhir.ExtensionPatientBirthTime, tt.birthTime)
				}
				if !strings.HasPrefix(ext.ValueDateTime, r.BirthDate) {
					t.Errorf("birth time %s is not on birthDate %s", ext.ValueDateTime, r.BirthDate)
				}
			}
			if !found {
				t.Fatal("no Patient")
			}
		})
	}
}

// TestMobileAndMailingAddress: a mobile given as the primary residence
// number is a mobile, and a mailing address (type M) is postal, as the
// v2-to-FHIR guide's TelecommunicationEquipmentType and AddressType maps
// say.
func TestMobileAndMailingAddress(t *testing.T) {
	b := translate(t, DefaultDialect(), hl7(testMSH, pid("9990000018^^^NHS^NH", map[int]string{
		11: `1 TEST STREET^^LEEDS^^LS1 1AA^^M~2 TEST ROAD^^LEEDS^^LS2 2BB^^H`,
		13: `07700 900123^PRN^CP~0113 496 0000^PRN^PH`,
	}), testPV1))
	p, _ := resourceOf(t, b, "Patient", models.UnmarshalPatient)
	var telecoms []string
	for _, c := range p.Telecom {
		telecoms = append(telecoms, c.System.Code()+" "+c.Use.Code())
	}
	if diff := cmp.Diff([]string{"phone mobile", "phone home"}, telecoms); diff != "" {
		t.Errorf("telecoms (-want +got):\n%s", diff)
	}
	var addrs []string
	for _, a := range p.Address {
		typ, use := "", ""
		if a.Type != nil {
			typ = a.Type.Code()
		}
		if a.Use != nil {
			use = a.Use.Code()
		}
		addrs = append(addrs, deref(a.PostalCode)+" type="+typ+" use="+use)
	}
	if diff := cmp.Diff([]string{"LS1 1AA type=postal use=", "LS2 2BB type= use=home"}, addrs); diff != "" {
		t.Errorf("addresses (-want +got):\n%s", diff)
	}
}

// TestClearedElements: an explicit null ("") in a field asks the receiver
// to delete what it holds, so the element is marked with
// nhs.JunctionExtClearedElement; an empty field (no change) or a value is
// not marked. A13 withdraws the discharge.
func TestClearedElements(t *testing.T) {
	const nhsID = "9990000018^^^NHS^NH"
	tests := []struct {
		name     string
		segments []string
		resource string
		want     []string // valueCode, or "uri:" and valueUri
	}{
		{"nothing null", []string{testMSH, pid(nhsID, nil), testPV1}, "Patient", nil},
		{"address null", []string{testMSH, pid(nhsID, map[int]string{11: `""`}), testPV1}, "Patient", []string{"address"}},
		{"home and work phone null", []string{testMSH, pid(nhsID, map[int]string{13: `""`, 14: `""`}), testPV1}, "Patient", []string{"telecom"}},
		{"home phone null, work phone not sent", []string{testMSH, pid(nhsID, map[int]string{13: `""`}), testPV1}, "Patient", nil},
		{"work phone null, home phone not sent", []string{testMSH, pid(nhsID, map[int]string{14: `""`}), testPV1}, "Patient", nil},
		{"home phone null, a work phone", []string{testMSH, pid(nhsID, map[int]string{13: `""`, 14: "01234 000001^WPN^PH"}), testPV1}, "Patient", nil},
		{"language, marital status, ethnicity null", []string{testMSH, pid(nhsID, map[int]string{15: `""`, 16: `""`, 22: `""`}), testPV1}, "Patient",
			[]string{"communication", "maritalStatus", "uri:" + nhs.ExtEthnicCategory}},
		{"death date null", []string{testMSH, pid(nhsID, map[int]string{29: `""`}), testPV1}, "Patient", []string{"deceased"}},
		{"death date null, indicator N", []string{testMSH, pid(nhsID, map[int]string{29: `""`, 30: "N"}), testPV1}, "Patient", nil},
		{"practice and GP null", []string{testMSH, pid(nhsID, nil), `PD1|||""|""`, testPV1}, "Patient", []string{"generalPractitioner"}},
		{"GP null, practice not sent", []string{testMSH, pid(nhsID, nil), `PD1||||""`, testPV1}, "Patient", nil},
		{"practice null, GP sent", []string{testMSH, pid(nhsID, nil), `PD1|||""|G9999991^TESTGP^MORGAN^^^DR`, testPV1}, "Patient", nil},
		{"PD1 without GP fields", []string{testMSH, pid(nhsID, nil), `PD1|||`, testPV1}, "Patient", nil},
		{"every doctor null", []string{testMSH, pid(nhsID, nil), pv1(map[int]string{2: "I", 3: "WARD1^^^RX1", 7: `""`, 8: `""`, 9: `""`, 17: `""`, 19: "V1", 44: "20240715093000"})}, "Encounter", []string{"participant.ATND", "participant.REF", "participant.CON", "participant.ADM"}},
		{"referrer null, attending not sent", []string{testMSH, pid(nhsID, nil), pv1(map[int]string{2: "I", 3: "WARD1^^^RX1", 8: `""`, 19: "V1", 44: "20240715093000"})}, "Encounter", []string{"participant.REF"}},
		// The admission's start and source, sent again, do not keep the
		// discharge.
		{"cancel discharge with admission details", []string{strings.Replace(testMSH, "ADT^A01", "ADT^A13", 1), pid(nhsID, nil), pv1(map[int]string{2: "I", 3: "WARD1^^^RX1", 14: "19", 19: "V1", 44: "20240715093000"})}, "Encounter",
			[]string{"period.end", "hospitalization.dischargeDisposition", "uri:" + nhs.ExtDischargeMethod}},
		{"cancel discharge", []string{strings.Replace(testMSH, "ADT^A01", "ADT^A13", 1), pid(nhsID, nil), pv1(map[int]string{2: "I", 3: "WARD1^^^RX1", 19: "V1"})}, "Encounter",
			[]string{"period.end", "hospitalization.dischargeDisposition", "uri:" + nhs.ExtDischargeMethod}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := translate(t, DefaultDialect(), hl7(tt.segments...))
			var exts []models.Extension
			switch tt.resource {
			case "Patient":
				p, _ := resourceOf(t, b, "Patient", models.UnmarshalPatient)
				exts = p.Extension
			default:
				e, _ := resourceOf(t, b, "Encounter", models.UnmarshalEncounter)
				exts = e.Extension
			}
			var got []string
			for _, x := range exts {
				switch {
				case x.Url != nhs.JunctionExtClearedElement:
				case x.ValueCode != nil:
					got = append(got, *x.ValueCode)
				case x.ValueUri != nil:
					got = append(got, "uri:"+*x.ValueUri)
				}
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("cleared (-want +got):\n%s", diff)
			}
		})
	}
}

// TestPatientForResultFeedsMarksNoDeletes: Translator.Patient, which
// result feeds use, marks no explicit null as a delete: a LIMS is not the
// master of demographics and may send "" for whatever it does not hold.
func TestPatientForResultFeedsMarksNoDeletes(t *testing.T) {
	tr, err := NewTranslator(DefaultDialect())
	if err != nil {
		t.Fatal(err)
	}
	raw := hl7(testMSH, pid("9990000018^^^NHS^NH", map[int]string{11: `""`, 13: `""`, 14: `""`, 29: `""`}))
	m, err := hl7v2.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	p, _, _, err := tr.Patient(testEnvelope("oru", raw), m)
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range p.Extension {
		if x.Url == nhs.JunctionExtClearedElement {
			t.Errorf("result-feed Patient marked %v deleted", *x.ValueCode)
		}
	}
}

// TestDuplicatesOneResource: the registered GP sent again as referrer
// with the name written differently is one Practitioner (one GMP code),
// and a transfer to the location the patient is in is one Location, so a
// receiver updating by identifier is not sent one resource twice.
func TestDuplicatesOneResource(t *testing.T) {
	d := DefaultDialect()
	d.LocationIdentifierSystem = "https://fhir.example-trust.nhs.uk/Id/location"
	raw := hl7(strings.Replace(testMSH, "ADT^A01", "ADT^A02", 1), pid("9990000018^^^NHS^NH", nil), "PD1||||G9999991^TESTGP^MORGAN^^^DR",
		pv1(map[int]string{2: "I", 3: "WARD1^^^RX1", 6: "WARD1^^^RX1", 8: "G9999991^TESTGP^MORGAN", 19: "V1", 44: "20240715093000"}))
	b := translate(t, d, raw)
	n := map[string]int{}
	for _, e := range b.Entry {
		rt, _ := fhir.ResourceType(e.Resource)
		n[rt]++
	}
	if n["Practitioner"] != 1 || n["Location"] != 1 {
		t.Errorf("resources %v, want one Practitioner and one Location", n)
	}
	// No stay begins or ends: one location entry, with no period.
	if e, ok := resourceOf(t, b, "Encounter", models.UnmarshalEncounter); !ok || len(e.Location) != 1 || e.Location[0].Period != nil {
		t.Errorf("Encounter locations %+v, want one entry without a period", e.Location)
	}
}

// TestDerivedStatus: the Encounter.status of an update event (A08, A28,
// A31) without a discharge time, and of an A12, is inferred, and marked
// so; an event that asserts a state (A01, A11) or an A08 with PV1-45 is
// not marked.
func TestDerivedStatus(t *testing.T) {
	for _, tt := range []struct {
		event string
		want  bool
		pv1   string
	}{
		{"A08", true, testPV1}, {"A28", true, testPV1}, {"A31", true, testPV1}, {"A12", true, testPV1},
		{"A01", false, testPV1}, {"A11", false, testPV1},
		{"A08", false, pv1(map[int]string{2: "I", 3: "WARD1^^^RX1", 19: "V1", 44: "20240715093000", 45: "20240716093000"})},
	} {
		t.Run(tt.event, func(t *testing.T) {
			b := translate(t, DefaultDialect(), hl7(strings.Replace(testMSH, "ADT^A01", "ADT^"+tt.event, 1), pid("9990000018^^^NHS^NH", nil), tt.pv1))
			e, ok := resourceOf(t, b, "Encounter", models.UnmarshalEncounter)
			if !ok {
				t.Fatal("no Encounter")
			}
			got := false
			for _, x := range e.Extension {
				got = got || x.Url == nhs.JunctionExtDerivedElement && x.ValueCode != nil && *x.ValueCode == "status"
			}
			if got != tt.want {
				t.Errorf("status marked derived = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestMaritalStatus checks PID-16 read through either code table: the
// NHS Data Dictionary's P, N, 8 and 9 are not HL7 table 0002's.
func TestMaritalStatus(t *testing.T) {
	hl7Table := DefaultDialect()
	hl7Table.MaritalStatusCodes = MaritalStatusHL7
	const v3, england = "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus", nhs.CodeSystemPersonMaritalStatusEngland
	tests := []struct {
		name    string
		dialect Dialect
		code    string
		want    string // system|code|display, or "" for none
	}{
		{"NHS separated", DefaultDialect(), "P", england + "|P|Separated"},
		{"NHS not disclosed", DefaultDialect(), "N", england + "|N|Not disclosed"},
		{"NHS not applicable", DefaultDialect(), "8", england + "|8|Not applicable"},
		{"NHS not known", DefaultDialect(), "9", "http://terminology.hl7.org/CodeSystem/v3-NullFlavor|UNK|unknown"},
		{"NHS married, as v3", DefaultDialect(), "M", v3 + "|M|Married"},
		{"NHS table, an HL7-only code", DefaultDialect(), "C", v3 + "|C|Common Law"},
		{"HL7 domestic partner", hl7Table, "P", v3 + "|T|Domestic partner"},
		{"HL7 annulled", hl7Table, "N", v3 + "|A|Annulled"},
		{"HL7 has no 9", hl7Table, "9", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := translate(t, tt.dialect, hl7(testMSH, pid("9990000018^^^NHS^NH", map[int]string{16: tt.code}), testPV1))
			p, _ := resourceOf(t, b, "Patient", models.UnmarshalPatient)
			got := ""
			if ms := p.MaritalStatus; ms != nil && len(ms.Coding) == 1 {
				c := ms.Coding[0]
				got = deref(c.System) + "|" + deref(c.Code) + "|" + deref(c.Display)
			}
			if got != tt.want {
				t.Errorf("maritalStatus %q, want %q", got, tt.want)
			}
		})
	}
}
