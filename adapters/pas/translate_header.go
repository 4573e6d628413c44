package pas

import (
	"strings"

	models "github.com/samply/golang-fhir-models/fhir-models/fhir"

	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/hl7v2"
	"github.com/junction-fhir/junction/pkg/nhs"

	"github.com/junction-fhir/junction/pkg/fhir"
)

// header maps MSH into the MessageHeader and returns it with its fullUrl.
//
//   - eventCoding: the trigger event in HL7 table 0003, with its display.
//   - source.name: MSH-3.1. source.endpoint: see SourceEndpoint.
//   - sender: MSH-4.1 as an ODS organisation code
//     (https://fhir.nhs.uk/Id/ods-organization-code) when it has that
//     shape, else by display.
//   - destination: MSH-5.1 as name, an endpoint built like the source's
//     from MSH-5 and MSH-6, and MSH-6.1 as receiver (an ODS code when
//     ODS-shaped, else by display).
//   - focus: the Encounter, or the Patient when there is no Encounter;
//     for a merge, every Patient.
func (b *builder) header(resources []entry) (*models.MessageHeader, string) {
	url, id := b.fullURL("MessageHeader")
	msh := b.m.Segment("MSH")
	h := &models.MessageHeader{
		Id:   b.str(id),
		Meta: b.meta(nhs.ProfileMessageHeader),
		EventCoding: models.Coding{
			System:  b.str(systemV2Event),
			Code:    b.str(b.event),
			Display: b.optional(b.mapping.display),
		},
		Source: models.MessageHeaderSource{
			Name:     b.optional(value(b.m.SendingApp())),
			Endpoint: b.sourceEndpoint(),
		},
		Sender: organizationReference(value(b.m.SendingFacility())),
	}
	if app, fac := value(b.m.ReceivingApp()), value(b.m.ReceivingFacility()); app != "" || fac != "" {
		h.Destination = []models.MessageHeaderDestination{{
			Name:     b.optional(app),
			Endpoint: Endpoint(msh, 5, 6, ""),
			Receiver: organizationReference(fac),
		}}
	}
	switch {
	case b.mapping.kind == eventMerge:
		for _, e := range resources {
			if e.typ == "Patient" {
				h.Focus = append(h.Focus, b.ref(e.url, "Patient"))
			}
		}
	case b.encounter != nil:
		u, _ := b.fullURL("Encounter")
		h.Focus = []models.Reference{{Reference: b.str(u), Type: b.str("Encounter")}}
	case b.patient != nil:
		u, _ := b.fullURL("Patient")
		h.Focus = []models.Reference{{Reference: b.str(u), Type: b.str("Patient")}}
	}
	return h, url
}

// provenance records where the bundle's resources came from:
//
//   - target: every resource of the bundle but the MessageHeader.
//   - recorded: the message time (Bundle.timestamp).
//   - agent: the source, as author: the sending facility by ODS code
//     when MSH-4.1 is one, else the sending application as a Device
//     named by its endpoint URI (see SourceEndpoint).
//   - entity: the source message (role source), by its identifier
//     (Bundle.identifier: MSH-10 in the source endpoint's system). The
//     raw message is kept by Junction's store, never copied here.
func (b *builder) provenance(resources []entry) (*models.Provenance, string) {
	url, id := b.fullURL("Provenance")
	p := &models.Provenance{
		Id:       b.str(id),
		Meta:     b.meta(nhs.ProfileProvenance),
		Recorded: b.ts,
	}
	if len(resources) > 0 {
		p.Target = make([]models.Reference, len(resources))
		strs := make([]string, 2*len(resources))
		for i, e := range resources {
			strs[2*i], strs[2*i+1] = e.url, e.typ
			p.Target[i] = models.Reference{Reference: &strs[2*i], Type: &strs[2*i+1]}
		}
	}
	if len(p.Target) == 0 {
		u, _ := b.fullURL("MessageHeader")
		p.Target = []models.Reference{{Reference: b.str(u), Type: b.str("MessageHeader")}}
	}
	who := ODSReference(value(b.m.SendingFacility()))
	if who == nil {
		who = &models.Reference{
			Type:       b.str("Device"),
			Identifier: &models.Identifier{System: b.str(systemURI), Value: b.str(b.sourceEndpoint())},
			Display:    b.optional(value(b.m.SendingApp())),
		}
	}
	p.Agent = []models.ProvenanceAgent{{
		Type: b.concept(systemProvenanceRole, "author", "Author"),
		Who:  *who,
	}}
	p.Entity = []models.ProvenanceEntity{{
		Role: models.ProvenanceEntityRoleSource,
		What: models.Reference{
			Identifier: b.messageIdentifier(),
			Display:    b.str("HL7 v2 message " + b.messageType()),
		},
	}}
	return p, url
}

// messageType is the message type and event, such as "ADT^A01".
func (b *builder) messageType() string {
	if b.msgType != "" {
		return b.msgType + "^" + b.event
	}
	return "ADT^" + b.event
}

// SourceEndpoint returns MessageHeader.source.endpoint for m, which is
// also the identifier system of its MSH-10 control id (control ids are
// unique per sender). It is Endpoint of MSH-3 and MSH-4 with env.Source as
// the fallback application name, so that one sender has one endpoint
// across all its HL7 v2 feeds (ADT, ORU and others).
func SourceEndpoint(m *hl7v2.Message, env *envelope.Envelope) string {
	return Endpoint(m.Segment("MSH"), 3, 4, env.Source)
}

// sourceEndpoint is SourceEndpoint of the builder's message, made once.
func (b *builder) sourceEndpoint() string {
	if b.source == "" {
		b.source = SourceEndpoint(b.m, b.env)
	}
	return b.source
}

// Endpoint builds a URI naming an HL7 v2 application from its
// application (HD) and facility (HD) fields of seg:
//
//   - When the application has a universal id of type ISO, UUID or URI
//     (HD-2 and HD-3), that id as a URI ("urn:oid:1.2.3"), as the
//     v2-to-FHIR guide maps HD.
//   - Otherwise "urn:hl7v2:" followed by the application namespace id
//     (HD-1, or fallback when empty, or "unknown") and, when sent, ":" and
//     the facility namespace id, each escaped by EscapeURN:
//     "urn:hl7v2:PAS:RX1".
//
// urn:hl7v2 is not a registered URN namespace; it only needs to be a
// stable, valid URI for receivers to tell senders apart.
func Endpoint(seg *hl7v2.Segment, appField, facilityField int, fallback string) string {
	if u := UniversalID(seg, appField, 1); u != "" {
		return u
	}
	app := value(seg.Component(appField, 1, 1, 1))
	if app == "" {
		app = fallback
	}
	if app == "" {
		app = "unknown"
	}
	if fac := value(seg.Component(facilityField, 1, 1, 1)); fac != "" {
		return "urn:hl7v2:" + EscapeURN(app) + ":" + EscapeURN(fac)
	}
	return "urn:hl7v2:" + EscapeURN(app)
}

// UniversalID returns the universal id held in components comp+1 (the id)
// and comp+2 (its HL7 table 0301 type) of the first repetition of field of
// seg, as in HD-2 and HD-3 (comp 1) or EI-3 and EI-4 (comp 2), rendered as
// a URI by UniversalIDURI. It returns "" when there is no id, the id holds
// blanks, or it is not a well-formed id of its type.
func UniversalID(seg *hl7v2.Segment, field, comp int) string {
	id := strings.TrimSpace(value(seg.Component(field, 1, comp+1, 1)))
	if id == "" || strings.ContainsAny(id, " \t") {
		return ""
	}
	return UniversalIDURI(id, value(seg.Component(field, 1, comp+2, 1)))
}

// UniversalIDURI renders a universal id of the given HL7 table 0301 type
// as a URI: "urn:oid:" and the id for ISO, "urn:uuid:" and the lower-case
// id for UUID, and the id itself for URI. It returns "" for any other type
// or when id is not a well-formed ISO OID, UUID or URI.
func UniversalIDURI(id, typ string) string {
	switch strings.ToUpper(typ) {
	case "ISO":
		if isOID(id) {
			return "urn:oid:" + id
		}
	case "UUID":
		if isUUID(id) {
			return "urn:uuid:" + strings.ToLower(id)
		}
	case "URI":
		if i := strings.IndexByte(id, ':'); i > 0 && !strings.ContainsAny(id, " \t") {
			return id
		}
	}
	return ""
}

func isOID(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return false
	}
	for i := 0; i < len(s); i++ {
		if (s[i] < '0' || s[i] > '9') && s[i] != '.' {
			return false
		}
	}
	return true
}

func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
				return false
			}
		}
	}
	return true
}

// EscapeURN percent-encodes every byte of s outside the unreserved set
// (letters, digits, "-", ".", "_", "~"), so that s can stand in a URN.
func EscapeURN(s string) string {
	const hex = "0123456789ABCDEF"
	unreserved := func(c byte) bool {
		return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
	}
	i := 0
	for i < len(s) && unreserved(s[i]) {
		i++
	}
	if i == len(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	b.WriteString(s[:i])
	for ; i < len(s); i++ {
		c := s[i]
		if unreserved(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

// ODSReference returns a reference to the organisation with ODS code
// code (https://fhir.nhs.uk/Id/ods-organization-code), or nil when code
// does not have the shape of an ODS code.
func ODSReference(code string) *models.Reference {
	code = strings.TrimSpace(code)
	if !nhs.LooksLikeODSCode(code) {
		return nil
	}
	r := &struct {
		ref models.Reference
		id  models.Identifier
		s   [3]string
	}{s: [3]string{"Organization", nhs.SystemODSOrganization, code}}
	r.id = models.Identifier{System: &r.s[1], Value: &r.s[2]}
	r.ref = models.Reference{Type: &r.s[0], Identifier: &r.id}
	return &r.ref
}

// organizationReference references an organisation by ODS code when code
// has that shape, else by display; nil when code is empty.
func organizationReference(code string) *models.Reference {
	if r := ODSReference(code); r != nil {
		return r
	}
	if code = strings.TrimSpace(code); code != "" {
		return &models.Reference{Type: fhir.Ptr("Organization"), Display: fhir.Ptr(code)}
	}
	return nil
}
