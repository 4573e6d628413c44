// Package nhs holds NHS-specific identifiers and rules: the NHS number and
// its modulus 11 check, ODS codes, and the canonical URLs of the UK Core
// FHIR R4 profiles, extensions, code systems and identifier systems that
// Junction emits.
//
// Every URL here was checked against the UK Core package
// (UKCore.R4.STU.02.00.00, version 2.0.0); the package tests check them
// again whenever the corpus is present.
package nhs

// Identifier systems.
const (
	// SystemNHSNumber is the identifier system of the NHS number.
	SystemNHSNumber = "https://fhir.nhs.uk/Id/nhs-number"
	// SystemODSOrganization is the identifier system of ODS organisation
	// codes (trusts, GP practices).
	SystemODSOrganization = "https://fhir.nhs.uk/Id/ods-organization-code"
	// SystemODSSite is the identifier system of ODS site codes.
	SystemODSSite = "https://fhir.nhs.uk/Id/ods-site-code"
	// SystemGMC is the identifier system of General Medical Council
	// reference numbers.
	SystemGMC = "https://fhir.hl7.org.uk/Id/gmc-number"
	// SystemGMP is the identifier system of GMP (GP) numbers.
	SystemGMP = "https://fhir.hl7.org.uk/Id/gmp-number"
)

// UK Core profiles.
const (
	// ProfilePatient is the canonical URL of the UK Core Patient profile.
	ProfilePatient = "https://fhir.hl7.org.uk/StructureDefinition/UKCore-Patient"
	// ProfileEncounter is the canonical URL of the UK Core Encounter
	// profile.
	ProfileEncounter = "https://fhir.hl7.org.uk/StructureDefinition/UKCore-Encounter"
	// ProfileMessageHeader is the canonical URL of the UK Core
	// MessageHeader profile.
	ProfileMessageHeader = "https://fhir.hl7.org.uk/StructureDefinition/UKCore-MessageHeader"
	// ProfileBundle is the canonical URL of the UK Core Bundle profile.
	ProfileBundle = "https://fhir.hl7.org.uk/StructureDefinition/UKCore-Bundle"
)

// UK Core extensions and code systems.
const (
	// ExtNHSNumberVerificationStatus is the URL of the extension on
	// Patient.identifier:nhsNumber that carries the trace status of the
	// number (a CodeableConcept).
	ExtNHSNumberVerificationStatus = "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-NHSNumberVerificationStatus"
	// CodeSystemNHSNumberVerificationStatusEngland is the code system of
	// the NHS Data Dictionary NHS Number Status Indicator codes (01-08)
	// used in England.
	CodeSystemNHSNumberVerificationStatusEngland = "https://fhir.hl7.org.uk/CodeSystem/UKCore-NHSNumberVerificationStatusEngland"
)

// VerificationStatusDisplay returns the display of an England NHS number
// status indicator code ("01" to "08"), as published in the UK Core code
// system, and whether the code is known.
func VerificationStatusDisplay(code string) (string, bool) {
	switch code {
	case "01":
		return "Number present and verified", true
	case "02":
		return "Number present but not traced", true
	case "03":
		return "Trace required", true
	case "04":
		return "Trace attempted - No match or multiple match found", true
	case "05":
		return "Trace needs to be resolved - (NHS number or patient detail conflict)", true
	case "06":
		return "Trace in progress", true
	case "07":
		return "Number not present and trace not required", true
	case "08":
		return "Trace postponed (baby under six weeks old)", true
	}
	return "", false
}
