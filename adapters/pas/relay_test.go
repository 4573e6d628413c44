package pas

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	models "github.com/samply/golang-fhir-models/fhir-models/fhir"

	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/fault"
	"github.com/junction-fhir/junction/pkg/fhir"
)

// TestTranslateRelayed checks the minimal translation a relayed message
// gets: a message Bundle of its MessageHeader, a Patient per PID and the
// Provenance, marked Relayed and keyed by the first patient; that a type
// the translator maps is still translated whatever the relay patterns
// say; and that a type they do not name is refused as before.
func TestTranslateRelayed(t *testing.T) {
	msh := func(typ string) string { return strings.Replace(testMSH, "ADT^A01", typ, 1) }
	second := pid("9990000026^^^NHS^NH", map[int]string{5: "TESTPATIENT^SAM"})
	tests := []struct {
		name     string
		relay    []string
		raw      []byte
		event    string
		patients []string // NHS numbers of the Patients, in order
		focus    string   // MessageHeader.focus type, "" for none
		wantCode fault.Code
	}{
		{name: "order", relay: []string{"ORM^O01"}, event: "O01", patients: []string{"9990000018"}, focus: "Patient",
			raw: hl7(msh("ORM^O01^ORM_O01"), pid("9990000018^^^NHS^NH", nil), "PV1|1|I", "ORC|NW|ORD1", "OBR|1|ORD1||FBC^Full blood count^L")},
		{name: "every event of a type", relay: []string{"SIU^*"}, event: "S14", patients: []string{"9990000018"}, focus: "Patient",
			raw: hl7(msh("SIU^S14^SIU_S12"), "SCH|1", pid("9990000018^^^NHS^NH", nil))},
		{name: "a bed swap's two patients", relay: []string{"ADT^*"}, event: "A17", patients: []string{"9990000018", "9990000026"}, focus: "Patient",
			raw: hl7(msh("ADT^A17^ADT_A17"), "EVN|A17|20240715093512", pid("9990000018^^^NHS^NH", nil), testPV1, second, testPV1)},
		{name: "no patient", relay: []string{"MFN^*"}, event: "M02",
			raw: hl7(msh("MFN^M02^MFN_M02"), "MFI|PRA")},
		{name: "not named", relay: []string{"ORM^O01"}, wantCode: fault.CodeHL7Unsupported,
			raw: hl7(msh("OML^O21^OML_O21"), pid("9990000018^^^NHS^NH", nil))},
		{name: "nothing relayed", wantCode: fault.CodeHL7Unsupported,
			raw: hl7(msh("ADT^A17^ADT_A17"), pid("9990000018^^^NHS^NH", nil), testPV1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr, err := NewTranslator(DefaultDialect())
			if err != nil {
				t.Fatal(err)
			}
			tr.Relay(tt.relay)
			got, err := tr.Translate(testEnvelope("unit", tt.raw))
			if tt.wantCode != "" {
				if fault.CodeOf(err) != tt.wantCode {
					t.Fatalf("Translate: %v, want code %s", err, tt.wantCode)
				}
				return
			}
			if err != nil {
				t.Fatalf("Translate: %v", err)
			}
			if !got.Relayed || got.Event != tt.event || got.V2 == nil {
				t.Errorf("Relayed %v, Event %q, V2 set %v; want true, %q, true", got.Relayed, got.Event, got.V2 != nil, tt.event)
			}
			wantKey := ""
			if len(tt.patients) > 0 {
				wantKey = tt.patients[0]
			}
			if got.PatientKey != wantKey {
				t.Errorf("PatientKey %q, want %q", got.PatientKey, wantKey)
			}
			b, err := models.UnmarshalBundle(got.Bundle)
			if err != nil {
				t.Fatal(err)
			}
			if b.Type != models.BundleTypeMessage {
				t.Errorf("Bundle.type %v, want message", b.Type)
			}
			var types, numbers []string
			var header *models.MessageHeader
			for _, e := range b.Entry {
				rt, _ := fhir.ResourceType(e.Resource)
				types = append(types, rt)
				switch rt {
				case "MessageHeader":
					h, err := models.UnmarshalMessageHeader(e.Resource)
					if err != nil {
						t.Fatal(err)
					}
					header = &h
				case "Patient":
					p, err := models.UnmarshalPatient(e.Resource)
					if err != nil {
						t.Fatal(err)
					}
					for _, id := range p.Identifier {
						if id.System != nil && *id.System == "https://fhir.nhs.uk/Id/nhs-number" {
							numbers = append(numbers, *id.Value)
						}
					}
				}
			}
			wantTypes := []string{"MessageHeader"}
			for range tt.patients {
				wantTypes = append(wantTypes, "Patient")
			}
			wantTypes = append(wantTypes, "Provenance")
			if diff := cmp.Diff(wantTypes, types); diff != "" {
				t.Errorf("entries (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.patients, numbers); diff != "" {
				t.Errorf("NHS numbers (-want +got):\n%s", diff)
			}
			if header == nil || header.EventCoding.Code == nil || *header.EventCoding.Code != tt.event {
				t.Fatalf("MessageHeader %+v, want event %s", header, tt.event)
			}
			gotFocus := ""
			if len(header.Focus) > 0 && header.Focus[0].Type != nil {
				gotFocus = *header.Focus[0].Type
			}
			if gotFocus != tt.focus {
				t.Errorf("MessageHeader.focus %q, want %q", gotFocus, tt.focus)
			}
		})
	}
}

// TestRelayKeepsTranslations checks that relaying every ADT event leaves
// the events the translator maps translated in full.
func TestRelayKeepsTranslations(t *testing.T) {
	tr, err := NewTranslator(DefaultDialect())
	if err != nil {
		t.Fatal(err)
	}
	tr.Relay([]string{"ADT^*"})
	got, err := tr.Translate(testEnvelope("unit", hl7(testMSH, pid("9990000018^^^NHS^NH", nil), testPV1)))
	if err != nil {
		t.Fatal(err)
	}
	if got.Relayed || !strings.Contains(string(got.Bundle), `"resourceType":"Encounter"`) {
		t.Errorf("an A01 under ADT^* was relayed (%v) or has no Encounter", got.Relayed)
	}
}

// TestConfigRelay checks that an input cannot relay a type it
// translates, and can relay every event of that type.
func TestConfigRelay(t *testing.T) {
	c := DefaultConfig()
	c.Relay = []string{"ADT^*", "ORM^O01"}
	if errs := c.Validate(); len(errs) != 0 {
		t.Errorf("Validate: %v", errs)
	}
	c.Relay = []string{"ORM^O01", "ADT^A01"}
	errs := c.Validate()
	if len(errs) != 1 || errs[0].Error() != `relay[1]: "ADT^A01" is translated by this input; list only types it does not translate` {
		t.Errorf("Validate: %v, want relay[1] refused", errs)
	}
	tr, err := Factory{}.NewTranslator(&Config{InboundConfig: DefaultConfig().InboundConfig, Dialect: DefaultDialect()})
	if err != nil {
		t.Fatal(err)
	}
	if got := tr.(*Translator).RelayTypes(); len(got) != 0 {
		t.Errorf("RelayTypes with none configured: %v", got)
	}
	c.Relay = []string{"ORM^O01"}
	if tr, err = (Factory{}).NewTranslator(&c); err != nil {
		t.Fatal(err)
	}
	if got := tr.(*Translator).RelayTypes(); !cmp.Equal(got, []string{"ORM^O01"}) {
		t.Errorf("RelayTypes: %v, want [ORM^O01]", got)
	}
}

// TestTranslateRelayedPractice checks that the first patient of a
// relayed message gets the PD1 of its own PID group alone: a PD1 that
// follows a later PID is another patient's registered practice.
func TestTranslateRelayedPractice(t *testing.T) {
	msh := strings.Replace(testMSH, "ADT^A01", "ADT^A17^ADT_A17", 1)
	first := pid("9990000018^^^NHS^NH", nil)
	second := pid("9990000026^^^NHS^NH", map[int]string{5: "TESTPATIENT^SAM"})
	tests := []struct {
		name     string
		segments []string
		wantGP   int // generalPractitioner references of the first Patient
	}{
		{"the first patient's practice", []string{msh, first, "PD1|||Y99999", testPV1, second, testPV1}, 1},
		{"only the second patient's practice", []string{msh, first, testPV1, second, "PD1|||Y99999", testPV1}, 0},
		{"no practice", []string{msh, first, testPV1, second, testPV1}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr, err := NewTranslator(DefaultDialect())
			if err != nil {
				t.Fatal(err)
			}
			tr.Relay([]string{"ADT^A17"})
			got, err := tr.Translate(testEnvelope("unit", hl7(tt.segments...)))
			if err != nil {
				t.Fatalf("Translate: %v", err)
			}
			b, err := models.UnmarshalBundle(got.Bundle)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range b.Entry {
				if rt, _ := fhir.ResourceType(e.Resource); rt != "Patient" {
					continue
				}
				p, err := models.UnmarshalPatient(e.Resource)
				if err != nil {
					t.Fatal(err)
				}
				if len(p.GeneralPractitioner) != tt.wantGP {
					t.Errorf("first Patient's generalPractitioner %+v, want %d references", p.GeneralPractitioner, tt.wantGP)
				}
				return
			}
			t.Fatal("no Patient")
		})
	}
}

// TestTranslateRelayedPatientLimit checks that a relayed message naming
// more patients than a message may be about (envelope.MaxPatients) is
// refused as too large at once, rather than mapped into a Patient, and
// read from the patient index, for each of its PIDs.
func TestTranslateRelayedPatientLimit(t *testing.T) {
	msh := strings.Replace(testMSH, "ADT^A01", "ADT^A17^ADT_A17", 1)
	for _, tt := range []struct {
		name     string
		pids     int
		wantCode fault.Code
	}{
		{"at the limit", envelope.MaxPatients, ""},
		{"over it", envelope.MaxPatients + 1, fault.CodeTooLarge},
		{"a megabyte of them", 58000, fault.CodeTooLarge},
	} {
		t.Run(tt.name, func(t *testing.T) {
			segs := []string{msh, "EVN|A17|20240715093512"}
			for range tt.pids {
				segs = append(segs, "PID|||H1^^^RX1^MR")
			}
			tr, err := NewTranslator(DefaultDialect())
			if err != nil {
				t.Fatal(err)
			}
			tr.Relay([]string{"ADT^*"})
			got, err := tr.Translate(testEnvelope("many", hl7(segs...)))
			switch {
			case tt.wantCode == "" && (err != nil || !got.Relayed):
				t.Fatalf("Translate: %v, want the message relayed", err)
			case tt.wantCode != "" && fault.CodeOf(err) != tt.wantCode:
				t.Fatalf("Translate: %v, want code %s", err, tt.wantCode)
			}
		})
	}
}
