package pathology

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/junction-fhir/junction/adapters/mllp"
	"github.com/junction-fhir/junction/adapters/pas"
	"github.com/junction-fhir/junction/pkg/adapter"
	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/fault"
	"github.com/junction-fhir/junction/pkg/hl7v2"
)

// Type is the adapter type name used in configuration.
const Type = "pathology"

// DefaultListen is the default MLLP listen address: the port after the PAS
// listener's 2575, so both run on one host with their defaults.
const DefaultListen = "127.0.0.1:2576"

// Factory builds pathology adapters: an MLLP listener for results feeds
// (ORU^R01) and the translator of what it receives.
type Factory struct{}

// Compile-time checks that Factory is what the engine expects.
var (
	_ adapter.InboundFactory    = Factory{}
	_ adapter.TranslatorFactory = Factory{}
	_ adapter.ContentStorer     = Factory{}
)

// StoresContent returns envelope.ContentTypeHL7v2: the listener stores
// each HL7 v2 message as it came.
func (Factory) StoresContent() string { return envelope.ContentTypeHL7v2 }

// Config configures a pathology adapter instance: the MLLP listener's
// settings at the top level, the patient conventions of the feed under
// "dialect" (the same settings as a pas feed) and the laboratory
// conventions under "lab".
type Config struct {
	mllp.InboundConfig `yaml:",inline"`
	// Dialect describes how the feed identifies patients and its time zone.
	Dialect pas.Dialect `yaml:"dialect"`
	// Lab describes the laboratory's local conventions.
	Lab LabDialect `yaml:"lab"`
}

// DefaultConfig returns the defaults: mllp.DefaultInboundConfig listening
// on DefaultListen, pas.DefaultDialect and DefaultLabDialect.
func DefaultConfig() Config {
	in := mllp.DefaultInboundConfig()
	in.Listen = DefaultListen
	return Config{InboundConfig: in, Dialect: pas.DefaultDialect(), Lab: DefaultLabDialect()}
}

// Validate returns every problem with the listener settings, the dialect
// and the laboratory settings, including every problem in the code maps
// it names (which it reads).
func (c *Config) Validate() []error {
	errs := c.InboundConfig.Validate()
	errs = append(errs, pas.CheckRelay(c.Relay, (*Translator)(nil).Events())...)
	errs = append(errs, c.Dialect.Validate()...)
	return append(errs, c.Lab.Validate()...)
}

// Type returns "pathology".
func (Factory) Type() string { return Type }

// NewConfig returns a *Config holding the defaults.
func (Factory) NewConfig() any {
	c := DefaultConfig()
	return &c
}

// NewInbound builds the MLLP listener with pas.NewPatientInbound. Each
// stored message is partitioned by pas.PatientKey under the configured
// dialect, so a patient's results keep their order, and keep it relative
// to the same patient's ADT when both feeds use the same dialect. Message
// types other than ORU^R01 are refused before they are stored, but for
// those the input relays.
func (Factory) NewInbound(_ context.Context, set adapter.Settings, host adapter.Host, cfg any) (adapter.Inbound, error) {
	c, err := configOf(cfg)
	if err != nil {
		return nil, err
	}
	in, err := pas.NewPatientInbound(set, host, c.InboundConfig, c.Dialect, (*Translator)(nil).Events())
	if err != nil {
		return nil, fmt.Errorf("pathology: %w", err)
	}
	in.Screen(Screen)
	return in, nil
}

// Screen returns the error the translator would refuse m with in every
// case, so the listener can refuse it before storing: a result message
// with no PID, results for more than one patient, or no OBR (HL7 error
// 100), and a report without a test code or a result without an
// observation code (101, see missingCode). It returns nil for messages
// the translator takes or decides on otherwise, and for those of other
// types, which the listener takes only to relay.
func Screen(m *hl7v2.Message) *hl7v2.AckError {
	if m.Segment("MSH").Component(9, 1, 1, 1) != "ORU" || m.Event() != "R01" {
		return nil // relayed, not translated
	}
	switch pids := len(m.SegmentsNamed("PID")); {
	case pids == 0:
		return &hl7v2.AckError{Segment: "PID", Code: hl7v2.ErrCodeSegmentSequence, Severity: "E", Text: "ORU^R01 needs a PID segment"}
	case pids > 1 && !onePatient(m):
		return &hl7v2.AckError{Segment: "PID", Sequence: 2, Code: hl7v2.ErrCodeSegmentSequence, Severity: "E",
			Text: "results for more than one patient in one message are not taken; send one message per patient"}
	}
	if m.CountSegments("OBR") == 0 {
		return &hl7v2.AckError{Segment: "OBR", Code: hl7v2.ErrCodeSegmentSequence, Severity: "E", Text: "ORU^R01 needs an OBR segment"}
	}
	return missingCode(m)
}

// onePatient reports whether every PID of m names its patient by the same
// identifiers (PID-3, as sent, not empty): a laboratory system that
// repeats the patient before each group of results (PATIENT_RESULT, which
// ORU^R01 lets repeat) sends one patient's results. Anything less than
// the same identifiers could be another patient.
func onePatient(m *hl7v2.Message) bool {
	pids := m.SegmentsNamed("PID")
	first := strings.TrimSpace(pids[0].Field(3))
	if first == "" {
		return false
	}
	for _, p := range pids[1:] {
		if strings.TrimSpace(p.Field(3)) != first {
			return false
		}
	}
	return true
}

// missingCode finds the first OBR without a test code (OBR-4) and the
// first OBX with a value but no observation code (OBX-3), both required
// in HL7 v2: a report or a result nobody can tell the test of would reach
// a clinician as "Unknown", so the message is refused (HL7 error 101) for
// the laboratory to correct. An OBX with neither code nor value carries
// no result and is taken (see codeSent).
func missingCode(m *hl7v2.Message) *hl7v2.AckError {
	obr, obx := 0, 0
	for _, seg := range m.Segments() {
		switch seg.Name() {
		case "OBR":
			obr++
			if !codeSent(seg, 4) {
				return &hl7v2.AckError{Segment: "OBR", Sequence: obr, Field: 4, Code: hl7v2.ErrCodeRequiredField, Severity: "E",
					Text: "OBR-4 (universal service identifier) is empty: a report needs its test code"}
			}
		case "OBX":
			obx++
			if !codeSent(seg, 3) && valueSent(seg) {
				return &hl7v2.AckError{Segment: "OBX", Sequence: obx, Field: 3, Code: hl7v2.ErrCodeRequiredField, Severity: "E",
					Text: "OBX-3 (observation identifier) is empty: a result needs its test code"}
			}
		}
	}
	return nil
}

// codeSent reports whether a coded field (its first repetition) names
// anything: an identifier, text, alternate identifier or text, or
// original text.
func codeSent(seg *hl7v2.Segment, field int) bool {
	for _, c := range []int{1, 2, 4, 5, 9} {
		if strings.TrimSpace(value(seg.Component(field, 1, c, 1))) != "" {
			return true
		}
	}
	return false
}

// statusOnlyFinal reports an OBX whose status is U ("status change to
// final without retransmitting results already sent as preliminary",
// HL7 table 0085) and that holds no value.
func statusOnlyFinal(obx *hl7v2.Segment) bool {
	return strings.EqualFold(strings.TrimSpace(value(obx.Component(11, 1, 1, 1))), "U") && !valueSent(obx)
}

// valueSent reports whether OBX-5 holds anything but separators.
func valueSent(obx *hl7v2.Segment) bool {
	v := strings.Trim(obx.Field(5), " ^~&")
	return v != "" && v != `""`
}

// NewTranslator builds the translator for the configured dialects, loading
// the code maps.
func (Factory) NewTranslator(cfg any) (adapter.Translator, error) {
	c, err := configOf(cfg)
	if err != nil {
		return nil, err
	}
	t, err := NewTranslator(c.Dialect, c.Lab)
	if err != nil {
		return nil, err
	}
	t.patients.Relay(c.Relay)
	return t, nil
}

// configOf checks that cfg is a valid pathology Config.
func configOf(cfg any) (*Config, error) {
	var c *Config
	switch v := cfg.(type) {
	case *Config:
		c = v
	case Config:
		c = &v
	}
	if c == nil {
		return nil, fault.Newf(fault.CodeConfig, "pathology: config is %T, want *pathology.Config", cfg)
	}
	if errs := c.Validate(); len(errs) > 0 {
		return nil, fault.Wrap(fault.Permanent, fault.CodeConfig, "pathology: invalid config", errors.Join(errs...))
	}
	return c, nil
}
