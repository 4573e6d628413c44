package pas

import (
	"strconv"
	"strings"

	models "github.com/samply/golang-fhir-models/fhir-models/fhir"

	"github.com/junction-fhir/junction/pkg/fault"
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

// patientIDs reads and classifies the CX identifiers of the given fields
// of seg (PID-3, PID-2, PID-4; MRG-1, MRG-2, MRG-4), of which external is
// the patient ID, external (PID-2, MRG-4: see
// Dialect.ExternalIDIsNHSNumber).
func patientIDs(seg *hl7v2.Segment, d *Dialect, external int, fields ...int) idList {
	var ids idList
	for _, field := range fields {
		for rep := 1; rep <= seg.Repetitions(field); rep++ {
			id := patientID{
				value:     strings.TrimSpace(value(seg.Component(field, rep, 1, 1))),
				authority: strings.TrimSpace(value(seg.Component(field, rep, 4, 1))),
				typeCode:  strings.TrimSpace(value(seg.Component(field, rep, 5, 1))),
			}
			if id.value == "" {
				continue
			}
			// CX-4.2 may name the NHS number by its OID, with no code in
			// CX-4.1 for the dialect to know.
			oid := strings.TrimSpace(value(seg.Component(field, rep, 4, 2)))
			bareExternal := field == external && d.ExternalIDIsNHSNumber && id.authority == "" && id.typeCode == "" && oid == ""
			if d.isNHSAuthority(id.authority) || d.isNHSAuthority(id.typeCode) || oid == nhs.OIDNHSNumber || bareExternal {
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
//   - gender: PID-8 through the dialect's sex code table
//     (Dialect.SexCodes); a code not in it is left out and flagged
//     DQSexInvalid.
//   - birthDate: PID-7, the calendar date as sent; a time of day, when
//     sent, as the patient-birthTime extension on it (see birthTime).
//   - deceased: PID-29 as a dateTime, else PID-30 (Y/N) as a boolean; a
//     date with PID-30 N is kept and flagged DQDeathIndicatorConflict.
//   - address: every PID-11 repetition; see addresses.
//   - communication: PID-15 primary language; see language.
//   - maritalStatus: PID-16, HL7 table 0002 mapped to v3 MaritalStatus as
//     the v2-to-FHIR guide does (U, O and T to v3 NullFlavor); with the
//     NHS code table (Dialect.MaritalStatusCodes, the default) P, N and 8
//     as UKCore-PersonMaritalStatusEngland codes instead, 9 as UNK.
//   - extension ethnicCategory: PID-22.1 when it is an NHS Data
//     Dictionary ethnic category code (A to Z, 99), in
//     UKCore-EthnicCategoryEngland.
func (b *builder) mapPID(pid *hl7v2.Segment) error {
	p, key := b.patientFrom(pid, "Patient", true)
	b.key = key
	b.patient = p
	return nil
}

// patientFrom maps pid into a Patient of the given kind (see fullURL) and
// returns it with its patient key. Data-quality problems are flagged only
// when flagIDs is set (not for the second and later patients of a merge).
func (b *builder) patientFrom(pid *hl7v2.Segment, kind string, flagIDs bool) (*models.Patient, string) {
	_, id := b.fullURL(kind)
	p := &models.Patient{
		Id:   b.str(id),
		Meta: b.meta(nhs.ProfilePatient),
	}
	ids := patientIDs(pid, &b.t.dialect, 2, 3, 2, 4)
	key := ids.key(&b.t.dialect)
	p.Identifier = b.identifiers(pid, ids, flagIDs)
	p.Name = b.humanNames(pid, 5)
	p.Telecom = append(b.telecoms(pid, 13, models.ContactPointUseHome), b.telecoms(pid, 14, models.ContactPointUseWork)...)
	sex := value(pid.Component(8, 1, 1, 1))
	p.Gender = b.gender(sex)
	if p.Gender == nil && flagIDs && strings.TrimSpace(sex) != "" {
		b.flag(DQSexInvalid)
	}
	if raw := value(pid.Component(7, 1, 1, 1)); raw != "" {
		if d, err := fhir.DateFromHL7(raw); err == nil {
			p.BirthDate = &d
			if b.birthTime(p, raw) && flagIDs && fhir.AmbiguousLocal(raw, b.t.loc) {
				b.flag(DQLocalTimeAmbiguous)
			}
		} else if flagIDs {
			b.flag(DQBirthDateInvalid)
		}
	}
	if raw := value(pid.Component(29, 1, 1, 1)); raw != "" {
		if d, err := fhir.DateTimeFromHL7(raw, b.t.loc); err == nil {
			p.DeceasedDateTime = &d
			if flagIDs && fhir.AmbiguousLocal(raw, b.t.loc) {
				b.flag(DQLocalTimeAmbiguous)
			}
		} else if flagIDs {
			b.flag(DQDeathDateInvalid)
		}
	}
	if p.DeceasedDateTime != nil && flagIDs && strings.EqualFold(strings.TrimSpace(value(pid.Component(30, 1, 1, 1))), "N") {
		b.flag(DQDeathIndicatorConflict)
	}
	if p.DeceasedDateTime == nil {
		switch strings.ToUpper(value(pid.Component(30, 1, 1, 1))) {
		case "Y":
			p.DeceasedBoolean = fhir.Ptr(true)
		case "N":
			p.DeceasedBoolean = fhir.Ptr(false)
		}
	}
	p.Address = b.addresses(pid, 11)
	if lang := b.language(pid); lang != nil {
		p.Communication = []models.PatientCommunication{{Language: *lang}}
	}
	p.MaritalStatus = b.maritalStatus(strings.ToUpper(strings.TrimSpace(value(pid.Component(16, 1, 1, 1)))))
	if ext := b.ethnicCategory(strings.ToUpper(strings.TrimSpace(value(pid.Component(22, 1, 1, 1))))); ext != nil {
		p.Extension = append(p.Extension, *ext)
	}
	b.clearedPatientFields(p, pid)
	return p, key
}

// clearedPatientFields marks, with nhs.JunctionExtClearedElement, the
// elements of p whose PID fields are the explicit null "", which asks the
// receiver to delete them: PID-11 address, PID-13 and 14 telecom (both
// null: one alone leaves the other's numbers, so nothing is marked),
// PID-15 communication, PID-16 maritalStatus,
// PID-29/30 deceased (when neither gave a value) and PID-22 the ethnic
// category extension. A field left empty means no change and is not
// marked.
func (b *builder) clearedPatientFields(p *models.Patient, pid *hl7v2.Segment) {
	if b.noDeletes {
		return
	}
	if pid.IsNull(11) {
		p.Extension = append(p.Extension, b.clearedElement("address"))
	}
	if pid.IsNull(13) && pid.IsNull(14) {
		p.Extension = append(p.Extension, b.clearedElement("telecom"))
	}
	if pid.IsNull(15) {
		p.Extension = append(p.Extension, b.clearedElement("communication"))
	}
	if pid.IsNull(16) {
		p.Extension = append(p.Extension, b.clearedElement("maritalStatus"))
	}
	if p.DeceasedBoolean == nil && p.DeceasedDateTime == nil && (pid.IsNull(29) || pid.IsNull(30)) {
		p.Extension = append(p.Extension, b.clearedElement("deceased"))
	}
	if pid.IsNull(22) {
		p.Extension = append(p.Extension, models.Extension{Url: nhs.JunctionExtClearedElement, ValueUri: b.str(nhs.ExtEthnicCategory)})
	}
}

// clearedElement returns the extension marking the top-level element
// name as deleted.
func (b *builder) clearedElement(name string) models.Extension {
	return models.Extension{Url: nhs.JunctionExtClearedElement, ValueCode: b.str(name)}
}

// language maps PID-15 (CE) to Patient.communication.language, which UK
// Core binds (required) to all languages, that is BCP 47 tags
// (urn:ietf:bcp:47): an ISO 639-1 code, as PAS feeds send from the NHS
// Data Dictionary's language list (UKCore-HumanLanguage), is such a tag;
// of that list's own codes, q2, q3 and q4 are the sign languages BCP 47
// names ase, asf and bfi, while q1 (Braille) and q5 (Makaton), which no
// language tag names, and any other code, are coded und (undetermined)
// with the name as text. The text is PID-15.2, else the list's name for
// the code, else the code.
func (b *builder) language(pid *hl7v2.Segment) *models.CodeableConcept {
	code := strings.ToLower(strings.TrimSpace(value(pid.Component(15, 1, 1, 1))))
	text := strings.TrimSpace(value(pid.Component(15, 1, 2, 1)))
	if code == "" {
		return nil
	}
	cc := &models.CodeableConcept{Text: b.optional(text)}
	tag := ""
	switch {
	case len(code) == 2 && code[0] >= 'a' && code[0] <= 'z' && code[1] >= 'a' && code[1] <= 'z':
		tag = code
	case signLanguages[code].tag != "":
		tag = signLanguages[code].tag
	}
	if tag == "" {
		// The binding is required: a language no tag names is coded
		// und (undetermined), its name kept as text.
		tag = "und"
		switch {
		case text == "" && signLanguages[code].name != "":
			cc.Text = b.str(signLanguages[code].name)
		case text == "":
			cc.Text = b.str(code)
		}
	}
	cc.Coding = []models.Coding{{System: b.str(systemBCP47), Code: b.str(tag)}}
	return cc
}

// systemBCP47 is the code system of BCP 47 language tags.
const systemBCP47 = "urn:ietf:bcp:47"

// signLanguages are the UKCore-HumanLanguage codes that are not ISO 639-1,
// with the BCP 47 tag of each where there is one.
var signLanguages = map[string]struct{ tag, name string }{
	"q1": {"", "Braille"},
	"q2": {"ase", "American Sign Language"},
	"q3": {"asf", "Australian Sign Language"},
	"q4": {"bfi", "British Sign Language"},
	"q5": {"", "Makaton"},
}

// nhsMaritalStatus holds the NHS Data Dictionary person marital status
// codes whose meaning HL7 table 0002 does not share
// (UKCore-PersonMaritalStatusEngland), as UK Core's value set takes them;
// S, M, D and W mean the same in both and map to v3 MaritalStatus, and
// 9, not known, to v3 NullFlavor UNK.
var nhsMaritalStatus = map[string]string{
	"P": "Separated", "N": "Not disclosed", "8": "Not applicable",
}

// maritalStatus maps a PID-16 code in the dialect's table (see mapPID),
// or returns nil.
func (b *builder) maritalStatus(code string) *models.CodeableConcept {
	if b.t.dialect.MaritalStatusCodes == MaritalStatusNHS {
		if d, ok := nhsMaritalStatus[code]; ok {
			return b.concept(nhs.CodeSystemPersonMaritalStatusEngland, code, d)
		}
		if code == "9" {
			// Not known: UK Core's value set takes v3's null flavour
			// for it, not the England code.
			return b.concept(systemNullFlavor, "UNK", "unknown")
		}
	}
	v3 := func(c, d string) *models.CodeableConcept {
		return b.concept(systemMaritalStatus, c, d)
	}
	null := func(c, d string) *models.CodeableConcept {
		return b.concept(systemNullFlavor, c, d)
	}
	switch code {
	case "A", "E":
		return v3("L", "Legally Separated")
	case "D":
		return v3("D", "Divorced")
	case "M":
		return v3("M", "Married")
	case "S":
		return v3("S", "Never Married")
	case "W":
		return v3("W", "Widowed")
	case "C":
		return v3("C", "Common Law")
	case "G", "P", "R":
		return v3("T", "Domestic partner")
	case "N":
		return v3("A", "Annulled")
	case "I":
		return v3("I", "Interlocutory")
	case "B":
		return v3("U", "unmarried")
	case "U":
		return null("UNK", "unknown")
	case "O":
		return null("OTH", "other")
	case "T":
		return null("NAVU", "not available")
	}
	return nil
}

// ethnicCategoryDisplay holds the NHS Data Dictionary ethnic categories
// (UKCore-EthnicCategoryEngland).
var ethnicCategoryDisplay = map[string]string{
	"A": "White - British", "B": "White - Irish", "C": "White - Any other White background",
	"D": "Mixed - White and Black Caribbean", "E": "Mixed - White and Black African",
	"F": "Mixed - White and Asian", "G": "Mixed - Any other mixed background",
	"H": "Asian or Asian British - Indian", "J": "Asian or Asian British - Pakistani",
	"K": "Asian or Asian British - Bangladeshi", "L": "Asian or Asian British - Any other Asian background",
	"M": "Black or Black British - Caribbean", "N": "Black or Black British - African",
	"P": "Black or Black British - Any other Black background", "R": "Other Ethnic Groups - Chinese",
	"S": "Other Ethnic Groups - Any other ethnic group", "Z": "Not stated", "99": "Not known",
}

// ethnicCategory returns the UK Core ethnic category extension for an NHS
// Data Dictionary code, or nil.
func (b *builder) ethnicCategory(code string) *models.Extension {
	display, ok := ethnicCategoryDisplay[code]
	if !ok {
		return nil
	}
	return &models.Extension{
		Url: nhs.ExtEthnicCategory,
		ValueCodeableConcept: &models.CodeableConcept{Coding: []models.Coding{
			b.coding(nhs.CodeSystemEthnicCategoryEngland, code, display),
		}},
	}
}

// mapPD1 maps the patient's registered GP into Patient.generalPractitioner:
//
//   - PD1-3 (XON) patient primary facility, the GP practice: an
//     Organization with the ODS code from XON-10, else XON-3, else XON-1
//     when it has the shape of an ODS code, and the name XON-1 when it is
//     not the code.
//   - PD1-4 (XCN) patient primary care provider, the GP: a Practitioner
//     (see practitionerResource); a GP code "G" and seven digits is a GMP
//     number.
func (b *builder) mapPD1(pd1 *hl7v2.Segment) error {
	if b.patient != nil {
		b.registeredGP(b.patient, pd1)
	}
	return nil
}

// registeredGP adds the PD1 practice and GP of p, or marks
// generalPractitioner deleted when PD1-3 and PD1-4 are both the explicit
// null (one alone leaves the other unchanged, and both are one element).
func (b *builder) registeredGP(p *models.Patient, pd1 *hl7v2.Segment) {
	cs := splitComponents(pd1, b.m.Delimiters(), 3, 1)
	c := cs.get
	name, code := cs.text(1), c(10)
	if code == "" {
		code = c(3)
	}
	if code == "" && nhs.LooksLikeODSCode(name) {
		code = name
	}
	if code == name {
		name = ""
	}
	if code != "" || name != "" {
		url, id := b.nextURL("Organization")
		org := &models.Organization{
			Id:   b.str(id),
			Meta: b.meta(nhs.ProfileOrganization),
			Name: b.optional(name),
		}
		if nhs.LooksLikeODSCode(code) {
			org.Identifier = []models.Identifier{{System: b.str(nhs.SystemODSOrganization), Value: b.str(code)}}
		} else if code != "" {
			org.Identifier = []models.Identifier{{Value: b.str(code)}}
		}
		b.add(url, "Organization", org)
		p.GeneralPractitioner = append(p.GeneralPractitioner, models.Reference{Reference: b.str(url), Type: b.str("Organization"), Display: b.optional(name)})
	}
	if gp := b.practitionerResource(pd1, 4, 1); gp != nil {
		p.GeneralPractitioner = append(p.GeneralPractitioner, *gp)
	}
	if pd1.IsNull(3) && pd1.IsNull(4) && !b.noDeletes {
		// The explicit null: the patient has no registered GP now.
		p.Extension = append(p.Extension, b.clearedElement("generalPractitioner"))
	}
}

// mapMerge maps a merge (A34, A40): each PID, with the PD1 and MRG after
// it and before the next PID, is one group. For each group:
//
//   - The PID is the surviving record: a Patient mapped as mapPID does,
//     active, with a link of type "replaces" to the old record. The first
//     group's is the bundle's Patient and gives the patient key.
//   - The MRG is the record merged into it: a Patient, active false, with
//     a link of type "replaced-by" to the survivor, the identifiers MRG-1
//     (prior patient identifier list), MRG-2 (prior alternate patient id)
//     and MRG-4 (prior patient id), classified exactly as PID-3, PID-2
//     and PID-4 are (an NHS number only when flagged by the dialect and
//     valid; an invalid one kept as a local identifier or dropped as the
//     dialect says), and the name MRG-7. MRG is required in every group.
//
// A receiver applies a merge by marking the old record inactive and
// pointing it at the survivor, and moving what referred to the old record
// to the survivor.
func (b *builder) mapMerge(*hl7v2.Segment) error {
	var pid, pd1 *hl7v2.Segment
	group := 0
	flush := func(mrg *hl7v2.Segment) error {
		if pid == nil {
			return nil
		}
		if mrg == nil {
			return fault.Newf(fault.CodeHL7Required, "ADT %s needs an MRG segment after each PID", b.event).WithHL7("100")
		}
		group++
		kind, oldKind := "Patient", "Patient/replaced"
		if group > 1 {
			kind, oldKind = "Patient/"+strconv.Itoa(group), "Patient/replaced/"+strconv.Itoa(group)
		}
		survivor, key := b.patientFrom(pid, kind, group == 1)
		survivorURL, _ := b.fullURL(kind)
		oldURL, oldID := b.fullURL(oldKind)
		if pd1 != nil {
			b.registeredGP(survivor, pd1)
		}
		survivor.Active = fhir.Ptr(true)
		survivor.Link = []models.PatientLink{{
			Other: b.ref(oldURL, "Patient"),
			Type:  models.LinkTypeReplaces,
		}}
		old := &models.Patient{
			Id:     b.str(oldID),
			Meta:   b.meta(nhs.ProfilePatient),
			Active: fhir.Ptr(false),
			Link: []models.PatientLink{{
				Other: b.ref(survivorURL, "Patient"),
				Type:  models.LinkTypeReplacedBy,
			}},
		}
		old.Identifier = b.identifiers(nil, patientIDs(mrg, &b.t.dialect, 4, 1, 2, 4), false)
		old.Name = b.humanNames(mrg, 7)
		if group == 1 {
			b.patient, b.key = survivor, key
		} else {
			b.patients = append(b.patients, entry{url: survivorURL, typ: "Patient", resource: survivor})
		}
		b.patients = append(b.patients, entry{url: oldURL, typ: "Patient", resource: old})
		pid, pd1 = nil, nil
		return nil
	}
	for _, seg := range b.m.Segments() {
		switch seg.Name() {
		case "PID":
			if err := flush(nil); err != nil {
				return err
			}
			pid = seg
		case "PD1":
			if pid != nil && pd1 == nil {
				pd1 = seg
			}
		case "MRG":
			if err := flush(seg); err != nil {
				return err
			}
		}
	}
	if pid != nil {
		return flush(nil)
	}
	if b.patient == nil {
		return fault.Newf(fault.CodeHL7Required, "ADT %s needs a PID segment", b.event).WithHL7("100")
	}
	return nil
}

// identifiers maps the classified identifiers:
//
//   - The first valid NHS number becomes the UK Core nhsNumber slice, with
//     the NHS number verification status extension when PID-32 carries
//     one of the England status codes 01-08.
//   - A different valid NHS number after it is kept without a system
//     (the slice allows one; see unverifiedNHSNumber) and flagged
//     DQNHSNumberConflict.
//   - An NHS number failing its check digit is never put in the NHS number
//     system, nor in the local one: it is kept without a system or
//     dropped, as the dialect says, and flagged DQNHSNumberInvalid unless
//     a valid one was sent.
//   - Every other identifier gets the dialect's local identifier system,
//     its CX-5 type in HL7 table 0203 where the code is a common one, and
//     its assigning authority as the assigner's display.
//
// Identical system and value pairs are kept once.
//
// pid, when not nil, gives the verification status (PID-32). Data-quality
// codes are raised only when flag is set.
func (b *builder) identifiers(pid *hl7v2.Segment, ids idList, flag bool) []models.Identifier {
	var out []models.Identifier
	seen := map[[2]string]bool{}
	addOnce := func(id models.Identifier) {
		k := [2]string{"", *id.Value}
		if id.System != nil {
			k[0] = *id.System
		}
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
			var status []models.Extension
			if pid != nil {
				status = b.verificationStatus(pid)
			}
			addOnce(models.Identifier{
				Extension: status,
				System:    b.str(nhs.SystemNHSNumber),
				Value:     b.str(id.value),
			})
		case id.nhsValid:
			if flag {
				b.flag(DQNHSNumberConflict)
			}
			addOnce(b.unverifiedNHSNumber(id, "Other NHS number"))
		case id.nhsFlag:
			invalid = true
			if b.t.dialect.InvalidNHSNumber == InvalidNHSNumberKeep {
				addOnce(b.unverifiedNHSNumber(id, "NHS number failing its check digit"))
			}
		default:
			addOnce(b.localIdentifier(id))
		}
	}
	switch {
	case nhsNumber != "" || !flag:
	case invalid:
		b.flag(DQNHSNumberInvalid)
	default:
		b.flag(DQNHSNumberMissing)
	}
	return out
}

// unverifiedNHSNumber maps an identifier flagged as an NHS number that
// cannot be the patient's NHS number (it fails its check digit, or
// another valid one came first): without a system, so that no receiver
// takes it for an identifier it matches patients on (a number failing
// its check could equal another patient's hospital number in the local
// system), with why in its type's text and its authority as assigner.
func (b *builder) unverifiedNHSNumber(id patientID, why string) models.Identifier {
	out := models.Identifier{
		Use:   &[]models.IdentifierUse{models.IdentifierUseSecondary}[0],
		Type:  &models.CodeableConcept{Text: b.str(why)},
		Value: b.str(id.value),
	}
	if id.authority != "" {
		out.Assigner = &models.Reference{Display: b.str(id.authority)}
	}
	return out
}

// localIdentifier maps an identifier other than a valid NHS number: in
// its authority's system when the dialect maps it (never for one flagged
// as an NHS number, valid or not), else in the local system.
func (b *builder) localIdentifier(id patientID) models.Identifier {
	system := b.t.dialect.LocalIdentifierSystem
	if !id.nhsFlag && !id.nhsValid && id.authority != "" {
		for a, sys := range b.t.dialect.IdentifierSystems {
			if strings.EqualFold(strings.TrimSpace(a), id.authority) {
				system = sys
				break
			}
		}
	}
	out := models.Identifier{
		System: b.str(system),
		Value:  b.str(id.value),
	}
	if id.typeCode != "" && !id.nhsFlag {
		if display, ok := identifierTypeDisplay(id.typeCode); ok {
			out.Type = &models.CodeableConcept{Coding: []models.Coding{{
				System: b.str(systemV2IDType), Code: b.str(id.typeCode), Display: b.str(display),
			}}}
		} else {
			out.Type = &models.CodeableConcept{Text: b.str(id.typeCode)}
		}
	}
	if id.authority != "" {
		out.Assigner = &models.Reference{Display: b.str(id.authority)}
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
func (b *builder) verificationStatus(pid *hl7v2.Segment) []models.Extension {
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
				System:  b.str(nhs.CodeSystemNHSNumberVerificationStatusEngland),
				Code:    b.str(code),
				Display: b.str(display),
			}}},
		}}
	}
	return nil
}

// humanNames maps every XPN repetition of field (PID-5, MRG-7, NK1-2).
func (b *builder) humanNames(seg *hl7v2.Segment, field int) []models.HumanName {
	var out []models.HumanName
	for rep := 1; rep <= seg.Repetitions(field); rep++ {
		cs := splitComponents(seg, b.m.Delimiters(), field, rep)
		c := cs.get
		n := models.HumanName{
			Family: b.optional(c(1)),
			Given:  b.nonEmpty(c(2), c(3)),
			Prefix: b.nonEmpty(c(5)),
			Suffix: b.nonEmpty(c(4), c(6)),
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

// gender maps an administrative sex code through the dialect's table.
func (b *builder) gender(code string) *models.AdministrativeGender {
	g, ok := b.t.sexCodes[strings.ToUpper(strings.TrimSpace(code))]
	if !ok {
		return nil
	}
	return &g
}

// genderOf parses a FHIR administrative gender code.
func genderOf(code string) (models.AdministrativeGender, bool) {
	switch code {
	case "male":
		return models.AdministrativeGenderMale, true
	case "female":
		return models.AdministrativeGenderFemale, true
	case "other":
		return models.AdministrativeGenderOther, true
	case "unknown":
		return models.AdministrativeGenderUnknown, true
	}
	return 0, false
}

// addresses maps every PID-11 repetition (XAD) the way English feeds use
// it: XAD-1.1 and XAD-2 are address lines, XAD-3 the town, XAD-4 the
// county (FHIR district), XAD-5 the postcode, XAD-6 the country, and the
// address type XAD-7 gives the use.
func (b *builder) addresses(seg *hl7v2.Segment, field int) []models.Address {
	var out []models.Address
	for rep := 1; rep <= seg.Repetitions(field); rep++ {
		cs := splitComponents(seg, b.m.Delimiters(), field, rep)
		c := cs.get
		a := models.Address{
			Line:       b.nonEmpty(c(1), c(2)),
			City:       b.optional(c(3)),
			District:   b.optional(c(4)),
			PostalCode: b.optional(c(5)),
			Country:    b.optional(c(6)),
		}
		if a.Line == nil && a.City == nil && a.District == nil && a.PostalCode == nil && a.Country == nil {
			continue
		}
		if use, ok := addressUse(c(7)); ok {
			a.Use = &use
		}
		if strings.EqualFold(c(7), "M") {
			// Mailing: the guide's AddressType map makes it a postal address.
			t := models.AddressTypePostal
			a.Type = &t
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
// "other") or the use code NET, and is email for an address with an "@"
// given as a phone number, without NET or an equipment type that says
// so (v2.3 feeds put e-mail addresses in XTN-1 as they put numbers), as
// a number holds none; the use is work for XTN-2 WPN, mobile
// for XTN-2 PRS or a CP equipment type (a mobile given as the primary
// residence number too), home for PRN, else the field's default. An email address is XTN-4 (or XTN-1 when XTN-4 is empty); a
// number is XTN-1, or XTN-5 to XTN-8 (country, area, local number,
// extension) put together when XTN-1 is empty, as from v2.5 on.
func (b *builder) telecoms(seg *hl7v2.Segment, field int, defaultUse models.ContactPointUse) []models.ContactPoint {
	var out []models.ContactPoint
	for rep := 1; rep <= seg.Repetitions(field); rep++ {
		cs := splitComponents(seg, b.m.Delimiters(), field, rep)
		c := cs.get
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
				v = b.join(" ", prefixed("+", c(5)), c(6), c(7))
				if v != "" && c(8) != "" {
					v += " ext. " + c(8)
				}
			}
		}
		if v == "" {
			continue
		}
		if system == models.ContactPointSystemPhone && strings.Contains(v, "@") {
			system = models.ContactPointSystemEmail
		}
		use := defaultUse
		switch {
		case useCode == "WPN":
			use = models.ContactPointUseWork
		case useCode == "PRS" || equipment == "CP":
			// A mobile is a mobile, also as the primary residence number
			// (PRN^CP), as the v2-to-FHIR guide maps equipment type CP; a
			// work mobile (WPN^CP) stays work, which says more.
			use = models.ContactPointUseMobile
		case useCode == "PRN":
			use = models.ContactPointUseHome
		}
		out = append(out, models.ContactPoint{System: &system, Value: b.str(v), Use: &use})
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

// birthTime records the time of birth of p when PID-7, raw, a valid
// date, also holds a time of day: the patient-birthTime extension on
// birthDate, a dateTime with the offset sent or, without one, the offset
// of the feed's time zone then (so BST is +01:00), as other times. The
// clock time is kept, so its date is birthDate. Only the ADT bundles
// write it: Translator.Patient returns a model, which has no room for it.
// It reports whether it recorded one.
func (b *builder) birthTime(p *models.Patient, raw string) bool {
	digits := strings.TrimSpace(raw)
	for i := 0; i < len(digits); i++ {
		if digits[i] < '0' || digits[i] > '9' {
			digits = digits[:i]
			break
		}
	}
	if len(digits) <= len("YYYYMMDD") {
		return false // no time of day: most feeds, and no allocation
	}
	dt, err := fhir.DateTimeFromHL7(raw, b.t.loc)
	if err != nil || !strings.Contains(dt, "T") {
		return false
	}
	b.birthTimes = append(b.birthTimes, birthTime{patient: p, value: dt})
	return true
}
