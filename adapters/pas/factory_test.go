package pas

import (
	"context"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"gopkg.in/yaml.v3"

	"github.com/junction-fhir/junction/adapters/mllp"
	"github.com/junction-fhir/junction/pkg/adapter"
	"github.com/junction-fhir/junction/pkg/adapter/adaptertest"
	"github.com/junction-fhir/junction/pkg/fault"
	"github.com/junction-fhir/junction/pkg/hl7v2"
)

func TestFactoryConfig(t *testing.T) {
	var f Factory
	if f.Type() != "pas" {
		t.Errorf("Type() = %q", f.Type())
	}
	c, ok := f.NewConfig().(*Config)
	if !ok {
		t.Fatalf("NewConfig() is %T", f.NewConfig())
	}
	want := Config{InboundConfig: mllp.DefaultInboundConfig(), Dialect: DefaultDialect()}
	if diff := cmp.Diff(want, *c); diff != "" {
		t.Errorf("defaults (-want +got):\n%s", diff)
	}
	if errs := c.Validate(); len(errs) > 0 {
		t.Errorf("defaults invalid: %v", errs)
	}
}

func TestFactoryConfigYAML(t *testing.T) {
	const doc = `
listen: 0.0.0.0:2576
max_message_bytes: 2048
dialect:
  nhs_number_authorities: [NHS, NHSNO]
  local_identifier_system: https://fhir.rx1.example.org/Id/hospital-number
  location_identifier_system: https://fhir.rx1.example.org/Id/location
  time_zone: Europe/London
  invalid_nhs_number: drop
  sex_codes: {I: other}
  cancel_admit_status: cancelled
`
	c := Factory{}.NewConfig().(*Config)
	dec := yaml.NewDecoder(strings.NewReader(doc))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil {
		t.Fatalf("decode: %v", err)
	}
	want := DefaultConfig()
	want.Listen = "0.0.0.0:2576"
	want.MaxMessageBytes = 2048
	want.Dialect.NHSNumberAuthorities = []string{"NHS", "NHSNO"}
	want.Dialect.LocalIdentifierSystem = "https://fhir.rx1.example.org/Id/hospital-number"
	want.Dialect.LocationIdentifierSystem = "https://fhir.rx1.example.org/Id/location"
	want.Dialect.InvalidNHSNumber = InvalidNHSNumberDrop
	want.Dialect.SexCodes["I"] = "other" // added to the defaults
	want.Dialect.CancelAdmitStatus = CancelAdmitCancelled
	if diff := cmp.Diff(want, *c); diff != "" {
		t.Errorf("decoded config (-want +got):\n%s", diff)
	}

	bad := Factory{}.NewConfig().(*Config)
	dec = yaml.NewDecoder(strings.NewReader("dialect:\n  timezone: UTC\n"))
	dec.KnownFields(true)
	if err := dec.Decode(bad); err == nil {
		t.Error("unknown dialect key accepted")
	}
}

func TestConfigValidateMergesErrors(t *testing.T) {
	c := DefaultConfig()
	c.Listen = ""
	c.Dialect.TimeZone = "Nowhere/Else"
	c.Dialect.InvalidNHSNumber = ""
	errs := c.Validate()
	var text []string
	for _, e := range errs {
		text = append(text, e.Error())
	}
	joined := strings.Join(text, "\n")
	for _, want := range []string{"listen", "time_zone", "invalid_nhs_number"} {
		if !strings.Contains(joined, want) {
			t.Errorf("errors %q do not mention %s", text, want)
		}
	}
	if _, err := (Factory{}).NewTranslator(&c); fault.CodeOf(err) != fault.CodeConfig {
		t.Errorf("NewTranslator(invalid) error = %v", err)
	}
	if _, err := (Factory{}).NewInbound(context.Background(), adapter.Settings{}, adaptertest.RefusingHost{}, &c); fault.CodeOf(err) != fault.CodeConfig {
		t.Errorf("NewInbound(invalid) error = %v", err)
	}
}

func TestFactoryRejectsForeignConfig(t *testing.T) {
	for _, cfg := range []any{nil, "pas", &mllp.InboundConfig{}, (*Config)(nil)} {
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
		got, err := tr.Translate(testEnvelope("factory", hl7(testMSH, pid("9990000018^^^NHS", nil), testPV1)))
		if err != nil {
			t.Fatalf("Translate: %v", err)
		}
		if got.PatientKey != "9990000018" || got.Event != "A01" {
			t.Errorf("translation key %q event %q", got.PatientKey, got.Event)
		}
	}
}

func TestFactoryNewInbound(t *testing.T) {
	c := DefaultConfig()
	c.Listen = "127.0.0.1:0"
	in := adaptertest.NewInbound(t, Factory{}, "pas", &c)
	if _, ok := in.(*mllp.Inbound); !ok {
		t.Errorf("NewInbound returned %T", in)
	}
}

// TestScreen checks what the PAS listener refuses before storing: an ADT
// event without a segment the translator needs for it whatever else the
// message holds. The translator refuses the same messages.
func TestScreen(t *testing.T) {
	msh := func(typ string) string { return strings.Replace(testMSH, "ADT^A01", typ, 1) }
	id := pid("9990000018^^^NHS^NH", nil)
	tests := []struct {
		name     string
		segments []string
		segment  string // the ERR segment; "" for none
	}{
		{"admission taken", []string{testMSH, id, testPV1}, ""},
		{"admission without PID", []string{testMSH, testPV1}, "PID"},
		{"admission without PV1", []string{testMSH, id}, "PV1"},
		{"discharge without PV1", []string{msh("ADT^A03"), id}, "PV1"},
		{"update without PV1 taken", []string{msh("ADT^A08"), id}, ""},
		{"person update without PID", []string{msh("ADT^A31")}, "PID"},
		{"merge taken", []string{msh("ADT^A40^ADT_A39"), id, "MRG|9990000026^^^NHS^NH"}, ""},
		{"merge without MRG", []string{msh("ADT^A40^ADT_A39"), id}, "MRG"},
		{"merge without PID", []string{msh("ADT^A40^ADT_A39"), "MRG|9990000026^^^NHS^NH"}, "PID"},
		{"trigger from EVN", []string{msh("ADT"), "EVN|A01", testPV1}, "PID"},
	}
	tr := newTestTranslator(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := hl7(tt.segments...)
			m, err := hl7v2.Parse(raw)
			if err != nil {
				t.Fatal(err)
			}
			ae := tr.Screen(m)
			switch {
			case tt.segment == "" && ae != nil:
				t.Errorf("refused %+v, want taken", ae)
			case tt.segment != "" && (ae == nil || ae.Segment != tt.segment || ae.Code != hl7v2.ErrCodeSegmentSequence):
				t.Errorf("refusal %+v, want ERR 100 on %s", ae, tt.segment)
			}
			if _, terr := tr.Translate(testEnvelope("screen", raw)); (terr != nil) != (tt.segment != "") {
				t.Errorf("translator error %v, screen %+v: they disagree", terr, ae)
			}
		})
	}
}
