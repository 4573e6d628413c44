package pas

import (
	"fmt"
	"slices"
	"strconv"

	"github.com/junction-fhir/junction/pkg/adapter"
	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/fault"
	"github.com/junction-fhir/junction/pkg/hl7v2"
)

// Relay makes the translator also take the message types types names
// (patterns such as "ORM^O01" or "SIU^*", hl7v2.TypeMatches), with the
// minimal translation of TranslateRelayed, when it has no mapping of its
// own for them. Call it before the translator is used.
func (t *Translator) Relay(types []string) { t.relay = slices.Clone(types) }

// RelayTypes implements adapter.RelayLister: the patterns given to Relay.
func (t *Translator) RelayTypes() []string { return slices.Clone(t.relay) }

// Relays reports whether messageType ("ORM^O01") is one the translator
// relays: one its Relay patterns name. A caller with mappings of its own
// asks only for types it does not map.
func (t *Translator) Relays(messageType string) bool {
	return slices.ContainsFunc(t.relay, func(p string) bool { return hl7v2.TypeMatches(p, messageType) })
}

// relayMapping is how a relayed message becomes FHIR: its patients from
// every PID segment (the first with its PD1 practice), nothing else. A
// message with no PID gives a Bundle of its MessageHeader and
// Provenance, about no patient.
var relayMapping = eventMapping{segments: []segmentRule{
	{segment: "PID", repeat: true, apply: (*builder).mapRelayedPID},
	{segment: "PD1", repeat: true, apply: (*builder).mapRelayedPD1},
}}

// TranslateRelayed gives m, a message of a type Junction does not
// translate, the minimal translation a route needs to relay it: a message
// Bundle with the MessageHeader (the trigger event as eventCoding, the
// sender and receiver from MSH), a Patient for each PID segment, the
// first with its registered GP practice from PD1, and the Provenance.
// The Translation is marked Relayed and keyed by the first PID's patient
// (PatientKey), as the listener partitioned it. The result depends only on
// env.ID, env.ReceivedAt and the message.
func (t *Translator) TranslateRelayed(env *envelope.Envelope, m *hl7v2.Message) (*adapter.Translation, error) {
	if err := m.CharsetError(); err != nil {
		return nil, err
	}
	if n := len(m.SegmentsNamed("PID")); n > envelope.MaxPatients {
		// Each PID becomes a Patient and a patient index read: a 1 MiB
		// message of bare PIDs would make some 58,000 of each.
		return nil, fault.Newf(fault.CodeTooLarge, "relayed message has %d PID segments, more than %d patients; send one message per patient", n, envelope.MaxPatients)
	}
	return t.build(env, m, m.Segment("MSH").Component(9, 1, 1, 1), m.Event(), relayMapping)
}

// mapRelayedPID maps the first PID as the message's patient and each
// later one (a bed swap's second patient, say) as another Patient, so
// consent is asked of every patient whose data the relayed message
// carries.
func (b *builder) mapRelayedPID(pid *hl7v2.Segment) error {
	if b.patient == nil {
		return b.mapPID(pid)
	}
	kind := "Patient/" + strconv.Itoa(len(b.patients)+2)
	p, _ := b.patientFrom(pid, kind, false)
	u, _ := b.fullURL(kind)
	b.patients = append(b.patients, entry{url: u, typ: "Patient", resource: p})
	return nil
}

// mapRelayedPD1 maps pd1 as the first patient's registered practice when
// it is the PD1 of the first PID's group: the first after that PID and
// before another. A PD1 after a later PID is that patient's.
func (b *builder) mapRelayedPD1(pd1 *hl7v2.Segment) error {
	seenPID := false
	for _, seg := range b.m.Segments() {
		switch seg.Name() {
		case "PID":
			if seenPID {
				return nil
			}
			seenPID = true
		case "PD1":
			if seenPID {
				if seg == pd1 {
					return b.mapPD1(pd1)
				}
				return nil
			}
		}
	}
	return nil
}

// CheckRelay returns an error for each relay pattern that names a type
// the input translates (given in full, as adapter.EventLister lists
// them): those are translated, never relayed.
func CheckRelay(relay, translated []string) []error {
	var errs []error
	for i, p := range relay {
		if slices.Contains(translated, p) {
			errs = append(errs, fmt.Errorf("relay[%d]: %q is translated by this input; list only types it does not translate", i, p))
		}
	}
	return errs
}
