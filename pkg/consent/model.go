package consent

import (
	"fmt"
	"strings"
	"time"
)

// Code systems the engine understands.
const (
	// SystemConfidentiality is the HL7 v3 confidentiality code system
	// (U, L, M, N, R, V).
	SystemConfidentiality = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
	// SystemRestricted is Junction's code system of security labels for
	// information that law restricts or guidance protects.
	SystemRestricted = "https://junction-fhir.github.io/security-label"
	// SystemPurpose is Junction's code system of route purposes; every
	// route purpose name is a code in it.
	SystemPurpose = "https://junction-fhir.github.io/purpose"
	// SystemActReason is the HL7 v3 ActReason code system, used by IHE
	// Privacy Consent on FHIR for purposes of use.
	SystemActReason = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
	// SystemResourceTypes is the code system of FHIR resource types, used
	// by provision.class.
	SystemResourceTypes = "http://hl7.org/fhir/resource-types"
	// SystemConsentScope is the code system of Consent.scope.
	SystemConsentScope = "http://terminology.hl7.org/CodeSystem/consentscope"
	// SystemConsentAction is the code system of provision.action.
	SystemConsentAction = "http://terminology.hl7.org/CodeSystem/consentaction"
	// SystemParticipationType is the HL7 v3 participation type code system
	// used by provision.actor.role.
	SystemParticipationType = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
)

// Codes in SystemRestricted.
const (
	// LabelGRA marks information about an application for, or the issue
	// of, a gender recognition certificate (Gender Recognition Act 2004
	// s22). Law restricts it.
	LabelGRA = "GRA-S22"
	// LabelHFEA marks information about fertility treatment protected by
	// the Human Fertilisation and Embryology Act 1990 s33A. Law restricts
	// it.
	LabelHFEA = "HFEA-S33A"
	// LabelSexualHealth marks sexual health information that guidance
	// protects.
	LabelSexualHealth = "SEXUAL-HEALTH"
	// LabelSafeguarding marks safeguarding information that guidance
	// protects.
	LabelSafeguarding = "SAFEGUARDING"
)

// Clearance names a class of restricted data that a destination may be
// allow-listed to receive.
type Clearance string

// Clearances. The first three are legal: only an allow-list opens them. The
// next three are protected: an allow-list or the patient's explicit
// Consent opens them. ClearRestrictedPatient lets a destination receive the
// contact details of a restricted (S-flag) patient.
const (
	ClearV                 Clearance = "V"
	ClearGRA               Clearance = LabelGRA
	ClearHFEA              Clearance = LabelHFEA
	ClearR                 Clearance = "R"
	ClearSexualHealth      Clearance = LabelSexualHealth
	ClearSafeguarding      Clearance = LabelSafeguarding
	ClearRestrictedPatient Clearance = "S-FLAG"
)

// Coding is a code in a code system.
type Coding struct {
	System string `json:"system"`
	Code   string `json:"code"`
}

// clearance reports the clearance a data label needs, and whether it is a
// legal one. Labels that need none return "". Codes match whatever their
// case, and a label with no system matches the codes of either system:
// a label written carelessly still protects what it marks.
func clearance(c Coding) (Clearance, bool) {
	code := strings.ToUpper(c.Code)
	if c.System == SystemConfidentiality || c.System == "" {
		switch code {
		case "V":
			return ClearV, true
		case "R":
			return ClearR, false
		}
	}
	if c.System == SystemRestricted || c.System == "" {
		switch code {
		case LabelGRA:
			return ClearGRA, true
		case LabelHFEA:
			return ClearHFEA, true
		case LabelSexualHealth:
			return ClearSexualHealth, false
		case LabelSafeguarding:
			return ClearSafeguarding, false
		}
	}
	return "", false
}

// Purpose is a route's declared purpose of use.
type Purpose string

// Purposes.
const (
	PurposeDirectCare   Purpose = "direct-care"
	PurposeSafeguarding Purpose = "safeguarding"
	PurposeResearch     Purpose = "research"
	PurposePlanning     Purpose = "planning"
	PurposePublicHealth Purpose = "public-health"
)

// codings returns the codings a Consent may use for the purpose: the
// Junction code and its HL7 v3 ActReason equivalent.
func (p Purpose) codings() []Coding {
	out := []Coding{{System: SystemPurpose, Code: string(p)}}
	if alias := p.actReason(); alias != "" {
		out = append(out, Coding{System: SystemActReason, Code: alias})
	}
	return out
}

// Codings returns the purpose's codings: the Junction code and its HL7 v3
// ActReason equivalent, when it has one.
func (p Purpose) Codings() []Coding { return p.codings() }

// actReason returns the purpose's HL7 v3 ActReason code, if it has one.
func (p Purpose) actReason() string {
	switch p {
	case PurposeDirectCare:
		return "TREAT"
	case PurposeResearch:
		return "HRESCH"
	case PurposePlanning:
		return "HOPERAT"
	case PurposePublicHealth:
		return "PUBHLTH"
	}
	return ""
}

// beyondIndividualCare reports whether the national data opt-out may apply
// to the purpose.
func (p Purpose) beyondIndividualCare() bool {
	return p == PurposeResearch || p == PurposePlanning
}

// OptOutApplies reports whether the national data opt-out gate is checked
// for a disclosure for purpose p on legal basis b (see Evaluate): purposes
// beyond individual care, unless the patient's explicit consent is the
// basis.
func OptOutApplies(p Purpose, b LegalBasis) bool {
	return p.beyondIndividualCare() && b != BasisExplicitConsent
}

// LegalBasis is a route's declared legal basis for disclosure.
type LegalBasis string

// Legal bases.
const (
	// BasisDirectCare is implied consent for individual care (UK GDPR
	// 6(1)(e) and 9(2)(h), common law duty of confidentiality).
	BasisDirectCare LegalBasis = "direct-care"
	// BasisSafeguarding is a statutory safeguarding duty (Children Acts
	// 1989 and 2004, Care Act 2014 s42).
	BasisSafeguarding LegalBasis = "safeguarding"
	// BasisS251 is support under the NHS Act 2006 s251 (Confidentiality
	// Advisory Group approval).
	BasisS251 LegalBasis = "s251"
	// BasisExplicitConsent is the patient's explicit consent: without a
	// Consent that permits, nothing goes.
	BasisExplicitConsent LegalBasis = "explicit-consent"
	// BasisStatutory is another legal requirement (for example a
	// direction under the Health and Social Care Act 2012).
	BasisStatutory LegalBasis = "statutory"
)

// Supports reports whether the legal basis supports disclosure for the
// purpose.
func (b LegalBasis) Supports(p Purpose) bool {
	switch b {
	case BasisDirectCare:
		return p == PurposeDirectCare
	case BasisSafeguarding:
		return p == PurposeSafeguarding
	case BasisS251:
		return p == PurposeResearch || p == PurposePlanning
	case BasisExplicitConsent:
		return p == PurposeDirectCare || p == PurposeResearch || p == PurposePlanning
	case BasisStatutory:
		return p == PurposePublicHealth || p == PurposeSafeguarding
	}
	return false
}

// mayGateSkip reports whether a route on this basis may declare that it
// skips the Consent gate.
func (b LegalBasis) mayGateSkip() bool {
	return b == BasisSafeguarding || b == BasisStatutory
}

// Period is a half-open interval of time [Start, End). A zero bound is
// open.
type Period struct {
	Start time.Time
	End   time.Time
}

// Contains reports whether t falls in the period.
func (p Period) Contains(t time.Time) bool {
	if !p.Start.IsZero() && t.Before(p.Start) {
		return false
	}
	if !p.End.IsZero() && !t.Before(p.End) {
		return false
	}
	return true
}

// IsZero reports whether the period has neither bound.
func (p Period) IsZero() bool { return p.Start.IsZero() && p.End.IsZero() }

// ProvisionType is the decision a provision makes when it applies.
type ProvisionType string

// Provision types.
const (
	ProvisionPermit ProvisionType = "permit"
	ProvisionDeny   ProvisionType = "deny"
)

// Policy is a Consent in the Junction profile, parsed for evaluation.
type Policy struct {
	// ID is the Consent's logical id.
	ID string
	// Status is Consent.status; only "active" Consents count.
	Status string
	// Patient is the patient's NHS number.
	Patient string
	// Root is Consent.provision.
	Root Provision
}

// Provision is one rule of a Consent. Every condition that is set must
// hold for the provision to apply; an empty condition holds always.
type Provision struct {
	// Path locates the provision in the Consent, for example
	// "Consent.provision.provision[1]".
	Path string
	Type ProvisionType
	// Period is when the provision is in force (provision.period).
	Period Period
	// DataPeriod bounds the date of the data (provision.dataPeriod).
	DataPeriod Period
	// Actors are ODS organisation codes of recipients.
	Actors   []string
	Purposes []Coding
	// Classes are FHIR resource types.
	Classes []string
	Codes   []Coding
	// Labels are security labels (provision.securityLabel).
	Labels     []Coding
	Provisions []Provision
}

// ParsePurpose reads a route's declared purpose.
func ParsePurpose(s string) (Purpose, error) {
	switch p := Purpose(s); p {
	case PurposeDirectCare, PurposeSafeguarding, PurposeResearch, PurposePlanning, PurposePublicHealth:
		return p, nil
	}
	return "", fmt.Errorf("consent purpose must be one of direct-care, safeguarding, research, planning, public-health, got %q", s)
}

// ParseLegalBasis reads a route's declared legal basis.
func ParseLegalBasis(s string) (LegalBasis, error) {
	switch b := LegalBasis(s); b {
	case BasisDirectCare, BasisSafeguarding, BasisS251, BasisExplicitConsent, BasisStatutory:
		return b, nil
	}
	return "", fmt.Errorf("consent legal basis must be one of direct-care, safeguarding, s251, explicit-consent, statutory, got %q", s)
}

// CheckRoute checks a route's declared purpose, legal basis and Consent
// skip together, as the route loader and junction lint should: the basis
// must support the purpose, and only a safeguarding or statutory basis may
// skip the Consent gate.
func CheckRoute(purpose, basis string, skipConsent bool) error {
	p, err := ParsePurpose(purpose)
	if err != nil {
		return err
	}
	b, err := ParseLegalBasis(basis)
	if err != nil {
		return err
	}
	if !b.Supports(p) {
		return fmt.Errorf("consent legal basis %s does not support purpose %s", b, p)
	}
	if skipConsent {
		return CheckSkip(basis)
	}
	return nil
}

// CheckSkip reports whether a route on the given legal basis may skip the
// consent gate: only a safeguarding or statutory one may.
func CheckSkip(basis string) error {
	b, err := ParseLegalBasis(basis)
	if err != nil {
		return err
	}
	if !b.mayGateSkip() {
		return fmt.Errorf("only a safeguarding or statutory legal basis may skip the consent gate, not %s", b)
	}
	return nil
}
