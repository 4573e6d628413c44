// Package pas is the adapter for hospital Patient Administration Systems
// that send HL7 v2 ADT messages over MLLP. Its translator turns ADT events
// into UK Core FHIR R4 message bundles; it is pure (bytes in, FHIR out, no
// I/O, no clock), so every mapping is golden-tested alone.
//
// # Output
//
// Each message becomes a Bundle of type "message" whose entries are, in
// order, a MessageHeader, a Patient and (when the event carries a visit)
// an Encounter. Bundle.id is the Junction message id, and every fullUrl
// is a urn:uuid derived from that id and the resource kind, so translating
// the same stored message again gives the same bytes.
//
// # Events
//
// The events this translator maps are listed in adtEvents, one entry per
// trigger event naming the segments it reads and how the encounter
// status follows from the event. Adding an event (A02, A05, A11, ...) adds
// an entry there and, where it needs one, a segment mapper.
//
// # Data quality
//
// Problems that do not stop translation (no NHS number, an NHS number that
// fails its check digit, an unparsable date) leave the affected element
// out and are listed in Translation.DataQuality using the DQ* codes, which
// the engine counts per feed.
package pas

import (
	"errors"
	"fmt"
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
	// first is used, the other kept as a local identifier.
	DQNHSNumberConflict = "nhs_number_conflict"
	// DQBirthDateInvalid: PID-7 is not a valid HL7 date.
	DQBirthDateInvalid = "birth_date_invalid"
	// DQDeathDateInvalid: PID-29 is not a valid HL7 date/time.
	DQDeathDateInvalid = "death_date_invalid"
	// DQMessageTimeInvalid: MSH-7 is missing, invalid or coarser than a
	// minute; the bundle timestamp is the time Junction received the
	// message.
	DQMessageTimeInvalid = "message_time_invalid"
	// DQVisitTimeInvalid: PV1-44 or PV1-45 is not a valid HL7 date/time.
	DQVisitTimeInvalid = "visit_time_invalid"
	// DQVisitNumberMissing: the visit has no visit number (PV1-19), so
	// receivers cannot match the Encounter by identifier.
	DQVisitNumberMissing = "visit_number_missing"
	// DQPatientClassMissing: the visit has no recognised patient class
	// (PV1-2); Encounter.class is the null flavour UNK.
	DQPatientClassMissing = "patient_class_missing"
)

// Code systems used by the mappings.
const (
	systemV2Event        = "http://terminology.hl7.org/CodeSystem/v2-0003"
	systemV2IDType       = "http://terminology.hl7.org/CodeSystem/v2-0203"
	systemV2PatientClass = "http://terminology.hl7.org/CodeSystem/v2-0004"
	systemActCode        = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
	systemNullFlavor     = "http://terminology.hl7.org/CodeSystem/v3-NullFlavor"
	systemParticipation  = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
	systemURI            = "urn:ietf:rfc:3986"
)

// Translator maps HL7 v2 ADT messages to FHIR. It is safe for concurrent
// use.
type Translator struct {
	dialect Dialect
	loc     *time.Location
	events  map[string]eventMapping
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
	return &Translator{dialect: d, loc: loc, events: adtEvents()}, nil
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
// only on env.ID, env.ReceivedAt and the message. An event with no
// mapping gives a permanent fault with code fault.CodeHL7Unsupported; a
// missing required segment one with fault.CodeHL7Required.
func (t *Translator) TranslateMessage(env *envelope.Envelope, m *hl7v2.Message) (*adapter.Translation, error) {
	if env == nil || m == nil {
		return nil, fault.New(fault.CodeInternal, "translate: no envelope or message")
	}
	msh := m.Segment("MSH")
	if msh == nil {
		return nil, fault.New(fault.CodeHL7Required, "message has no MSH segment").WithHL7("100")
	}
	if typ := msh.Component(9, 1, 1, 1); typ != "ADT" {
		return nil, fault.New(fault.CodeHL7Unsupported, "pas translates ADT messages only").
			WithDetail("unsupported message type " + quoteCode(typ)).WithHL7("200")
	}
	event := m.Event()
	mapping, ok := t.events[event]
	if !ok {
		return nil, fault.New(fault.CodeHL7Unsupported, "ADT event not supported").
			WithDetail("unsupported ADT event " + quoteCode(event)).WithHL7("201")
	}
	b := &builder{t: t, env: env, m: m, event: event, mapping: mapping}
	for _, rule := range mapping.segments {
		seg := m.Segment(rule.segment)
		if seg == nil {
			if rule.required {
				return nil, fault.Newf(fault.CodeHL7Required, "ADT %s needs a %s segment", event, rule.segment).WithHL7("100")
			}
			continue
		}
		if err := rule.apply(b, seg); err != nil {
			return nil, err
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
	return patientIDs(pid, &d).key(&d)
}

// segmentRule maps one segment of an event.
type segmentRule struct {
	segment  string
	required bool
	apply    func(b *builder, seg *hl7v2.Segment) error
}

// eventMapping is how one trigger event becomes FHIR.
type eventMapping struct {
	// display is the event's display in HL7 table 0003.
	display string
	// segments are mapped in order; MSH is always mapped, into the
	// MessageHeader, after them.
	segments []segmentRule
	// status gives Encounter.status from the event and its PV1.
	status func(pv1 *hl7v2.Segment) models.EncounterStatus
}

// adtEvents is the table of supported events.
//
// Encounter status by event (documented choices):
//   - A01 admit: in-progress.
//   - A03 discharge: finished.
//   - A04 register (ED attendance, outpatient arrival): in-progress. The
//     v2-to-FHIR guide suggests planned, but in the standard A04 means the
//     patient has arrived, and that is how NHS PAS feeds use it.
//   - A08 update: finished when PV1-45 (discharge time) is sent, planned
//     for a pre-admission (PV1-2 = P), otherwise in-progress. A08 with no
//     PV1, or a PV1 with neither a patient class (other than N) nor a
//     visit number, produces no Encounter.
func adtEvents() map[string]eventMapping {
	fixed := func(s models.EncounterStatus) func(*hl7v2.Segment) models.EncounterStatus {
		return func(*hl7v2.Segment) models.EncounterStatus { return s }
	}
	pid := segmentRule{segment: "PID", required: true, apply: (*builder).mapPID}
	visit := segmentRule{segment: "PV1", required: true, apply: (*builder).mapPV1}
	optionalVisit := segmentRule{segment: "PV1", required: false, apply: (*builder).mapVisitIfAny}
	return map[string]eventMapping{
		"A01": {
			display:  "ADT/ACK - Admit/visit notification",
			segments: []segmentRule{pid, visit},
			status:   fixed(models.EncounterStatusInProgress),
		},
		"A03": {
			display:  "ADT/ACK - Discharge/end visit",
			segments: []segmentRule{pid, visit},
			status:   fixed(models.EncounterStatusFinished),
		},
		"A04": {
			display:  "ADT/ACK - Register a patient",
			segments: []segmentRule{pid, visit},
			status:   fixed(models.EncounterStatusInProgress),
		},
		"A08": {
			display:  "ADT/ACK - Update patient information",
			segments: []segmentRule{pid, optionalVisit},
			status:   updateStatus,
		},
	}
}

// updateStatus decides the status of the visit an A08 describes.
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

// builder collects the resources of one translation.
type builder struct {
	t       *Translator
	env     *envelope.Envelope
	m       *hl7v2.Message
	event   string
	mapping eventMapping

	patient   *models.Patient
	encounter *models.Encounter
	key       string
	dq        []string
}

// fullURL returns the urn:uuid fullUrl and the id of the resource of the
// given kind in this translation.
func (b *builder) fullURL(kind string) (fullURL, id string) {
	id = fhir.DeterministicUUID(b.env.ID, kind)
	return "urn:uuid:" + id, id
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

// bundle assembles the message bundle.
func (b *builder) bundle() ([]byte, error) {
	header, headerURL := b.header()
	bundle := models.Bundle{
		Meta:      &models.Meta{Profile: []string{nhs.ProfileBundle}},
		Type:      models.BundleTypeMessage,
		Timestamp: ptr(b.timestamp()),
	}
	if validID(b.env.ID) {
		bundle.Id = ptr(b.env.ID)
	}
	if ctrl := value(b.m.ControlID()); ctrl != "" {
		bundle.Identifier = &models.Identifier{System: ptr(sourceEndpoint(b.m, b.env)), Value: ptr(ctrl)}
	} else {
		u, _ := b.fullURL("Bundle")
		bundle.Identifier = &models.Identifier{System: ptr(systemURI), Value: ptr(u)}
	}
	add := func(resource any, url string) error {
		e, err := fhir.EntryFor(resource, url)
		if err != nil {
			return fault.Wrap(fault.Permanent, fault.CodeTranslate, "build bundle entry", err)
		}
		bundle.Entry = append(bundle.Entry, e)
		return nil
	}
	if err := add(header, headerURL); err != nil {
		return nil, err
	}
	if b.patient != nil {
		u, _ := b.fullURL("Patient")
		if err := add(b.patient, u); err != nil {
			return nil, err
		}
	}
	if b.encounter != nil {
		u, _ := b.fullURL("Encounter")
		if err := add(b.encounter, u); err != nil {
			return nil, err
		}
	}
	raw, err := fhir.MarshalResource(bundle)
	if err != nil {
		return nil, fault.Wrap(fault.Permanent, fault.CodeTranslate, "marshal bundle", err)
	}
	return raw, nil
}

// timestamp is MSH-7 as a FHIR instant, or, when MSH-7 cannot be one, the
// time Junction received the message, in UTC (it is Junction's clock, not
// the feed's).
func (b *builder) timestamp() string {
	raw := b.m.Segment("MSH").Component(7, 1, 1, 1)
	if ts, ok := instantFromHL7(raw, b.t.loc); ok {
		return ts
	}
	b.flag(DQMessageTimeInvalid)
	return b.env.ReceivedAt.UTC().Format("2006-01-02T15:04:05.000Z07:00")
}

// instantFromHL7 converts an HL7 time of at least minute precision to a
// FHIR instant.
func instantFromHL7(raw string, loc *time.Location) (string, bool) {
	raw = value(raw)
	if len(raw) < 12 {
		return "", false
	}
	ts, err := fhir.DateTimeFromHL7(raw, loc)
	if err != nil || len(ts) < len("2006-01-02T15:04:05") {
		return "", false
	}
	return ts, true
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

func ptr[T any](v T) *T { return &v }

// Patient maps the PID segment of m to a UK Core Patient under t's
// dialect, for translators of other HL7 v2 feeds (pathology) that carry
// the same segment. The Patient's id is fhir.DeterministicUUID(env.ID,
// "Patient"), as in the ADT bundles, so its fullUrl is "urn:uuid:" + id.
// It also returns the patient key (see PatientKey) and the data-quality
// codes raised. A message without PID gives a permanent fault with code
// fault.CodeHL7Required.
func (t *Translator) Patient(env *envelope.Envelope, m *hl7v2.Message) (*models.Patient, string, []string, error) {
	if env == nil || m == nil {
		return nil, "", nil, fault.New(fault.CodeInternal, "translate: no envelope or message")
	}
	pid := m.Segment("PID")
	if pid == nil {
		return nil, "", nil, fault.New(fault.CodeHL7Required, "message has no PID segment").WithHL7("100")
	}
	b := &builder{t: t, env: env, m: m, event: m.Event()}
	if err := b.mapPID(pid); err != nil {
		return nil, "", nil, err
	}
	return b.patient, b.key, b.dq, nil
}
