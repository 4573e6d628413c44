package pas

import (
	"errors"
	"fmt"
	"iter"
	"maps"
	"net/url"
	"slices"
	"strings"
	"time"
	// The translator resolves local times in the dialect's time zone even
	// in images built FROM scratch, which have no zone database.
	_ "time/tzdata"

	"github.com/junction-fhir/junction/pkg/adapter"
)

// What to do with an identifier that is flagged as an NHS number but
// fails the modulus 11 check.
const (
	// InvalidNHSNumberKeep keeps the value as a patient identifier without
	// a system (typed "NHS number failing its check digit"), never as an
	// NHS number and never in the local system, so that no receiver
	// matches patients on it.
	InvalidNHSNumberKeep = "keep-unverified"
	// InvalidNHSNumberDrop leaves the value out of the FHIR output.
	InvalidNHSNumberDrop = "drop"
)

// Placeholder identifier systems under a made-up trust domain. Each trust
// should set its own (by convention https://fhir.<trust>.nhs.uk/Id/...),
// since receivers match patients and encounters on system and value.
const (
	// DefaultLocalIdentifierSystem is the placeholder system of local
	// patient identifiers (hospital number, MRN).
	DefaultLocalIdentifierSystem = "https://fhir.example-trust.nhs.uk/Id/local-patient-identifier"
	// DefaultVisitNumberSystem is the placeholder system of visit numbers.
	DefaultVisitNumberSystem = "https://fhir.example-trust.nhs.uk/Id/visit-number"
)

// Dialect describes how one PAS feed uses HL7 v2: the local conventions
// that differ between suppliers and trusts. It is configured per adapter
// instance under "dialect".
type Dialect struct {
	// NHSNumberAuthorities lists the codes that mark a patient identifier
	// (PID-2, PID-3, PID-4) as an NHS number when they appear as its
	// assigning authority (CX-4.1) or its identifier type code (CX-5).
	// Compared without regard to case.
	NHSNumberAuthorities []string `yaml:"nhs_number_authorities"`
	// ExternalIDIsNHSNumber takes a patient identifier with no assigning
	// authority in PID-2 (patient ID, external) as an NHS number, as
	// older (v2.3) feeds send it there bare; so too MRG-4, its prior
	// value in a merge. It is checked as any NHS number is. Off (the
	// default), such an identifier is a local one: a ten-digit hospital
	// number may pass the NHS number check by chance.
	ExternalIDIsNHSNumber bool `yaml:"external_id_is_nhs_number"`
	// LocalIdentifierSystem is the identifier system given to every other
	// patient identifier (hospital number, MRN).
	LocalIdentifierSystem string `yaml:"local_identifier_system"`
	// IdentifierSystems maps an assigning authority (CX-4.1, compared
	// without regard to case) to the identifier system its patient
	// identifiers get instead of LocalIdentifierSystem: another trust's
	// hospital numbers, a National Insurance number. NHS number
	// authorities may not be mapped.
	IdentifierSystems map[string]string `yaml:"identifier_systems"`
	// VisitNumberSystem is the identifier system of the visit number
	// (PV1-19) on the Encounter.
	VisitNumberSystem string `yaml:"visit_number_system"`
	// LocationIdentifierSystem is the identifier system of the trust's
	// location codes. When set, each Location made from PV1-3 or PV1-6
	// gets an identifier in it whose value is the location's code path
	// (see locationCode), so receivers can match a ward, room or bed
	// across messages; the fhir destination then updates one Location
	// per place instead of writing one per message. Empty (the default)
	// gives Locations no identifier: there is no national system for
	// local location codes, and a placeholder shared by every trust would
	// merge different trusts' wards of the same code.
	LocationIdentifierSystem string `yaml:"location_identifier_system"`
	// TimeZone is the IANA zone of times the feed sends without an offset.
	TimeZone string `yaml:"time_zone"`
	// InvalidNHSNumber is InvalidNHSNumberKeep or InvalidNHSNumberDrop.
	InvalidNHSNumber string `yaml:"invalid_nhs_number"`
	// SexCodes maps the feed's administrative sex codes (PID-8, NK1-15),
	// compared without regard to case, to a FHIR gender: male, female,
	// other or unknown. DefaultDialect fills it with HL7 table 0001 and
	// the NHS Data Dictionary person gender codes; entries configured in
	// YAML are added to those (or replace the one with the same code). A
	// code not in the table leaves gender out (flagged DQSexInvalid for
	// the patient's PID-8).
	SexCodes map[string]string `yaml:"sex_codes"`
	// CancelAdmitStatus is the Encounter.status an A11 (cancel admit or
	// visit) gives: CancelAdmitEnteredInError (the default: the admission
	// should never have been recorded) or CancelAdmitCancelled (the visit
	// was planned or begun and called off), for feeds that use A11 for
	// the latter.
	CancelAdmitStatus string `yaml:"cancel_admit_status"`
	// MaritalStatusCodes is the code table of PID-16: MaritalStatusNHS
	// (the default) or MaritalStatusHL7.
	MaritalStatusCodes string `yaml:"marital_status_codes"`
}

// Code tables a feed's PID-16 may use (Dialect.MaritalStatusCodes). They
// agree on S, M, D and W; in the NHS Data Dictionary's P is separated, N
// not disclosed, 8 not applicable and 9 not known, where HL7 table 0002's
// P is domestic partner and N annulled.
const (
	// MaritalStatusNHS reads PID-16 as the NHS Data Dictionary's person
	// marital status, falling back to HL7 table 0002 for codes that list
	// does not have.
	MaritalStatusNHS = "nhs"
	// MaritalStatusHL7 reads PID-16 as HL7 table 0002.
	MaritalStatusHL7 = "hl7"
)

// Encounter statuses an A11 may give (Dialect.CancelAdmitStatus).
const (
	CancelAdmitEnteredInError = "entered-in-error"
	CancelAdmitCancelled      = "cancelled"
)

// defaultSexCodes is the sex code table of DefaultDialect: HL7 table 0001
// (M, F, O, U, A, N) and the NHS Data Dictionary person gender codes (1
// male, 2 female, 9 indeterminate, X and 0 not known), the latter as UK
// Core's AdministrativeGender concept map pairs them.
func defaultSexCodes() map[string]string {
	return map[string]string{
		"M": "male", "F": "female", "O": "other", "A": "other", "N": "other", "U": "unknown",
		"1": "male", "2": "female", "9": "other", "X": "unknown", "0": "unknown",
	}
}

// DefaultDialect returns the dialect of a typical English PAS feed.
func DefaultDialect() Dialect {
	return Dialect{
		NHSNumberAuthorities:  []string{"NHS", "NH", "NHSNBR", "NHSNMBR"},
		LocalIdentifierSystem: DefaultLocalIdentifierSystem,
		VisitNumberSystem:     DefaultVisitNumberSystem,
		TimeZone:              "Europe/London",
		InvalidNHSNumber:      InvalidNHSNumberKeep,
		SexCodes:              defaultSexCodes(),
		CancelAdmitStatus:     CancelAdmitEnteredInError,
		MaritalStatusCodes:    MaritalStatusNHS,
	}
}

// Validate returns every problem with d.
func (d *Dialect) Validate() []error {
	var errs []error
	for i, a := range d.NHSNumberAuthorities {
		if strings.TrimSpace(a) == "" {
			errs = append(errs, fmt.Errorf("dialect.nhs_number_authorities[%d]: empty code", i))
		}
	}
	if err := CheckSystem(d.LocalIdentifierSystem); err != nil {
		errs = append(errs, fmt.Errorf("dialect.local_identifier_system: %w", err))
	}
	for a, err := range codeKeys(d.IdentifierSystems, "dialect.identifier_systems", "assigning authority") {
		switch {
		case err != nil:
			errs = append(errs, err)
		case slices.ContainsFunc(d.NHSNumberAuthorities, func(n string) bool { return strings.EqualFold(strings.TrimSpace(n), strings.TrimSpace(a)) }):
			errs = append(errs, fmt.Errorf("dialect.identifier_systems.%s: an NHS number authority; its numbers are NHS numbers", a))
		}
		if err := CheckSystem(d.IdentifierSystems[a]); err != nil {
			errs = append(errs, fmt.Errorf("dialect.identifier_systems.%s: %w", a, err))
		}
	}
	if err := CheckSystem(d.VisitNumberSystem); err != nil {
		errs = append(errs, fmt.Errorf("dialect.visit_number_system: %w", err))
	}
	if d.LocationIdentifierSystem != "" {
		if err := CheckSystem(d.LocationIdentifierSystem); err != nil {
			errs = append(errs, fmt.Errorf("dialect.location_identifier_system: %w", err))
		}
	}
	if d.TimeZone == "" {
		errs = append(errs, errors.New("dialect.time_zone: required (for example Europe/London)"))
	} else if _, err := time.LoadLocation(d.TimeZone); err != nil {
		errs = append(errs, fmt.Errorf("dialect.time_zone: unknown zone %q", d.TimeZone))
	}
	switch d.InvalidNHSNumber {
	case InvalidNHSNumberKeep, InvalidNHSNumberDrop:
	default:
		errs = append(errs, fmt.Errorf("dialect.invalid_nhs_number: %q is not %q or %q",
			d.InvalidNHSNumber, InvalidNHSNumberKeep, InvalidNHSNumberDrop))
	}
	for code, err := range codeKeys(d.SexCodes, "dialect.sex_codes", "code") {
		if err != nil {
			errs = append(errs, err)
		}
		if _, ok := genderOf(d.SexCodes[code]); !ok {
			errs = append(errs, fmt.Errorf("dialect.sex_codes.%s: %q is not male, female, other or unknown", code, d.SexCodes[code]))
		}
	}
	switch d.CancelAdmitStatus {
	case CancelAdmitEnteredInError, CancelAdmitCancelled:
	default:
		errs = append(errs, fmt.Errorf("dialect.cancel_admit_status: %q is not %q or %q",
			d.CancelAdmitStatus, CancelAdmitEnteredInError, CancelAdmitCancelled))
	}
	switch d.MaritalStatusCodes {
	case MaritalStatusNHS, MaritalStatusHL7:
	default:
		errs = append(errs, fmt.Errorf("dialect.marital_status_codes: %q is not %q or %q",
			d.MaritalStatusCodes, MaritalStatusNHS, MaritalStatusHL7))
	}
	return errs
}

// codeKeys yields the keys of m, a table keyed by v2 codes (compared
// upper-cased, without surrounding blanks), in sorted order, each with an
// error when it is empty or the same code as an earlier key. what names
// the table and kind its keys.
func codeKeys(m map[string]string, what, kind string) iter.Seq2[string, error] {
	return func(yield func(string, error) bool) {
		seen := map[string]string{}
		for _, k := range slices.Sorted(maps.Keys(m)) {
			norm := strings.ToUpper(strings.TrimSpace(k))
			var err error
			switch {
			case norm == "":
				err = fmt.Errorf("%s: empty %s", what, kind)
			case seen[norm] != "":
				err = fmt.Errorf("%s: %q and %q are the same %s", what, seen[norm], k, kind)
			}
			seen[norm] = k
			if !yield(k, err) {
				return
			}
		}
	}
}

// CheckSystem checks that s is an absolute URI usable as an identifier or
// code system: not empty, with a scheme, and without blanks or HL7 v2
// delimiters. Its error quotes s, which is configuration, not patient
// data.
func CheckSystem(s string) error {
	if s == "" {
		return errors.New("required")
	}
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" || strings.ContainsAny(s, " \t\r\n|^~\\&") {
		return fmt.Errorf("%q is not an absolute URI", s)
	}
	return nil
}

// isNHSAuthority reports whether code marks an identifier as an NHS number.
func (d *Dialect) isNHSAuthority(code string) bool {
	code = strings.TrimSpace(code)
	if code == "" {
		return false
	}
	for _, a := range d.NHSNumberAuthorities {
		if strings.EqualFold(strings.TrimSpace(a), code) {
			return true
		}
	}
	return false
}

// Placeholders returns the dialect's settings that hold a placeholder
// system (adapter.IsPlaceholder), as paths under prefix, sorted.
func (d Dialect) Placeholders(prefix string) []string {
	settings := map[string]string{
		"local_identifier_system":    d.LocalIdentifierSystem,
		"visit_number_system":        d.VisitNumberSystem,
		"location_identifier_system": d.LocationIdentifierSystem,
	}
	for a, v := range d.IdentifierSystems {
		settings["identifier_systems."+a] = v
	}
	return adapter.PlaceholderSettings(prefix, settings)
}

// Placeholders implements adapter.PlaceholderUser.
func (c *Config) Placeholders() []string { return c.Dialect.Placeholders("dialect.") }
