package pathology

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	models "github.com/samply/golang-fhir-models/fhir-models/fhir"
	"gopkg.in/yaml.v3"

	"github.com/junction-fhir/junction/adapters/mllp"
	"github.com/junction-fhir/junction/adapters/pas"
	"github.com/junction-fhir/junction/pkg/adapter"
	"github.com/junction-fhir/junction/pkg/adapter/adaptertest"
	"github.com/junction-fhir/junction/pkg/fault"
	"github.com/junction-fhir/junction/pkg/hl7v2"

	"github.com/junction-fhir/junction/pkg/fhir"
)

func TestFactoryDefaults(t *testing.T) {
	var f Factory
	if f.Type() != "pathology" {
		t.Errorf("Type() = %q", f.Type())
	}
	c, ok := f.NewConfig().(*Config)
	if !ok {
		t.Fatalf("NewConfig() is %T", f.NewConfig())
	}
	in := mllp.DefaultInboundConfig()
	in.Listen = "127.0.0.1:2576"
	want := Config{InboundConfig: in, Dialect: pas.DefaultDialect(), Lab: DefaultLabDialect()}
	if diff := cmp.Diff(want, *c); diff != "" {
		t.Errorf("defaults (-want +got):\n%s", diff)
	}
	if errs := c.Validate(); len(errs) > 0 {
		t.Errorf("defaults invalid: %v", errs)
	}
}

func TestFactoryConfigYAML(t *testing.T) {
	const doc = `
listen: 0.0.0.0:2577
dialect:
  nhs_number_authorities: [NHS]
  time_zone: Europe/London
lab:
  local_code_system: https://fhir.rx1.example.org/CodeSystem/winpath
  code_maps: [testdata/codemap-lft.json]
`
	c := Factory{}.NewConfig().(*Config)
	dec := yaml.NewDecoder(strings.NewReader(doc))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil {
		t.Fatalf("decode: %v", err)
	}
	want := DefaultConfig()
	want.Listen = "0.0.0.0:2577"
	want.Dialect.NHSNumberAuthorities = []string{"NHS"}
	want.Lab.LocalCodeSystem = "https://fhir.rx1.example.org/CodeSystem/winpath"
	want.Lab.CodeMaps = []string{"testdata/codemap-lft.json"}
	if diff := cmp.Diff(want, *c); diff != "" {
		t.Errorf("decoded config (-want +got):\n%s", diff)
	}
	if errs := c.Validate(); len(errs) > 0 {
		t.Errorf("valid config rejected: %v", errs)
	}
	bad := Factory{}.NewConfig().(*Config)
	dec = yaml.NewDecoder(strings.NewReader("lab:\n  codemaps: []\n"))
	dec.KnownFields(true)
	if err := dec.Decode(bad); err == nil {
		t.Error("unknown lab key accepted")
	}
}

func TestConfigValidateReportsEverything(t *testing.T) {
	dir := t.TempDir()
	notMap := filepath.Join(dir, "patient.json")
	badMap := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(notMap, []byte(`{"resourceType":"Patient"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(badMap, []byte(`{"resourceType":"ConceptMap","group":[{"source":"","target":"http://snomed.info/sct",
		"element":[{"code":"","target":[{"code":"1","equivalence":"same"},{"equivalence":"equivalent"}]}]}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	c := DefaultConfig()
	c.Listen = ""
	c.Dialect.TimeZone = "Nowhere/Else"
	c.Lab.LocalCodeSystem = "not a uri"
	c.Lab.FillerOrderSystem = ""
	c.Lab.CodeMaps = []string{"", filepath.Join(dir, "missing.json"), notMap, badMap}
	var text []string
	for _, e := range c.Validate() {
		text = append(text, e.Error())
	}
	joined := strings.Join(text, "\n")
	for _, want := range []string{"listen", "time_zone", "lab.local_code_system", "lab.filler_order_system",
		"code_maps[0]: empty path", "code_maps[1]", "want ConceptMap", "group[0].source", "element[0].code: required",
		`"same" is not an R4 ConceptMap equivalence`, "target[1].code: required"} {
		if !strings.Contains(joined, want) {
			t.Errorf("errors do not mention %q:\n%s", want, joined)
		}
	}
	if _, err := (Factory{}).NewTranslator(&c); fault.CodeOf(err) != fault.CodeConfig {
		t.Errorf("NewTranslator(invalid) error = %v", err)
	}
	if _, err := (Factory{}).NewInbound(context.Background(), adapter.Settings{}, adaptertest.RefusingHost{}, &c); fault.CodeOf(err) != fault.CodeConfig {
		t.Errorf("NewInbound(invalid) error = %v", err)
	}
	if _, err := NewTranslator(pas.DefaultDialect(), c.Lab); fault.CodeOf(err) != fault.CodeConfig {
		t.Errorf("NewTranslator(bad lab) error = %v", err)
	}
}

func TestFactoryRejectsForeignConfig(t *testing.T) {
	for _, cfg := range []any{nil, "pathology", &pas.Config{}, (*Config)(nil)} {
		if _, err := (Factory{}).NewTranslator(cfg); fault.CodeOf(err) != fault.CodeConfig {
			t.Errorf("NewTranslator(%T) error = %v", cfg, err)
		}
	}
}

func TestFactoryNewTranslator(t *testing.T) {
	c := DefaultConfig()
	for _, cfg := range []any{&c, c} {
		tr, err := Factory{}.NewTranslator(cfg)
		if err != nil {
			t.Fatalf("NewTranslator(%T): %v", cfg, err)
		}
		got, err := tr.Translate(testEnvelope("factory", hl7(testMSH, testPID, testOBR)))
		if err != nil {
			t.Fatalf("Translate: %v", err)
		}
		if got.PatientKey != "9990000018" || got.Event != "R01" {
			t.Errorf("translation key %q event %q", got.PatientKey, got.Event)
		}
	}
}

// TestFactoryRelay checks that a pathology input relays the types its
// relay setting names with the minimal translation, translates ORU^R01
// whatever they say, and refuses relaying ORU^R01 itself.
func TestFactoryRelay(t *testing.T) {
	c := DefaultConfig()
	c.Relay = []string{"ORM^*", "ORU^*"}
	tr, err := Factory{}.NewTranslator(&c)
	if err != nil {
		t.Fatal(err)
	}
	if got := tr.(adapter.RelayLister).RelayTypes(); !cmp.Equal(got, c.Relay) {
		t.Errorf("RelayTypes %v, want %v", got, c.Relay)
	}
	order := hl7(strings.Replace(testMSH, "ORU^R01", "ORM^O01", 1), testPID, "ORC|NW|ORD1", testOBR)
	for _, tt := range []struct {
		name    string
		raw     []byte
		relayed bool
	}{
		{"relayed order", order, true},
		{"relayed result type", hl7(strings.Replace(testMSH, "ORU^R01", "ORU^R30", 1), testPID, testOBR), true},
		{"translated result", hl7(testMSH, testPID, testOBR), false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tr.Translate(testEnvelope("factory", tt.raw))
			if err != nil {
				t.Fatalf("Translate: %v", err)
			}
			hasReport := strings.Contains(string(got.Bundle), `"resourceType":"DiagnosticReport"`)
			if got.Relayed != tt.relayed || hasReport == tt.relayed || got.PatientKey != "9990000018" {
				t.Errorf("Relayed %v, DiagnosticReport %v, key %q; want relayed %v", got.Relayed, hasReport, got.PatientKey, tt.relayed)
			}
		})
	}
	c.Relay = []string{"ORU^R01"}
	if errs := c.Validate(); len(errs) != 1 || !strings.Contains(errs[0].Error(), `relay[0]: "ORU^R01" is translated by this input`) {
		t.Errorf("Validate: %v, want relay[0] refused", errs)
	}
}

func TestFactoryNewInbound(t *testing.T) {
	c := DefaultConfig()
	c.Listen = "127.0.0.1:0"
	in := adaptertest.NewInbound(t, Factory{}, "lab", &c)
	if _, ok := in.(*mllp.Inbound); !ok {
		t.Errorf("NewInbound returned %T", in)
	}
}

func TestCodeMapApply(t *testing.T) {
	m, errs := loadCodeMaps([]string{filepath.Join("testdata", "codemap-lft.json")})
	if len(errs) > 0 {
		t.Fatalf("load: %v", errs)
	}
	local, winpath := DefaultLocalCodeSystem, "urn:hl7v2:coding-system:WINPATH"
	for _, tt := range []struct {
		system, code string
		want         []string
	}{
		{local, "LFT", []string{local + "|LFT", "http://snomed.info/sct|26958001"}},
		{local, "ALT", []string{local + "|ALT"}}, // equivalence wider: not added
		{winpath, "BILI", []string{winpath + "|BILI", "http://loinc.org|1975-2"}},
		{local, "BILI", []string{local + "|BILI"}}, // mapped only from the WINPATH system
	} {
		cc := &models.CodeableConcept{Coding: []models.Coding{{System: fhir.Ptr(tt.system), Code: fhir.Ptr(tt.code)}}}
		m.apply(cc)
		m.apply(cc) // applying twice adds nothing more
		var got []string
		for _, c := range cc.Coding {
			got = append(got, *c.System+"|"+*c.Code)
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("%s|%s (-want +got):\n%s", tt.system, tt.code, diff)
		}
	}
}

// TestScreen checks what the pathology listener refuses before storing:
// what the translator refuses whatever the message holds otherwise.
func TestScreen(t *testing.T) {
	tests := []struct {
		name     string
		segments []string
		segment  string // the ERR segment; "" for none
	}{
		{"taken", []string{testMSH, testPID, testOBR, `OBX|1|NM|GLU^Glucose^L||5.2|mmol/L`}, ""},
		{"no PID", []string{testMSH, testOBR}, "PID"},
		{"two patients", []string{testMSH, testPID, testOBR, `PID|1||9990000026^^^NHS^NH`, testOBR}, "PID"},
		// A patient repeated before each group of results is one patient;
		// one named by other identifiers may not be.
		{"one patient repeated", []string{testMSH, testPID, testOBR, testPID, `OBR|2|P2|F2|UE^U and E^L|||20240715081500`}, ""},
		{"the same NHS number beside another identifier", []string{testMSH, testPID, testOBR, `PID|1||9990000018^^^NHS^NH~H1^^^RX1^MR`, testOBR}, "PID"},
		{"no identifiers, repeated", []string{testMSH, `PID|1||||TESTPATIENT^ALEX`, testOBR, `PID|1||||TESTPATIENT^ALEX`, testOBR}, "PID"},
		{"no OBR", []string{testMSH, testPID, `OBX|1|NM|GLU^Glucose^L||5.2|mmol/L`}, "OBR"},
		{"report without a test code", []string{testMSH, testPID, testOBR, `OBR|2|PL2|FL2||||20240715`, `OBX|1|NM|GLU^Glucose^L||5.2|mmol/L`}, "OBR-4 #2"},
		{"result without a code", []string{testMSH, testPID, testOBR, `OBX|1|NM|GLU^Glucose^L||5.2|mmol/L`, `OBX|2|NM|||4.4|mmol/L|||||F`}, "OBX-3 #2"},
		{"result with text only", []string{testMSH, testPID, testOBR, `OBX|1|NM|^Glucose||5.2|mmol/L`}, ""},
		{"line with neither code nor value", []string{testMSH, testPID, testOBR, `OBX|1|NM|GLU^Glucose^L||5.2|mmol/L`, `OBX|2|TX|||^~^|||||F`}, ""},
		// Other types reach the listener only when relayed, and are
		// relayed as they are.
		{"a relayed order without an OBR", []string{strings.Replace(testMSH, "ORU^R01", "ORM^O01", 1), testPID}, ""},
		{"a relayed result type with two patients", []string{strings.Replace(testMSH, "ORU^R01", "ORU^R30", 1), testPID, testOBR, `PID|1||9990000026^^^NHS^NH`}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := hl7v2.Parse(hl7(tt.segments...))
			if err != nil {
				t.Fatal(err)
			}
			ae := Screen(m)
			switch {
			case tt.segment == "" && ae != nil:
				t.Errorf("refused %+v, want taken", ae)
			case tt.segment == "":
			case ae == nil:
				t.Errorf("taken, want refused on %s", tt.segment)
			case strings.Contains(tt.segment, "-"):
				// A field: ERR 101 at that field of that occurrence.
				if got := fmt.Sprintf("%s-%d #%d", ae.Segment, ae.Field, ae.Sequence); got != tt.segment || ae.Code != hl7v2.ErrCodeRequiredField {
					t.Errorf("refusal %+v, want ERR 101 at %s", ae, tt.segment)
				}
			case ae.Segment != tt.segment || ae.Code != hl7v2.ErrCodeSegmentSequence:
				t.Errorf("refusal %+v, want ERR 100 on %s", ae, tt.segment)
			}
			// The translator refuses the same messages (relaying the
			// other types, as the listener takes them only then).
			tr := newTestTranslator(t)
			tr.patients.Relay([]string{"ORM^*", "ORU^*"})
			_, terr := tr.TranslateMessage(testEnvelope("screen", hl7(tt.segments...)), m)
			if (terr != nil) != (tt.segment != "") {
				t.Errorf("translator error %v, screen %+v: they disagree", terr, ae)
			}
		})
	}
}
