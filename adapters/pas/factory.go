package pas

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/junction-fhir/junction/adapters/mllp"
	"github.com/junction-fhir/junction/pkg/adapter"
	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/fault"
	"github.com/junction-fhir/junction/pkg/hl7v2"
)

// Type is the adapter type name used in configuration.
const Type = "pas"

// Factory builds PAS adapters: an MLLP listener for ADT feeds and the
// translator of what it receives.
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

// Config configures a PAS adapter instance: the MLLP listener's settings
// at the top level and the feed's dialect under "dialect".
type Config struct {
	mllp.InboundConfig `yaml:",inline"`
	// Dialect describes the feed's local conventions.
	Dialect Dialect `yaml:"dialect"`
}

// DefaultConfig returns the defaults: mllp.DefaultInboundConfig and
// DefaultDialect.
func DefaultConfig() Config {
	return Config{InboundConfig: mllp.DefaultInboundConfig(), Dialect: DefaultDialect()}
}

// Validate returns every problem with the listener settings and the
// dialect.
func (c *Config) Validate() []error {
	errs := c.InboundConfig.Validate()
	errs = append(errs, CheckRelay(c.Relay, (&Translator{events: adtEvents(c.Dialect)}).Events())...)
	return append(errs, c.Dialect.Validate()...)
}

// Type returns "pas".
func (Factory) Type() string { return Type }

// NewConfig returns a *Config holding the defaults.
func (Factory) NewConfig() any {
	c := DefaultConfig()
	return &c
}

// NewInbound builds the MLLP listener. Each stored message is partitioned
// by PatientKey under the configured dialect; ADT events the dialect's
// translator has no mapping for are refused before they are stored.
func (Factory) NewInbound(_ context.Context, set adapter.Settings, host adapter.Host, cfg any) (adapter.Inbound, error) {
	c, err := configOf(cfg)
	if err != nil {
		return nil, err
	}
	tr, err := NewTranslator(c.Dialect)
	if err != nil {
		return nil, fmt.Errorf("pas: %w", err)
	}
	in, err := NewPatientInbound(set, host, c.InboundConfig, c.Dialect, tr.Events())
	if err != nil {
		return nil, fmt.Errorf("pas: %w", err)
	}
	in.Screen(tr.Screen)
	return in, nil
}

// Screen returns the error the translator would refuse m with whatever
// its content, so the listener can refuse it before storing (HL7 error
// 100): an ADT event it maps without a segment that event needs (a PID;
// a PV1 for a visit event; a merge's MRG). It returns nil for other
// messages, which the translator takes or decides on.
func (t *Translator) Screen(m *hl7v2.Message) *hl7v2.AckError {
	if m.Segment("MSH").Component(9, 1, 1, 1) != "ADT" {
		return nil
	}
	event := m.Event()
	mapping, ok := t.events[event]
	if !ok {
		return nil
	}
	missing := func(seg string) *hl7v2.AckError {
		return &hl7v2.AckError{Segment: seg, Code: hl7v2.ErrCodeSegmentSequence, Severity: "E", Text: "ADT " + event + " needs a " + seg + " segment"}
	}
	if mapping.kind == eventMerge && m.Segment("PID") == nil {
		return missing("PID")
	}
	for _, rule := range mapping.segments {
		if rule.required && m.Segment(rule.segment) == nil {
			return missing(rule.segment)
		}
	}
	return nil
}

// NewPatientInbound builds an MLLP listener with the settings cfg that
// partitions each stored message by PatientKey under the dialect d, so a
// patient's messages keep their order. It serves the pas adapter and the
// other HL7 v2 feeds (pathology) whose messages carry the same PID
// segment; it keeps its own copy of d.
//
// types, when not nil, are the message types the feed's translator takes
// (adapter.EventLister); the listener refuses others before storing them,
// but for those cfg.Relay lists.
func NewPatientInbound(set adapter.Settings, host adapter.Host, cfg mllp.InboundConfig, d Dialect, types []string) (*mllp.Inbound, error) {
	d.NHSNumberAuthorities = append([]string(nil), d.NHSNumberAuthorities...)
	in, err := mllp.NewInbound(set, host, cfg, func(m *hl7v2.Message) string {
		return PatientKey(m, d)
	})
	if err != nil {
		return nil, err
	}
	if types != nil {
		in.AcceptOnly(append(slices.Clip(types), cfg.Relay...))
	}
	return in, nil
}

// NewTranslator builds the translator for the configured dialect.
func (Factory) NewTranslator(cfg any) (adapter.Translator, error) {
	c, err := configOf(cfg)
	if err != nil {
		return nil, err
	}
	t, err := NewTranslator(c.Dialect)
	if err != nil {
		return nil, err
	}
	t.Relay(c.Relay)
	return t, nil
}

// configOf checks that cfg is a valid pas Config.
func configOf(cfg any) (*Config, error) {
	var c *Config
	switch v := cfg.(type) {
	case *Config:
		c = v
	case Config:
		c = &v
	}
	if c == nil {
		return nil, fault.Newf(fault.CodeConfig, "pas: config is %T, want *pas.Config", cfg)
	}
	if errs := c.Validate(); len(errs) > 0 {
		return nil, fault.Wrap(fault.Permanent, fault.CodeConfig, "pas: invalid config", errors.Join(errs...))
	}
	return c, nil
}
