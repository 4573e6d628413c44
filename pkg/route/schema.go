// Package route loads route files (YAML, strictly decoded, every error with
// file:line:col, all errors at once), compiles their CEL, and processes one
// message through a route: match, consent per destination, transform. The
// engine and `junction test` both use Process, so a route test runs exactly
// what production runs, minus the network.
package route

import (
	"github.com/junction-fhir/junction/pkg/yamlx"
)

// File is a route file as written.
type File struct {
	// Name identifies the route in metrics, audit and consumer names.
	Name yamlx.String `yaml:"name" yamlx:"required"`
	// Description says what the route is for.
	Description string `yaml:"description"`
	// Source names the inbound adapter and the events taken.
	Source SourceSpec `yaml:"source" yamlx:"required"`
	// Match is a CEL bool expression; false filters the message.
	Match yamlx.String `yaml:"match" yamlx:"nonnull"`
	// Consent declares purpose and the default decision.
	Consent ConsentSpec `yaml:"consent" yamlx:"required"`
	// Transform steps run in order for each permitted destination.
	Transform []StepSpec `yaml:"transform"`
	// Destinations receive the message; each may have its own condition.
	Destinations []DestinationSpec `yaml:"destinations" yamlx:"required,nonempty"`
	// Tests are run offline by `junction test`.
	Tests []TestSpec `yaml:"tests"`
}

// SourceSpec selects input.
type SourceSpec struct {
	// Adapter is the inbound adapter instance name from the config.
	Adapter yamlx.String `yaml:"adapter" yamlx:"required"`
	// Events lists message types taken ("ADT^A01", or "A01"); empty takes all.
	Events []yamlx.String `yaml:"events"`
}

// ConsentSpec is the route's consent declaration.
type ConsentSpec struct {
	// Purpose of use: direct-care, safeguarding, research, planning or
	// public-health.
	Purpose yamlx.String `yaml:"purpose" yamlx:"required"`
	// LegalBasis for the disclosure: direct-care, safeguarding, s251,
	// explicit-consent or statutory. It must support the purpose (see
	// consent.CheckRoute).
	LegalBasis yamlx.String `yaml:"legal_basis" yamlx:"required"`
	// Default decision, permit or deny, when nothing more specific decides.
	Default yamlx.String `yaml:"default" yamlx:"required"`
	// SkipConsentGate declares that the route does not consult the
	// patient's Consents. Only a safeguarding or statutory legal basis may
	// declare it; every skip is audited and counted.
	SkipConsentGate bool `yaml:"skip_consent_gate"`
	// SkipPos is where skip_consent_gate is written, set when it is
	// decoded.
	SkipPos yamlx.Pos `yaml:"-"`
}

// UnmarshalYAMLx decodes the declaration strictly and records where
// skip_consent_gate is written, so that a skip the legal basis does not
// allow is reported at its place.
func (c *ConsentSpec) UnmarshalYAMLx(n yamlx.Node, errs *yamlx.Errors) {
	type plain ConsentSpec // no methods, so decoded field by field
	var p plain
	n.DecodeTo(&p, errs)
	*c = ConsentSpec(p)
	if m := n.Node; m != nil {
		for i := 0; i+1 < len(m.Content); i += 2 {
			if m.Content[i].Value == "skip_consent_gate" {
				v := m.Content[i+1]
				c.SkipPos = yamlx.Pos{File: n.File, Line: v.Line, Col: v.Column}
			}
		}
	}
	if c.SkipPos.Line == 0 {
		c.SkipPos = n.Pos()
	}
}

// StepSpec is one transform step: exactly one of Keep and Replace is set.
type StepSpec struct {
	// Keep is a CEL bool over `resource`; entries for which it is false are
	// removed from the bundle.
	Keep yamlx.String `yaml:"keep"`
	// Replace is a CEL expression returning the new bundle (a map).
	Replace yamlx.String `yaml:"replace"`
	// Pos is where the step is written, set when it is decoded.
	Pos yamlx.Pos `yaml:"-"`
}

// UnmarshalYAMLx decodes the step strictly and records where it is, so a
// step with neither keep nor replace can be reported at its place.
func (s *StepSpec) UnmarshalYAMLx(n yamlx.Node, errs *yamlx.Errors) {
	type plain StepSpec // no methods, so decoded field by field
	var p plain
	n.DecodeTo(&p, errs)
	*s = StepSpec(p)
	s.Pos = n.Pos()
}

// DestinationSpec names a destination from the config.
type DestinationSpec struct {
	Name yamlx.String `yaml:"name" yamlx:"required"`
	// When is a CEL bool; false skips this destination.
	When yamlx.String `yaml:"when" yamlx:"nonnull"`
	// Payload is "fhir" (the transformed bundle, default) or "raw" (the
	// original input unchanged, for pass-through).
	Payload yamlx.String `yaml:"payload"`
}

// TestSpec is one offline route test.
type TestSpec struct {
	Name yamlx.String `yaml:"name" yamlx:"required"`
	// Input is a file path (relative to the route file) or inline text.
	Input InputSpec `yaml:"input" yamlx:"required"`
	// Patient is the patient index record the route sees as `patient`;
	// nil (left out) for the record the index makes of the message alone,
	// and an empty one for a patient the index does not know.
	Patient *PatientSpec `yaml:"patient"`
	// OptOuts, when given, is the national data opt-out list the test's
	// consent decisions read, as loaded and up to date: the NHS numbers
	// on it (an empty list, none). Left out, there is no list, as in an
	// engine with no opt-out list configured, so purposes the opt-out
	// applies to are denied.
	OptOuts *[]yamlx.String `yaml:"opt_outs"`
	// Expect says what should happen.
	Expect ExpectSpec `yaml:"expect" yamlx:"required"`
}

// InputSpec gives a test message.
type InputSpec struct {
	File   yamlx.String `yaml:"file"`
	Inline yamlx.String `yaml:"inline"`
	// ContentType defaults from the file extension (.hl7 is HL7 v2, .json FHIR).
	ContentType string `yaml:"content_type"`
	// Pos is where the input is written, set when it is decoded.
	Pos yamlx.Pos `yaml:"-"`
}

// UnmarshalYAMLx decodes the input strictly and records where it is.
func (in *InputSpec) UnmarshalYAMLx(n yamlx.Node, errs *yamlx.Errors) {
	type plain InputSpec // no methods, so decoded field by field
	var p plain
	n.DecodeTo(&p, errs)
	*in = InputSpec(p)
	in.Pos = n.Pos()
}

// PatientSpec is a test's patient index record, JSON-shaped as the
// patient variable gives it, and where it and each of its keys are
// written.
type PatientSpec struct {
	Record map[string]any
	Pos    yamlx.Pos
	KeyPos map[string]yamlx.Pos
}

// UnmarshalYAMLx decodes the record and records where it and its keys
// are.
func (p *PatientSpec) UnmarshalYAMLx(n yamlx.Node, errs *yamlx.Errors) {
	n.DecodeTo(&p.Record, errs)
	p.Pos = n.Pos()
	p.KeyPos = map[string]yamlx.Pos{}
	if n.Node == nil {
		return
	}
	for i := 0; i+1 < len(n.Node.Content); i += 2 {
		k := n.Node.Content[i]
		p.KeyPos[k.Value] = yamlx.Pos{File: p.Pos.File, Line: k.Line, Col: k.Column}
	}
}

// ExpectSpec is what a test expects.
type ExpectSpec struct {
	// Deliver lists the destinations that must receive the message; every
	// other destination must not.
	Deliver []yamlx.String `yaml:"deliver"`
	// Filtered says match must reject the message.
	Filtered bool `yaml:"filtered"`
	// Denied lists destinations consent must refuse.
	Denied []yamlx.String `yaml:"denied"`
	// Error says routing must fail (dead-letter) with this fault code.
	Error yamlx.String `yaml:"error"`
	// Assert are CEL bool expressions over `bundle` (the payload sent to
	// each delivered destination) that must all hold.
	Assert []yamlx.String `yaml:"assert"`
	// FHIR maps a destination name to a golden file (relative to the route
	// file) that must equal its payload; `junction test --update` rewrites it.
	FHIR map[string]yamlx.String `yaml:"fhir"`
}
