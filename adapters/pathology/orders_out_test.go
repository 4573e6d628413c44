package pathology

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/junction-fhir/junction/pkg/corpustest"

	"github.com/google/go-cmp/cmp"
	models "github.com/samply/golang-fhir-models/fhir-models/fhir"

	"github.com/junction-fhir/junction/pkg/fault"
	"github.com/junction-fhir/junction/pkg/hl7v2"
	"github.com/junction-fhir/junction/pkg/nhs"
)

// orderCombos are the structures the encoder writes, as golden file
// suffixes.
var orderCombos = []struct {
	suffix, version, msgType string
}{
	{"oml-2.5", "2.5", MessageTypeOML},
	{"oml-2.4", "2.4", MessageTypeOML},
	{"orm-2.4", "2.4", MessageTypeORM},
	{"orm-2.3", "2.3", MessageTypeORM},
}

// testOrderOptions returns fixed options for version and message type.
func testOrderOptions(version, msgType string) OrderOptions {
	o := DefaultOrderOptions()
	o.Version, o.MessageType = version, msgType
	o.SendingApplication, o.SendingFacility = "EPR", "RX1"
	o.ReceivingApplication, o.ReceivingFacility = "LIMS", "RX1LAB"
	o.ControlID = "ORD0001"
	o.Time = time.Date(2026, 7, 1, 9, 15, 0, 0, time.UTC)
	return o
}

func readOrderBundle(t testing.TB, name string) []byte {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", "orders", name+".bundle.json"))
	if err != nil {
		t.Fatalf("read bundle: %v", err)
	}
	return raw
}

func encodeTest(t *testing.T, name, version, msgType string) (*EncodedOrder, *hl7v2.Message) {
	t.Helper()
	out, err := EncodeOrder(readOrderBundle(t, name), testOrderOptions(version, msgType))
	if err != nil {
		t.Fatalf("EncodeOrder: %v", err)
	}
	m, err := hl7v2.Parse(out.Message)
	if err != nil {
		t.Fatalf("encoded message does not parse: %v", err)
	}
	return out, m
}

func TestTestNumbersValid(t *testing.T) {
	for _, n := range []string{"9990000018", "9990000026", "9990000034"} {
		if !nhs.ValidNumber(n) {
			t.Errorf("%s is not a valid NHS number", n)
		}
	}
}

// TestOrderBundlesSchemaValid checks the synthetic order bundles are
// valid FHIR R4, so the encoder is tested on what senders can send.
func TestOrderBundlesSchemaValid(t *testing.T) {
	schema := loadFHIRSchema(t)
	if schema == nil {
		corpustest.Missing(t, "FHIR R4 JSON schema absent from the shared corpora")
	}
	bundles, _ := filepath.Glob(filepath.Join("testdata", "orders", "*.bundle.json"))
	for _, b := range bundles {
		t.Run(filepath.Base(b), func(t *testing.T) {
			raw, err := os.ReadFile(b)
			if err != nil {
				t.Fatal(err)
			}
			var v map[string]any
			if err := json.Unmarshal(raw, &v); err != nil {
				t.Fatal(err)
			}
			if issues := schema.check(v, "Bundle", "Bundle"); len(issues) > 0 {
				t.Errorf("not schema-valid:\n%s", strings.Join(issues, "\n"))
			}
		})
	}
}

func TestEncodeOrderGolden(t *testing.T) {
	bundles, err := filepath.Glob(filepath.Join("testdata", "orders", "*.bundle.json"))
	if err != nil || len(bundles) == 0 {
		t.Fatalf("no order bundles in testdata/orders (%v)", err)
	}
	for _, b := range bundles {
		name := strings.TrimSuffix(filepath.Base(b), ".bundle.json")
		for _, c := range orderCombos {
			t.Run(name+"/"+c.suffix, func(t *testing.T) {
				out, _ := encodeTest(t, name, c.version, c.msgType)
				got := strings.ReplaceAll(string(out.Message), "\r", "\n")
				golden := filepath.Join("testdata", "orders", name+"."+c.suffix+".hl7")
				if *update {
					if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
						t.Fatal(err)
					}
					return
				}
				want, err := os.ReadFile(golden)
				if err != nil {
					t.Fatalf("read golden (run go test ./adapters/pathology -run EncodeOrderGolden -update): %v", err)
				}
				if diff := cmp.Diff(string(want), got); diff != "" {
					t.Errorf("message differs from %s (-want +got):\n%s", golden, diff)
				}
			})
		}
	}
}

// TestEncodeOrderStructure checks, per version and message type, the
// segments and fields that differ between structures.
func TestEncodeOrderStructure(t *testing.T) {
	tests := []struct {
		version, msgType string
		msh9             string
		spm, tq1         bool
	}{
		{"2.5", MessageTypeOML, "OML^O21^OML_O21", true, true},
		{"2.5.1", MessageTypeOML, "OML^O21^OML_O21", true, true},
		{"2.4", MessageTypeOML, "OML^O21^OML_O21", false, false},
		{"2.5", MessageTypeORM, "ORM^O01^ORM_O01", false, true},
		{"2.4", MessageTypeORM, "ORM^O01^ORM_O01", false, false},
		{"2.3.1", MessageTypeORM, "ORM^O01^ORM_O01", false, false},
		{"2.3", MessageTypeORM, "ORM^O01", false, false},
	}
	for _, tc := range tests {
		t.Run(tc.msgType+"/"+tc.version, func(t *testing.T) {
			out, m := encodeTest(t, "fbc-encounter", tc.version, tc.msgType)
			d := m.Delimiters()
			msh := m.Segment("MSH")
			if got := msh.Field(9); got != tc.msh9 {
				t.Errorf("MSH-9 %q, want %q", got, tc.msh9)
			}
			if got := m.Version(); got != tc.version {
				t.Errorf("MSH-12 %q, want %q", got, tc.version)
			}
			if got := m.ControlID(); got != "ORD0001" {
				t.Errorf("MSH-10 %q", got)
			}
			// 09:15 UTC on 1 July is 10:15 BST.
			if got := msh.Field(7); got != "20260701101500+0100" {
				t.Errorf("MSH-7 %q, want 20260701101500+0100", got)
			}
			var names []string
			for _, s := range m.Segments() {
				names = append(names, s.Name())
			}
			wantNames := []string{"MSH", "PID", "PV1", "ORC"}
			if tc.tq1 {
				wantNames = append(wantNames, "TQ1")
			}
			wantNames = append(wantNames, "OBR", "NTE")
			if tc.spm {
				wantNames = append(wantNames, "SPM")
			}
			if diff := cmp.Diff(wantNames, names); diff != "" {
				t.Errorf("segments (-want +got):\n%s", diff)
			}
			pid, orc, obr := m.Segment("PID"), m.Segment("ORC"), m.Segment("OBR")
			if got := pid.Repetition(3, 1); got != "9990000018^^^NHS^NH" {
				t.Errorf("PID-3[1] %q", got)
			}
			if got := orc.Field(1); got != "NW" {
				t.Errorf("ORC-1 %q", got)
			}
			wantPlacer := "ORD-2026-000123^EPR^https://fhir.example-trust.nhs.uk/Id/placer-order-number^URI"
			if orc.Field(2) != wantPlacer || obr.Field(2) != wantPlacer {
				t.Errorf("ORC-2 %q, OBR-2 %q, want %q", orc.Field(2), obr.Field(2), wantPlacer)
			}
			if got := obr.Component(4, 1, 1, 1) + "|" + obr.Component(4, 1, 3, 1) + "|" + obr.Component(4, 1, 4, 1) + "|" + obr.Component(4, 1, 6, 1); got != "FBC|L|26604007|SCT" {
				t.Errorf("OBR-4 codes %q", got)
			}
			// CWE-9 original text exists from v2.5 only.
			if got, want := obr.Component(4, 1, 9, 1), map[bool]string{true: "FBC please", false: ""}[versionRank(tc.version) >= 250]; got != want {
				t.Errorf("OBR-4.9 %q, want %q", got, want)
			}
			if tc.spm {
				if got := obr.Field(15); got != "" {
					t.Errorf("OBR-15 %q with SPM", got)
				}
				spm := m.Segment("SPM")
				if got := spm.Component(4, 1, 1, 1); got != "119297000" {
					t.Errorf("SPM-4 %q", got)
				}
				if got := spm.Component(2, 1, 1, 1); got != "SPC-0001" {
					t.Errorf("SPM-2.1.1 %q", got)
				}
			} else if got := obr.Component(15, 1, 1, 1) + "&" + obr.Component(15, 1, 1, 3); got != "119297000&SCT" {
				t.Errorf("OBR-15.1 %q", got)
			}
			if tc.tq1 {
				tq1 := m.Segment("TQ1")
				if got := tq1.Field(9); got != "A^ASAP^HL70485" {
					t.Errorf("TQ1-9 %q", got)
				}
				if got := tq1.Field(7); got != "20260701090000+0100" {
					t.Errorf("TQ1-7 %q", got)
				}
				if orc.Field(7) != "" || obr.Field(27) != "" {
					t.Errorf("ORC-7 %q / OBR-27 %q set alongside TQ1", orc.Field(7), obr.Field(27))
				}
			} else {
				for _, f := range []struct {
					seg   *hl7v2.Segment
					field int
				}{{orc, 7}, {obr, 27}} {
					if got := f.seg.Field(f.field); got != "^^^20260701090000+0100^^A" {
						t.Errorf("%s-%d %q", f.seg.Name(), f.field, got)
					}
				}
			}
			if got := hl7v2.Unescape(m.Segment("NTE").Field(3), d); got != "Query anaemia | on iron ^ review\nSecond line & more ~ \\ done" {
				t.Errorf("NTE-3 decodes to %q", got)
			}
			if got := orc.Field(12); got != "C1234567^Example^Sam^^^Dr^^^GMC" {
				t.Errorf("ORC-12 %q", got)
			}
			if len(out.Orders) != 1 || out.Orders[0].PlacerNumber != "ORD-2026-000123" || out.Orders[0].PlacerNamespace != "EPR" ||
				out.Orders[0].ServiceRequest != "urn:uuid:6a1f0c2e-0d4b-4c55-9a57-2f1d6a0b7c06" {
				t.Errorf("Orders %+v", out.Orders)
			}
			if len(out.DataQuality) != 0 {
				t.Errorf("DataQuality %v", out.DataQuality)
			}
		})
	}
}

func TestEncodeOrderTwoOrders(t *testing.T) {
	out, m := encodeTest(t, "two-orders", "2.5", MessageTypeOML)
	orcs, obrs := m.SegmentsNamed("ORC"), m.SegmentsNamed("OBR")
	if len(orcs) != 2 || len(obrs) != 2 {
		t.Fatalf("%d ORC, %d OBR; want 2 each", len(orcs), len(obrs))
	}
	if got := orcs[1].Field(1); got != "CA" {
		t.Errorf("revoked order: ORC-1 %q, want CA", got)
	}
	if got := orcs[1].Component(3, 1, 1, 1); got != "LAB26-555" {
		t.Errorf("ORC-3 %q", got)
	}
	if got := m.Segment("PID").Repetition(3, 1); got != "9990000026^^^NHS^NH" {
		t.Errorf("spaced NHS number: PID-3 %q", got)
	}
	if got := orcs[0].Field(12); got != "G9999998^Dr A Gp^^^^^^^GMP" {
		t.Errorf("logical requester: ORC-12 %q", got)
	}
	if m.Segment("PV1") != nil {
		t.Error("PV1 without an Encounter")
	}
	// Each specimen goes with the order its request names.
	spms := m.SegmentsNamed("SPM")
	if len(spms) != 2 || spms[0].Component(4, 1, 1, 1) != "119364003" || spms[1].Component(4, 1, 2, 1) != "Clotted blood" {
		t.Fatalf("SPM segments wrong: %d", len(spms))
	}
	segs := m.Segments()
	for i, s := range segs {
		if s == spms[1] && segs[i-1] != obrs[1] {
			t.Errorf("second SPM does not follow the second OBR")
		}
	}
	if got := spms[0].Field(17); got != "20260115143000+0000^20260115143500+0000" {
		t.Errorf("SPM-17 %q", got)
	}
	if got := spms[0].Field(18); got != "20260115150211.250+0000" {
		t.Errorf("SPM-18 %q", got)
	}
	want := []SentOrder{
		{ServiceRequest: "https://ehr.example-trust.nhs.uk/fhir/ServiceRequest/sr-ue", PlacerSystem: DefaultPlacerOrderSystem, PlacerNumber: "ORD-2026-000200", PlacerNamespace: "EPR"},
		{ServiceRequest: "https://ehr.example-trust.nhs.uk/fhir/ServiceRequest/sr-lft", PlacerSystem: DefaultPlacerOrderSystem, PlacerNumber: "ORD-2026-000201", PlacerNamespace: "EPR",
			FillerSystem: DefaultFillerOrderSystem, FillerNumber: "LAB26-555"},
	}
	// Each carries the patient's NHS number, sent normalised ("999 000
	// 0026" in the bundle), for the correlator to keep a check value of.
	for i := range want {
		want[i].NHSNumber = "9990000026"
	}
	if diff := cmp.Diff(want, out.Orders); diff != "" {
		t.Errorf("Orders (-want +got):\n%s", diff)
	}
}

func TestEncodeOrderErrors(t *testing.T) {
	patient := `{"fullUrl":"urn:uuid:p","resource":{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9990000018"}]}}`
	patient2 := `{"fullUrl":"urn:uuid:p2","resource":{"resourceType":"Patient"}}`
	sr := func(extra string) string {
		return `{"fullUrl":"urn:uuid:sr","resource":{"resourceType":"ServiceRequest","status":"active","intent":"order","subject":{"reference":"urn:uuid:p"}` + extra + `}}`
	}
	placer := `,"identifier":[{"type":{"coding":[{"code":"PLAC"}]},"value":"X1"}]`
	bundle := func(entries ...string) string {
		return `{"resourceType":"Bundle","type":"collection","entry":[` + strings.Join(entries, ",") + `]}`
	}
	tests := []struct {
		name  string
		input string
		opts  func(*OrderOptions)
		code  fault.Code
	}{
		{"not json", `{"resourceType":`, nil, fault.CodeFHIRInvalidJSON},
		{"not a bundle", `{"resourceType":"Patient"}`, nil, fault.CodeFHIRInvalid},
		{"no service request", bundle(patient), nil, fault.CodeFHIRInvalid},
		{"no placer number", bundle(patient, sr("")), nil, fault.CodeFHIRInvalid},
		{"no patient", bundle(sr(placer)), nil, fault.CodeFHIRInvalid},
		{"ambiguous patient", bundle(patient2, `{"fullUrl":"urn:uuid:sr","resource":{"resourceType":"ServiceRequest","status":"active"`+placer+`}}`, `{"resource":{"resourceType":"Patient"}}`), nil, fault.CodeFHIRInvalid},
		{"completed", bundle(patient, strings.Replace(sr(placer), `"active"`, `"completed"`, 1)), nil, fault.CodeFHIRInvalid},
		{"wrong type", bundle(patient, sr(placer+`,"note":"text"`)), nil, fault.CodeFHIRInvalid},
		{"OML in 2.3", bundle(patient, sr(placer)), func(o *OrderOptions) { o.Version = "2.3" }, fault.CodeConfig},
		{"bad version", bundle(patient, sr(placer)), func(o *OrderOptions) { o.Version = "2.9" }, fault.CodeConfig},
		{"no control id", bundle(patient, sr(placer)), func(o *OrderOptions) { o.ControlID = "" }, fault.CodeConfig},
		{"long control id", bundle(patient, sr(placer)), func(o *OrderOptions) { o.ControlID = strings.Repeat("1", 21) }, fault.CodeConfig},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := testOrderOptions("2.5", MessageTypeOML)
			if tc.opts != nil {
				tc.opts(&o)
			}
			_, err := EncodeOrder([]byte(tc.input), o)
			if err == nil {
				t.Fatal("no error")
			}
			if got := fault.CodeOf(err); got != tc.code {
				t.Errorf("code %q, want %q (%v)", got, tc.code, err)
			}
			if strings.Contains(err.Error(), "9990000018") || strings.Contains(err.Error(), "X1") {
				t.Errorf("error text holds data: %v", err)
			}
		})
	}
	// A control: the same bundle with a placer number encodes.
	if _, err := EncodeOrder([]byte(bundle(patient, sr(placer))), testOrderOptions("2.5", MessageTypeOML)); err != nil {
		t.Errorf("valid bundle: %v", err)
	}
}

func TestEncodeOrderInvalidNHSNumber(t *testing.T) {
	const bad = "9990000019"
	if nhs.ValidNumber(bad) {
		t.Fatalf("%s is valid; pick another", bad)
	}
	raw := strings.Replace(string(readOrderBundle(t, "minimal")), "9990000034", bad, 1)
	out, err := EncodeOrder([]byte(raw), testOrderOptions("2.5", MessageTypeOML))
	if err != nil {
		t.Fatalf("EncodeOrder: %v", err)
	}
	if bytes.Contains(out.Message, []byte(bad)) {
		t.Error("invalid NHS number sent")
	}
	if diff := cmp.Diff([]string{DQOrderNHSNumberInvalid}, out.DataQuality); diff != "" {
		t.Errorf("DataQuality (-want +got):\n%s", diff)
	}
}

// TestEncodeOrderCharset checks that an order whose text goes beyond
// ASCII (FHIR strings are Unicode) declares UTF-8 in MSH-18, as HL7 takes
// an empty MSH-18 for ASCII, and that one in ASCII declares nothing.
func TestEncodeOrderCharset(t *testing.T) {
	tests := []struct {
		name, version, family, msh18 string
	}{
		{"ascii", "2.5", "O'Test-Smith", ""},
		{"utf8 v2.5", "2.5", "Zo\u00eb-Si\u00e2n", "UNICODE UTF-8"},
		{"utf8 v2.5.1", "2.5.1", "Zo\u00eb-Si\u00e2n", "UNICODE UTF-8"},
		// Before v2.5 table 0211 had UNICODE alone for ISO 10646.
		{"utf8 v2.4", "2.4", "Zo\u00eb-Si\u00e2n", "UNICODE"},
		{"utf8 v2.3", "2.3", "Zo\u00eb-Si\u00e2n", "UNICODE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := strings.Replace(string(readOrderBundle(t, "fbc-encounter")), `"O'Test-Smith"`, strconv.Quote(tt.family), 1)
			out, err := EncodeOrder([]byte(src), testOrderOptions(tt.version, MessageTypeORM))
			if err != nil {
				t.Fatalf("EncodeOrder: %v", err)
			}
			m, err := hl7v2.Parse(out.Message)
			if err != nil {
				t.Fatalf("encoded message does not parse: %v", err)
			}
			if got := m.Get("MSH-18"); got != tt.msh18 {
				t.Errorf("MSH-18 = %q, want %q", got, tt.msh18)
			}
			if got := m.Get("PID-5.1"); got != tt.family {
				t.Errorf("PID-5.1 read back = %q, want %q", got, tt.family)
			}
		})
	}
}

func TestFHIRTimeToHL7(t *testing.T) {
	london, err := time.LoadLocation("Europe/London")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		in, want string
		dateOnly bool
		ok       bool
	}{
		{"2026", "2026", false, true},
		{"2026-07", "202607", false, true},
		{"2026-07-01", "20260701", false, true},
		{"2026-07-01T08:00:00Z", "20260701090000+0100", false, true},
		{"2026-01-01T08:00:00Z", "20260101080000+0000", false, true},
		{"2026-07-01T08:00:00+02:00", "20260701070000+0100", false, true},
		{"2026-07-01T08:00:00.5Z", "20260701090000.500+0100", false, true},
		{"2026-07-01T08:00:00", "20260701080000+0100", false, true},
		// A date is taken as written, not converted: a birth date is
		// the calendar date it was recorded on.
		{"2026-07-01T23:30:00Z", "20260701", true, true},
		{"1980-02-29T10:00:00Z", "19800229", true, true},
		{"2026-13-01", "", false, false},
		{"26-07-01", "", false, false},
		{"2026-07-01T25:00:00Z", "", false, false},
		{"2026-07T08:00:00Z", "", false, false},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, ok := fhirTimeToHL7(tc.in, london, tc.dateOnly)
			if got != tc.want || ok != tc.ok {
				t.Errorf("got %q, %v; want %q, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

// toORU rewrites an encoded order as an ORU^R01, so the results
// translator reads its ORC, OBR and SPM segments back.
func toORU(t testing.TB, msg []byte) []byte {
	t.Helper()
	for _, typ := range []string{"|OML^O21^OML_O21|", "|ORM^O01^ORM_O01|", "|ORM^O01|"} {
		if bytes.Contains(msg, []byte(typ)) {
			return bytes.Replace(msg, []byte(typ), []byte("|ORU^R01^ORU_R01|"), 1)
		}
	}
	t.Fatal("no order message type in MSH")
	return nil
}

// TestOrderRoundTrip encodes a ServiceRequest bundle, reads the result
// back with the results translator, and checks the placer number, code,
// NHS number and specimen type survive.
func TestOrderRoundTrip(t *testing.T) {
	tr := newTestTranslator(t)
	for _, c := range orderCombos {
		t.Run(c.suffix, func(t *testing.T) {
			src := readOrderBundle(t, "fbc-encounter")
			out, err := EncodeOrder(src, testOrderOptions(c.version, c.msgType))
			if err != nil {
				t.Fatalf("EncodeOrder: %v", err)
			}
			got, err := tr.Translate(testEnvelope("roundtrip", toORU(t, out.Message)))
			if err != nil {
				t.Fatalf("Translate: %v", err)
			}
			var b models.Bundle
			if err := json.Unmarshal(got.Bundle, &b); err != nil {
				t.Fatalf("bundle: %v", err)
			}
			var orig models.Bundle
			if err := json.Unmarshal(src, &orig); err != nil {
				t.Fatalf("source bundle: %v", err)
			}
			origSR := firstResource[models.ServiceRequest](t, orig, "ServiceRequest")
			origSpec := firstResource[models.Specimen](t, orig, "Specimen")
			sr := firstResource[models.ServiceRequest](t, b, "ServiceRequest")
			pat := firstResource[models.Patient](t, b, "Patient")
			spec := firstResource[models.Specimen](t, b, "Specimen")

			type ident struct{ System, Value, Type string }
			idOf := func(ids []models.Identifier, typ string) ident {
				for _, id := range ids {
					if id.Type != nil && len(id.Type.Coding) > 0 && strOf(id.Type.Coding[0].Code) == typ {
						return ident{strOf(id.System), strOf(id.Value), typ}
					}
				}
				return ident{}
			}
			if w, g := idOf(origSR.Identifier, "PLAC"), idOf(sr.Identifier, "PLAC"); w != g || w.Value == "" {
				t.Errorf("placer identifier: sent %+v, read back %+v", w, g)
			}
			type code struct{ System, Code string }
			codes := func(cc *models.CodeableConcept) []code {
				var out []code
				if cc != nil {
					for _, cd := range cc.Coding {
						out = append(out, code{strOf(cd.System), strOf(cd.Code)})
					}
				}
				return out
			}
			if diff := cmp.Diff(codes(origSR.Code), codes(sr.Code)); diff != "" {
				t.Errorf("ServiceRequest.code (-sent +read back):\n%s", diff)
			}
			if diff := cmp.Diff(codes(origSpec.Type), codes(spec.Type)); diff != "" {
				t.Errorf("Specimen.type (-sent +read back):\n%s", diff)
			}
			nhsNo := ""
			for _, id := range pat.Identifier {
				if strOf(id.System) == nhs.SystemNHSNumber {
					nhsNo = strOf(id.Value)
				}
			}
			if nhsNo != "9990000018" {
				t.Errorf("NHS number read back %q", nhsNo)
			}
			if got, want := strOf(sr.AuthoredOn), "2026-07-01T08:45:30+01:00"; got != want {
				t.Errorf("authoredOn read back %q, want %q", got, want)
			}
			if sr.Requester == nil || sr.Requester.Identifier == nil || strOf(sr.Requester.Identifier.Value) != "C1234567" ||
				strOf(sr.Requester.Identifier.System) != nhs.SystemGMC || strOf(sr.Requester.Display) != "Dr Sam Example" {
				t.Errorf("requester read back %+v", sr.Requester)
			}
			if spec.Collection == nil || strOf(spec.Collection.CollectedDateTime) != "2026-07-01T08:50:00+01:00" {
				t.Errorf("collection time not read back")
			}
		})
	}
}

func strOf(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// firstResource decodes the first entry of resource type typ.
func firstResource[T any](t *testing.T, b models.Bundle, typ string) T {
	t.Helper()
	var v T
	for _, e := range b.Entry {
		var head struct{ ResourceType string }
		if json.Unmarshal(e.Resource, &head) == nil && head.ResourceType == typ {
			if err := json.Unmarshal(e.Resource, &v); err != nil {
				t.Fatalf("decode %s: %v", typ, err)
			}
			return v
		}
	}
	t.Fatalf("no %s in bundle", typ)
	return v
}
