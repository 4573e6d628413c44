package pas

import (
	"strings"
	"unicode"

	models "github.com/samply/golang-fhir-models/fhir-models/fhir"

	"github.com/junction-fhir/junction/pkg/fhir"
	"github.com/junction-fhir/junction/pkg/hl7v2"
	"github.com/junction-fhir/junction/pkg/nhs"
)

// mapPV1 maps the PV1 segment into the Encounter:
//
//   - status: from the event (see adtEvents).
//   - class: PV1-2 patient class, as the v2-to-FHIR guide maps HL7 table
//     0004: E EMER, I IMP, O AMB, P PRENC (v3 ActCode); B, C, N, R and U
//     keep their table 0004 code. Anything else is the null flavour UNK,
//     flagged DQPatientClassInvalid; nothing, UNK flagged
//     DQPatientClassMissing.
//   - identifier: PV1-19.1 visit number (for an inpatient stay, the
//     hospital provider spell number; UK Core defines no national system
//     for it, so it is the dialect's visit number system), or
//     DQVisitNumberMissing. For A06 and A07, a different prior visit
//     number MRG-5 follows with use "old".
//   - period: PV1-44 admit and PV1-45 discharge date/time (no end for
//     A13).
//   - subject: the Patient.
//   - serviceProvider: MSH-4.1 when it has the shape of an ODS code.
//   - location: PV1-3 as a Location resource (see location), whose status
//     follows the encounter: active, planned for a planned encounter,
//     reserved while on leave (A21), completed once finished, none when
//     cancelled or entered in error. For A02, PV1-6 (prior location)
//     follows as completed history, the transfer time (EVN-6, else EVN-2)
//     ending it and starting the new one. For A12 see adtEvents.
//   - participant: PV1-7 attending (ATND), PV1-8 referring (REF), PV1-9
//     consulting (CON) and PV1-17 admitting (ADM) doctors, each a
//     Practitioner resource (see practitionerResource); a field sent as
//     "" is marked cleared as participant.<type code>.
//   - hospitalization: PV1-14 admit source and PV1-37 (else a two-digit
//     PV1-36) discharge destination as NHS Data Dictionary codes
//     (UKCore-SourceOfAdmissionEngland, UKCore-DischargeDestinationEngland;
//     other codes as text); PV1-4 admission type, when an NHS Data
//     Dictionary admission method code, as the UK Core AdmissionMethod
//     extension.
//   - type: PV1-4 when it is not an NHS admission method: an HL7 table
//     0007 code (E emergency, C elective...), else its text.
//   - serviceType: PV1-10 hospital service (see hospitalService).
//   - extension dischargeMethod: PV1-36 when a one-digit NHS Data
//     Dictionary discharge method code (the NHS use of PV1-36; PV1-37
//     carries the destination).
func (b *builder) mapPV1(pv1 *hl7v2.Segment) error {
	class := strings.ToUpper(strings.TrimSpace(value(pv1.Component(2, 1, 1, 1))))
	visitNumber := strings.TrimSpace(value(pv1.Component(19, 1, 1, 1)))
	_, id := b.fullURL("Encounter")
	patientURL, _ := b.fullURL("Patient")
	e := &models.Encounter{
		Id:     b.str(id),
		Meta:   b.meta(nhs.ProfileEncounter),
		Status: b.mapping.status(pv1),
		Class:  b.patientClass(class),
	}
	if b.patient != nil {
		e.Subject = fhir.Ptr(b.ref(patientURL, "Patient"))
	}
	if visitNumber != "" {
		e.Identifier = []models.Identifier{{
			System: b.str(b.t.dialect.VisitNumberSystem),
			Value:  b.str(visitNumber),
		}}
	} else {
		b.flag(DQVisitNumberMissing)
	}
	if b.priorVisit != "" && b.priorVisit != visitNumber {
		use := models.IdentifierUseOld
		e.Identifier = append(e.Identifier, models.Identifier{
			Use:    &use,
			System: b.str(b.t.dialect.VisitNumberSystem),
			Value:  b.str(b.priorVisit),
		})
	}
	cancelDischarge := b.mapping.kind == eventCancelDischarge
	var period models.Period
	period.Start = b.visitTime(pv1, 44)
	if !cancelDischarge {
		period.End = b.visitTime(pv1, 45)
	}
	if period.Start != nil && period.End != nil {
		// An admission in the first pass of the hour the clocks repeat,
		// discharged in the second, is read so the stay does not end
		// before it began.
		start := fhir.PeriodStartFromHL7(strings.TrimSpace(value(pv1.Component(44, 1, 1, 1))), *period.Start, *period.End, b.t.loc)
		period.Start = &start
	}
	if period.Start != nil || period.End != nil {
		e.Period = &period
	}
	e.ServiceProvider = ODSReference(value(b.m.SendingFacility()))
	b.locations(e, pv1)
	participants := [...]struct {
		field         int
		code, display string
	}{{7, "ATND", "attender"}, {8, "REF", "referrer"}, {9, "CON", "consultant"}, {17, "ADM", "admitter"}}
	if n := pv1.Repetitions(7) + pv1.Repetitions(8) + pv1.Repetitions(9) + pv1.Repetitions(17); n > 0 {
		e.Participant = make([]models.EncounterParticipant, 0, n)
	}
	for _, p := range participants {
		for rep := 1; rep <= pv1.Repetitions(p.field); rep++ {
			who := b.practitionerResource(pv1, p.field, rep)
			if who == nil {
				continue
			}
			e.Participant = append(e.Participant, models.EncounterParticipant{
				Type:       b.concepts(systemParticipation, p.code, p.display),
				Individual: who,
			})
		}
	}
	e.ServiceType = b.hospitalService(pv1)
	var h models.EncounterHospitalization
	if code := strings.TrimSpace(value(pv1.Component(4, 1, 1, 1))); admissionMethods[code] {
		h.Extension = []models.Extension{{
			Url:                  nhs.ExtAdmissionMethod,
			ValueCodeableConcept: &models.CodeableConcept{Coding: []models.Coding{{System: b.str(nhs.CodeSystemAdmissionMethodEngland), Code: b.str(code)}}},
		}}
	} else if code != "" {
		// Not an NHS admission method: an HL7 table 0007 admission type,
		// which the v2-to-FHIR guide maps to Encounter.type, or kept as
		// text.
		if display, ok := admissionTypes[strings.ToUpper(code)]; ok {
			e.Type = []models.CodeableConcept{*b.concept(systemV2AdmissionType, strings.ToUpper(code), display)}
		} else {
			e.Type = []models.CodeableConcept{{Text: b.str(code)}}
		}
	}
	h.AdmitSource = b.nhsCode(strings.TrimSpace(value(pv1.Component(14, 1, 1, 1))), sourcesOfAdmission, nhs.CodeSystemSourceOfAdmissionEngland)
	if !cancelDischarge {
		method := strings.TrimSpace(value(pv1.Component(36, 1, 1, 1)))
		destination := strings.TrimSpace(value(pv1.Component(37, 1, 1, 1)))
		if destination == "" && len(method) == 2 {
			destination = method
		}
		h.DischargeDisposition = b.nhsCode(destination, dischargeDestinations, nhs.CodeSystemDischargeDestinationEngland)
		if len(method) == 1 && method >= "1" && method <= "9" && method != "2" {
			e.Extension = append(e.Extension, models.Extension{
				Url:                  nhs.ExtDischargeMethod,
				ValueCodeableConcept: &models.CodeableConcept{Coding: []models.Coding{{System: b.str(nhs.CodeSystemDischargeMethodEngland), Code: b.str(method)}}},
			})
		}
	}
	if h.Extension != nil || h.AdmitSource != nil || h.DischargeDisposition != nil {
		e.Hospitalization = &h
	}
	if b.mapping.derivedStatus && (b.mapping.kind == eventCancelTransfer || value(pv1.Component(45, 1, 1, 1)) == "") {
		e.Extension = append(e.Extension, models.Extension{Url: nhs.JunctionExtDerivedElement, ValueCode: b.str("status")})
		if b.mapping.kind != eventCancelTransfer && len(e.Location) > 0 {
			e.Extension = append(e.Extension, models.Extension{Url: nhs.JunctionExtDerivedElement, ValueCode: b.str("location")})
		}
	}
	for _, p := range participants {
		// The doctor of that kind is deleted ("participant.ATND"): a
		// merging receiver drops its participants of that type only.
		if pv1.IsNull(p.field) {
			e.Extension = append(e.Extension, b.clearedElement("participant."+p.code))
		}
	}
	if cancelDischarge {
		// The discharge is withdrawn: a receiver merging into what it
		// holds must drop the end, discharge destination and method, and
		// keep the admission's start, admit source and method.
		e.Extension = append(e.Extension, b.clearedElement("period.end"),
			b.clearedElement("hospitalization.dischargeDisposition"))
		e.Extension = append(e.Extension, models.Extension{Url: nhs.JunctionExtClearedElement, ValueUri: b.str(nhs.ExtDischargeMethod)})
	}
	b.encounter = e
	return nil
}

// hospitalService maps PV1-10, the hospital service (in English feeds the
// NHS treatment function, such as 300 General Medicine), to
// Encounter.serviceType, as the v2-to-FHIR guide does: coded when its
// coding system is one Junction knows, else as text keeping the code
// ("300 General Medicine"), since UK Core's care setting types are not
// treatment functions. It returns nil when the field is empty.
func (b *builder) hospitalService(pv1 *hl7v2.Segment) *models.CodeableConcept {
	cs := splitComponents(pv1, b.m.Delimiters(), 10, 1)
	code, text := cs.get(1), cs.text(2)
	if code == "" && text == "" {
		return nil
	}
	if codingSystem(cs.get(3)) != "" {
		return b.codeableConcept(pv1, 10, "")
	}
	return &models.CodeableConcept{Text: b.str(b.join(" ", code, text))}
}

// systemV2AdmissionType is HL7 table 0007, admission type.
const systemV2AdmissionType = "http://terminology.hl7.org/CodeSystem/v2-0007"

// admissionTypes holds HL7 table 0007's codes and displays.
var admissionTypes = map[string]string{
	"A": "Accident", "C": "Elective", "E": "Emergency", "L": "Labor and Delivery",
	"N": "Newborn (Birth in healthcare facility)", "R": "Routine", "U": "Urgent",
}

// NHS Data Dictionary codes (England) of the hospitalisation elements.
var (
	admissionMethods = setOf("11", "12", "13", "21", "22", "23", "24", "25", "2A", "2B", "2C", "2D", "28",
		"31", "32", "81", "82", "83", "98", "99")
	sourcesOfAdmission = setOf("19", "29", "39", "49", "51", "52", "53", "54", "65", "66", "79", "85", "87",
		"88", "98", "99")
	dischargeDestinations = setOf("19", "29", "30", "37", "38", "48", "49", "50", "51", "52", "53", "54",
		"65", "66", "79", "84", "85", "87", "88", "98", "99")
)

func setOf(codes ...string) map[string]bool {
	m := make(map[string]bool, len(codes))
	for _, c := range codes {
		m[c] = true
	}
	return m
}

// nhsCode is code in system when known, else as text, else nil.
func (b *builder) nhsCode(code string, known map[string]bool, system string) *models.CodeableConcept {
	switch {
	case code == "":
		return nil
	case known[code]:
		return &models.CodeableConcept{Coding: []models.Coding{{System: b.str(system), Code: b.str(code)}}}
	}
	return &models.CodeableConcept{Text: b.str(code)}
}

// mapPriorVisit keeps MRG-5 (prior visit number) of an A06 or A07 for
// mapPV1.
func (b *builder) mapPriorVisit(mrg *hl7v2.Segment) error {
	b.priorVisit = strings.TrimSpace(value(mrg.Component(5, 1, 1, 1)))
	return nil
}

// locations adds the Encounter's locations (see mapPV1).
func (b *builder) locations(e *models.Encounter, pv1 *hl7v2.Segment) {
	var status *models.EncounterLocationStatus
	set := func(s models.EncounterLocationStatus) { status = &s }
	switch e.Status {
	case models.EncounterStatusPlanned:
		set(models.EncounterLocationStatusPlanned)
	case models.EncounterStatusOnleave:
		set(models.EncounterLocationStatusReserved)
	case models.EncounterStatusFinished:
		set(models.EncounterLocationStatusCompleted)
	case models.EncounterStatusCancelled, models.EncounterStatusEnteredInError:
	default:
		set(models.EncounterLocationStatusActive)
	}
	// A move to where the patient is (a consultant change sent as a
	// transfer, or its cancellation) is no move between locations: one
	// entry, with no stay begun or ended.
	sameLocation := pv1.Field(6) == pv1.Field(3)
	var moved *string
	if b.mapping.kind == eventTransfer && !sameLocation {
		moved = b.transferTime()
	}
	if url, display := b.location(pv1, 3, "Location"); url != "" {
		l := models.EncounterLocation{
			Location: models.Reference{Reference: b.str(url), Type: b.str("Location"), Display: b.optional(display)},
			Status:   status,
		}
		if moved != nil {
			l.Period = &models.Period{Start: moved}
		}
		e.Location = append(e.Location, l)
	}
	switch b.mapping.kind {
	case eventTransfer, eventCancelTransfer:
	default:
		return
	}
	if sameLocation {
		return
	}
	url, display := b.location(pv1, 6, "Location/prior")
	if url == "" {
		return
	}
	l := models.EncounterLocation{
		Location: models.Reference{Reference: b.str(url), Type: b.str("Location"), Display: b.optional(display)},
	}
	if b.mapping.kind == eventTransfer {
		completed := models.EncounterLocationStatusCompleted
		l.Status = &completed
		if moved != nil {
			l.Period = &models.Period{End: moved}
		}
	} else {
		l.Extension = []models.Extension{{Url: nhs.JunctionExtEncounterLocationCancelled, ValueBoolean: fhir.Ptr(true)}}
	}
	e.Location = append(e.Location, l)
}

// transferTime is when a transfer happened: EVN-6 (event occurred), else
// EVN-2 (recorded), when valid with at least minute precision, read as a
// time that had passed at receipt (fhir.PastInstantFromHL7). It flags
// DQLocalTimeAmbiguous when the feed's zone skips or repeats that clock
// time, as visit times do: the stay it ends and the one it begins are
// then placed by a guessed offset.
func (b *builder) transferTime() *string {
	evn := b.m.Segment("EVN")
	if evn == nil {
		return nil
	}
	for _, field := range [...]int{6, 2} {
		raw := evn.Component(field, 1, 1, 1)
		if ts, ok := fhir.PastInstantFromHL7(raw, b.t.loc, b.env.ReceivedAt); ok {
			if fhir.AmbiguousLocal(raw, b.t.loc) {
				b.flag(DQLocalTimeAmbiguous)
			}
			return &ts
		}
	}
	return nil
}

// location makes a Location resource of the given kind from the PL in
// field of pv1 and returns its fullUrl and display, or "" when the field
// is empty:
//
//   - identifier: when the dialect sets LocationIdentifierSystem, the
//     location's code path (see locationCode) in that system; otherwise
//     none, since local location codes have no national system.
//   - name: the display (see locationDisplay).
//   - physicalType: bed (PL-3), else room (PL-2), else ward (PL-1).
//   - managingOrganization: the facility PL-4.1 when it is an ODS code.
//   - status active, mode instance.
//
// The facility is not an identifier of the Location: the Location is the
// ward, room or bed, and UK Core's ODS site code identifier
// (nhs.SystemODSSite) names a whole site, which every ward of the site
// would then share.
func (b *builder) location(pv1 *hl7v2.Segment, field int, kind string) (string, string) {
	cs := splitComponents(pv1, b.m.Delimiters(), field, 1)
	c := cs.get
	pl := b.placeCodes(&cs)
	display := b.locationDisplay(&cs)
	if display == "" {
		return "", ""
	}
	url, id := b.fullURL(kind)
	status, mode := models.LocationStatusActive, models.LocationModeInstance
	l := &models.Location{
		Id:                   b.str(id),
		Meta:                 b.meta(nhs.ProfileLocation),
		Status:               &status,
		Name:                 b.str(display),
		Mode:                 &mode,
		ManagingOrganization: ODSReference(c(4)),
	}
	if system := b.t.dialect.LocationIdentifierSystem; system != "" {
		if code := locationCode(pl(1), pl(2), pl(3)); code != "" {
			l.Identifier = []models.Identifier{{System: b.str(system), Value: b.str(code)}}
		}
	}
	switch {
	case pl(3) != "":
		l.PhysicalType = b.concept(systemLocationType, "bd", "Bed")
	case pl(2) != "":
		l.PhysicalType = b.concept(systemLocationType, "ro", "Room")
	case pl(1) != "":
		l.PhysicalType = b.concept(systemLocationType, "wa", "Ward")
	}
	b.add(url, "Location", l)
	return url, display
}

// locationCode is the identifier value of the Location of a PL: its
// point of care (PL-1), room (PL-2) and bed (PL-3) codes joined by "/",
// down to the last one sent, an empty code keeping its place
// ("WARD7/ROOM1/BED4", "WARD7//BED4", "WARD7"), so that a bed is told
// apart from the same bed code on another ward, and a ward from a room.
// It is "" when the PL has none of the three.
func locationCode(pointOfCare, room, bed string) string {
	switch {
	case bed != "":
		return pointOfCare + "/" + room + "/" + bed
	case room != "":
		return pointOfCare + "/" + room
	}
	return pointOfCare
}

// mapVisitIfAny maps PV1 as mapPV1 does when it names a visit: an event
// such as A08, whose PV1 is optional, updates a visit that already
// exists, which without a visit number (PV1-19) no receiver could find,
// so it would make a new Encounter for every update. Without one no
// Encounter is made; a PV1 that describes a visit (a patient class other
// than N) is flagged DQVisitNumberMissing.
func (b *builder) mapVisitIfAny(pv1 *hl7v2.Segment) error {
	class := strings.ToUpper(strings.TrimSpace(value(pv1.Component(2, 1, 1, 1))))
	visitNumber := strings.TrimSpace(value(pv1.Component(19, 1, 1, 1)))
	if visitNumber == "" {
		if class != "" && class != "N" {
			b.flag(DQVisitNumberMissing)
		}
		return nil
	}
	return b.mapPV1(pv1)
}

// mapExistingVisit maps PV1 as mapPV1 does for an event that changes a
// visit already begun: a transfer or leave (A02, A21, A22) or a cancel
// (A11, A12, A13, A38). Without a visit number (PV1-19) no receiver
// could find that visit, so an Encounter would be a new one: a transfer
// or a cancelled discharge would make a second, phantom admission in
// progress, and a cancelled admission a stray entered-in-error Encounter
// while the real one stayed active. Without one, no Encounter is made
// and the message is flagged DQVisitNumberMissing.
func (b *builder) mapExistingVisit(pv1 *hl7v2.Segment) error {
	if strings.TrimSpace(value(pv1.Component(19, 1, 1, 1))) == "" {
		b.flag(DQVisitNumberMissing)
		return nil
	}
	return b.mapPV1(pv1)
}

// patientClass maps PV1-2 (see mapPV1).
func (b *builder) patientClass(code string) models.Coding {
	switch code {
	case "E":
		return b.coding(systemActCode, "EMER", "emergency")
	case "I":
		return b.coding(systemActCode, "IMP", "inpatient encounter")
	case "O":
		return b.coding(systemActCode, "AMB", "ambulatory")
	case "P":
		return b.coding(systemActCode, "PRENC", "pre-admission")
	case "B":
		return b.coding(systemV2PatientClass, "B", "Obstetrics")
	case "C":
		return b.coding(systemV2PatientClass, "C", "Commercial Account")
	case "N":
		return b.coding(systemV2PatientClass, "N", "Not Applicable")
	case "R":
		return b.coding(systemV2PatientClass, "R", "Recurring patient")
	case "U":
		return b.coding(systemV2PatientClass, "U", "Unknown")
	}
	if code == "" {
		b.flag(DQPatientClassMissing)
	} else {
		b.flag(DQPatientClassInvalid)
	}
	return b.coding(systemNullFlavor, "UNK", "unknown")
}

func (b *builder) coding(system, code, display string) models.Coding {
	return models.Coding{System: b.str(system), Code: b.str(code), Display: b.str(display)}
}

// visitTime converts a visit time (PV1-44, PV1-45, PV2-8, PV2-9; the
// first repetition) to a dateTime, flagging DQVisitTimeInvalid when it
// cannot and DQLocalTimeAmbiguous when the feed's zone skips or repeats
// that clock time.
func (b *builder) visitTime(pv1 *hl7v2.Segment, field int) *string {
	raw := strings.TrimSpace(value(pv1.Component(field, 1, 1, 1)))
	if raw == "" {
		return nil
	}
	ts, err := fhir.DateTimeFromHL7(raw, b.t.loc)
	if err != nil {
		b.flag(DQVisitTimeInvalid)
		return nil
	}
	if fhir.AmbiguousLocal(raw, b.t.loc) {
		b.flag(DQLocalTimeAmbiguous)
	}
	return &ts
}

// locationDisplay renders a PL (PV1-3, PV1-6) for people: point of care,
// room and bed joined by ", ", with the description (PL-9), when sent,
// in place of the point of care. Feeds describe the ward there ("Ward 7
// Elderly Care"), so the room and bed codes follow it unless it names
// them already: a bed move within a ward would otherwise read as the
// ward to itself.
func (b *builder) locationDisplay(cs *components) string {
	pl := b.placeCodes(cs)
	d := cs.text(9)
	if d == "" {
		return b.join(", ", pl(1), pl(2), pl(3))
	}
	room, bed := pl(2), pl(3)
	if room == "" && bed == "" {
		return d
	}
	if names(d, room) {
		room = ""
	}
	if names(d, bed) {
		bed = ""
	}
	return b.join(", ", d, room, bed)
}

// placeCodes returns how the point of care, room and bed (PL-1 to PL-3)
// of cs are read: before HL7 v2.7 they are IS codes, which have no
// subcomponents, so an "&" in one is a character the sender did not
// escape ("A&E") and they are read whole; from v2.7 they are HD, whose
// first subcomponent is the code.
func (b *builder) placeCodes(cs *components) func(int) string {
	if b.m.VersionAtLeast(7) {
		return cs.get
	}
	return cs.text
}

// names reports whether the description d names code: whether code, in
// lower case with only its letters and digits, is one word of d or up to
// three adjacent ones run together ("Majors Cubicle 4" names MAJORS and
// CUBICLE4, but "Ward 12" names neither room 1 nor bed 2).
func names(d, code string) bool {
	want := strings.Map(func(r rune) rune {
		if unicode.IsLetter(r) || unicode.IsDigit(r) {
			return unicode.ToLower(r)
		}
		return -1
	}, code)
	if want == "" {
		return true
	}
	words := strings.FieldsFunc(strings.ToLower(d), func(r rune) bool { return !unicode.IsLetter(r) && !unicode.IsDigit(r) })
	for i := range words {
		run := ""
		for _, w := range words[i:min(i+3, len(words))] {
			if run += w; run == want {
				return true
			}
		}
	}
	return false
}

// practitionerResource makes a Practitioner from one XCN repetition and
// returns a reference to it (with the display "DR SAM TESTDOCTOR":
// prefix, given names, family), or nil when the repetition holds neither
// an id nor a name. The same practitioner (id, system and name) named twice in a
// message is one resource.
//
//   - name: family XCN-2.1, given XCN-3 and XCN-4, prefix XCN-6.
//   - identifier: XCN-1, in the system its assigning authority (XCN-9.1)
//     or identifier type (XCN-13) names: GMC, GMP, or SDS (SDS user id);
//     else a code shaped as a GP code ("G" and seven digits) is a GMP
//     number. Other codes get no system: local staff codes have none
//     shared, and a bare number could be a GMC number or a local one.
func (b *builder) practitionerResource(seg *hl7v2.Segment, field, rep int) *models.Reference {
	cs := splitComponents(seg, b.m.Delimiters(), field, rep)
	c := cs.get
	id, family := c(1), c(2)
	given := b.nonEmpty(c(3), c(4))
	if id == "" && family == "" && given == nil {
		return nil
	}
	givenNames, prefix := b.join(" ", given...), c(6)
	display := b.join(" ", prefix, givenNames, family)
	ref := func(url string) *models.Reference {
		r := &struct {
			ref models.Reference
			s   [3]string
		}{s: [3]string{url, "Practitioner", display}}
		r.ref = models.Reference{Reference: &r.s[0], Type: &r.s[1], Display: fhir.NonEmpty(&r.s[2])}
		return &r.ref
	}
	system := practitionerSystem(id, c(9), c(13))
	key := practitionerKey{system: system, id: id, family: family, given: givenNames, prefix: prefix}
	for _, p := range b.practitioners {
		// A national code names one person however the name is written
		// (the registered GP sent again as referrer without the prefix):
		// one Practitioner, as a receiver updating by identifier sees it.
		if p.key == key || system != "" && id != "" && p.key.system == system && p.key.id == id {
			return ref(p.url)
		}
	}
	url, rid := b.nextURL("Practitioner")
	b.practitioners = append(b.practitioners, practitionerURL{key: key, url: url})
	// One allocation for the Practitioner and what it holds.
	r := &struct {
		p                       models.Practitioner
		meta                    models.Meta
		profile, prefix         [1]string
		identifier              [1]models.Identifier
		name                    [1]models.HumanName
		rid, system, id, family string
	}{profile: [1]string{nhs.ProfilePractitioner}, prefix: [1]string{prefix}, rid: rid, system: system, id: id, family: family}
	r.meta.Profile = r.profile[:]
	p := &r.p
	p.Id, p.Meta = &r.rid, &r.meta
	if id != "" {
		r.identifier[0] = models.Identifier{System: fhir.NonEmpty(&r.system), Value: &r.id}
		p.Identifier = r.identifier[:]
	}
	if family != "" || given != nil {
		r.name[0] = models.HumanName{Family: fhir.NonEmpty(&r.family), Given: given}
		if prefix != "" {
			r.name[0].Prefix = r.prefix[:]
		}
		p.Name = r.name[:]
	}
	b.add(url, "Practitioner", p)
	return ref(url)
}

// practitionerKey is what makes two XCN repetitions the same
// Practitioner.
type practitionerKey struct{ system, id, family, given, prefix string }

// practitionerURL is a Practitioner made by practitionerResource.
type practitionerURL struct {
	key practitionerKey
	url string
}

// practitionerSystem returns the identifier system of the practitioner
// code id given its XCN assigning authority and identifier type codes
// (see practitionerResource), or "".
func practitionerSystem(id string, codes ...string) string {
	for _, code := range codes {
		switch strings.ToUpper(code) {
		case "GMC":
			return nhs.SystemGMC
		case "GMP":
			return nhs.SystemGMP
		case "SDS":
			return nhs.SystemSDSUserID
		}
	}
	if len(id) == 8 && id[0] == 'G' && allDigits(id[1:]) {
		return nhs.SystemGMP
	}
	return ""
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// Cross-version extensions of R5's Encounter.plannedStartDate and
// plannedEndDate, as the v2-to-FHIR guide maps PV2-8 and PV2-9.
const (
	extPlannedStartDate = "http://hl7.org/fhir/5.0/StructureDefinition/extension-Encounter.plannedStartDate"
	extPlannedEndDate   = "http://hl7.org/fhir/5.0/StructureDefinition/extension-Encounter.plannedEndDate"
)

// mapPV2 adds to the Encounter, when there is one, as the v2-to-FHIR
// guide maps PV2: its admit reason (PV2-3) as reasonCode, and its
// expected admission and discharge times (PV2-8, PV2-9: a pre-admission's
// date) as the plannedStartDate and plannedEndDate extensions.
func (b *builder) mapPV2(pv2 *hl7v2.Segment) error {
	if b.encounter == nil {
		return nil
	}
	if reason := b.codeableConcept(pv2, 3, ""); reason != nil {
		b.encounter.ReasonCode = append(b.encounter.ReasonCode, *reason)
	}
	for _, f := range [...]struct {
		field int
		url   string
	}{{8, extPlannedStartDate}, {9, extPlannedEndDate}} {
		if at := b.visitTime(pv2, f.field); at != nil {
			b.encounter.Extension = append(b.encounter.Extension, models.Extension{Url: f.url, ValueDateTime: at})
		}
	}
	return nil
}
