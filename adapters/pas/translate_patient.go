package pas

import (
	"strings"

	models "github.com/samply/golang-fhir-models/fhir-models/fhir"

	"github.com/junction-fhir/junction/pkg/fhir"
	"github.com/junction-fhir/junction/pkg/hl7v2"
	"github.com/junction-fhir/junction/pkg/nhs"
)

// patientID is one patient identifier repetition (CX) from PID.
type patientID struct {
	value     string // CX-1; normalised when flagged as an NHS number
	authority string // CX-4.1
	typeCode  string // CX-5
	nhsFlag   bool   // the authority or type says NHS number
	nhsValid  bool   // flagged and passes the modulus 11 check
}

// idList holds a PID's identifiers: PID-3 repetitions first, then the
// deprecated PID-2 and PID-4, which older (v2.3) feeds still use.
type idList []patientID

// patientIDs reads and classifies the identifiers of pid.
func patientIDs(pid *hl7v2.Segment, d *Dialect) idList {
	var ids idList
	for _, field := range [...]int{3, 2, 4} {
		for rep := 1; rep <= pid.Repetitions(field); rep++ {
			id := patientID{
				value:     strings.TrimSpace(value(pid.Component(field, rep, 1, 1))),
				authority: strings.TrimSpace(value(pid.Component(field, rep, 4, 1))),
				typeCode:  strings.TrimSpace(value(pid.Component(field, rep, 5, 1))),
			}
			if id.value == "" {
				continue
			}
			if d.isNHSAuthority(id.authority) || d.isNHSAuthority(id.typeCode) {
				id.nhsFlag = true
				id.value = nhs.Normalize(id.value)
				id.nhsValid = nhs.ValidNumber(id.value)
			}
			ids = append(ids, id)
		}
	}
	return ids
}

// key is the patient key: the first valid NHS number, else the first
// identifier not flagged as an NHS number, else (when the dialect keeps
// them) the first NHS number failing its check, else "".
func (ids idList) key(d *Dialect) string {
	for _, id := range ids {
		if id.nhsValid {
			return id.value
		}
	}
	for _, id := range ids {
		if !id.nhsFlag {
			return id.value
		}
	}
	if len(ids) > 0 && d.InvalidNHSNumber == InvalidNHSNumberKeep {
		return ids[0].value
	}
	return ""
}

// mapPID maps the PID segment into the Patient:
//
//   - identifier: see identifiers.
//   - name: every PID-5 repetition (XPN): family XPN-1.1, given XPN-2 and
//     XPN-3, suffix XPN-4 and XPN-6, prefix XPN-5, use from the name type
//     XPN-7 (official when not sent).
//   - telecom: PID-13 (home) and PID-14 (work); see telecoms.
//   - gender: PID-8, HL7 table 0001 or the NHS Data Dictionary codes.
//   - birthDate: PID-7, the calendar date as sent.
//   - deceased: PID-29 as a dateTime, else PID-30 (Y/N) as a boolean.
//   - address: every PID-11 repetition; see addresses.
func (b *builder) mapPID(pid *hl7v2.Segment) error {
	_, id := b.fullURL("Patient")
	p := &models.Patient{
		Id:   ptr(id),
		Meta: &models.Meta{Profile: []string{nhs.ProfilePatient}},
	}
	ids := patientIDs(pid, &b.t.dialect)
	b.key = ids.key(&b.t.dialect)
	p.Identifier = b.identifiers(pid, ids)
	p.Name = names(pid)
	p.Telecom = append(telecoms(pid, 13, models.ContactPointUseHome), telecoms(pid, 14, models.ContactPointUseWork)...)
	p.Gender = gender(value(pid.Component(8, 1, 1, 1)))
	if raw := value(pid.Component(7, 1, 1, 1)); raw != "" {
		if d, err := fhir.DateFromHL7(raw); err == nil {
			p.BirthDate = &d
		} else {
			b.flag(DQBirthDateInvalid)
		}
	}
	if raw := value(pid.Component(29, 1, 1, 1)); raw != "" {
		if d, err := fhir.DateTimeFromHL7(raw, b.t.loc); err == nil {
			p.DeceasedDateTime = &d
		} else {
			b.flag(DQDeathDateInvalid)
		}
	}
	if p.DeceasedDateTime == nil {
		switch strings.ToUpper(value(pid.Component(30, 1, 1, 1))) {
		case "Y":
			p.DeceasedBoolean = ptr(true)
		case "N":
			p.DeceasedBoolean = ptr(false)
		}
	}
	p.Address = addresses(pid)
	b.patient = p
	return nil
}

// identifiers maps the classified identifiers:
//
//   - The first valid NHS number becomes the UK Core nhsNumber slice, with
//     the NHS number verification status extension when PID-32 carries
//     one of the England status codes 01-08.
//   - A different valid NHS number after it is kept as a local identifier
//     (the slice allows one) and flagged DQNHSNumberConflict.
//   - An NHS number failing its check digit is never put in the NHS number
//     system: it is kept as a local identifier or dropped, as the dialect
//     says, and flagged DQNHSNumberInvalid unless a valid one was sent.
//   - Every other identifier gets the dialect's local identifier system,
//     its CX-5 type in HL7 table 0203 where the code is a common one, and
//     its assigning authority as the assigner's display.
//
// Identical system and value pairs are kept once.
func (b *builder) identifiers(pid *hl7v2.Segment, ids idList) []models.Identifier {
	var out []models.Identifier
	seen := map[[2]string]bool{}
	addOnce := func(id models.Identifier) {
		k := [2]string{*id.System, *id.Value}
		if !seen[k] {
			seen[k] = true
			out = append(out, id)
		}
	}
	nhsNumber, invalid := "", false
	for _, id := range ids {
		switch {
		case id.nhsValid && (nhsNumber == "" || nhsNumber == id.value):
			nhsNumber = id.value
			addOnce(models.Identifier{
				Extension: verificationStatus(pid),
				System:    ptr(nhs.SystemNHSNumber),
				Value:     ptr(id.value),
			})
		case id.nhsValid:
			b.flag(DQNHSNumberConflict)
			addOnce(b.localIdentifier(id))
		case id.nhsFlag:
			invalid = true
			if b.t.dialect.InvalidNHSNumber == InvalidNHSNumberKeep {
				addOnce(b.localIdentifier(id))
			}
		default:
			addOnce(b.localIdentifier(id))
		}
	}
	switch {
	case nhsNumber != "":
	case invalid:
		b.flag(DQNHSNumberInvalid)
	default:
		b.flag(DQNHSNumberMissing)
	}
	return out
}

// localIdentifier maps an identifier other than a valid NHS number.
func (b *builder) localIdentifier(id patientID) models.Identifier {
	out := models.Identifier{
		System: ptr(b.t.dialect.LocalIdentifierSystem),
		Value:  ptr(id.value),
	}
	if id.typeCode != "" && !id.nhsFlag {
		if display, ok := identifierTypeDisplay(id.typeCode); ok {
			out.Type = &models.CodeableConcept{Coding: []models.Coding{{
				System: ptr(systemV2IDType), Code: ptr(id.typeCode), Display: ptr(display),
			}}}
		} else {
			out.Type = &models.CodeableConcept{Text: ptr(id.typeCode)}
		}
	}
	if id.authority != "" {
		out.Assigner = &models.Reference{Display: ptr(id.authority)}
	}
	return out
}

// identifierTypeDisplay returns the display of common HL7 table 0203
// identifier type codes.
func identifierTypeDisplay(code string) (string, bool) {
	switch code {
	case "MR":
		return "Medical record number", true
	case "PI":
		return "Patient internal identifier", true
	case "PT":
		return "Patient external identifier", true
	case "PN":
		return "Person number", true
	case "AN":
		return "Account number", true
	case "VN":
		return "Visit number", true
	case "U":
		return "Unspecified identifier", true
	}
	return "", false
}

// verificationStatus returns the NHS number verification status extension
// from the first PID-32 repetition holding an England status code, or nil.
func verificationStatus(pid *hl7v2.Segment) []models.Extension {
	for rep := 1; rep <= pid.Repetitions(32); rep++ {
		// Feeds send the NHS Data Dictionary code bare ("01") or with the
		// HL7 UK table prefix ("NSTS01").
		code := strings.TrimPrefix(strings.TrimSpace(value(pid.Component(32, rep, 1, 1))), "NSTS")
		display, ok := nhs.VerificationStatusDisplay(code)
		if !ok {
			continue
		}
		return []models.Extension{{
			Url: nhs.ExtNHSNumberVerificationStatus,
			ValueCodeableConcept: &models.CodeableConcept{Coding: []models.Coding{{
				System:  ptr(nhs.CodeSystemNHSNumberVerificationStatusEngland),
				Code:    ptr(code),
				Display: ptr(display),
			}}},
		}}
	}
	return nil
}

// names maps every PID-5 repetition.
func names(pid *hl7v2.Segment) []models.HumanName {
	var out []models.HumanName
	for rep := 1; rep <= pid.Repetitions(5); rep++ {
		c := func(comp int) string { return strings.TrimSpace(value(pid.Component(5, rep, comp, 1))) }
		n := models.HumanName{
			Family: optional(c(1)),
			Given:  nonEmpty(c(2), c(3)),
			Prefix: nonEmpty(c(5)),
			Suffix: nonEmpty(c(4), c(6)),
		}
		if n.Family == nil && n.Given == nil && n.Prefix == nil && n.Suffix == nil {
			continue
		}
		if use, ok := nameUse(c(7)); ok {
			n.Use = &use
		}
		out = append(out, n)
	}
	return out
}

// nameUse maps an HL7 table 0200 name type to a FHIR name use, following
// the v2-to-FHIR guide; a name sent without a type is the official one.
func nameUse(code string) (models.NameUse, bool) {
	switch strings.ToUpper(code) {
	case "", "L", "R":
		return models.NameUseOfficial, true
	case "D":
		return models.NameUseUsual, true
	case "M":
		return models.NameUseMaiden, true
	case "N":
		return models.NameUseNickname, true
	case "MSK":
		return models.NameUseAnonymous, true
	case "NAV", "TEMP":
		return models.NameUseTemp, true
	case "BAD":
		return models.NameUseOld, true
	}
	return 0, false
}

// gender maps PID-8: HL7 table 0001 (M, F, O, U, A, N) and the NHS Data
// Dictionary person gender codes (1 male, 2 female, 9 indeterminate, X
// and 0 not known), the latter as UK Core's AdministrativeGender concept
// map pairs them.
func gender(code string) *models.AdministrativeGender {
	var g models.AdministrativeGender
	switch strings.ToUpper(strings.TrimSpace(code)) {
	case "M", "1":
		g = models.AdministrativeGenderMale
	case "F", "2":
		g = models.AdministrativeGenderFemale
	case "O", "A", "N", "9":
		g = models.AdministrativeGenderOther
	case "U", "X", "0":
		g = models.AdministrativeGenderUnknown
	default:
		return nil
	}
	return &g
}

// addresses maps every PID-11 repetition (XAD) the way English feeds use
// it: XAD-1.1 and XAD-2 are address lines, XAD-3 the town, XAD-4 the
// county (FHIR district), XAD-5 the postcode, XAD-6 the country, and the
// address type XAD-7 gives the use.
func addresses(pid *hl7v2.Segment) []models.Address {
	var out []models.Address
	for rep := 1; rep <= pid.Repetitions(11); rep++ {
		c := func(comp int) string { return strings.TrimSpace(value(pid.Component(11, rep, comp, 1))) }
		a := models.Address{
			Line:       nonEmpty(c(1), c(2)),
			City:       optional(c(3)),
			District:   optional(c(4)),
			PostalCode: optional(c(5)),
			Country:    optional(c(6)),
		}
		if a.Line == nil && a.City == nil && a.District == nil && a.PostalCode == nil && a.Country == nil {
			continue
		}
		if use, ok := addressUse(c(7)); ok {
			a.Use = &use
		}
		out = append(out, a)
	}
	return out
}

// addressUse maps an HL7 table 0190 address type, as the v2-to-FHIR guide
// does.
func addressUse(code string) (models.AddressUse, bool) {
	switch strings.ToUpper(code) {
	case "H":
		return models.AddressUseHome, true
	case "B", "O":
		return models.AddressUseWork, true
	case "C":
		return models.AddressUseTemp, true
	case "BA":
		return models.AddressUseOld, true
	case "BI":
		return models.AddressUseBilling, true
	}
	return 0, false
}

// telecoms maps the XTN repetitions of field (PID-13 home, PID-14
// business). The system follows the equipment type XTN-3 (PH phone, CP
// mobile phone, FX fax, BP pager, Internet or X.400 email, others
// "other") or the use code NET; the use follows XTN-2 (PRN home, WPN
// work, PRS mobile), a CP equipment type (mobile), else the field's
// default. An email address is XTN-4 (or XTN-1 when XTN-4 is empty); a
// number is XTN-1, or XTN-5 to XTN-8 (country, area, local number,
// extension) put together when XTN-1 is empty, as from v2.5 on.
func telecoms(pid *hl7v2.Segment, field int, defaultUse models.ContactPointUse) []models.ContactPoint {
	var out []models.ContactPoint
	for rep := 1; rep <= pid.Repetitions(field); rep++ {
		c := func(comp int) string { return strings.TrimSpace(value(pid.Component(field, rep, comp, 1))) }
		useCode, equipment := strings.ToUpper(c(2)), strings.ToUpper(c(3))
		system := models.ContactPointSystemPhone
		switch equipment {
		case "FX":
			system = models.ContactPointSystemFax
		case "BP":
			system = models.ContactPointSystemPager
		case "INTERNET", "X.400":
			system = models.ContactPointSystemEmail
		case "MD", "SAT", "TDD", "TTY":
			system = models.ContactPointSystemOther
		}
		if useCode == "NET" {
			system = models.ContactPointSystemEmail
		}
		var v string
		if system == models.ContactPointSystemEmail {
			v = c(4)
			if v == "" {
				v = c(1)
			}
		} else {
			v = c(1)
			if v == "" {
				v = strings.Join(nonEmpty(prefixed("+", c(5)), c(6), c(7)), " ")
				if v != "" && c(8) != "" {
					v += " ext. " + c(8)
				}
			}
		}
		if v == "" {
			continue
		}
		use := defaultUse
		switch {
		case useCode == "PRN":
			use = models.ContactPointUseHome
		case useCode == "WPN":
			use = models.ContactPointUseWork
		case useCode == "PRS" || equipment == "CP":
			use = models.ContactPointUseMobile
		}
		out = append(out, models.ContactPoint{System: &system, Value: ptr(v), Use: &use})
	}
	return out
}

// nonEmpty returns the non-empty strings of vs, or nil.
func nonEmpty(vs ...string) []string {
	var out []string
	for _, v := range vs {
		if v != "" {
			out = append(out, v)
		}
	}
	return out
}

// prefixed returns p+s, or "" when s is empty.
func prefixed(p, s string) string {
	if s == "" {
		return ""
	}
	return p + s
}
