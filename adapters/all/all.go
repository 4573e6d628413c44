// Package all lists the adapters compiled into Junction.
package all

import (
	"github.com/junction-fhir/junction/adapters/consentstore"
	"github.com/junction-fhir/junction/adapters/fhir"
	"github.com/junction-fhir/junction/adapters/file"
	"github.com/junction-fhir/junction/adapters/mllp"
	"github.com/junction-fhir/junction/adapters/optoutlist"
	"github.com/junction-fhir/junction/adapters/pas"
	"github.com/junction-fhir/junction/adapters/pathology"
	"github.com/junction-fhir/junction/pkg/adapter"
)

// Factories returns every compiled-in adapter factory.
func Factories() []adapter.Factory {
	return []adapter.Factory{
		pas.Factory{},
		pathology.Factory{},
		pathology.OrdersOutboundFactory{},
		fhir.Factory{},
		fhir.OutboundFactory{},
		file.Factory{},
		mllp.OutboundFactory{},
		consentstore.Factory{},
		optoutlist.Factory{},
	}
}
