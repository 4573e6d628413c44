// Package nhs holds NHS-specific identifiers and rules: the NHS number and
// its modulus 11 check, ODS codes, and the canonical URLs of the UK Core
// FHIR R4 profiles, extensions, code systems and identifier systems that
// Junction emits, with the few URLs Junction defines itself, marked as
// such (see ukcore.go).
//
// Every UK Core URL here was checked against the UK Core package
// (UKCore.R4.STU.02.00.00, version 2.0.0); the package tests check them
// again whenever the corpus is present.
package nhs

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
