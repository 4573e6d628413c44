package pathology

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	models "github.com/samply/golang-fhir-models/fhir-models/fhir"

	"github.com/junction-fhir/junction/adapters/pas"
	"github.com/junction-fhir/junction/pkg/adapter"
	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/fault"
	"github.com/junction-fhir/junction/pkg/fhir"
	"github.com/junction-fhir/junction/pkg/hl7v2"
	"github.com/junction-fhir/junction/pkg/nhs"
)

// Data-quality codes reported in Translation.DataQuality, besides those
// the pas patient mapping raises (pas.DQNHSNumberMissing and its kin).
// They are metric label values: a fixed set that never holds patient data.
const (
	// DQMessageTimeInvalid: MSH-7 is missing, invalid or coarser than a
	// minute; the bundle timestamp is the time Junction received the
	// message. The same code as pas.DQMessageTimeInvalid.
	DQMessageTimeInvalid = pas.DQMessageTimeInvalid
	// DQResultTimeInvalid: a result or specimen time (OBR-7, OBR-8,
	// OBR-14, OBR-22, OBX-14, SPM-17, SPM-18, ORC-9) is not a valid HL7
	// date/time, or OBR-22 is not precise enough for an instant.
	DQResultTimeInvalid = "result_time_invalid"
	// DQNumericValueInvalid: an NM or SN value is not a number; it is
	// kept as valueString.
	DQNumericValueInvalid = "numeric_value_invalid"
	// DQValueInvalid: a DT, DTM, TS, TM, DR, ED or RP value cannot be
	// read; it is left out and the Observation has a dataAbsentReason.
	DQValueInvalid = "value_invalid"
	// DQValueTypeUnsupported: OBX-2 is missing or a type this mapping does
	// not know; the value is kept as valueString.
	DQValueTypeUnsupported = "value_type_unsupported"
	// DQValueRepetitionsDropped: an ED or RP OBX-5 repeats; only the
	// first repetition is mapped. (Other types' repetitions become
	// Observation.component.)
	DQValueRepetitionsDropped = "value_repetitions_dropped"
	// DQUnitNotUCUM: OBX-6 is not a UCUM unit; the Quantity has the unit
	// text only, so receivers cannot compare it.
	DQUnitNotUCUM = "unit_not_ucum"
	// DQReportStatusUnknown: OBR-25 is missing or not in HL7 table 0123;
	// DiagnosticReport.status is unknown.
	DQReportStatusUnknown = "report_status_unknown"
	// DQObservationStatusUnknown: OBX-11 is missing or not in HL7 table
	// 0085; Observation.status is unknown.
	DQObservationStatusUnknown = "observation_status_unknown"
	// DQInterpretationUnknown: an OBX-8 flag is not in HL7 table 0078; it
	// is kept as text only.
	DQInterpretationUnknown = "interpretation_unknown"
	// DQCodeMissing: an OBX has neither code (OBX-3) nor value; it is
	// left out and its notes go to the report. (An OBX with a value but
	// no code, and an OBR without OBR-4, are refused: see Screen.)
	DQCodeMissing = "code_missing"
	// DQLocalTimeAmbiguous: a result, specimen or report issue time
	// (OBR-22) sent without an offset falls in the hour the feed's time
	// zone skips or repeats (the clocks changing), so its offset is a
	// guess. The same code as pas.DQLocalTimeAmbiguous.
	DQLocalTimeAmbiguous = pas.DQLocalTimeAmbiguous
	// DQOrderNumberMissing: an order has neither a placer nor a filler
	// number (OBR-2, OBR-3, ORC-2, ORC-3), so its resources have no
	// result key: a correction or a resend of it makes new resources at a
	// FHIR server beside the earlier ones rather than replacing them.
	DQOrderNumberMissing = "order_number_missing"
	// DQResultStatusOnly: an OBX with status U (final, the result sent
	// before as preliminary not sent again) and no value. It becomes a
	// DiagnosticReport.result reference to the earlier Observation by its
	// result key, with no Observation: written whole, one would replace
	// the preliminary value at the server with none. The earlier
	// Observation keeps its preliminary status there; notes after the
	// OBX go to the report.
	DQResultStatusOnly = "result_status_only"
	// DQObservationOutsideOrder: an OBX comes before any OBR (a v2.6+
	// patient observation, or a malformed message); it is mapped as an
	// Observation of the patient with no report, order or result key.
	DQObservationOutsideOrder = "observation_outside_order"
	// DQNoteNotMapped: an NTE follows a segment whose resource has no
	// note (PID, PV1, ...); its text is not in the bundle.
	DQNoteNotMapped = "note_not_mapped"
)

// DataQualityCodes implements adapter.DataQualityCoder: the result
// mappings' codes, the order correlation's, and the patient mapping's it
// shares with pas. The codes of orders Junction sends (DQOrderCodeMissing
// and its kin) are not a translation's.
func (t *Translator) DataQualityCodes() []string {
	return append([]string{
		DQResultTimeInvalid, DQNumericValueInvalid, DQValueInvalid,
		DQValueTypeUnsupported, DQValueRepetitionsDropped, DQUnitNotUCUM,
		DQReportStatusUnknown, DQObservationStatusUnknown, DQInterpretationUnknown,
		DQCodeMissing, DQOrderNumberMissing, DQResultStatusOnly,
		DQObservationOutsideOrder, DQNoteNotMapped, DQOrderPatientMismatch,
	}, pas.DataQualityCodes()...)
}

// Code systems and extensions used by the mappings.
const (
	systemV2Event       = "http://terminology.hl7.org/CodeSystem/v2-0003"
	systemV2IDType      = "http://terminology.hl7.org/CodeSystem/v2-0203"
	systemV2Section     = "http://terminology.hl7.org/CodeSystem/v2-0074"
	systemV3Interp      = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
	systemObsCategory   = "http://terminology.hl7.org/CodeSystem/observation-category"
	systemDataAbsent    = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
	systemUCUM          = "http://unitsofmeasure.org"
	systemLOINC         = "http://loinc.org"
	systemSNOMED        = "http://snomed.info/sct"
	systemURI           = "urn:ietf:rfc:3986"
	extDiagnosticNote   = "http://hl7.org/fhir/5.0/StructureDefinition/extension-DiagnosticReport.note"
	extObservationValue = "http://hl7.org/fhir/5.0/StructureDefinition/extension-Observation.value"
	extObservationSubID = "http://hl7.org/fhir/StructureDefinition/observation-v2-subid"
)

// Translator maps HL7 v2 ORU^R01 messages to FHIR. It is safe for
// concurrent use.
type Translator struct {
	patients *pas.Translator
	lab      LabDialect
	// systems is lab.CodingSystems by upper-case name, resolved.
	systems map[string]string
	loc     *time.Location
	codes   codeMap
	// enc writes the bundle's resources.
	enc *fhir.ModelEncoder
	// scratch holds *[]byte buffers the bundles are written in before
	// being copied out at their exact size (see pas.Translator).
	scratch sync.Pool
	// viaModels writes the bundle with encoding/json and the models'
	// MarshalJSON, as before the encoder (tests compare the two).
	viaModels bool
}

// NewTranslator returns a translator for feeds identifying patients under
// d and following the laboratory conventions lab. It reads lab's code maps.
func NewTranslator(d pas.Dialect, lab LabDialect) (*Translator, error) {
	patients, err := pas.NewTranslator(d)
	if err != nil {
		return nil, err
	}
	loc, err := time.LoadLocation(d.TimeZone)
	if err != nil {
		return nil, fault.Wrap(fault.Permanent, fault.CodeConfig, "invalid pathology time zone", err)
	}
	errs := lab.systemErrors()
	codes, mapErrs := loadCodeMaps(lab.CodeMaps)
	if errs = append(errs, mapErrs...); len(errs) > 0 {
		return nil, fault.Wrap(fault.Permanent, fault.CodeConfig, "invalid pathology lab settings", errors.Join(errs...))
	}
	lab.CodeMaps = append([]string(nil), lab.CodeMaps...)
	return &Translator{patients: patients, lab: lab, systems: lab.codingSystems(), loc: loc, codes: codes, enc: &fhir.ModelEncoder{}}, nil
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

// Events implements adapter.EventLister: ORU^R01 alone.
func (t *Translator) Events() []string { return []string{"ORU^R01"} }

// RelayTypes implements adapter.RelayLister: the message types the input
// relays (its relay setting), given the minimal translation of
// pas.Translator.TranslateRelayed.
func (t *Translator) RelayTypes() []string { return t.patients.RelayTypes() }

// TranslateMessage translates a parsed ORU^R01 message. The result depends
// only on env.ID, env.Source, env.ReceivedAt and the message. A type the
// input relays (other than ORU^R01) gets pas.Translator.TranslateRelayed;
// another message type other than ORU gives a permanent fault with code
// fault.CodeHL7Unsupported and HL7 error 200, an ORU event other than R01
// the same with HL7 error 201; a message without PID or OBR one with
// fault.CodeHL7Required and HL7 error 100, and results for more than one
// patient (a second PID) one with fault.CodeHL7Unsupported and HL7 error
// 100. An MSH-18 character set other than ASCII, 8859/1 or UNICODE UTF-8
// gives a permanent fault with code fault.CodeHL7Charset; 8859/1 text is
// decoded to UTF-8.
func (t *Translator) TranslateMessage(env *envelope.Envelope, m *hl7v2.Message) (*adapter.Translation, error) {
	if env == nil || m == nil {
		return nil, fault.New(fault.CodeInternal, "translate: no envelope or message")
	}
	msh := m.Segment("MSH")
	if msh == nil {
		return nil, fault.New(fault.CodeHL7Required, "message has no MSH segment").WithHL7(hl7v2.ErrCodeSegmentSequence)
	}
	if err := m.CharsetError(); err != nil {
		return nil, err
	}
	if typ, ev := msh.Component(9, 1, 1, 1), m.Event(); (typ != "ORU" || ev != "R01") && ev != "" && t.patients.Relays(typ+"^"+ev) {
		return t.patients.TranslateRelayed(env, m)
	}
	if typ := msh.Component(9, 1, 1, 1); typ != "ORU" {
		return nil, fault.New(fault.CodeHL7Unsupported, "pathology translates ORU messages only").
			WithDetail("unsupported message type " + quoteCode(typ)).WithHL7(hl7v2.ErrCodeUnsupportedMessageType)
	}
	if ev := m.Event(); ev != "R01" {
		return nil, fault.New(fault.CodeHL7Unsupported, "ORU event not supported").
			WithDetail("unsupported ORU event " + quoteCode(ev)).WithHL7(hl7v2.ErrCodeUnsupportedEvent)
	}
	if n := len(m.SegmentsNamed("PID")); n > 1 && !onePatient(m) {
		return nil, fault.New(fault.CodeHL7Unsupported, "ORU^R01 with results for more than one patient is not supported").
			WithHL7(hl7v2.ErrCodeSegmentSequence)
	}
	patient, key, dq, err := t.patients.Patient(env, m)
	if err != nil {
		return nil, err
	}
	b := &builder{t: t, env: env, m: m, d: m.Delimiters(), patient: patient, dq: dq, orderKeys: map[string]int{}}
	_, b.patientID = b.ids("Patient")
	b.patientURL = "urn:uuid:" + b.patientID
	if err := b.walk(); err != nil {
		return nil, err
	}
	bundle, err := b.bundle()
	if err != nil {
		return nil, err
	}
	return &adapter.Translation{
		Bundle:      bundle,
		PatientKey:  key,
		Event:       "R01",
		V2:          m,
		DataQuality: b.dq,
	}, nil
}

// order is one ORDER_OBSERVATION group: an OBR with its ORC, notes,
// observations and specimens.
type order struct {
	index    int
	orc, obr *hl7v2.Segment
	// notes follow the OBR, orcNotes the ORC.
	notes, orcNotes []string
	observations    []*observation
	specimens       []*specimen

	// key is the order's result key (orderKey), and obsKeys counts its
	// observations' keys.
	key     string
	obsKeys map[string]int

	report   *models.DiagnosticReport
	request  *models.ServiceRequest
	specRefs []models.Reference
	specRes  []*models.Specimen
	// obsRes are the Observations written, and obsURLs their fullUrls
	// (a status-only final has a result reference but no Observation).
	obsRes  []*models.Observation
	obsURLs []string
}

// observation is one OBX with its notes, and the position (from 1) of
// the SPM of its order it follows, if any: an OBX in a SPECIMEN group
// (v2.5) observes that specimen.
type observation struct {
	obx      *hl7v2.Segment
	notes    []string
	specimen int
}

// specimen is one SPM with its notes.
type specimen struct {
	spm   *hl7v2.Segment
	notes []string
}

// builder collects the resources of one translation.
type builder struct {
	t   *Translator
	env *envelope.Envelope
	m   *hl7v2.Message
	d   hl7v2.Delimiters

	patient    *models.Patient
	patientID  string
	patientURL string
	orders     []*order
	// patientObs are the OBX before the first OBR, and patientObsRes
	// their Observations.
	patientObs    []*observation
	patientObsRes []*models.Observation
	// orderKeys counts the orders' result keys.
	orderKeys map[string]int
	dq        []string
	urls      []kindURL
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

// ids returns the urn:uuid fullUrl and id of the resource named kind.
func (b *builder) ids(kind string) (fullURL, id string) {
	for _, u := range b.urls {
		if u.kind == kind {
			return u.url, u.url[len("urn:uuid:"):]
		}
	}
	fullURL = fhir.DeterministicURN(b.env.ID, kind)
	b.urls = append(b.urls, kindURL{kind: kind, url: fullURL})
	return fullURL, fullURL[len("urn:uuid:"):]
}

// kindURL is a fullUrl made by ids, kept because most are asked for
// twice or more (an Observation's by its report and by itself).
type kindURL struct{ kind, url string }

// walk groups the segments after PID into orders:
//
//   - ORC opens the next order; the OBR that follows joins it. An OBR
//     without an ORC before it opens an order without one.
//   - NTE belongs to the segment it follows, past any PRT, TQ1, CTD or
//     Z-segment between them: an OBX (Observation.note), an OBR (the
//     report's note), an ORC (ServiceRequest.note) or an SPM
//     (Specimen.note). After PID, PV1 and the like its text has no place
//     and is flagged DQNoteNotMapped.
//   - OBX belongs to the current order. One before any OBR (a v2.6+
//     patient observation) becomes an Observation of the patient alone,
//     flagged DQObservationOutsideOrder.
//   - SPM adds a specimen to the current order.
//   - Every other segment (PV1, TQ1, CTD, FT1, PRT, Z-segments, ...) is
//     not mapped.
func (b *builder) walk() error {
	var (
		cur        *order
		pendingORC *hl7v2.Segment
		orcNotes   []string
		notes      *[]string // where an NTE's text goes; nil: nowhere
	)
	for _, seg := range b.m.Segments() {
		switch seg.Name() {
		case "ORC":
			pendingORC, orcNotes = seg, nil
			notes = &orcNotes
		case "OBR":
			cur = &order{index: len(b.orders) + 1, orc: pendingORC, orcNotes: orcNotes, obr: seg, obsKeys: map[string]int{}}
			pendingORC, orcNotes = nil, nil
			b.orders = append(b.orders, cur)
			notes = &cur.notes
		case "OBX":
			if !codeSent(seg, 3) && !valueSent(seg) {
				// No result: its notes, if any, are the report's.
				b.flag(DQCodeMissing)
				notes = nil
				if cur != nil {
					notes = &cur.notes
				}
				continue
			}
			if cur == nil && statusOnlyFinal(seg) {
				// Nothing to finalise: a result outside an order has
				// no key a server could find the earlier one by.
				b.flag(DQResultStatusOnly)
				notes = nil
				continue
			}
			obs := &observation{obx: seg}
			if cur == nil {
				b.flag(DQObservationOutsideOrder)
				b.patientObs = append(b.patientObs, obs)
			} else {
				obs.specimen = len(cur.specimens)
				cur.observations = append(cur.observations, obs)
			}
			notes = &obs.notes
		case "NTE":
			text := b.noteText(seg)
			if text == "" {
				continue
			}
			if notes == nil {
				b.flag(DQNoteNotMapped)
				continue
			}
			*notes = append(*notes, text)
		case "SPM":
			notes = nil
			if cur != nil {
				sp := &specimen{spm: seg}
				cur.specimens = append(cur.specimens, sp)
				notes = &sp.notes
			}
		case "PID", "PD1", "PV1", "PV2", "NK1", "MSH", "SFT", "EVN":
			// Segments whose resources (if any) have no note.
			notes = nil
		default:
			// PRT, TQ1, TQ2, CTD, FT1, CTI, Z-segments and the like sit
			// inside the group of the segment a note belongs to (OBX,
			// {PRT}, {NTE} in v2.7): a note after them is still its.
		}
	}
	if len(b.orders) == 0 {
		return fault.New(fault.CodeHL7Required, "ORU^R01 needs an OBR segment").WithHL7(hl7v2.ErrCodeSegmentSequence)
	}
	if ae := missingCode(b.m); ae != nil {
		return fault.New(fault.CodeHL7Required, fmt.Sprintf("%s-%d of %s %d is empty", ae.Segment, ae.Field, ae.Segment, ae.Sequence)).WithHL7(hl7v2.ErrCodeRequiredField)
	}
	for _, o := range b.orders {
		b.mapOrder(o)
	}
	if len(b.patientObs) > 0 {
		// Numbered as the observations of an order 0, which has no key.
		o := &order{obsKeys: map[string]int{}}
		subject := models.Reference{Reference: &b.patientURL, Type: fhir.Ptr("Patient")}
		for i, obs := range b.patientObs {
			b.patientObsRes = append(b.patientObsRes, b.mapObservation(o, i+1, obs, subject, nil, nil, nil, nil))
		}
	}
	return nil
}

// noteText is NTE-3, every repetition, as plain text.
func (b *builder) noteText(nte *hl7v2.Segment) string {
	return b.formattedText(nte.Field(3))
}

// bundle assembles the message bundle: MessageHeader, Patient, then per
// order its ServiceRequest, Specimens, DiagnosticReport and Observations.
func (b *builder) bundle() ([]byte, error) {
	header, headerURL := b.header()
	meta := fhir.MetaProfile(nhs.ProfileBundle)
	meta.Tag = pas.SourceTag()
	bundle := models.Bundle{
		Meta:      meta,
		Type:      models.BundleTypeMessage,
		Timestamp: fhir.Ptr(b.timestamp()),
	}
	if validID(b.env.ID) {
		bundle.Id = fhir.Ptr(b.env.ID)
	}
	if ctrl := value(b.m.ControlID()); ctrl != "" {
		bundle.Identifier = &models.Identifier{System: fhir.Ptr(pas.SourceEndpoint(b.m, b.env)), Value: fhir.Ptr(ctrl)}
	} else {
		u, _ := b.ids("Bundle")
		bundle.Identifier = &models.Identifier{System: fhir.Ptr(systemURI), Value: fhir.Ptr(u)}
	}
	scratch, _ := b.t.scratch.Get().(*[]byte)
	if scratch == nil {
		scratch = new([]byte)
	}
	w := &entryWriter{t: b.t, buf: (*scratch)[:0]}
	if b.t.viaModels {
		head, err := fhir.MarshalResource(bundle)
		if err != nil {
			return nil, fault.Wrap(fault.Permanent, fault.CodeTranslate, "marshal bundle", err)
		}
		w.buf = appendUnescapedHTML(w.buf, head[:len(head)-1])
	} else {
		w.buf = b.t.enc.AppendResource(w.buf, &bundle, prunedJSON)
		w.buf = w.buf[:len(w.buf)-1]
	}
	w.buf = append(w.buf, `,"entry":[`...)
	w.add(header, headerURL)
	w.add(b.patient, b.patientURL)
	for i, obs := range b.patientObsRes {
		u, _ := b.ids(kind("Observation", 0, i+1))
		w.add(obs, u)
	}
	for _, o := range b.orders {
		w.add(o.request, *o.report.BasedOn[0].Reference)
		for i, s := range o.specRes {
			w.add(s, *o.specRefs[i].Reference)
		}
		u, _ := b.ids(kind("DiagnosticReport", o.index, 0))
		w.add(o.report, u)
		for i, obs := range o.obsRes {
			w.add(obs, o.obsURLs[i])
		}
	}
	if w.err != nil {
		return nil, fault.Wrap(fault.Permanent, fault.CodeTranslate, "build bundle entry", w.err)
	}
	w.buf = append(w.buf, "]}"...)
	out := bytes.Clone(w.buf)
	if cap(w.buf) <= maxScratch {
		*scratch = w.buf[:0]
		b.t.scratch.Put(scratch)
	}
	return out, nil
}

// The bundle's JSON has "<", ">" and "&" unescaped (see
// appendUnescapedHTML). The MessageHeader, the Patient and the Bundle
// itself are pruned of empty elements as fhir.MarshalResource prunes
// them; the DiagnosticReport, Observation, Specimen and ServiceRequest
// always set their required elements and are written as their
// MarshalJSON writes them (see marshal).
var (
	prunedJSON = fhir.EncodeOptions{Prune: true}
	modelJSON  = fhir.EncodeOptions{}
)

// entryWriter appends bundle entries to a JSON buffer. Writing the entries
// directly, rather than marshalling a Bundle holding them, saves encoding
// every resource twice.
type entryWriter struct {
	t   *Translator
	buf []byte
	n   int
	err error
}

func (w *entryWriter) add(resource any, fullURL string) {
	if w.err != nil {
		return
	}
	if w.n > 0 {
		w.buf = append(w.buf, ',')
	}
	w.n++
	w.buf = append(w.buf, `{"fullUrl":`...)
	w.buf = strconv.AppendQuote(w.buf, fullURL)
	w.buf = append(w.buf, `,"resource":`...)
	if w.t.viaModels {
		raw, err := marshal(resource)
		if err != nil {
			w.err = err
			return
		}
		w.buf = appendUnescapedHTML(w.buf, raw)
	} else {
		opts := prunedJSON
		switch resource.(type) {
		case *models.Observation, *models.DiagnosticReport, *models.Specimen, *models.ServiceRequest:
			opts = modelJSON
		}
		w.buf = w.t.enc.AppendResource(w.buf, resource, opts)
	}
	w.buf = append(w.buf, '}')
}

// appendUnescapedHTML appends raw, a JSON text, to buf with the escapes
// encoding/json writes for "<", ">" and "&" (\u003c, \u003e, \u0026)
// turned back into the characters. Both forms are the same JSON, but the
// samply models compare some codes (Quantity.comparator "<") byte for
// byte, so they cannot read the escaped form back.
func appendUnescapedHTML(buf, raw []byte) []byte {
	if !bytes.Contains(raw, []byte(`\u00`)) {
		return append(buf, raw...)
	}
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c != '\\' || i+1 >= len(raw) {
			buf = append(buf, c)
			continue
		}
		if raw[i+1] == 'u' && i+6 <= len(raw) {
			switch string(raw[i+2 : i+6]) {
			case "003c":
				buf = append(buf, '<')
				i += 5
				continue
			case "003e":
				buf = append(buf, '>')
				i += 5
				continue
			case "0026":
				buf = append(buf, '&')
				i += 5
				continue
			}
		}
		buf = append(buf, c, raw[i+1])
		i++
	}
	return buf
}

// jsonResource is a samply model resource.
type jsonResource interface{ MarshalJSON() ([]byte, error) }

// marshal encodes a resource with encoding/json, as the bundle was written
// before the fhir.ModelEncoder, and still is when viaModels is set (tests
// compare the two byte for byte). The DiagnosticReport, Observation,
// Specimen and ServiceRequest this package builds always set their
// required elements, so they skip the empty-element pruning of
// fhir.MarshalResource: their own MarshalJSON output is used, with
// resourceType, which the models write last, moved first. Other resources
// go through fhir.MarshalResource.
func marshal(resource any) ([]byte, error) {
	var rt string
	switch resource.(type) {
	case *models.Observation:
		rt = "Observation"
	case *models.DiagnosticReport:
		rt = "DiagnosticReport"
	case *models.Specimen:
		rt = "Specimen"
	case *models.ServiceRequest:
		rt = "ServiceRequest"
	default:
		return fhir.MarshalResource(resource)
	}
	raw, err := resource.(jsonResource).MarshalJSON()
	if err != nil {
		return nil, fmt.Errorf("marshal %s: %w", rt, err)
	}
	tail := `,"resourceType":"` + rt + `"}`
	if !bytes.HasSuffix(raw, []byte(tail)) || len(raw) < len(tail)+2 {
		return fhir.MarshalResource(resource)
	}
	out := make([]byte, 0, len(raw)+2)
	out = append(out, `{"resourceType":"`...)
	out = append(out, rt...)
	out = append(out, `",`...)
	out = append(out, raw[1:len(raw)-len(tail)]...)
	return append(out, '}'), nil
}

// kind names the resource of an order (and of an item in it) for
// DeterministicUUID: "DiagnosticReport/2", "Observation/2/5".
func kind(resource string, orderIndex, item int) string {
	var stack [64]byte
	s := append(stack[:0], resource...)
	s = append(s, '/')
	s = strconv.AppendInt(s, int64(orderIndex), 10)
	if item > 0 {
		s = append(s, '/')
		s = strconv.AppendInt(s, int64(item), 10)
	}
	return string(s)
}

// timestamp is MSH-7 as a FHIR instant (fhir.PastInstantFromHL7: the
// message was made before it was received), or, when MSH-7 cannot be one,
// the time Junction received the message, in UTC.
func (b *builder) timestamp() string {
	raw := b.m.Segment("MSH").Component(7, 1, 1, 1)
	if ts, ok := fhir.PastInstantFromHL7(raw, b.t.loc, b.env.ReceivedAt); ok {
		return ts
	}
	b.flag(DQMessageTimeInvalid)
	return b.env.ReceivedAt.UTC().Format("2006-01-02T15:04:05.000Z07:00")
}

// dateTime converts an HL7 date/time to a FHIR dateTime, flagging
// DQResultTimeInvalid when it cannot. It returns nil for an empty value.
func (b *builder) dateTime(raw string) *string {
	raw = value(raw)
	if raw == "" {
		return nil
	}
	ts, err := fhir.DateTimeFromHL7(raw, b.t.loc)
	if err != nil {
		b.flag(DQResultTimeInvalid)
		return nil
	}
	if fhir.AmbiguousLocal(raw, b.t.loc) {
		// A time in the hour the clocks skip or repeat: the offset given
		// is a guess, and two samples may have swapped order.
		b.flag(DQLocalTimeAmbiguous)
	}
	return &ts
}

// value returns s, or "" for the HL7 explicit null `""`.
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
	return strconv.Quote(s)
}

// validID reports whether s is a valid FHIR resource id.
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

// maxScratch is the largest bundle buffer kept for reuse, so that one
// huge message does not pin its buffer.
const maxScratch = 1 << 20
