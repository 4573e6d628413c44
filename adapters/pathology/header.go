package pathology

import (
	models "github.com/samply/golang-fhir-models/fhir-models/fhir"

	"github.com/junction-fhir/junction/adapters/pas"
	"github.com/junction-fhir/junction/pkg/nhs"

	"github.com/junction-fhir/junction/pkg/fhir"
)

// header maps MSH into the MessageHeader, as the pas adapter does:
//
//   - eventCoding: R01 in HL7 table 0003.
//   - source.name: MSH-3.1. source.endpoint: see pas.SourceEndpoint.
//   - sender: MSH-4.1 as an ODS organisation code when it has that shape.
//   - destination: MSH-5.1 as name, an endpoint built like the source's
//     from MSH-5 and MSH-6, and MSH-6.1 as receiver when ODS-shaped.
//   - focus: every DiagnosticReport.
func (b *builder) header() (*models.MessageHeader, string) {
	url, id := b.ids("MessageHeader")
	msh := b.m.Segment("MSH")
	h := &models.MessageHeader{
		Id:   fhir.Ptr(id),
		Meta: fhir.MetaProfile(nhs.ProfileMessageHeader),
		EventCoding: models.Coding{
			System:  fhir.Ptr(systemV2Event),
			Code:    fhir.Ptr("R01"),
			Display: fhir.Ptr("ORU/ACK - Unsolicited transmission of an observation message"),
		},
		Source: models.MessageHeaderSource{
			Name:     fhir.Optional(value(b.m.SendingApp())),
			Endpoint: pas.SourceEndpoint(b.m, b.env),
		},
	}
	if org := pas.ODSReference(value(b.m.SendingFacility())); org != nil {
		h.Sender = org
	}
	if app, fac := value(b.m.ReceivingApp()), value(b.m.ReceivingFacility()); app != "" || fac != "" {
		h.Destination = []models.MessageHeaderDestination{{
			Name:     fhir.Optional(app),
			Endpoint: pas.Endpoint(msh, 5, 6, ""),
			Receiver: pas.ODSReference(fac),
		}}
	}
	for _, o := range b.orders {
		u, _ := b.ids(kind("DiagnosticReport", o.index, 0))
		h.Focus = append(h.Focus, fhir.Ref(u, "DiagnosticReport"))
	}
	return h, url
}
