package pas

import (
	"strings"

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
//     keep their table 0004 code. Anything else, or nothing, is the null
//     flavour UNK, flagged DQPatientClassMissing.
//   - identifier: PV1-19.1 visit number in the dialect's visit number
//     system, or DQVisitNumberMissing.
//   - period: PV1-44 admit and PV1-45 discharge date/time.
//   - subject: the Patient.
//   - serviceProvider: MSH-4.1 when it has the shape of an ODS code.
//   - location: PV1-3 as a display only (point of care, room, bed, or the
//     location description PL-9), active, or completed once the encounter
//     is finished; no Location resource yet.
//   - participant: each PV1-7 attending doctor (ATND), by display name
//     and identifier; see practitioner.
func (b *builder) mapPV1(pv1 *hl7v2.Segment) error {
	class := strings.ToUpper(strings.TrimSpace(value(pv1.Component(2, 1, 1, 1))))
	visitNumber := strings.TrimSpace(value(pv1.Component(19, 1, 1, 1)))
	_, id := b.fullURL("Encounter")
	patientURL, _ := b.fullURL("Patient")
	e := &models.Encounter{
		Id:     ptr(id),
		Meta:   &models.Meta{Profile: []string{nhs.ProfileEncounter}},
		Status: b.mapping.status(pv1),
		Class:  b.patientClass(class),
	}
	if b.patient != nil {
		e.Subject = &models.Reference{Reference: ptr(patientURL), Type: ptr("Patient")}
	}
	if visitNumber != "" {
		e.Identifier = []models.Identifier{{
			System: ptr(b.t.dialect.VisitNumberSystem),
			Value:  ptr(visitNumber),
		}}
	} else {
		b.flag(DQVisitNumberMissing)
	}
	var period models.Period
	period.Start = b.visitTime(pv1, 44)
	period.End = b.visitTime(pv1, 45)
	if period.Start != nil || period.End != nil {
		e.Period = &period
	}
	e.ServiceProvider = odsReference(value(b.m.SendingFacility()))
	if loc := locationDisplay(pv1); loc != "" {
		status := models.EncounterLocationStatusActive
		if e.Status == models.EncounterStatusFinished {
			status = models.EncounterLocationStatusCompleted
		}
		e.Location = []models.EncounterLocation{{
			Location: models.Reference{Display: ptr(loc)},
			Status:   &status,
		}}
	}
	for rep := 1; rep <= pv1.Repetitions(7); rep++ {
		if who := practitioner(pv1, 7, rep); who != nil {
			e.Participant = append(e.Participant, models.EncounterParticipant{
				Type: []models.CodeableConcept{{Coding: []models.Coding{{
					System: ptr(systemParticipation), Code: ptr("ATND"), Display: ptr("attender"),
				}}}},
				Individual: who,
			})
		}
	}
	b.encounter = e
	return nil
}

// mapVisitIfAny maps PV1 as mapPV1 does when it describes a visit: an
// event such as A08, whose PV1 is optional, may send a PV1 with neither a
// patient class other than N nor a visit number, and then no Encounter is
// made.
func (b *builder) mapVisitIfAny(pv1 *hl7v2.Segment) error {
	class := strings.ToUpper(strings.TrimSpace(value(pv1.Component(2, 1, 1, 1))))
	visitNumber := strings.TrimSpace(value(pv1.Component(19, 1, 1, 1)))
	if (class == "" || class == "N") && visitNumber == "" {
		return nil
	}
	return b.mapPV1(pv1)
}

// patientClass maps PV1-2 (see mapPV1).
func (b *builder) patientClass(code string) models.Coding {
	switch code {
	case "E":
		return coding(systemActCode, "EMER", "emergency")
	case "I":
		return coding(systemActCode, "IMP", "inpatient encounter")
	case "O":
		return coding(systemActCode, "AMB", "ambulatory")
	case "P":
		return coding(systemActCode, "PRENC", "pre-admission")
	case "B":
		return coding(systemV2PatientClass, "B", "Obstetrics")
	case "C":
		return coding(systemV2PatientClass, "C", "Commercial Account")
	case "N":
		return coding(systemV2PatientClass, "N", "Not Applicable")
	case "R":
		return coding(systemV2PatientClass, "R", "Recurring patient")
	case "U":
		return coding(systemV2PatientClass, "U", "Unknown")
	}
	b.flag(DQPatientClassMissing)
	return coding(systemNullFlavor, "UNK", "unknown")
}

func coding(system, code, display string) models.Coding {
	return models.Coding{System: ptr(system), Code: ptr(code), Display: ptr(display)}
}

// visitTime converts PV1-44 or PV1-45 (first repetition) to a dateTime,
// flagging DQVisitTimeInvalid when it cannot.
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
	return &ts
}

// locationDisplay renders PV1-3 (PL) for people: its description (PL-9)
// when sent, else point of care, room and bed joined by ", ".
func locationDisplay(pv1 *hl7v2.Segment) string {
	c := func(comp int) string { return strings.TrimSpace(value(pv1.Component(3, 1, comp, 1))) }
	if d := c(9); d != "" {
		return d
	}
	return strings.Join(nonEmpty(c(1), c(2), c(3)), ", ")
}

// practitioner maps one XCN repetition to a reference with a display name
// ("Dr ALEX TESTDOCTOR": prefix XCN-6, given XCN-3, family XCN-2.1) and
// the id XCN-1 as identifier. The identifier system is the GMC or GMP
// number system when the assigning authority (XCN-9.1) or identifier type
// (XCN-13) says GMC or GMP, and is left out otherwise, since local staff
// codes have no shared system. It returns nil when the repetition holds
// neither an id nor a name.
func practitioner(seg *hl7v2.Segment, field, rep int) *models.Reference {
	c := func(comp int) string { return strings.TrimSpace(value(seg.Component(field, rep, comp, 1))) }
	id := c(1)
	name := strings.Join(nonEmpty(c(6), c(3), c(2)), " ")
	if id == "" && name == "" {
		return nil
	}
	ref := &models.Reference{Type: ptr("Practitioner"), Display: optional(name)}
	if id != "" {
		ref.Identifier = &models.Identifier{
			System: optional(practitionerSystem(c(9), c(13))),
			Value:  ptr(id),
		}
	}
	return ref
}

// practitionerSystem returns the identifier system named by an XCN
// assigning authority or identifier type code, or "".
func practitionerSystem(codes ...string) string {
	for _, code := range codes {
		switch strings.ToUpper(code) {
		case "GMC":
			return nhs.SystemGMC
		case "GMP":
			return nhs.SystemGMP
		}
	}
	return ""
}
