// Package consentstore is the consent-store destination: a route that
// receives patients' FHIR Consent resources from another system (a GP
// system's consent bundle, a patient portal's feed) delivers them here,
// and each Consent is validated against the Junction consent profile and
// stored for the consent engine, as POST /fhir/Consent stores one.
//
// A delivery is a Consent or a Bundle; every Consent entry of a Bundle is
// stored, other entries are ignored. A Consent outside the profile is a
// permanent fault (the delivery is dead-lettered with the profile's
// reasons, which name elements and codes, never patient data); a payload
// with no Consent at all is one too, since the route is then sending the
// wrong thing. An unavailable store is transient and retried. Storing is
// idempotent (a Consent replaces the stored one with the same id), so a
// retried or replayed delivery is harmless.
package consentstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/junction-fhir/junction/pkg/adapter"
	"github.com/junction-fhir/junction/pkg/consent"
	"github.com/junction-fhir/junction/pkg/fault"
)

// Type is the adapter type name used in config files.
const Type = "consent-store"

// StatusStored is the receipt status of a delivery whose Consents were
// stored.
const StatusStored = "stored"

// Config configures a consent-store destination. It has no settings: the
// store is the consent engine's.
type Config struct{}

// Factory builds consent-store destinations.
type Factory struct{}

var _ adapter.OutboundFactory = Factory{}

// Type returns "consent-store".
func (Factory) Type() string { return Type }

// NewConfig returns a *Config.
func (Factory) NewConfig() any { return &Config{} }

// Internal reports true (adapter.InternalFactory): what it is given stays
// in the consent engine's store.
func (Factory) Internal() bool { return true }

// NewOutbound returns a consent-store destination. It needs the consent
// engine (set.Consents); with consent.engine: default there is no store
// to write to, which is a configuration error.
func (Factory) NewOutbound(_ context.Context, set adapter.Settings, _ any) (adapter.Outbound, error) {
	if set.Consents == nil {
		return nil, fault.New(fault.CodeConfig, "consent-store: needs the consent engine (consent.engine: consent)")
	}
	return &Outbound{w: set.Consents}, nil
}

// Outbound stores the Consents of each delivery.
type Outbound struct {
	w adapter.ConsentWriter
}

// Start does nothing: the store is the engine's.
func (o *Outbound) Start(context.Context) error { return nil }

// Shutdown does nothing: each Send finishes before it returns.
func (o *Outbound) Shutdown(context.Context) error { return nil }

// Send stores every Consent in d's payload; see the package doc.
func (o *Outbound) Send(ctx context.Context, d *adapter.Delivery) (adapter.Receipt, error) {
	consents, err := Consents(d.Body)
	if err != nil {
		return adapter.Receipt{}, err
	}
	for i, c := range consents {
		if err := o.w.WriteConsent(ctx, c); err != nil {
			var issues consent.Issues
			if errors.As(err, &issues) {
				return adapter.Receipt{}, fault.New(fault.CodeDestRejected, "consent-store: Consent "+strconv.Itoa(i+1)+" of "+strconv.Itoa(len(consents))+" is outside the consent profile").WithDetail(issues.Error())
			}
			return adapter.Receipt{}, fault.Wrap(fault.Transient, fault.CodeStoreUnavailable, "consent-store: storing a Consent", err)
		}
	}
	return adapter.Receipt{Status: StatusStored, Location: strconv.Itoa(len(consents)) + " Consent(s)"}, nil
}

// Consents returns the Consent resources of a payload: the payload itself
// when it is a Consent, else the Consent entries of a Bundle, each as its
// own JSON. A payload that is neither, or holds no Consent, is a permanent
// fault.
func Consents(body []byte) ([][]byte, error) {
	var head struct {
		ResourceType string `json:"resourceType"`
		Entry        []struct {
			Resource json.RawMessage `json:"resource"`
		} `json:"entry"`
	}
	if err := json.Unmarshal(body, &head); err != nil {
		return nil, fault.Wrap(fault.Permanent, fault.CodeFHIRInvalidJSON, "consent-store: payload is not FHIR JSON", err)
	}
	switch head.ResourceType {
	case "Consent":
		return [][]byte{body}, nil
	case "Bundle":
	default:
		return nil, fault.New(fault.CodeFHIRInvalid, fmt.Sprintf("consent-store: payload is a %q, not a Consent or Bundle", head.ResourceType))
	}
	var out [][]byte
	for _, e := range head.Entry {
		var rt struct {
			ResourceType string `json:"resourceType"`
		}
		if len(e.Resource) == 0 || json.Unmarshal(e.Resource, &rt) != nil || rt.ResourceType != "Consent" {
			continue
		}
		out = append(out, e.Resource)
	}
	if len(out) == 0 {
		return nil, fault.New(fault.CodeFHIRInvalid, "consent-store: the Bundle holds no Consent")
	}
	return out, nil
}
