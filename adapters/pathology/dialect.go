package pathology

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/junction-fhir/junction/adapters/pas"
	"github.com/junction-fhir/junction/pkg/adapter"
)

// Placeholder systems under a made-up trust domain. Each trust should set
// its own, since receivers match orders and codes on system and value.
const (
	// DefaultLocalCodeSystem is the placeholder code system of the
	// laboratory's local test codes (OBR-4, OBX-3 and OBX-5 codes sent
	// with coding system "L", "99zzz" or none).
	DefaultLocalCodeSystem = "https://fhir.example-trust.nhs.uk/CodeSystem/local-pathology-code"
	// DefaultPlacerOrderSystem is the placeholder identifier system of
	// placer order numbers (ORC-2, OBR-2).
	DefaultPlacerOrderSystem = "https://fhir.example-trust.nhs.uk/Id/placer-order-number"
	// DefaultFillerOrderSystem is the placeholder identifier system of
	// filler order numbers (ORC-3, OBR-3): the laboratory's accession
	// numbers.
	DefaultFillerOrderSystem = "https://fhir.example-trust.nhs.uk/Id/filler-order-number"
	// DefaultResultKeySystem is the placeholder identifier system of the
	// result keys the translator gives each ServiceRequest,
	// DiagnosticReport, Specimen and Observation (see the package doc).
	DefaultResultKeySystem = "https://fhir.example-trust.nhs.uk/Id/lab-result-key"
)

// LabDialect describes a laboratory feed's local conventions. It is
// configured per adapter instance under "lab".
type LabDialect struct {
	// LocalCodeSystem is the system given to local codes.
	LocalCodeSystem string `yaml:"local_code_system"`
	// PlacerOrderSystem and FillerOrderSystem are the identifier systems
	// of order numbers that do not carry a universal id of their own.
	PlacerOrderSystem string `yaml:"placer_order_system"`
	FillerOrderSystem string `yaml:"filler_order_system"`
	// ResultKeySystem is the identifier system of result keys: the first
	// identifier of every ServiceRequest, DiagnosticReport, Specimen and
	// Observation, the same in every message about the same result, so
	// that a FHIR server updates a corrected result in place.
	ResultKeySystem string `yaml:"result_key_system"`
	// CodeMaps lists FHIR ConceptMap JSON files. Where a map has a target
	// for the system and code of an OBR-4 or OBX-3 coding, with
	// equivalence "equivalent" or "equal", the target is added as another
	// coding. The files are read when the translator is built.
	CodeMaps []string `yaml:"code_maps"`
	// CodingSystems maps the laboratory's own coding system names (CWE-3,
	// compared without regard to case) to code system URIs, or to
	// "local" for the local code system, ahead of the names HL7 defines
	// ("WINPATH": local, or a URI of the trust's). A name neither maps
	// becomes "urn:hl7v2:coding-system:" and the name.
	CodingSystems map[string]string `yaml:"coding_systems"`
}

// LocalSystem is the CodingSystems value naming the local code system.
const LocalSystem = "local"

// DefaultLabDialect returns the placeholder systems and no code maps.
func DefaultLabDialect() LabDialect {
	return LabDialect{
		LocalCodeSystem:   DefaultLocalCodeSystem,
		PlacerOrderSystem: DefaultPlacerOrderSystem,
		FillerOrderSystem: DefaultFillerOrderSystem,
		ResultKeySystem:   DefaultResultKeySystem,
	}
}

// Validate returns every problem with l, including every problem found in
// the code maps it names.
func (l *LabDialect) Validate() []error {
	_, mapErrs := loadCodeMaps(l.CodeMaps)
	return append(l.systemErrors(), mapErrs...)
}

// systemErrors returns a problem for each system that is not an absolute
// URI.
func (l *LabDialect) systemErrors() []error {
	var errs []error
	for _, f := range []struct{ name, value string }{
		{"lab.local_code_system", l.LocalCodeSystem},
		{"lab.placer_order_system", l.PlacerOrderSystem},
		{"lab.filler_order_system", l.FillerOrderSystem},
		{"lab.result_key_system", l.ResultKeySystem},
	} {
		if err := checkURI(f.value); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f.name, err))
		}
	}
	for _, name := range slices.Sorted(maps.Keys(l.CodingSystems)) {
		if v := l.CodingSystems[name]; v != LocalSystem {
			if err := checkURI(v); err != nil {
				errs = append(errs, fmt.Errorf("lab.coding_systems (%s): %w (or %q)", name, err, LocalSystem))
			}
		}
	}
	return errs
}

// codingSystems returns l.CodingSystems keyed by upper-case name, with
// "local" resolved to the local code system.
func (l *LabDialect) codingSystems() map[string]string {
	if len(l.CodingSystems) == 0 {
		return nil
	}
	out := make(map[string]string, len(l.CodingSystems))
	for name, v := range l.CodingSystems {
		if v == LocalSystem {
			v = l.LocalCodeSystem
		}
		out[strings.ToUpper(name)] = v
	}
	return out
}

// checkURI checks that s is an absolute URI usable as a system, by the
// pas adapter's rule (pas.CheckSystem).
func checkURI(s string) error { return pas.CheckSystem(s) }

// Placeholders returns the lab dialect's settings that hold a placeholder
// system (adapter.IsPlaceholder), as paths under prefix, sorted.
func (l LabDialect) Placeholders(prefix string) []string {
	settings := map[string]string{
		"local_code_system":   l.LocalCodeSystem,
		"placer_order_system": l.PlacerOrderSystem,
		"filler_order_system": l.FillerOrderSystem,
		"result_key_system":   l.ResultKeySystem,
	}
	for name, v := range l.CodingSystems {
		settings["coding_systems."+name] = v
	}
	return adapter.PlaceholderSettings(prefix, settings)
}

// Placeholders implements adapter.PlaceholderUser: the patient dialect's
// placeholders, then the lab dialect's.
func (c *Config) Placeholders() []string {
	return append(c.Dialect.Placeholders("dialect."), c.Lab.Placeholders("lab.")...)
}

// Placeholders implements adapter.PlaceholderUser.
func (c *OrdersConfig) Placeholders() []string {
	return adapter.PlaceholderSettings("order.", map[string]string{
		"placer_order_system": c.Order.PlacerOrderSystem,
		"local_code_system":   c.Order.LocalCodeSystem,
	})
}
