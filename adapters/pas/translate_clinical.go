package pas

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
	"unicode/utf8"

	models "github.com/samply/golang-fhir-models/fhir-models/fhir"

	"github.com/junction-fhir/junction/pkg/fhir"
	"github.com/junction-fhir/junction/pkg/hl7v2"
	"github.com/junction-fhir/junction/pkg/nhs"
)

// recordIdentifierSystem is the system, followed by the kind of record,
// of the identifiers Junction gives the records it makes from repeating
// segments (NK1, AL1, DG1), which HL7 v2 gives no identifier of their own.
const recordIdentifierSystem = "https://junction-fhir.github.io/fhir/Id/pas-"

// recordIdentifier returns the identifier of the record of the given
// kind that parts (what names the record: an allergen's code, a
// diagnosis's code and visit) pick out among the patient's, or nil when
// the patient has no identifier to key it by. An update that repeats the
// record (every A08 repeats the patient's AL1s) then names the same one,
// which a FHIR destination updates by identifier rather than writing
// again. A record named twice in one message (two DG1 of one code, an
// admitting and a final diagnosis) gets its occurrence in the name, so
// the two stay two.
//
// The patient is keyed by the PAS's own identifier for them (the first
// identifier with a system other than the NHS number's, with its
// assigner: two trusts' hospital numbers of one value are different
// patients), else their NHS number: a hospital number stays while an NHS
// number may come only later, after a trace, which would rename every
// record. The value is a SHA-256 hash, which does not hide the key from
// someone who tries every NHS number; it tells no more than the resource
// does, which names its patient.
func (b *builder) recordIdentifier(kind string, parts ...string) []models.Identifier {
	// The hash's input is built on the stack and hashed at once, rather
	// than written piece by piece to a hash.Hash, which made most pieces
	// an allocation of their own (about seven for each record).
	var room [256]byte
	in := appendRecordPatientKey(room[:0], b.patient)
	if len(in) == 0 {
		return nil
	}
	for _, p := range parts {
		in = append(in, 0x1f)
		in = appendUpper(in, strings.TrimSpace(p))
	}
	sum := sha256.Sum256(in)
	n := 1
	for _, seen := range b.records {
		if seen == sum {
			n++
		}
	}
	b.records = append(b.records, sum)
	if n > 1 {
		in = append(in, 0x1e)
		in = strconv.AppendInt(in, int64(n), 10)
		sum = sha256.Sum256(in)
	}
	var digits [32]byte
	hex.Encode(digits[:], sum[:16])
	return b.identifier(b.join("", recordIdentifierSystem, kind), b.bytes(digits[:]))
}

// appendUpper appends strings.ToUpper(s) to buf, without making the
// upper-case string when s is ASCII.
func appendUpper(buf []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return append(buf, strings.ToUpper(s)...)
		}
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		}
		buf = append(buf, c)
	}
	return buf
}

// appendRecordPatientKey appends the key of p's records (see
// recordIdentifier) to buf, or nothing when p is nil or has no
// identifier with a system.
func appendRecordPatientKey(buf []byte, p *models.Patient) []byte {
	if p == nil {
		return buf
	}
	var nhsNumber *models.Identifier
	for i := range p.Identifier {
		id := &p.Identifier[i]
		if id.System == nil || id.Value == nil {
			continue
		}
		if *id.System == nhs.SystemNHSNumber {
			nhsNumber = id
			continue
		}
		assigner := ""
		if id.Assigner != nil {
			assigner = deref(id.Assigner.Display)
		}
		buf = append(append(append(buf, *id.System...), '|'), *id.Value...)
		return append(append(buf, '|'), assigner...)
	}
	if nhsNumber != nil {
		buf = append(append(append(buf, *nhsNumber.System...), '|'), *nhsNumber.Value...)
	}
	return buf
}

// deref returns *p, or "" for nil.
func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// conceptKey is what names a coded record: its first coding's system
// and code, else its text.
func conceptKey(c *models.CodeableConcept) string {
	for _, cd := range c.Coding {
		if cd.Code != nil && *cd.Code != "" {
			return deref(cd.System) + "|" + *cd.Code
		}
	}
	return "|" + deref(c.Text)
}

// mapNK1 maps each NK1 (next of kin, associated party) into a
// RelatedPerson of the Patient:
//
//   - name: NK1-2 (XPN, as PID-5).
//   - relationship: NK1-3 (HL7 table 0063) as the v2-to-FHIR guide maps
//     it to v3 RoleCode, else kept in table 0063; and NK1-7 contact role
//     (HL7 table 0131, such as N next of kin, C emergency contact).
//   - telecom: NK1-5 (home) and NK1-6 (work), as PID-13 and PID-14.
//   - address: NK1-4 (XAD, as PID-11).
//   - gender: NK1-15 through the dialect's sex code table; a code not in
//     it is left out and flagged DQNextOfKinSexInvalid.
//
// An NK1 with neither a name, a relationship, a telecom nor an address
// is skipped.
func (b *builder) mapNK1(nk1 *hl7v2.Segment) error {
	if b.patient == nil {
		return nil
	}
	r := &models.RelatedPerson{
		Meta:    b.meta(nhs.ProfileRelatedPerson),
		Name:    b.humanNames(nk1, 2),
		Address: b.addresses(nk1, 4),
		Telecom: append(b.telecoms(nk1, 5, models.ContactPointUseHome), b.telecoms(nk1, 6, models.ContactPointUseWork)...),
	}
	sex := value(nk1.Component(15, 1, 1, 1))
	r.Gender = b.gender(sex)
	if rel := b.relationship(strings.ToUpper(strings.TrimSpace(value(nk1.Component(3, 1, 1, 1)))), strings.TrimSpace(value(nk1.ComponentText(3, 1, 2)))); rel != nil {
		r.Relationship = append(r.Relationship, *rel)
	}
	if role := strings.ToUpper(strings.TrimSpace(value(nk1.Component(7, 1, 1, 1)))); role != "" {
		if display, ok := contactRoles[role]; ok {
			r.Relationship = append(r.Relationship, *b.concept(systemV2ContactRole, role, display))
		} else {
			r.Relationship = append(r.Relationship, models.CodeableConcept{Text: b.str(role)})
		}
	}
	if r.Name == nil && r.Address == nil && r.Telecom == nil && r.Relationship == nil {
		return nil
	}
	if r.Gender == nil && strings.TrimSpace(sex) != "" {
		b.flag(DQNextOfKinSexInvalid)
	}
	url, id := b.nextURL("RelatedPerson")
	r.Id = b.str(id)
	// Named by the person's name and relationship to the patient.
	family, given := "", ""
	if len(r.Name) > 0 {
		family, given = deref(r.Name[0].Family), strings.Join(r.Name[0].Given, " ")
	}
	r.Identifier = b.recordIdentifier("related-person", family, given, value(nk1.Component(3, 1, 1, 1)))
	patientURL, _ := b.fullURL("Patient")
	r.Patient = b.ref(patientURL, "Patient")
	b.add(url, "RelatedPerson", r)
	return nil
}

// relationshipCodes maps HL7 table 0063 to v3 RoleCode, as the v2-to-FHIR
// guide does; codes it keeps in table 0063 or 0131 are in
// relationshipV2.
var relationshipCodes = map[string][2]string{
	"SEL": {"ONESELF", "self"}, "SPO": {"SPS", "spouse"}, "DOM": {"SIGOTHR", "significant other"},
	"CHD": {"CHILD", "child"}, "GCH": {"GRNDCHILD", "grandchild"}, "NCH": {"NCHILD", "natural child"},
	"SCH": {"STPCHLD", "step child"}, "FCH": {"CHLDFOST", "foster child"}, "PAR": {"PRN", "parent"},
	"MTH": {"MTH", "mother"}, "FTH": {"FTH", "father"}, "GRP": {"GRPRN", "grandparent"},
	"EXF": {"EXT", "extended family member"}, "SIB": {"SIB", "sibling"}, "BRO": {"BRO", "brother"},
	"SIS": {"SIS", "sister"}, "FND": {"FRND", "unrelated friend"},
}

var relationshipV2 = map[string]string{
	"DEP": "Handicapped dependent", "WRD": "Ward of court", "CGV": "Care giver", "GRD": "Guardian",
	"OAD": "Other adult", "EME": "Employee", "ASC": "Associate", "OWN": "Owner", "TRA": "Trainer",
	"MGR": "Manager", "NON": "None",
}

// contactRoles is HL7 table 0131.
var contactRoles = map[string]string{
	"C": "Emergency Contact", "E": "Employer", "F": "Federal Agency", "I": "Insurance Company",
	"N": "Next-of-Kin", "S": "State Agency", "O": "Other", "U": "Unknown",
}

// relationship maps an NK1-3 code and text (see mapNK1).
func (b *builder) relationship(code, text string) *models.CodeableConcept {
	cc := &models.CodeableConcept{Text: b.optional(text)}
	if v3, ok := relationshipCodes[code]; ok {
		cc.Coding = []models.Coding{b.coding(systemRoleCode, v3[0], v3[1])}
	} else if display, ok := relationshipV2[code]; ok {
		cc.Coding = []models.Coding{b.coding(systemV2Relationship, code, display)}
	} else if code != "" && text == "" {
		cc.Text = b.str(code)
	}
	if cc.Coding == nil && cc.Text == nil {
		return nil
	}
	return cc
}

// mapAL1 maps each AL1 into an AllergyIntolerance of the Patient:
//
//   - code: AL1-3 (CE); see codeableConcept.
//   - type and category: AL1-2 allergen type (HL7 table 0127) as the
//     v2-to-FHIR guide maps it: DA, FA, MA, EA, AA, PA and LA are
//     allergies; DA medication, FA food, EA, PA and LA environment, AA
//     biologic. MC (contraindication) gives neither.
//   - criticality and reaction severity: AL1-4 (HL7 table 0128): SV
//     severe (criticality high), MO moderate and MI mild (criticality
//     low), U unknown (criticality unable-to-assess).
//   - reaction: one, whose manifestations are the AL1-5 repetitions as
//     text; none when AL1-5 is empty (FHIR requires a manifestation).
//   - onsetDateTime: AL1-6 identification date.
//   - clinicalStatus: active.
//
// An AL1 without an allergen code is skipped.
func (b *builder) mapAL1(al1 *hl7v2.Segment) error {
	if b.patient == nil {
		return nil
	}
	code := b.codeableConcept(al1, 3, "")
	if code == nil {
		return nil
	}
	url, id := b.nextURL("AllergyIntolerance")
	patientURL, _ := b.fullURL("Patient")
	a := &models.AllergyIntolerance{
		Id:             b.str(id),
		Meta:           b.meta(nhs.ProfileAllergyIntolerance),
		Identifier:     b.recordIdentifier("allergy", conceptKey(code)),
		ClinicalStatus: b.concept(systemAllergyClin, "active", "Active"),
		Code:           code,
		Patient:        b.ref(patientURL, "Patient"),
	}
	allergy := models.AllergyIntoleranceTypeAllergy
	switch strings.ToUpper(strings.TrimSpace(value(al1.Component(2, 1, 1, 1)))) {
	case "DA":
		a.Type, a.Category = &allergy, []models.AllergyIntoleranceCategory{models.AllergyIntoleranceCategoryMedication}
	case "FA":
		a.Type, a.Category = &allergy, []models.AllergyIntoleranceCategory{models.AllergyIntoleranceCategoryFood}
	case "EA", "PA", "LA":
		a.Type, a.Category = &allergy, []models.AllergyIntoleranceCategory{models.AllergyIntoleranceCategoryEnvironment}
	case "AA":
		a.Type, a.Category = &allergy, []models.AllergyIntoleranceCategory{models.AllergyIntoleranceCategoryBiologic}
	case "MA":
		a.Type = &allergy
	}
	var severity *models.AllergyIntoleranceSeverity
	set := func(s models.AllergyIntoleranceSeverity, c models.AllergyIntoleranceCriticality) {
		severity, a.Criticality = &s, &c
	}
	switch strings.ToUpper(strings.TrimSpace(value(al1.Component(4, 1, 1, 1)))) {
	case "SV":
		set(models.AllergyIntoleranceSeveritySevere, models.AllergyIntoleranceCriticalityHigh)
	case "MO":
		set(models.AllergyIntoleranceSeverityModerate, models.AllergyIntoleranceCriticalityLow)
	case "MI":
		set(models.AllergyIntoleranceSeverityMild, models.AllergyIntoleranceCriticalityLow)
	case "U":
		c := models.AllergyIntoleranceCriticalityUnableToAssess
		a.Criticality = &c
	}
	var manifestations []models.CodeableConcept
	for rep := 1; rep <= al1.Repetitions(5); rep++ {
		if text := strings.TrimSpace(value(al1.ComponentText(5, rep, 1))); text != "" {
			manifestations = append(manifestations, models.CodeableConcept{Text: b.str(text)})
		}
	}
	if manifestations != nil {
		a.Reaction = []models.AllergyIntoleranceReaction{{Manifestation: manifestations, Severity: severity}}
	}
	if raw := strings.TrimSpace(value(al1.Component(6, 1, 1, 1))); raw != "" {
		if ts, err := fhir.DateTimeFromHL7(raw, b.t.loc); err == nil {
			a.OnsetDateTime = &ts
		}
	}
	b.add(url, "AllergyIntolerance", a)
	return nil
}

// mapDG1 maps each DG1 into a Condition of the Patient:
//
//   - code: DG1-3 (CE; see codeableConcept), with DG1-4 description as
//     the text when DG1-3.2 is empty.
//   - category: encounter-diagnosis.
//   - verificationStatus: from DG1-6 diagnosis type: W working
//     provisional, F final confirmed; A admitting and others leave it out.
//   - encounter: the Encounter, when there is one.
//   - onsetDateTime: DG1-5 diagnosis date/time.
//
// A DG1 without a diagnosis code or description is skipped.
func (b *builder) mapDG1(dg1 *hl7v2.Segment) error {
	if b.patient == nil {
		return nil
	}
	code := b.codeableConcept(dg1, 3, strings.TrimSpace(value(dg1.ComponentText(4, 1, 1))))
	if code == nil {
		return nil
	}
	url, id := b.nextURL("Condition")
	patientURL, _ := b.fullURL("Patient")
	c := &models.Condition{
		Id:       b.str(id),
		Meta:     b.meta(nhs.ProfileCondition),
		Category: b.concepts(systemConditionCat, "encounter-diagnosis", "Encounter Diagnosis"),
		Code:     code,
		Subject:  b.ref(patientURL, "Patient"),
	}
	switch strings.ToUpper(strings.TrimSpace(value(dg1.Component(6, 1, 1, 1)))) {
	case "W":
		c.VerificationStatus = b.concept(systemConditionVer, "provisional", "Provisional")
	case "F":
		c.VerificationStatus = b.concept(systemConditionVer, "confirmed", "Confirmed")
	}
	visit := ""
	if b.encounter != nil {
		u, _ := b.fullURL("Encounter")
		c.Encounter = fhir.Ptr(b.ref(u, "Encounter"))
		if len(b.encounter.Identifier) > 0 {
			visit = deref(b.encounter.Identifier[0].Value)
		}
	}
	// A diagnosis of one visit: the same code at another visit is
	// another record.
	c.Identifier = b.recordIdentifier("diagnosis", visit, conceptKey(code))
	if raw := strings.TrimSpace(value(dg1.Component(5, 1, 1, 1))); raw != "" {
		if ts, err := fhir.DateTimeFromHL7(raw, b.t.loc); err == nil {
			c.OnsetDateTime = &ts
		}
	}
	b.add(url, "Condition", c)
	return nil
}

// codeableConcept maps a CE/CWE field: the code CE-1 with the system named
// by CE-3 (see codingSystem), the text CE-2 (else fallbackText). A code
// whose system is unknown is kept as text, with the code when there is no
// other text. It returns nil when the field holds no code and no text.
func (b *builder) codeableConcept(seg *hl7v2.Segment, field int, fallbackText string) *models.CodeableConcept {
	cs := splitComponents(seg, b.m.Delimiters(), field, 1)
	c := cs.get
	// The text is a primitive: an "&" in it is the sender's, unescaped.
	code, text := c(1), cs.text(2)
	if text == "" {
		text = fallbackText
	}
	cc := &models.CodeableConcept{Text: b.optional(text)}
	if code != "" {
		if system := codingSystem(c(3)); system != "" {
			if system == systemICD10 {
				code = icd10Code(code)
			}
			cc.Coding = []models.Coding{{System: b.str(system), Code: b.str(code), Display: b.optional(cs.text(2))}}
		} else if text == "" {
			cc.Text = b.str(code)
		}
	}
	if cc.Coding == nil && cc.Text == nil {
		return nil
	}
	return cc
}

// codingSystem maps an HL7 table 0396 coding system name (and the names
// NHS feeds use) to a FHIR code system URI, or "".
func codingSystem(name string) string {
	switch strings.ToUpper(name) {
	case "SCT", "SNM", "SNM3", "SNOMED", "SNOMEDCT", "SNOMED-CT", "SNOMED CT":
		return systemSNOMED
	case "I10", "ICD10", "ICD-10":
		return systemICD10
	case "I9", "I9C", "ICD9", "ICD9CM":
		return systemICD9CM
	case "LN", "LOINC":
		return systemLOINC
	}
	return ""
}

// icd10Code writes an ICD-10 code in its dotted form: feeds often send
// "J189" for J18.9.
func icd10Code(code string) string {
	code = strings.ToUpper(code)
	if len(code) > 3 && !strings.Contains(code, ".") &&
		code[0] >= 'A' && code[0] <= 'Z' && allDigits(code[1:3]) {
		return code[:3] + "." + code[3:]
	}
	return code
}
