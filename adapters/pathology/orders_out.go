package pathology

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/junction-fhir/junction/pkg/fault"
	"github.com/junction-fhir/junction/pkg/hl7v2"
	"github.com/junction-fhir/junction/pkg/nhs"
)

// Message types the order encoder writes.
const (
	// MessageTypeOML is the laboratory order message of v2.4 and later.
	MessageTypeOML = "OML^O21"
	// MessageTypeORM is the general order message of v2.3 and v2.4.
	MessageTypeORM = "ORM^O01"
)

// Data-quality codes of the order encoder, reported in
// EncodedOrder.DataQuality. Like the DQ codes above they never hold
// patient data.
const (
	// DQOrderNHSNumberInvalid: the Patient has an identifier in the NHS
	// number system that fails the modulus 11 check; it is not sent.
	DQOrderNHSNumberInvalid = "order_nhs_number_invalid"
	// DQOrderTimeInvalid: a FHIR date or time in the order could not be
	// read; the field is left empty.
	DQOrderTimeInvalid = "order_time_invalid"
	// DQOrderCodeMissing: a ServiceRequest has no code; OBR-4 is empty.
	DQOrderCodeMissing = "order_code_missing"
)

// OrderOptions are a destination's settings for EncodeOrder. Version and
// MessageType pick the message structure; the rest fill MSH and order
// numbers.
type OrderOptions struct {
	// Version is MSH-12: "2.3", "2.3.1", "2.4", "2.5" or "2.5.1".
	Version string `yaml:"version"`
	// MessageType is MessageTypeOML (v2.4 and later) or MessageTypeORM.
	MessageType string `yaml:"message_type"`
	// SendingApplication, SendingFacility, ReceivingApplication and
	// ReceivingFacility are MSH-3 to MSH-6 (namespace ids).
	SendingApplication   string `yaml:"sending_application"`
	SendingFacility      string `yaml:"sending_facility"`
	ReceivingApplication string `yaml:"receiving_application"`
	ReceivingFacility    string `yaml:"receiving_facility"`
	// ProcessingID is MSH-11: P (default), D or T.
	ProcessingID string `yaml:"processing_id"`
	// TimeZone is the IANA zone times are written in, with their offset
	// (default Europe/London).
	TimeZone string `yaml:"time_zone"`
	// PlacerNamespace is EI-2 of the placer order number (ORC-2, OBR-2),
	// the namespace results are correlated under; default
	// SendingApplication.
	PlacerNamespace string `yaml:"placer_namespace"`
	// PlacerOrderSystem is the identifier system that marks a
	// ServiceRequest identifier as the placer order number when no
	// identifier is typed PLAC (default DefaultPlacerOrderSystem).
	PlacerOrderSystem string `yaml:"placer_order_system"`
	// LocalCodeSystem is the code system sent with coding system "L"
	// (default DefaultLocalCodeSystem), as the results translator reads
	// it.
	LocalCodeSystem string `yaml:"local_code_system"`

	// ControlID is MSH-10 (required, at most 20 characters, since v2.3
	// and v2.4 allow no more). Set per message, not in config.
	ControlID string `yaml:"-"`
	// Time is MSH-7. Set per message, not in config.
	Time time.Time `yaml:"-"`
}

// DefaultOrderOptions returns OML^O21 v2.5 in Europe/London, processing
// id P, and the placeholder placer and local code systems.
func DefaultOrderOptions() OrderOptions {
	return OrderOptions{
		Version:           "2.5",
		MessageType:       MessageTypeOML,
		ProcessingID:      "P",
		TimeZone:          "Europe/London",
		PlacerOrderSystem: DefaultPlacerOrderSystem,
		LocalCodeSystem:   DefaultLocalCodeSystem,
	}
}

// versionRank orders the supported versions: 23, 231, 24, 25, 251.
func versionRank(v string) int {
	switch v {
	case "2.3":
		return 230
	case "2.3.1":
		return 231
	case "2.4":
		return 240
	case "2.5":
		return 250
	case "2.5.1":
		return 251
	}
	return 0
}

// Validate returns every problem with the configured settings (not
// ControlID and Time, which are set per message).
func (o *OrderOptions) Validate() []error {
	var errs []error
	rank := versionRank(o.Version)
	if rank == 0 {
		errs = append(errs, fmt.Errorf("version: %q is not one of 2.3, 2.3.1, 2.4, 2.5, 2.5.1", o.Version))
	}
	switch o.MessageType {
	case MessageTypeORM:
	case MessageTypeOML:
		if rank != 0 && rank < 240 {
			errs = append(errs, fmt.Errorf("message_type: OML^O21 needs version 2.4 or later, not %s", o.Version))
		}
	default:
		errs = append(errs, fmt.Errorf("message_type: %q is not OML^O21 or ORM^O01", o.MessageType))
	}
	switch o.ProcessingID {
	case "P", "D", "T":
	default:
		errs = append(errs, fmt.Errorf("processing_id: %q is not P, D or T", o.ProcessingID))
	}
	if _, err := time.LoadLocation(o.TimeZone); err != nil || o.TimeZone == "" {
		errs = append(errs, fmt.Errorf("time_zone: %q is not an IANA time zone", o.TimeZone))
	}
	for _, f := range []struct{ name, value string }{
		{"placer_order_system", o.PlacerOrderSystem},
		{"local_code_system", o.LocalCodeSystem},
	} {
		if err := checkURI(f.value); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f.name, err))
		}
	}
	return errs
}

// EncodedOrder is one order message and what correlation needs of it.
type EncodedOrder struct {
	// Message is the ER7 text, segments ended by carriage returns. It
	// holds patient data: never log it.
	Message []byte
	// Orders lists the orders sent, one per ServiceRequest, in message
	// order.
	Orders []SentOrder
	// DataQuality lists the DQOrder* codes raised.
	DataQuality []string
}

// SentOrder identifies one order of a message: the ServiceRequest it came
// from and the order numbers sent.
type SentOrder struct {
	// ServiceRequest is the entry's fullUrl in the order bundle (or
	// "ServiceRequest/id" when it has none).
	ServiceRequest string `json:"service_request,omitempty"`
	// PlacerSystem and PlacerNumber are the ServiceRequest identifier sent
	// as the placer order number; PlacerNamespace is the EI-2 sent with
	// it.
	PlacerSystem    string `json:"placer_system,omitempty"`
	PlacerNumber    string `json:"placer_number"`
	PlacerNamespace string `json:"placer_namespace,omitempty"`
	// FillerSystem and FillerNumber are the filler order number, when the
	// ServiceRequest already had one (a resend) or a result taught it.
	FillerSystem    string `json:"filler_system,omitempty"`
	FillerNumber    string `json:"filler_number,omitempty"`
	FillerNamespace string `json:"filler_namespace,omitempty"`
	// Patient is the check value of the NHS number the order was sent
	// with (see Correlator.patientCheck), "" when it was sent without one.
	// It lets a result that names this order be checked against the
	// order's patient without the record holding the number.
	Patient string `json:"patient,omitempty"`
	// NHSNumber is the NHS number the order was sent with, as EncodeOrder
	// gives it; the correlator keeps only its check value (Patient), and
	// it is never stored.
	NHSNumber string `json:"-"`
}

// maxBundleEntries bounds the work one order bundle can ask for.
const maxBundleEntries = 1000

// EncodeOrder turns a FHIR Bundle holding one or more ServiceRequests with
// their Patient (and optionally Specimens, an Encounter, Practitioners,
// PractitionerRoles and Organizations) into one OML^O21 or ORM^O01
// message, by these rules:
//
//   - MSH: from opts; MSH-9 OML^O21^OML_O21 or ORM^O01 (with ORM_O01
//     from v2.3.1), MSH-7 opts.Time in opts.TimeZone with its offset.
//   - PID: PID-3 the valid NHS number as NUMBER^^^NHS^NH, then every
//     other identifier as value^^^assigner&system&URI^type; PID-5 names
//     (official as L), PID-7 birth date, PID-8 sex (M, F, O, U), PID-11
//     addresses, PID-13 and PID-14 home and work telecoms.
//   - PV1, when the ServiceRequest's encounter (or the bundle's one
//     Encounter) is there: class, location, visit number PV1-19, PV1-44
//     and PV1-45 from its period.
//   - Per ServiceRequest an ORC and an OBR: ORC-1 NW (CA when revoked or
//     entered in error, HD when on hold); placer number (ORC-2, OBR-2) the
//     identifier typed PLAC, else the one in opts.PlacerOrderSystem, sent
//     as number^namespace^system^URI; filler number (ORC-3, OBR-3) the
//     one typed FILL when present; ORC-9 authoredOn; ORC-12 and OBR-16 the
//     requester; ORC-21 the requesting organization; OBR-4 the code's
//     first two codings (coding system names as the results translator
//     reads them) and, from v2.5, its text as CWE-9; OBR-7 and OBR-8
//     specimen collection; OBR-31 the reasons.
//   - Timing and priority (stat S, asap and urgent A, routine R): TQ1-7,
//     TQ1-8 and TQ1-9 from v2.5, else ORC-7 and OBR-27 (TQ-4, TQ-5,
//     TQ-6), from occurrence and priority.
//   - Notes: one NTE (source P) after the OBR per note, line breaks kept.
//   - Specimens (the ServiceRequest's, else those whose request names it,
//     else all when there is one ServiceRequest): SPM segments in OML
//     from v2.5, with identifiers, type, method, site, collection and
//     receipt times and availability; otherwise OBR-15 from the first
//     specimen's type and body site.
//
// All data is escaped for the message's delimiters. A bundle that is not
// JSON, has no ServiceRequest, has ServiceRequests for different patients
// or one without a Patient or a placer order number gives a permanent
// fault whose text holds no patient data.
//
// EncodeOrder checks opts and loads its time zone on every call; a sender
// of many messages builds an OrderEncoder once instead.
func EncodeOrder(bundle []byte, opts OrderOptions) (*EncodedOrder, error) {
	enc, err := NewOrderEncoder(opts)
	if err != nil {
		return nil, err
	}
	return enc.Encode(bundle, opts.ControlID, opts.Time)
}

// OrderEncoder encodes order bundles with fixed, checked options. It is
// safe for concurrent use.
type OrderEncoder struct {
	opts OrderOptions
	loc  *time.Location
}

// NewOrderEncoder checks opts (ControlID and Time are ignored) and loads
// its time zone.
func NewOrderEncoder(opts OrderOptions) (*OrderEncoder, error) {
	if errs := opts.Validate(); len(errs) > 0 {
		return nil, fault.Wrap(fault.Permanent, fault.CodeConfig, "invalid order options", errors.Join(errs...))
	}
	loc, err := time.LoadLocation(opts.TimeZone)
	if err != nil {
		return nil, fault.Wrap(fault.Permanent, fault.CodeConfig, "order time zone", err)
	}
	if opts.PlacerNamespace == "" {
		opts.PlacerNamespace = opts.SendingApplication
	}
	return &OrderEncoder{opts: opts, loc: loc}, nil
}

// Encode encodes one bundle as EncodeOrder does, with MSH-10 controlID
// (1 to 20 characters) and MSH-7 at (left empty when zero).
func (oe *OrderEncoder) Encode(bundle []byte, controlID string, at time.Time) (*EncodedOrder, error) {
	if controlID == "" || len(controlID) > 20 {
		return nil, fault.New(fault.CodeConfig, "order control id must be 1 to 20 characters")
	}
	var b fhirBundle
	if err := json.Unmarshal(bundle, &b); err != nil {
		return nil, fault.New(fault.CodeFHIRInvalidJSON, "order bundle is not a FHIR Bundle in JSON")
	}
	if b.ResourceType != "Bundle" {
		return nil, fault.New(fault.CodeFHIRInvalid, "order input is not a Bundle")
	}
	if len(b.Entry) > maxBundleEntries {
		return nil, fault.Newf(fault.CodeFHIRInvalid, "order bundle has more than %d entries", maxBundleEntries)
	}
	ix, err := indexBundle(&b)
	if err != nil {
		return nil, fault.New(fault.CodeFHIRInvalidJSON, "order bundle entry is not a JSON resource")
	}
	e := &orderEncoder{opts: oe.opts, loc: oe.loc, ix: ix, d: hl7v2.DefaultDelimiters(), rank: versionRank(oe.opts.Version)}
	e.opts.ControlID, e.opts.Time = controlID, at
	return e.encode()
}

// orderEncoder holds the state of one EncodeOrder call.
type orderEncoder struct {
	opts OrderOptions
	loc  *time.Location
	ix   *bundleIndex
	d    hl7v2.Delimiters
	rank int
	dq   []string
}

// flag records a data-quality code once.
func (e *orderEncoder) flag(code string) {
	for _, c := range e.dq {
		if c == code {
			return
		}
	}
	e.dq = append(e.dq, code)
}

// decodeEntry unmarshals an entry's resource into v.
func decodeEntry(en *indexedEntry, v any) error {
	if err := json.Unmarshal(en.raw, v); err != nil {
		return fault.Newf(fault.CodeFHIRInvalid, "order bundle %s is not a valid resource", en.typ)
	}
	return nil
}

// entryName is how an entry is named in SentOrder.ServiceRequest.
func entryName(en *indexedEntry) string {
	if en.fullURL != "" {
		return en.fullURL
	}
	if en.id != "" {
		return en.typ + "/" + en.id
	}
	return ""
}

// orderRequest is one ServiceRequest to encode.
type orderRequest struct {
	entry     *indexedEntry
	sr        fhirServiceRequest
	specimens []fhirSpecimen
}

func (e *orderEncoder) encode() (*EncodedOrder, error) {
	srEntries := e.ix.ofType("ServiceRequest")
	if len(srEntries) == 0 {
		return nil, fault.New(fault.CodeFHIRInvalid, "order bundle has no ServiceRequest")
	}
	reqs := make([]*orderRequest, 0, len(srEntries))
	for _, en := range srEntries {
		r := &orderRequest{entry: en}
		if err := decodeEntry(en, &r.sr); err != nil {
			return nil, err
		}
		reqs = append(reqs, r)
	}
	patientEntry, err := e.patientOf(reqs)
	if err != nil {
		return nil, err
	}
	var patient fhirPatient
	if err := decodeEntry(patientEntry, &patient); err != nil {
		return nil, err
	}
	if err := e.attachSpecimens(reqs); err != nil {
		return nil, err
	}

	m := hl7v2.NewMessage(e.d)
	msh := m.Add("MSH")
	e.msh(msh)
	nhsSent := e.pid(m.Add("PID"), &patient)
	if enc, err := e.encounterOf(reqs); err != nil {
		return nil, err
	} else if enc != nil {
		e.pv1(m.Add("PV1"), enc)
	}
	out := &EncodedOrder{}
	for i, r := range reqs {
		sent, err := e.order(m, i+1, r)
		if err != nil {
			return nil, err
		}
		sent.NHSNumber = nhsSent
		out.Orders = append(out.Orders, sent)
	}
	out.Message = m.Encode()
	if bytes.ContainsFunc(out.Message, func(r rune) bool { return r >= utf8.RuneSelf }) {
		// FHIR text is Unicode, written as UTF-8; HL7 reads an empty
		// MSH-18 as ASCII (and many receivers as Latin-1), so a name like
		// Siân must say what it is in.
		msh.SetField(18, e.utf8Charset())
		out.Message = m.Encode()
	}
	out.DataQuality = e.dq
	return out, nil
}

// patientOf finds the one Patient every ServiceRequest is for: its
// subject, or the bundle's only Patient when the subject does not resolve.
func (e *orderEncoder) patientOf(reqs []*orderRequest) (*indexedEntry, error) {
	patients := e.ix.ofType("Patient")
	var found *indexedEntry
	for _, r := range reqs {
		p := e.ix.resolve(&r.sr.Subject, "Patient")
		if p == nil && len(patients) == 1 {
			p = patients[0]
		}
		if p == nil {
			return nil, fault.New(fault.CodeFHIRInvalid, "order bundle has no Patient for its ServiceRequest")
		}
		if found != nil && p != found {
			return nil, fault.New(fault.CodeFHIRInvalid, "order bundle has ServiceRequests for more than one patient")
		}
		found = p
	}
	return found, nil
}

// attachSpecimens gives each request its specimens: those it references,
// else those whose request references it, else, when there is one
// request, the bundle's specimens that name no request.
func (e *orderEncoder) attachSpecimens(reqs []*orderRequest) error {
	all := e.ix.ofType("Specimen")
	if len(all) == 0 {
		return nil
	}
	parsed := make([]fhirSpecimen, len(all))
	for i, en := range all {
		if err := decodeEntry(en, &parsed[i]); err != nil {
			return err
		}
	}
	for _, r := range reqs {
		for _, ref := range r.sr.Specimen {
			for i, en := range all {
				if e.ix.refersTo(ref, en) {
					r.specimens = append(r.specimens, parsed[i])
				}
			}
		}
		if len(r.specimens) > 0 {
			continue
		}
		for i := range all {
			for _, ref := range parsed[i].Request {
				if e.ix.refersTo(ref, r.entry) {
					r.specimens = append(r.specimens, parsed[i])
					break
				}
			}
		}
		if len(r.specimens) > 0 || len(reqs) != 1 {
			continue
		}
		for i := range all {
			if len(parsed[i].Request) == 0 {
				r.specimens = append(r.specimens, parsed[i])
			}
		}
	}
	return nil
}

// encounterOf returns the first request's encounter, or the bundle's only
// Encounter, or nil.
func (e *orderEncoder) encounterOf(reqs []*orderRequest) (*fhirEncounter, error) {
	var en *indexedEntry
	for _, r := range reqs {
		if en = e.ix.resolve(r.sr.Encounter, "Encounter"); en != nil {
			break
		}
	}
	if all := e.ix.ofType("Encounter"); en == nil && len(all) == 1 {
		en = all[0]
	}
	if en == nil {
		return nil, nil
	}
	var enc fhirEncounter
	if err := decodeEntry(en, &enc); err != nil {
		return nil, err
	}
	return &enc, nil
}

func (e *orderEncoder) v25() bool { return e.rank >= 250 }

// utf8Charset returns the HL7 table 0211 code for UTF-8 text in the
// version sent: UNICODE UTF-8 from v2.5, UNICODE (ISO 10646) before.
func (e *orderEncoder) utf8Charset() string {
	if e.v25() {
		return "UNICODE UTF-8"
	}
	return "UNICODE"
}

// msh writes the header.
func (e *orderEncoder) msh(s *hl7v2.SegmentBuilder) {
	o := e.opts
	s.SetField(3, o.SendingApplication).SetField(4, o.SendingFacility)
	s.SetField(5, o.ReceivingApplication).SetField(6, o.ReceivingFacility)
	if !o.Time.IsZero() {
		s.SetField(7, formatHL7Time(o.Time.In(e.loc), false))
	}
	switch {
	case o.MessageType == MessageTypeOML:
		s.SetField(9, "OML", "O21", "OML_O21")
	case e.rank >= 231:
		s.SetField(9, "ORM", "O01", "ORM_O01")
	default:
		s.SetField(9, "ORM", "O01")
	}
	s.SetField(10, o.ControlID).SetField(11, o.ProcessingID).SetField(12, o.Version)
}

// pid writes the patient and returns the NHS number it sent, if any.
func (e *orderEncoder) pid(s *hl7v2.SegmentBuilder, p *fhirPatient) string {
	s.SetField(1, "1")
	rep := 1
	nhsSent := ""
	for _, id := range p.Identifier {
		if id.System != nhs.SystemNHSNumber {
			continue
		}
		v := nhs.Normalize(id.Value)
		if !nhs.ValidNumber(v) {
			e.flag(DQOrderNHSNumberInvalid)
			continue
		}
		if nhsSent == "" {
			s.SetRep(3, rep, v, "", "", "NHS", "NH")
			nhsSent = v
			rep++
		}
	}
	for _, id := range p.Identifier {
		if id.System == nhs.SystemNHSNumber || strings.TrimSpace(id.Value) == "" {
			continue
		}
		s.Set(3, rep, 1, 1, id.Value)
		if id.Assigner != nil {
			s.Set(3, rep, 4, 1, id.Assigner.Display)
		}
		if id.System != "" {
			s.Set(3, rep, 4, 2, id.System).Set(3, rep, 4, 3, "URI")
		}
		s.Set(3, rep, 5, 1, idTypeCode(id.Type))
		rep++
	}
	for i, n := range p.Name {
		r := i + 1
		if n.Family == "" && len(n.Given) == 0 {
			s.Set(5, r, 1, 1, n.Text)
		}
		s.Set(5, r, 1, 1, n.Family)
		if len(n.Given) > 0 {
			s.Set(5, r, 2, 1, n.Given[0])
			s.Set(5, r, 3, 1, strings.Join(n.Given[1:], " "))
		}
		s.Set(5, r, 4, 1, strings.Join(n.Suffix, " "))
		s.Set(5, r, 5, 1, strings.Join(n.Prefix, " "))
		switch n.Use {
		case "official":
			s.Set(5, r, 7, 1, "L")
		case "maiden":
			s.Set(5, r, 7, 1, "M")
		case "nickname":
			s.Set(5, r, 7, 1, "N")
		}
	}
	if p.BirthDate != "" {
		if v, ok := e.hl7Time(p.BirthDate, true); ok {
			s.SetField(7, v)
		}
	}
	switch p.Gender {
	case "male":
		s.SetField(8, "M")
	case "female":
		s.SetField(8, "F")
	case "other":
		s.SetField(8, "O")
	case "unknown":
		s.SetField(8, "U")
	}
	for i, a := range p.Address {
		r := i + 1
		if len(a.Line) > 0 {
			s.Set(11, r, 1, 1, a.Line[0])
		}
		if len(a.Line) > 1 {
			s.Set(11, r, 2, 1, strings.Join(a.Line[1:], ", "))
		}
		s.Set(11, r, 3, 1, a.City).Set(11, r, 4, 1, a.District).Set(11, r, 5, 1, a.PostalCode).Set(11, r, 6, 1, a.Country)
		switch a.Use {
		case "home":
			s.Set(11, r, 7, 1, "H")
		case "work":
			s.Set(11, r, 7, 1, "O")
		case "temp":
			s.Set(11, r, 7, 1, "C")
		}
	}
	home, work := 0, 0
	for _, t := range p.Telecom {
		if t.Value == "" {
			continue
		}
		field, n := 13, &home
		if t.Use == "work" {
			field, n = 14, &work
		}
		*n++
		switch t.System {
		case "email":
			s.SetRep(field, *n, "", telecomUseCode(t.Use), "Internet", t.Value)
		case "phone", "":
			equip := "PH"
			if t.Use == "mobile" {
				equip = "CP"
			}
			s.SetRep(field, *n, t.Value, telecomUseCode(t.Use), equip)
		default:
			*n--
		}
	}
	return nhsSent
}

// telecomUseCode maps ContactPoint.use to HL7 table 0201.
func telecomUseCode(use string) string {
	if use == "work" {
		return "WPN"
	}
	return "PRN"
}

// idTypeCode returns an identifier type's code (HL7 table 0203 when the
// type uses it), or "".
func idTypeCode(c *fhirConcept) string {
	if c == nil {
		return ""
	}
	for _, cd := range c.Coding {
		if cd.Code != "" {
			return cd.Code
		}
	}
	return ""
}

// pv1 writes the visit.
func (e *orderEncoder) pv1(s *hl7v2.SegmentBuilder, enc *fhirEncounter) {
	s.SetField(1, "1")
	class := "U"
	if enc.Class != nil {
		switch enc.Class.Code {
		case "IMP", "ACUTE", "NONAC":
			class = "I"
		case "AMB", "SS", "HH", "VR":
			class = "O"
		case "EMER":
			class = "E"
		case "PRENC":
			class = "P"
		}
	}
	s.SetField(2, class)
	if len(enc.Location) > 0 {
		l := enc.Location[0].Location
		if l.Identifier != nil && l.Identifier.Value != "" {
			s.Set(3, 1, 1, 1, l.Identifier.Value)
		}
		s.Set(3, 1, 9, 1, l.Display)
	}
	for _, id := range enc.Identifier {
		if id.Value != "" {
			s.SetField(19, id.Value)
			break
		}
	}
	if enc.Period != nil {
		if v, ok := e.hl7Time(enc.Period.Start, false); ok {
			s.SetField(44, v)
		}
		if v, ok := e.hl7Time(enc.Period.End, false); ok {
			s.SetField(45, v)
		}
	}
}

// orderControl maps ServiceRequest.status to ORC-1.
func orderControl(status string) (string, error) {
	switch status {
	case "", "draft", "active":
		return "NW", nil
	case "on-hold":
		return "HD", nil
	case "revoked", "entered-in-error":
		return "CA", nil
	}
	return "", fault.New(fault.CodeFHIRInvalid, "ServiceRequest status cannot be sent as an order").WithDetail("status " + strconv.Quote(status))
}

// identifierTyped returns the first identifier typed code (HL7 table
// 0203), or nil.
func identifierTyped(ids []fhirIdentifier, code string) *fhirIdentifier {
	for i := range ids {
		if ids[i].Value == "" || ids[i].Type == nil {
			continue
		}
		for _, c := range ids[i].Type.Coding {
			if c.Code == code && (c.System == "" || c.System == systemV2IDType) {
				return &ids[i]
			}
		}
	}
	return nil
}

// placerNumber is the ServiceRequest identifier sent as the placer order
// number.
func (e *orderEncoder) placerNumber(sr *fhirServiceRequest) *fhirIdentifier {
	if id := identifierTyped(sr.Identifier, "PLAC"); id != nil {
		return id
	}
	for i := range sr.Identifier {
		if sr.Identifier[i].Value != "" && sr.Identifier[i].System == e.opts.PlacerOrderSystem {
			return &sr.Identifier[i]
		}
	}
	return nil
}

// setEI writes an order number as number^namespace^system^URI.
func setEI(s *hl7v2.SegmentBuilder, field int, id *fhirIdentifier, namespace string) {
	s.SetField(field, strings.TrimSpace(id.Value), namespace)
	if id.System != "" && strings.Contains(id.System, ":") && !strings.ContainsAny(id.System, " \t") {
		s.Set(field, 1, 3, 1, id.System).Set(field, 1, 4, 1, "URI")
	}
}

// order writes one ORC group and returns what was sent.
func (e *orderEncoder) order(m *hl7v2.MessageBuilder, setID int, r *orderRequest) (SentOrder, error) {
	sr := &r.sr
	control, err := orderControl(sr.Status)
	if err != nil {
		return SentOrder{}, err
	}
	placer := e.placerNumber(sr)
	if placer == nil || strings.TrimSpace(placer.Value) == "" {
		return SentOrder{}, fault.New(fault.CodeFHIRInvalid, "ServiceRequest has no placer order number (an identifier typed PLAC)")
	}
	filler := identifierTyped(sr.Identifier, "FILL")
	sent := SentOrder{
		ServiceRequest:  entryName(r.entry),
		PlacerSystem:    placer.System,
		PlacerNumber:    strings.TrimSpace(placer.Value),
		PlacerNamespace: e.opts.PlacerNamespace,
	}
	if filler != nil {
		sent.FillerSystem, sent.FillerNumber = filler.System, strings.TrimSpace(filler.Value)
	}

	start, end := sr.OccurrenceDateTime, ""
	if sr.OccurrencePeriod != nil {
		start, end = sr.OccurrencePeriod.Start, sr.OccurrencePeriod.End
	}
	startV, _ := e.hl7Time(start, false)
	endV, _ := e.hl7Time(end, false)
	priority := priorityCode(sr.Priority)

	orc := m.Add("ORC")
	orc.SetField(1, control)
	setEI(orc, 2, placer, e.opts.PlacerNamespace)
	if filler != nil {
		setEI(orc, 3, filler, "")
	}
	if !e.v25() {
		orc.Set(7, 1, 4, 1, startV).Set(7, 1, 5, 1, endV).Set(7, 1, 6, 1, priority)
	}
	if v, ok := e.hl7Time(sr.AuthoredOn, false); ok {
		orc.SetField(9, v)
	}
	requester, org := e.requester(sr.Requester)
	if requester != nil {
		requester(orc, 12)
	}
	if org != nil {
		orc.SetField(21, org.Name)
		if e.v25() {
			for _, id := range org.Identifier {
				if id.System == nhs.SystemODSOrganization && id.Value != "" {
					orc.Set(21, 1, 6, 1, "ODS").Set(21, 1, 7, 1, "XX").Set(21, 1, 10, 1, id.Value)
					break
				}
			}
		}
	}

	if e.v25() && (startV != "" || endV != "" || priority != "") {
		tq1 := m.Add("TQ1")
		tq1.SetField(1, "1").SetField(7, startV).SetField(8, endV)
		if priority != "" {
			tq1.SetField(9, priority, priorityDisplay(priority), "HL70485")
		}
	}

	obr := m.Add("OBR")
	obr.SetField(1, strconv.Itoa(setID))
	setEI(obr, 2, placer, e.opts.PlacerNamespace)
	if filler != nil {
		setEI(obr, 3, filler, "")
	}
	if sr.Code == nil || (len(sr.Code.Coding) == 0 && sr.Code.Text == "") {
		e.flag(DQOrderCodeMissing)
	} else {
		e.concept(obr, 4, 1, sr.Code)
	}
	useSPM := e.v25() && e.opts.MessageType == MessageTypeOML
	if len(r.specimens) > 0 {
		sp := &r.specimens[0]
		if c := sp.Collection; c != nil {
			cs, ce := c.CollectedDateTime, ""
			if c.CollectedPeriod != nil {
				cs, ce = c.CollectedPeriod.Start, c.CollectedPeriod.End
			}
			if v, ok := e.hl7Time(cs, false); ok {
				obr.SetField(7, v)
			}
			if v, ok := e.hl7Time(ce, false); ok {
				obr.SetField(8, v)
			}
		}
		if !useSPM {
			if v, ok := e.hl7Time(sp.ReceivedTime, false); ok {
				obr.SetField(14, v)
			}
			e.subConcept(obr, 15, 1, sp.Type)
			if sp.Collection != nil {
				e.subConcept(obr, 15, 4, sp.Collection.BodySite)
			}
		}
	}
	if requester != nil {
		requester(obr, 16)
	}
	if !e.v25() {
		obr.Set(27, 1, 4, 1, startV).Set(27, 1, 5, 1, endV).Set(27, 1, 6, 1, priority)
	}
	for i := range sr.ReasonCode {
		e.concept(obr, 31, i+1, &sr.ReasonCode[i])
	}
	n := 0
	for _, note := range sr.Note {
		if strings.TrimSpace(note.Text) == "" {
			continue
		}
		n++
		m.Add("NTE").SetField(1, strconv.Itoa(n)).SetField(2, "P").SetField(3, note.Text)
	}
	if useSPM {
		for i := range r.specimens {
			e.spm(m.Add("SPM"), i+1, &r.specimens[i])
		}
	}
	return sent, nil
}

// priorityCode maps ServiceRequest.priority to HL7 table 0027/0485.
func priorityCode(p string) string {
	switch p {
	case "stat":
		return "S"
	case "asap", "urgent":
		return "A"
	case "routine":
		return "R"
	}
	return ""
}

func priorityDisplay(code string) string {
	switch code {
	case "S":
		return "Stat"
	case "A":
		return "ASAP"
	case "R":
		return "Routine"
	}
	return ""
}

// spm writes one specimen (v2.5): SPM-2.1 the identifier typed PGN, else
// the first not typed FGN; SPM-2.2 the one typed FGN, else the accession
// identifier (as results map them back: placer and filler assigned
// identifiers, with the accession identifier from SPM-30).
func (e *orderEncoder) spm(s *hl7v2.SegmentBuilder, setID int, sp *fhirSpecimen) {
	s.SetField(1, strconv.Itoa(setID))
	placer, filler := identifierTyped(sp.Identifier, "PGN"), identifierTyped(sp.Identifier, "FGN")
	for i := range sp.Identifier {
		if placer == nil && sp.Identifier[i].Value != "" && &sp.Identifier[i] != filler {
			placer = &sp.Identifier[i]
		}
	}
	if filler == nil && sp.AccessionIdentifier != nil && sp.AccessionIdentifier.Value != "" {
		filler = sp.AccessionIdentifier
	}
	if placer != nil {
		setEISub(s, 2, 1, placer)
	}
	if filler != nil {
		setEISub(s, 2, 2, filler)
	}
	e.concept(s, 4, 1, sp.Type)
	if c := sp.Collection; c != nil {
		e.concept(s, 7, 1, c.Method)
		e.concept(s, 8, 1, c.BodySite)
		cs, ce := c.CollectedDateTime, ""
		if c.CollectedPeriod != nil {
			cs, ce = c.CollectedPeriod.Start, c.CollectedPeriod.End
		}
		if v, ok := e.hl7Time(cs, false); ok {
			s.Set(17, 1, 1, 1, v)
		}
		if v, ok := e.hl7Time(ce, false); ok {
			s.Set(17, 1, 2, 1, v)
		}
	}
	if v, ok := e.hl7Time(sp.ReceivedTime, false); ok {
		s.SetField(18, v)
	}
	switch sp.Status {
	case "available":
		s.SetField(20, "Y")
	case "unavailable":
		s.SetField(20, "N")
	}
}

// setEISub writes an EI into the subcomponents of one component, as SPM-2
// holds them: id&&system&URI.
func setEISub(s *hl7v2.SegmentBuilder, field, comp int, id *fhirIdentifier) {
	s.Set(field, 1, comp, 1, id.Value)
	if id.System != "" && strings.Contains(id.System, ":") {
		s.Set(field, 1, comp, 3, id.System).Set(field, 1, comp, 4, "URI")
	}
}

// concept writes a CodeableConcept as CE/CWE: the first coding in
// components 1 to 3, the second in 4 to 6, and from v2.5 the text as
// original text (CWE-9). Without codings, the text goes in component 2.
func (e *orderEncoder) concept(s *hl7v2.SegmentBuilder, field, rep int, c *fhirConcept) {
	if c == nil {
		return
	}
	var codings []fhirCoding
	for _, cd := range c.Coding {
		if cd.Code != "" {
			codings = append(codings, cd)
		}
	}
	if len(codings) == 0 {
		s.Set(field, rep, 2, 1, c.Text)
		return
	}
	for i, cd := range codings[:min(2, len(codings))] {
		s.Set(field, rep, 3*i+1, 1, cd.Code).Set(field, rep, 3*i+2, 1, cd.Display).Set(field, rep, 3*i+3, 1, e.codingSystemName(cd.System))
	}
	if e.v25() && c.Text != "" && c.Text != codings[0].Display {
		s.Set(field, rep, 9, 1, c.Text)
	}
}

// subConcept writes a CodeableConcept's first coding as a CE held in the
// subcomponents of one component (OBR-15.1, OBR-15.4), or its text.
func (e *orderEncoder) subConcept(s *hl7v2.SegmentBuilder, field, comp int, c *fhirConcept) {
	if c == nil {
		return
	}
	for _, cd := range c.Coding {
		if cd.Code == "" {
			continue
		}
		text := cd.Display
		if text == "" {
			text = c.Text
		}
		s.SetComponent(field, 1, comp, cd.Code, text, e.codingSystemName(cd.System))
		return
	}
	s.Set(field, 1, comp, 2, c.Text)
}

// codingSystemName is the inverse of the results translator's
// codeSystemURI: the local code system becomes L, LOINC LN, SNOMED CT SCT,
// UCUM UCUM, ICD-10 I10, a v2 table HL7nnnn and an
// urn:hl7v2:coding-system: URN its name. Any other system is sent as its
// URI, which a receiver can map.
func (e *orderEncoder) codingSystemName(system string) string {
	switch system {
	case "":
		return ""
	case e.opts.LocalCodeSystem:
		return "L"
	case systemLOINC:
		return "LN"
	case systemSNOMED:
		return "SCT"
	case systemUCUM:
		return "UCUM"
	case "http://hl7.org/fhir/sid/icd-10":
		return "I10"
	}
	if rest, ok := strings.CutPrefix(system, "http://terminology.hl7.org/CodeSystem/v2-"); ok && len(rest) == 4 && allDigits(rest) {
		return "HL7" + rest
	}
	if rest, ok := strings.CutPrefix(system, "urn:hl7v2:coding-system:"); ok {
		if name, err := url.PathUnescape(rest); err == nil && name != "" {
			return name
		}
	}
	return system
}

// requester resolves ServiceRequest.requester: a Practitioner (or a
// PractitionerRole's practitioner) becomes an XCN writer, an Organization
// (or a PractitionerRole's organization) the ordering facility. An
// unresolved reference with an identifier or display still gives an XCN.
func (e *orderEncoder) requester(ref *fhirRef) (func(*hl7v2.SegmentBuilder, int), *fhirOrganization) {
	if ref == nil {
		return nil, nil
	}
	var org *fhirOrganization
	practRef := ref
	if role := e.ix.resolve(ref, "PractitionerRole"); role != nil {
		var pr fhirPractitionerRole
		if json.Unmarshal(role.raw, &pr) == nil {
			practRef = pr.Practitioner
			org = e.organization(pr.Organization)
		}
	} else if o := e.organization(ref); o != nil {
		return nil, o
	}
	if practRef == nil {
		return nil, org
	}
	var p fhirPractitioner
	if en := e.ix.resolve(practRef, "Practitioner"); en != nil {
		if json.Unmarshal(en.raw, &p) != nil {
			return nil, org
		}
	} else {
		if practRef.Identifier != nil {
			p.Identifier = []fhirIdentifier{*practRef.Identifier}
		}
		if practRef.Display != "" {
			p.Name = []fhirName{{Family: practRef.Display}}
		}
	}
	var id *fhirIdentifier
	for _, sys := range []string{nhs.SystemGMC, nhs.SystemGMP, ""} {
		for i := range p.Identifier {
			if p.Identifier[i].Value != "" && (sys == "" || p.Identifier[i].System == sys) {
				id = &p.Identifier[i]
				break
			}
		}
		if id != nil {
			break
		}
	}
	var name *fhirName
	if len(p.Name) > 0 {
		name = &p.Name[0]
	}
	if id == nil && name == nil {
		return nil, org
	}
	return func(s *hl7v2.SegmentBuilder, field int) {
		if id != nil {
			s.Set(field, 1, 1, 1, id.Value)
			switch id.System {
			case nhs.SystemGMC:
				s.Set(field, 1, 9, 1, "GMC")
			case nhs.SystemGMP:
				s.Set(field, 1, 9, 1, "GMP")
			}
		}
		if name != nil {
			s.Set(field, 1, 2, 1, name.Family)
			if len(name.Given) > 0 {
				s.Set(field, 1, 3, 1, name.Given[0])
				s.Set(field, 1, 4, 1, strings.Join(name.Given[1:], " "))
			}
			s.Set(field, 1, 6, 1, strings.Join(name.Prefix, " "))
		}
	}, org
}

// organization resolves a reference to an Organization in the bundle.
func (e *orderEncoder) organization(ref *fhirRef) *fhirOrganization {
	en := e.ix.resolve(ref, "Organization")
	if en == nil {
		return nil
	}
	var o fhirOrganization
	if json.Unmarshal(en.raw, &o) != nil {
		return nil
	}
	return &o
}

// hl7Time converts a FHIR date or dateTime to an HL7 TS/DTM: a date at
// its precision (YYYY, YYYYMM, YYYYMMDD), a time in the encoder's zone
// with its offset (a time without an offset is read in that zone). With
// dateOnly the date part alone is written. An empty value gives "", false
// silently; an unreadable one the same with DQOrderTimeInvalid.
func (e *orderEncoder) hl7Time(v string, dateOnly bool) (string, bool) {
	if v == "" {
		return "", false
	}
	out, ok := fhirTimeToHL7(v, e.loc, dateOnly)
	if !ok {
		e.flag(DQOrderTimeInvalid)
	}
	return out, ok
}

// fhirTimeToHL7 is hl7Time without the flag.
func fhirTimeToHL7(v string, loc *time.Location, dateOnly bool) (string, bool) {
	date, rest, hasTime := strings.Cut(v, "T")
	var layout string
	switch len(date) {
	case 4:
		layout = "2006"
	case 7:
		layout = "2006-01"
	case 10:
		layout = "2006-01-02"
	default:
		return "", false
	}
	d, err := time.Parse(layout, date)
	if err != nil {
		return "", false
	}
	if !hasTime || dateOnly {
		return strings.ReplaceAll(date, "-", ""), len(date) == 10 || !hasTime
	}
	if len(date) != 10 {
		return "", false
	}
	// time.Parse reads fractional seconds after "05" without a layout
	// for them.
	for _, l := range []string{"15:04:05Z07:00", "15:04:05"} {
		tt, err := time.Parse(l, rest)
		if err != nil {
			continue
		}
		zone := loc
		if strings.HasSuffix(l, "Z07:00") {
			_, off := tt.Zone()
			zone = time.FixedZone("", off)
		}
		t := time.Date(d.Year(), d.Month(), d.Day(), tt.Hour(), tt.Minute(), tt.Second(), tt.Nanosecond(), zone)
		return formatHL7Time(t.In(loc), strings.Contains(rest, ".")), true
	}
	return "", false
}

// formatHL7Time writes t as YYYYMMDDHHMMSS[.SSS]+ZZZZ.
func formatHL7Time(t time.Time, frac bool) string {
	if frac && t.Nanosecond() != 0 {
		return t.Format("20060102150405.000-0700")
	}
	return t.Format("20060102150405-0700")
}
