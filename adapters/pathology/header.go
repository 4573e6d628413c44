package pathology

import (
	"strings"

	models "github.com/samply/golang-fhir-models/fhir-models/fhir"

	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/hl7v2"
	"github.com/junction-fhir/junction/pkg/nhs"
)

// header maps MSH into the MessageHeader, as the pas adapter does:
//
//   - eventCoding: R01 in HL7 table 0003.
//   - source.name: MSH-3.1. source.endpoint: see sourceEndpoint.
//   - sender: MSH-4.1 as an ODS organisation code when it has that shape.
//   - destination: MSH-5.1 as name, an endpoint built like the source's
//     from MSH-5 and MSH-6, and MSH-6.1 as receiver when ODS-shaped.
//   - focus: every DiagnosticReport.
func (b *builder) header() (*models.MessageHeader, string) {
	url, id := b.ids("MessageHeader")
	msh := b.m.Segment("MSH")
	h := &models.MessageHeader{
		Id:   ptr(id),
		Meta: &models.Meta{Profile: []string{nhs.ProfileMessageHeader}},
		EventCoding: models.Coding{
			System:  ptr(systemV2Event),
			Code:    ptr("R01"),
			Display: ptr("ORU/ACK - Unsolicited transmission of an observation message"),
		},
		Source: models.MessageHeaderSource{
			Name:     optional(value(b.m.SendingApp())),
			Endpoint: sourceEndpoint(b.m, b.env),
		},
	}
	if org := odsReference(value(b.m.SendingFacility())); org != nil {
		h.Sender = org
	}
	if app, fac := value(b.m.ReceivingApp()), value(b.m.ReceivingFacility()); app != "" || fac != "" {
		h.Destination = []models.MessageHeaderDestination{{
			Name:     optional(app),
			Endpoint: endpoint(msh, 5, 6, ""),
			Receiver: odsReference(fac),
		}}
	}
	for _, o := range b.orders {
		u, _ := b.ids(kind("DiagnosticReport", o.index, 0))
		h.Focus = append(h.Focus, models.Reference{Reference: ptr(u), Type: ptr("DiagnosticReport")})
	}
	return h, url
}

// sourceEndpoint is MessageHeader.source.endpoint, also the identifier
// system of MSH-10 control ids. It follows the pas adapter's rule, so one
// sender has one endpoint across its ADT and ORU feeds.
func sourceEndpoint(m *hl7v2.Message, env *envelope.Envelope) string {
	return endpoint(m.Segment("MSH"), 3, 4, env.Source)
}

// endpoint names an HL7 v2 application from its application and facility
// (HD) fields: the application's universal id as a URI when it has one of
// type ISO, UUID or URI, else "urn:hl7v2:" with the percent-encoded
// application namespace id (or fallback, or "unknown") and, when sent,
// ":" and the facility's.
func endpoint(msh *hl7v2.Segment, appField, facilityField int, fallback string) string {
	if u := universalID(msh, appField, 1); u != "" {
		return u
	}
	app := value(msh.Component(appField, 1, 1, 1))
	if app == "" {
		app = fallback
	}
	if app == "" {
		app = "unknown"
	}
	out := "urn:hl7v2:" + escapeURN(app)
	if fac := value(msh.Component(facilityField, 1, 1, 1)); fac != "" {
		out += ":" + escapeURN(fac)
	}
	return out
}

// universalID returns the universal id (components comp+1, comp+2 of
// field, as in HD-2 and HD-3 or EI-3 and EI-4) as a URI, or "".
func universalID(seg *hl7v2.Segment, field, comp int) string {
	id := strings.TrimSpace(value(seg.Component(field, 1, comp+1, 1)))
	if id == "" || strings.ContainsAny(id, " \t") {
		return ""
	}
	return uriOf(id, value(seg.Component(field, 1, comp+2, 1)))
}

// uriOf renders a universal id of the given HL7 table 0301 type as a URI,
// or "" when it is not a well-formed ISO OID, UUID or URI.
func uriOf(id, typ string) string {
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

// escapeURN percent-encodes every byte of s outside the unreserved set.
func escapeURN(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

// odsReference returns a reference to the organisation with ODS code
// code, or nil when code does not have the shape of an ODS code.
func odsReference(code string) *models.Reference {
	code = strings.TrimSpace(code)
	if !nhs.LooksLikeODSCode(code) {
		return nil
	}
	return &models.Reference{
		Type:       ptr("Organization"),
		Identifier: &models.Identifier{System: ptr(nhs.SystemODSOrganization), Value: ptr(code)},
	}
}
