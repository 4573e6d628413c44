// Package pas is the adapter for hospital Patient Administration Systems
// that send HL7 v2 ADT messages over MLLP. Its translator turns ADT events
// into UK Core FHIR R4 message bundles; it is pure (bytes in, FHIR out, no
// I/O, no clock), so every mapping is golden-tested alone.
//
// # Output
//
// Each message becomes a Bundle of type "message" whose entries are, in
// order: a MessageHeader; the Patient (for a merge, every surviving and
// replaced Patient); the Encounter, when the event carries a visit; the
// resources they refer to and the clinical ones (Organization and
// Practitioner for the registered GP, Location for PV1-3 and PV1-6,
// Practitioner for the doctors of PV1, RelatedPerson from NK1,
// AllergyIntolerance from AL1, Condition from DG1); and last a Provenance
// naming the source message by its control id. Every reference resolves
// to an entry of the bundle, except organisations named only by ODS code
// (logical references). Bundle.id is the Junction message id, and every
// fullUrl is a urn:uuid derived from that id and the resource kind, so
// translating the same stored message again gives the same bytes.
//
// # Events
//
// A01, A02, A03, A04, A05, A06, A07, A08, A11, A12, A13, A21, A22, A28,
// A31, A34 and A40 are mapped. The table in adtEvents names, for each, its
// HL7 v2.5 message structure, the segments read and how Encounter.status
// follows from the event. The rules a receiver needs to apply them:
//
//   - Cancels. A11 (cancel admit) gives an Encounter entered-in-error (or
//     cancelled, per Dialect.CancelAdmitStatus). A12 (cancel transfer)
//     gives the Encounter in progress at the restored location PV1-3, the
//     cancelled move's location PV1-6 marked with the Junction-defined
//     extension nhs.JunctionExtEncounterLocationCancelled.
//     A13 (cancel discharge) gives the Encounter in progress again with
//     no end, discharge method or destination, and marks them deleted
//     (below). Each is the whole current state of the Encounter, so
//     replacing it by identifier undoes the event cancelled, and so does
//     merging it into what a receiver holds, with the marks. A cancel
//     without a visit number (PV1-19) makes no Encounter (see
//     mapExistingVisit).
//   - Deletes. An element an ADT message deletes is named by the
//     extension nhs.JunctionExtClearedElement on its resource: the
//     explicit null "" in PID-11, PID-15, PID-16, PID-22, PID-29 or 30
//     (when neither gives a value), in both PID-13 and 14, in both PD1-3
//     and 4, and in all of PV1-7, 8, 9 and 17 (one element holds them
//     together, and a sibling left empty means no change); and A13's
//     withdrawn discharge (period.end, hospitalization.dischargeDisposition
//     and the discharge method). A field left empty means no change and is
//     not marked. Translator.Patient (for result feeds) marks nothing.
//   - Merges. A34 and A40 give, per PID and MRG pair, the surviving
//     Patient (active, link "replaces") and the replaced one (active
//     false, link "replaced-by", identifiers from MRG-1, MRG-2 and MRG-4
//     under the same NHS number rules as PID); see mapMerge.
//   - Leave. A21 gives onleave with the bed reserved, A22 in-progress.
//   - Updates. A08, A28 and A31 assert no change of state: without a
//     discharge time (PV1-45, which gives finished) the status they give
//     (planned for class P, else in progress) and the locations (whose
//     status follows it) are marked nhs.JunctionExtDerivedElement, so a
//     receiver that holds the visit keeps its own (an A08 must not
//     reopen a cancelled or discharged visit). An A12's in-progress is
//     marked the same way: it says only that a move did not happen.
//
// Adding an event adds an entry to adtEvents and, where it needs one, a
// segment mapper.
//
// # Character sets
//
// Text is read in the character set MSH-18 declares: 8859/1 is decoded to
// UTF-8 (raw bytes and \Xhh\ escapes alike); UNICODE UTF-8 is passed
// through, and bytes that are not UTF-8 are flagged DQTextInvalidUTF8
// (they become U+FFFD in the JSON). An empty MSH-18 or ASCII passes UTF-8
// through and reads a value that is not UTF-8 as 8859/1 (Windows-1252),
// flagged DQTextLatin1Assumed: English feeds that declare nothing send
// Latin-1, and a name is better read than lost to U+FFFD. Any other
// set is refused with fault.CodeHL7Charset: decoding it as either would
// corrupt names silently.
//
// # Dialects
//
// Per-feed conventions are configured in Dialect: which assigning
// authorities or identifier types mark an NHS number, identifier systems
// (of local patient identifiers, visit numbers and, when set, locations),
// the time zone of times sent without an offset (Europe/London by
// default, so a summer time gets +01:00), what to do with an NHS number
// failing its check digit (never emitted as an NHS number), the sex code
// table and the A11 status.
//
// # Data quality
//
// Problems that do not stop translation (no NHS number, an NHS number that
// fails its check digit, an unparsable date) leave the affected element
// out and are listed in Translation.DataQuality using the DQ* codes, which
// the engine counts per feed.
package pas

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	models "github.com/samply/golang-fhir-models/fhir-models/fhir"

	"github.com/junction-fhir/junction/pkg/adapter"
	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/fault"
	"github.com/junction-fhir/junction/pkg/fhir"
	"github.com/junction-fhir/junction/pkg/hl7v2"
	"github.com/junction-fhir/junction/pkg/nhs"
)

// Data-quality codes reported in Translation.DataQuality. They are metric
// label values: a fixed set that never holds patient data.
const (
	// DQNHSNumberMissing: no identifier is flagged as an NHS number.
	DQNHSNumberMissing = "nhs_number_missing"
	// DQNHSNumberInvalid: an identifier flagged as an NHS number fails the
	// modulus 11 check (and no valid one was sent).
	DQNHSNumberInvalid = "nhs_number_invalid"
	// DQNHSNumberConflict: two different valid NHS numbers were sent; the
	// first is used, the other kept without a system.
	DQNHSNumberConflict = "nhs_number_conflict"
	// DQBirthDateInvalid: PID-7 is not a valid HL7 date.
	DQBirthDateInvalid = "birth_date_invalid"
	// DQSexInvalid: PID-8 is sent but is not a code of the dialect's sex
	// code table (Dialect.SexCodes: HL7 table 0001 and the NHS person
	// gender codes by default); gender is left out. An empty PID-8 is
	// not flagged.
	DQSexInvalid = "sex_invalid"
	// DQNextOfKinSexInvalid: an NK1-15 (the related person's sex) is sent
	// but is not a code of the same table; that RelatedPerson's gender is
	// left out. Flagged only for an NK1 that makes a RelatedPerson.
	DQNextOfKinSexInvalid = "next_of_kin_sex_invalid"
	// DQDeathDateInvalid: PID-29 is not a valid HL7 date/time.
	DQDeathDateInvalid = "death_date_invalid"
	// DQDeathIndicatorConflict: PID-29 gives a date of death but PID-30
	// says the patient is not deceased; the date is kept.
	DQDeathIndicatorConflict = "death_indicator_conflict"
	// DQMessageTimeInvalid: MSH-7 is missing, invalid or coarser than a
	// minute; the bundle timestamp is the time Junction received the
	// message.
	DQMessageTimeInvalid = "message_time_invalid"
	// DQEventTimeInvalid: EVN-2 (recorded date/time) is sent but is not
	// a valid HL7 date/time. The message is translated as before: EVN-2
	// is used only as an A02's transfer time when EVN-6 is not, and an
	// invalid one is not. An empty EVN-2, or no EVN, is not flagged.
	DQEventTimeInvalid = "event_time_invalid"
	// DQVisitTimeInvalid: PV1-44 or PV1-45 is not a valid HL7 date/time.
	DQVisitTimeInvalid = "visit_time_invalid"
	// DQLocalTimeAmbiguous: a visit time, an A02's transfer time (EVN-6,
	// else EVN-2), or a time of birth (PID-7) or death (PID-29), sent
	// without an offset falls in the hour the feed's time zone skips or
	// repeats at a clock change, so the instant given for it may be an
	// hour out.
	DQLocalTimeAmbiguous = "local_time_ambiguous"
	// DQVisitNumberMissing: the visit has no visit number (PV1-19), so
	// receivers cannot match the Encounter by identifier.
	DQVisitNumberMissing = "visit_number_missing"
	// DQPatientClassMissing: the visit has no patient class (PV1-2 is
	// empty); Encounter.class is the null flavour UNK.
	DQPatientClassMissing = "patient_class_missing"
	// DQPatientClassInvalid: PV1-2 is sent but is not a code of HL7 table
	// 0004; Encounter.class is the null flavour UNK.
	DQPatientClassInvalid = "patient_class_invalid"
	// DQTextInvalidUTF8: the message declares UTF-8 in MSH-18 but holds
	// bytes that are not UTF-8; they reach the FHIR JSON as U+FFFD. The
	// feed probably sends another character set and should declare it.
	DQTextInvalidUTF8 = "text_invalid_utf8"
	// DQTextLatin1Assumed: the message declares no character set in
	// MSH-18 (or ASCII) but holds bytes that are not UTF-8; each value
	// holding them was read as 8859/1 (Windows-1252), the likeliest set
	// for an English feed, not lost to U+FFFD. It is a guess: the feed
	// should declare 8859/1 (or send UTF-8).
	DQTextLatin1Assumed = "text_latin1_assumed"
	// DQTextLooksUTF8: the message declares 8859/1 in MSH-18 but its text
	// reads as UTF-8 (hl7v2.Message.LooksUTF8), so names and addresses
	// with letters beyond ASCII reach FHIR garbled ("ZOÃ‹" for ZOË). The
	// feed probably sends UTF-8 and should declare UNICODE UTF-8.
	DQTextLooksUTF8 = "text_looks_utf8"
	// DQTextControlChars: the message holds control characters (a NUL in
	// a name, say), which FHIR strings may not; they reach the FHIR JSON
	// as U+FFFD.
	DQTextControlChars = "text_control_chars"
)

// DataQualityCodes returns every code in Translation.DataQuality that the
// patient, visit and message mappings may give, the pathology
// translator's included, since it maps patients the same way.
func DataQualityCodes() []string {
	return []string{
		DQNHSNumberMissing, DQNHSNumberInvalid, DQNHSNumberConflict,
		DQBirthDateInvalid, DQSexInvalid, DQNextOfKinSexInvalid,
		DQDeathDateInvalid, DQDeathIndicatorConflict,
		DQMessageTimeInvalid, DQEventTimeInvalid, DQVisitTimeInvalid, DQLocalTimeAmbiguous,
		DQVisitNumberMissing, DQPatientClassMissing, DQPatientClassInvalid,
		DQTextInvalidUTF8, DQTextLatin1Assumed, DQTextLooksUTF8, DQTextControlChars,
	}
}

// DataQualityCodes implements adapter.DataQualityCoder.
func (t *Translator) DataQualityCodes() []string { return DataQualityCodes() }

var _ adapter.DataQualityCoder = (*Translator)(nil)

// Code systems used by the mappings.
const (
	systemV2Event        = "http://terminology.hl7.org/CodeSystem/v2-0003"
	systemV2IDType       = "http://terminology.hl7.org/CodeSystem/v2-0203"
	systemV2PatientClass = "http://terminology.hl7.org/CodeSystem/v2-0004"
	systemActCode        = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
	systemNullFlavor     = "http://terminology.hl7.org/CodeSystem/v3-NullFlavor"
	systemParticipation  = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
	systemURI            = "urn:ietf:rfc:3986"
	systemV2Relationship = "http://terminology.hl7.org/CodeSystem/v2-0063"
	systemV2ContactRole  = "http://terminology.hl7.org/CodeSystem/v2-0131"
	systemRoleCode       = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"
	systemMaritalStatus  = "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus"
	systemProvenanceRole = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
	systemLocationType   = "http://terminology.hl7.org/CodeSystem/location-physical-type"
	systemConditionCat   = "http://terminology.hl7.org/CodeSystem/condition-category"
	systemConditionVer   = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
	systemAllergyClin    = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical"
	systemSNOMED         = "http://snomed.info/sct"
	systemICD10          = "http://hl7.org/fhir/sid/icd-10"
	systemICD9CM         = "http://hl7.org/fhir/sid/icd-9-cm"
	systemLOINC          = "http://loinc.org"
)

// Translator maps HL7 v2 ADT messages to FHIR. It is safe for concurrent
// use.
type Translator struct {
	dialect Dialect
	loc     *time.Location
	events  map[string]eventMapping
	// sexCodes is dialect.SexCodes with upper-cased keys.
	sexCodes map[string]models.AdministrativeGender
	// enc writes the bundle's resources.
	enc *fhir.ModelEncoder
	// scratch holds *[]byte buffers the bundles are written in before
	// being copied out at their exact size: a buffer sized in advance
	// was both zeroed and, at 16 KiB, of a size class that takes a new
	// span on every allocation.
	scratch sync.Pool
	// viaModels marshals entries with fhir.MarshalResource instead of
	// appendResource (tests compare the two).
	viaModels bool
	// relay are the message types relayed rather than translated (Relay).
	relay []string
}

// NewTranslator returns a translator for feeds speaking dialect d.
func NewTranslator(d Dialect) (*Translator, error) {
	if errs := d.Validate(); len(errs) > 0 {
		return nil, fault.Wrap(fault.Permanent, fault.CodeConfig, "invalid pas dialect", errors.Join(errs...))
	}
	loc, err := time.LoadLocation(d.TimeZone)
	if err != nil {
		return nil, fault.Wrap(fault.Permanent, fault.CodeConfig, "invalid pas dialect time zone", err)
	}
	d.NHSNumberAuthorities = append([]string(nil), d.NHSNumberAuthorities...)
	sex := make(map[string]models.AdministrativeGender, len(d.SexCodes))
	codes := make(map[string]string, len(d.SexCodes))
	for code, g := range d.SexCodes {
		codes[code] = g
		sex[strings.ToUpper(strings.TrimSpace(code))], _ = genderOf(g)
	}
	d.SexCodes = codes
	return &Translator{dialect: d, loc: loc, events: adtEvents(d), sexCodes: sex, enc: &fhir.ModelEncoder{}}, nil
}

// Events implements adapter.EventLister: the ADT events with a mapping,
// sorted.
func (t *Translator) Events() []string {
	out := make([]string, 0, len(t.events))
	for ev := range t.events {
		out = append(out, "ADT^"+ev)
	}
	slices.Sort(out)
	return out
}

// Translate parses env.Raw as HL7 v2 and translates it with
// TranslateMessage.
func (t *Translator) Translate(env *envelope.Envelope) (*adapter.Translation, error) {
	if env == nil {
		return nil, fault.New(fault.CodeInternal, "translate: no envelope")
	}
	m, err := hl7v2.Parse(env.Raw)
	if err != nil {
		return nil, fmt.Errorf("translate: %w", err)
	}
	return t.TranslateMessage(env, m)
}

// TranslateMessage translates a parsed ADT message. The result depends
// only on env.ID, env.ReceivedAt and the message. A type the translator
// relays (Relay) and has no mapping for gets TranslateRelayed; another
// event with no mapping gives a permanent fault with code
// fault.CodeHL7Unsupported; a
// missing required segment one with fault.CodeHL7Required; an MSH-18
// character set other than ASCII, 8859/1 or UNICODE UTF-8 one with
// fault.CodeHL7Charset (see hl7v2.Message.CharsetError). 8859/1 text is
// decoded to UTF-8; text declared UTF-8 that is not valid is flagged
// DQTextInvalidUTF8, and text that is not UTF-8 under an empty MSH-18 or
// ASCII is read as 8859/1 and flagged DQTextLatin1Assumed.
func (t *Translator) TranslateMessage(env *envelope.Envelope, m *hl7v2.Message) (*adapter.Translation, error) {
	if env == nil || m == nil {
		return nil, fault.New(fault.CodeInternal, "translate: no envelope or message")
	}
	msh := m.Segment("MSH")
	if msh == nil {
		return nil, fault.New(fault.CodeHL7Required, "message has no MSH segment").WithHL7("100")
	}
	if err := m.CharsetError(); err != nil {
		return nil, err
	}
	typ, event := msh.Component(9, 1, 1, 1), m.Event()
	mapping, ok := t.events[event]
	if (typ != "ADT" || !ok) && event != "" && t.Relays(typ+"^"+event) {
		return t.TranslateRelayed(env, m)
	}
	if typ != "ADT" {
		return nil, fault.New(fault.CodeHL7Unsupported, "pas translates ADT messages only").
			WithDetail("unsupported message type " + quoteCode(typ)).WithHL7("200")
	}
	if !ok {
		return nil, fault.New(fault.CodeHL7Unsupported, "ADT event not supported").
			WithDetail("unsupported ADT event " + quoteCode(event)).WithHL7("201")
	}
	return t.build(env, m, "", event, mapping)
}

// build maps m's segments by mapping and assembles the Bundle. msgType is
// MSH-9.1 of a relayed message, "" for an ADT event the translator maps
// (whose event time is then checked).
func (t *Translator) build(env *envelope.Envelope, m *hl7v2.Message, msgType, event string, mapping eventMapping) (*adapter.Translation, error) {
	b := newBuilder(t, env, m, event, mapping)
	b.msgType = msgType
	if msgType == "" {
		b.checkEventTime()
	}
	for _, rule := range mapping.segments {
		var segs []*hl7v2.Segment
		if rule.repeat {
			segs = m.SegmentsNamed(rule.segment)
		} else if seg := m.Segment(rule.segment); seg != nil {
			segs = []*hl7v2.Segment{seg}
		}
		if len(segs) == 0 && rule.required {
			return nil, fault.Newf(fault.CodeHL7Required, "ADT %s needs a %s segment", event, rule.segment).WithHL7("100")
		}
		for _, seg := range segs {
			if err := rule.apply(b, seg); err != nil {
				return nil, err
			}
		}
	}
	bundle, err := b.bundle()
	if err != nil {
		return nil, err
	}
	return &adapter.Translation{
		Bundle:      bundle,
		PatientKey:  b.key,
		Event:       event,
		V2:          m,
		DataQuality: b.dq,
		Relayed:     msgType != "",
	}, nil
}

// PatientKey returns the key that identifies the patient of m for
// ordering and consent: the first valid NHS number, else the first other
// patient identifier (PID-3, then PID-2 and PID-4), else an NHS number
// failing its check digit when the dialect keeps those, else "". The
// translator's Translation.PatientKey follows the same rule. It is patient
// data: never log it.
func PatientKey(m *hl7v2.Message, d Dialect) string {
	if m == nil {
		return ""
	}
	pid := m.Segment("PID")
	if pid == nil {
		return ""
	}
	return patientIDs(pid, &d, 2, 3, 2, 4).key(&d)
}

// segmentRule maps one segment of an event.
type segmentRule struct {
	segment  string
	required bool
	// repeat applies the rule to every segment of that name, in order;
	// otherwise only the first is mapped.
	repeat bool
	apply  func(b *builder, seg *hl7v2.Segment) error
}

// eventKind says which special rule, if any, an event follows.
type eventKind int

const (
	eventPlain           eventKind = iota
	eventTransfer                  // A02: PV1-6 is the location left
	eventCancelAdmit               // A11
	eventCancelTransfer            // A12: PV1-6 is the cancelled location
	eventCancelDischarge           // A13: discharge details are withdrawn
	eventLeave                     // A21: the bed is held
	eventMerge                     // A34, A40: PID and MRG pairs
)

// eventMapping is how one trigger event becomes FHIR.
type eventMapping struct {
	// display is the event's display in HL7 table 0003.
	display string
	// structure is the HL7 v2.5 message structure of the event, which
	// the segments follow.
	structure string
	kind      eventKind
	// segments are mapped in order; MSH is always mapped, into the
	// MessageHeader and the Provenance, after them.
	segments []segmentRule
	// status gives Encounter.status from the event and its PV1.
	status func(pv1 *hl7v2.Segment) models.EncounterStatus
	// derivedStatus marks a status the event does not assert but
	// Junction infers (an update, A08, A28, A31, without a discharge
	// time in PV1-45; an A12, which says only that a move did not
	// happen), so a receiver holding the visit keeps its own
	// (nhs.JunctionExtDerivedElement). An update's locations, whose
	// status follows, are marked too.
	derivedStatus bool
}

// adtEvents is the table of supported events, built for dialect d.
//
// Segments by message structure (HL7 v2.5; segments the translator does
// not map, such as EVN, ROL, OBX, GT1 and IN1, are left out, though
// EVN-2 is checked (DQEventTimeInvalid) and read for an A02's transfer
// time; PV2, after PV1 in each, gives the admit reason):
//
//   - ADT_A01 (A01, A04, A08, A13), ADT_A03 (A03) and ADT_A05 (A05, A28,
//     A31): PID, PD1, NK1*, PV1, AL1*, DG1*.
//   - ADT_A06 (A06, A07): PID, PD1, MRG, NK1*, PV1, AL1*, DG1*.
//   - ADT_A02 (A02), ADT_A09 (A11), ADT_A12 (A12), ADT_A21 (A21, A22)
//     and ADT_A38 (A38): PID, PD1, PV1. DG1, which A11 and A12 keep only for backward
//     compatibility, is not mapped: a cancellation asserts no diagnosis.
//   - ADT_A30 (A34) and ADT_A39 (A40): one or more groups of PID, PD1 and
//     MRG; see mapMerge. PV1 is not mapped: a merge is about patients.
//
// PV1 is required except for A08, A28 and A31, whose PV1 may be absent or
// describe no visit ("PV1|1|N"): then no Encounter is made.
//
// Encounter status by event (documented choices):
//   - A01 admit, A02 transfer, A06 and A07 class changes, A22 return from
//     leave: in-progress. A06 (outpatient to inpatient) and A07
//     (inpatient to outpatient) take the new class from PV1-2 and keep a
//     changed visit number (MRG-5) as an old identifier.
//   - A03 discharge: finished.
//   - A04 register (ED attendance, outpatient arrival): in-progress. The
//     v2-to-FHIR guide suggests planned, but in the standard A04 means the
//     patient has arrived, and that is how NHS PAS feeds use it.
//   - A05 pre-admit: planned.
//   - A08 update, A28 add person, A31 update person: finished when PV1-45
//     (discharge time) is sent, planned for a pre-admission (PV1-2 = P),
//     otherwise in-progress.
//   - A11 cancel admit/visit: entered-in-error, or cancelled when the
//     dialect says so (Dialect.CancelAdmitStatus). Either tells a receiver
//     that updates the Encounter by its identifier to withdraw it.
//   - A38 cancel pre-admit: cancelled (the planned visit never began), so
//     an A05's planned Encounter does not stay planned for ever.
//   - A12 cancel transfer: in-progress; PV1-3 is the location restored
//     (active) and PV1-6, when sent, the location of the cancelled
//     transfer, listed with no status and the extension
//     nhs.JunctionExtEncounterLocationCancelled so a receiver can remove
//     it from the history.
//   - A13 cancel discharge: in-progress, with no period end, discharge
//     method or discharge destination, whatever PV1 still holds, so an
//     update by identifier reopens the encounter.
//   - A21 leave of absence out: onleave, the location reserved. A22
//     return: in-progress.
func adtEvents(d Dialect) map[string]eventMapping {
	fixed := func(s models.EncounterStatus) func(*hl7v2.Segment) models.EncounterStatus {
		return func(*hl7v2.Segment) models.EncounterStatus { return s }
	}
	cancelAdmit := models.EncounterStatusEnteredInError
	if d.CancelAdmitStatus == CancelAdmitCancelled {
		cancelAdmit = models.EncounterStatusCancelled
	}
	pid := segmentRule{segment: "PID", required: true, apply: (*builder).mapPID}
	pd1 := segmentRule{segment: "PD1", apply: (*builder).mapPD1}
	nk1 := segmentRule{segment: "NK1", repeat: true, apply: (*builder).mapNK1}
	visit := segmentRule{segment: "PV1", required: true, apply: (*builder).mapPV1}
	existingVisit := segmentRule{segment: "PV1", required: true, apply: (*builder).mapExistingVisit}
	optionalVisit := segmentRule{segment: "PV1", apply: (*builder).mapVisitIfAny}
	al1 := segmentRule{segment: "AL1", repeat: true, apply: (*builder).mapAL1}
	dg1 := segmentRule{segment: "DG1", repeat: true, apply: (*builder).mapDG1}
	priorVisit := segmentRule{segment: "MRG", apply: (*builder).mapPriorVisit}
	merge := segmentRule{segment: "MRG", required: true, apply: (*builder).mapMerge}

	pv2 := segmentRule{segment: "PV2", apply: (*builder).mapPV2}
	admit := []segmentRule{pid, pd1, nk1, visit, pv2, al1, dg1}
	update := []segmentRule{pid, pd1, nk1, optionalVisit, pv2, al1, dg1}
	classChange := []segmentRule{pid, pd1, priorVisit, nk1, visit, pv2, al1, dg1}
	movement := []segmentRule{pid, pd1, existingVisit, pv2}
	cancelDischarge := []segmentRule{pid, pd1, nk1, existingVisit, pv2, al1, dg1}
	inProgress := fixed(models.EncounterStatusInProgress)

	return map[string]eventMapping{
		"A01": {display: "ADT/ACK - Admit/visit notification", structure: "ADT_A01", segments: admit, status: inProgress},
		"A02": {display: "ADT/ACK - Transfer a patient", structure: "ADT_A02", kind: eventTransfer, segments: movement, status: inProgress},
		"A03": {display: "ADT/ACK - Discharge/end visit", structure: "ADT_A03", segments: admit, status: fixed(models.EncounterStatusFinished)},
		"A04": {display: "ADT/ACK - Register a patient", structure: "ADT_A01", segments: admit, status: inProgress},
		"A05": {display: "ADT/ACK - Pre-admit a patient", structure: "ADT_A05", segments: admit, status: fixed(models.EncounterStatusPlanned)},
		"A06": {display: "ADT/ACK - Change an outpatient to an inpatient", structure: "ADT_A06", segments: classChange, status: inProgress},
		"A07": {display: "ADT/ACK - Change an inpatient to an outpatient", structure: "ADT_A06", segments: classChange, status: inProgress},
		"A08": {display: "ADT/ACK - Update patient information", structure: "ADT_A01", segments: update, status: updateStatus, derivedStatus: true},
		"A11": {display: "ADT/ACK - Cancel admit/visit notification", structure: "ADT_A09", kind: eventCancelAdmit, segments: movement, status: fixed(cancelAdmit)},
		"A12": {display: "ADT/ACK - Cancel transfer", structure: "ADT_A12", kind: eventCancelTransfer, segments: movement, status: inProgress, derivedStatus: true},
		"A13": {display: "ADT/ACK - Cancel discharge/end visit", structure: "ADT_A01", kind: eventCancelDischarge, segments: cancelDischarge, status: inProgress},
		"A21": {display: "ADT/ACK - Patient goes on a \"leave of absence\"", structure: "ADT_A21", kind: eventLeave, segments: movement, status: fixed(models.EncounterStatusOnleave)},
		"A22": {display: "ADT/ACK - Patient returns from a \"leave of absence\"", structure: "ADT_A21", segments: movement, status: inProgress},
		"A28": {display: "ADT/ACK - Add person information", structure: "ADT_A05", segments: update, status: updateStatus, derivedStatus: true},
		"A31": {display: "ADT/ACK - Update person information", structure: "ADT_A05", segments: update, status: updateStatus, derivedStatus: true},
		"A34": {display: "ADT/ACK - Merge patient information - patient ID only", structure: "ADT_A30", kind: eventMerge, segments: []segmentRule{merge}},
		"A40": {display: "ADT/ACK - Merge patient - patient identifier list", structure: "ADT_A39", kind: eventMerge, segments: []segmentRule{merge}},
		"A38": {display: "ADT/ACK - Cancel pre-admit", structure: "ADT_A38", kind: eventCancelAdmit, segments: movement, status: fixed(models.EncounterStatusCancelled)},
	}
}

// updateStatus decides the status of the visit an A08, A28 or A31
// describes.
func updateStatus(pv1 *hl7v2.Segment) models.EncounterStatus {
	switch {
	case value(pv1.Component(45, 1, 1, 1)) != "":
		return models.EncounterStatusFinished
	case value(pv1.Component(2, 1, 1, 1)) == "P":
		return models.EncounterStatusPlanned
	default:
		return models.EncounterStatusInProgress
	}
}

// entry is one resource of the bundle besides the MessageHeader and the
// Provenance.
type entry struct {
	url      string
	typ      string
	resource any
}

// builder collects the resources of one translation.
type builder struct {
	t       *Translator
	env     *envelope.Envelope
	m       *hl7v2.Message
	event   string
	mapping eventMapping
	// msgType is MSH-9.1 of a relayed message; "" means ADT.
	msgType string

	patient   *models.Patient
	encounter *models.Encounter
	// patients are the other Patient resources (merges), in order.
	patients []entry
	// others are the resources the patient and encounter refer to, and
	// the clinical ones, in the order made.
	others []entry
	// arena holds the small values the models point to.
	arena
	// practitioners are the Practitioners made, by identity.
	practitioners []practitionerURL
	// counts are the resources of each repeating kind made (nextURL).
	counts []kindCount
	urls   []kindURL
	// Room for counts, urls, practitioners and records in the
	// builder's own allocation, enough for most messages.
	countsBuf        [4]kindCount
	urlsBuf          [8]kindURL
	practitionersBuf [4]practitionerURL
	recordsBuf       [8][sha256.Size]byte
	// source is sourceEndpoint.
	source string
	// priorVisit is MRG-5 of an A06 or A07.
	priorVisit string
	// records holds the hashes recordIdentifier made for this message's
	// records, to tell a second of the same name apart.
	records [][sha256.Size]byte
	// noDeletes leaves explicit nulls unmarked (Translator.Patient, for
	// feeds that are not the master of demographics).
	noDeletes bool
	key       string
	dq        []string
	ts        string
	// birthTimes are the times of birth (PID-7 with a time of day) of
	// the Patients made, written as extensions of birthDate.
	birthTimes []birthTime
}

// birthTime is the patient-birthTime extension value of one Patient.
type birthTime struct {
	patient *models.Patient
	value   string
}

// newBuilder returns a builder for one translation of m.
func newBuilder(t *Translator, env *envelope.Envelope, m *hl7v2.Message, event string, mapping eventMapping) *builder {
	b := &builder{t: t, env: env, m: m, event: event, mapping: mapping}
	b.counts, b.urls, b.practitioners, b.records = b.countsBuf[:0], b.urlsBuf[:0], b.practitionersBuf[:0], b.recordsBuf[:0]
	if m.InvalidUTF8() {
		b.flag(DQTextInvalidUTF8)
	}
	if m.Latin1Assumed() {
		b.flag(DQTextLatin1Assumed)
	}
	if m.LooksUTF8() {
		b.flag(DQTextLooksUTF8)
	}
	if m.ControlChars() {
		b.flag(DQTextControlChars)
	}
	return b
}

// fullURL returns the urn:uuid fullUrl and the id of the resource of the
// given kind in this translation.
func (b *builder) fullURL(kind string) (fullURL, id string) {
	for _, u := range b.urls {
		if u.kind == kind {
			return u.url, u.url[len("urn:uuid:"):]
		}
	}
	fullURL = b.urn(b.env.ID, kind)
	b.urls = append(b.urls, kindURL{kind: kind, url: fullURL})
	return fullURL, fullURL[len("urn:uuid:"):]
}

// kindURL is a fullUrl made by fullURL, kept because the Patient's,
// the Encounter's and the MessageHeader's are asked for many times.
type kindURL struct{ kind, url string }

// kindCount is how many resources of a repeating kind nextURL has named.
type kindCount struct {
	kind string
	n    int
}

// nextURL returns the fullUrl and id of the next resource of a repeating
// kind: kind/1, kind/2, ...
func (b *builder) nextURL(kind string) (fullURL, id string) {
	i := 0
	for i < len(b.counts) && b.counts[i].kind != kind {
		i++
	}
	if i == len(b.counts) {
		b.counts = append(b.counts, kindCount{kind: kind})
	}
	b.counts[i].n++
	var buf [32]byte
	name := strconv.AppendInt(append(append(buf[:0], kind...), '/'), int64(b.counts[i].n), 10)
	fullURL = b.urn(b.env.ID, string(name))
	return fullURL, fullURL[len("urn:uuid:"):]
}

// add appends a resource to the others.
func (b *builder) add(url, typ string, resource any) {
	if b.others == nil {
		b.others = make([]entry, 0, 16) // enough for most messages
	}
	b.others = append(b.others, entry{url: url, typ: typ, resource: resource})
}

// flag records a data-quality code once.
func (b *builder) flag(code string) {
	for _, c := range b.dq {
		if c == code {
			return
		}
	}
	b.dq = append(b.dq, code)
}

// validID reports whether s is a valid FHIR resource id: 1 to 64 letters,
// digits, hyphens and dots.
func validID(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// entries returns every resource of the bundle after the MessageHeader
// and before the Provenance, in bundle order: the Patient, the other
// Patients, the Encounter, then the rest.
func (b *builder) entries() []entry {
	out := make([]entry, 0, 2+len(b.patients)+len(b.others))
	if b.patient != nil {
		u, _ := b.fullURL("Patient")
		out = append(out, entry{url: u, typ: "Patient", resource: b.patient})
	}
	out = append(out, b.patients...)
	if b.encounter != nil {
		u, _ := b.fullURL("Encounter")
		out = append(out, entry{url: u, typ: "Encounter", resource: b.encounter})
	}
	return append(out, b.others...)
}

// bundle assembles the message bundle. The entries are written one by one
// with appendResource and spliced into the bundle's JSON, rather than
// marshalled with encoding/json inside a models.Bundle, which validates
// and compacts every resource several times over: that made up most of
// the translation time.
func (b *builder) bundle() ([]byte, error) {
	b.ts = b.timestamp()
	resources := b.entries()
	header, headerURL := b.header(resources)
	prov, provURL := b.provenance(resources)
	bm := b.meta(nhs.ProfileBundle)
	bm.Tag = SourceTag()
	bundle := models.Bundle{
		Meta:       bm,
		Type:       models.BundleTypeMessage,
		Timestamp:  b.str(b.ts),
		Identifier: b.messageIdentifier(),
	}
	if validID(b.env.ID) {
		bundle.Id = b.str(b.env.ID)
	}
	scratch, _ := b.t.scratch.Get().(*[]byte)
	if scratch == nil {
		scratch = new([]byte)
	}
	out := (*scratch)[:0]
	if b.t.viaModels {
		head, err := fhir.MarshalResource(bundle)
		if err != nil || len(head) < 2 || head[len(head)-1] != '}' {
			return nil, fault.Wrap(fault.Permanent, fault.CodeTranslate, "marshal bundle", err)
		}
		out = append(out, head[:len(head)-1]...)
	} else {
		out = b.t.appendResource(out, &bundle)
		out = out[:len(out)-1]
	}
	out = append(out, `,"entry":[`...)
	appendEntry := func(resource any, url string) error {
		if out[len(out)-1] != '[' {
			out = append(out, ',')
		}
		out = append(out, `{"fullUrl":"`...)
		out = append(out, url...) // a urn:uuid: needs no escaping
		out = append(out, `","resource":`...)
		mark := len(out)
		if b.t.viaModels {
			raw, err := fhir.MarshalResource(resource)
			if err != nil {
				return fault.Wrap(fault.Permanent, fault.CodeTranslate, "build bundle entry", err)
			}
			out = append(out, raw...)
		} else {
			out = b.t.appendResource(out, resource)
		}
		if p, ok := resource.(*models.Patient); ok {
			out = b.appendBirthTime(out, mark, p)
		}
		out = append(out, '}')
		return nil
	}
	if err := appendEntry(header, headerURL); err != nil {
		return nil, err
	}
	for _, e := range resources {
		if err := appendEntry(e.resource, e.url); err != nil {
			return nil, err
		}
	}
	if err := appendEntry(prov, provURL); err != nil {
		return nil, err
	}
	out = append(out, "]}"...)
	result := bytes.Clone(out)
	if cap(out) <= maxScratch {
		*scratch = out[:0]
		b.t.scratch.Put(scratch)
	}
	return result, nil
}

// appendBirthTime adds the patient-birthTime extension to the birthDate
// of p, whose JSON is out[mark:], when PID-7 gave a time of birth. The
// models have no _birthDate member, so it is spliced into the JSON.
func (b *builder) appendBirthTime(out []byte, mark int, p *models.Patient) []byte {
	for _, bt := range b.birthTimes {
		if bt.patient != p {
			continue
		}
		obj, _ := fhir.InsertPrimitiveExtension(out[mark:], "birthDate", fhir.ExtensionPatientBirthTime, "valueDateTime", bt.value)
		return append(out[:mark], obj...)
	}
	return out
}

// messageIdentifier is Bundle.identifier: MSH-10 in the source endpoint's
// system, or the bundle's own urn:uuid when there is no control id.
func (b *builder) messageIdentifier() *models.Identifier {
	if ctrl := value(b.m.ControlID()); ctrl != "" {
		return &models.Identifier{System: b.str(b.sourceEndpoint()), Value: b.str(ctrl)}
	}
	u, _ := b.fullURL("Bundle")
	return &models.Identifier{System: b.str(systemURI), Value: b.str(u)}
}

// timestamp is MSH-7 as a FHIR instant (fhir.PastInstantFromHL7: the
// message was made before it was received), or, when MSH-7 cannot be one,
// the time Junction received the message, in UTC (it is Junction's clock,
// not the feed's).
func (b *builder) timestamp() string {
	raw := b.m.Segment("MSH").Component(7, 1, 1, 1)
	if ts, ok := fhir.PastInstantFromHL7(raw, b.t.loc, b.env.ReceivedAt); ok {
		return ts
	}
	b.flag(DQMessageTimeInvalid)
	return b.env.ReceivedAt.UTC().Format("2006-01-02T15:04:05.000Z07:00")
}

// checkEventTime flags DQEventTimeInvalid when the first EVN's EVN-2
// (recorded date/time) is sent but is not a valid HL7 date/time. It maps
// nothing: EVN-2 is read for an A02's transfer time only (transferTime).
func (b *builder) checkEventTime() {
	evn := b.m.Segment("EVN")
	if evn == nil {
		return
	}
	raw := value(evn.Component(2, 1, 1, 1))
	if strings.TrimSpace(raw) == "" {
		return
	}
	if _, err := fhir.DateTimeFromHL7(raw, b.t.loc); err != nil {
		b.flag(DQEventTimeInvalid)
	}
}

// value returns s, or "" for the HL7 explicit null `""` (which in a
// snapshot message such as an ADT means "no value").
func value(s string) string {
	if s == `""` {
		return ""
	}
	return s
}

// quoteCode renders a short code for a fault detail, bounded in length.
func quoteCode(s string) string {
	if len(s) > 20 {
		s = s[:20]
	}
	return fmt.Sprintf("%q", s)
}

// maxScratch is the largest bundle buffer kept for reuse, so that one
// huge message does not pin its buffer.
const maxScratch = 1 << 20

// Patient maps the PID segment of m to a UK Core Patient under t's
// dialect, for translators of other HL7 v2 feeds (pathology) that carry
// the same segment. The Patient's id is fhir.DeterministicUUID(env.ID,
// "Patient"), as in the ADT bundles, so its fullUrl is "urn:uuid:" + id.
// It also returns the patient key (see PatientKey) and the data-quality
// codes raised. A message without PID gives a permanent fault with code
// fault.CodeHL7Required, and one in an unsupported character set one with
// fault.CodeHL7Charset.
func (t *Translator) Patient(env *envelope.Envelope, m *hl7v2.Message) (*models.Patient, string, []string, error) {
	if env == nil || m == nil {
		return nil, "", nil, fault.New(fault.CodeInternal, "translate: no envelope or message")
	}
	if err := m.CharsetError(); err != nil {
		return nil, "", nil, err
	}
	pid := m.Segment("PID")
	if pid == nil {
		return nil, "", nil, fault.New(fault.CodeHL7Required, "message has no PID segment").WithHL7("100")
	}
	b := newBuilder(t, env, m, m.Event(), eventMapping{})
	b.small = true
	// A result or order feed is not the master of demographics: its
	// explicit nulls (a LIMS may send "" for whatever it does not hold)
	// delete nothing.
	b.noDeletes = true
	if err := b.mapPID(pid); err != nil {
		return nil, "", nil, err
	}
	return b.patient, b.key, b.dq, nil
}

// SourceTag returns the Bundle.meta.tag of a Bundle translated from HL7
// v2 (fhir.CodeSourceHL7v2), by which a fhir destination knows that a
// field left out means no change. The pathology translator sets it too.
func SourceTag() []models.Coding {
	// One allocation: every translation makes one.
	t := &struct {
		c [1]models.Coding
		s [3]string
	}{s: [3]string{fhir.SystemJunctionSource, fhir.CodeSourceHL7v2, "translated from HL7 v2"}}
	t.c[0] = models.Coding{System: &t.s[0], Code: &t.s[1], Display: &t.s[2]}
	return t.c[:]
}
