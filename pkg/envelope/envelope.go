// Package envelope defines the message Junction carries between stages and
// how its metadata rides in NATS headers. The payload is carried unchanged.
package envelope

import (
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
)

// MaxPatients is the most patients (distinct NHS numbers) a message may be
// about: its payloads carry every patient's keyed hash (65 bytes each)
// through the store in headers, which JetStream bounds to 64 KiB
// together.
const MaxPatients = 500

// Content types Junction carries.
const (
	ContentTypeHL7v2 = "application/hl7-v2"
	ContentTypeFHIR  = "application/fhir+json"
)

// Header names. None of them carry patient data.
const (
	HeaderID          = "Junction-Id"
	HeaderSource      = "Junction-Source"
	HeaderContentType = "Junction-Content-Type"
	HeaderReceived    = "Junction-Received"
	HeaderMsgType     = "Junction-Message-Type"
	HeaderControlID   = "Junction-Control-Id"
	HeaderSender      = "Junction-Sender"
	HeaderPartition   = "Junction-Partition"
	HeaderRoute       = "Junction-Route"
	HeaderDestination = "Junction-Destination"
	HeaderAttempt     = "Junction-Attempt"
	HeaderReplay      = "Junction-Replay"
	HeaderReason      = "Junction-Reason"
	HeaderReasonCode  = "Junction-Reason-Code"
	HeaderStage       = "Junction-Stage"
	HeaderDedupe      = "Junction-Dedupe-Key"
	// HeaderReceivedBytes is, on a quarantine entry that keeps only the
	// start of its input, how many bytes were received.
	HeaderReceivedBytes = "Junction-Received-Bytes"
	// HeaderDetail is a dead letter's caller-only detail: the receiver's
	// answer (an OperationOutcome's text, an ACK's ERR) or the failure's
	// cause. It may hold patient data, so it is shown only on request to
	// callers allowed it, never logged or put in an audit record.
	HeaderDetail = "Junction-Detail"
	// HeaderPatient is the keyed patient hash of an outbound payload's
	// message (the audit.Record.Patient of its translation: an HMAC,
	// not patient data), or PatientNone, so the delivery stage's audit
	// records carry it too. Junction does not send it to receivers.
	HeaderPatient = "Junction-Patient-Hash"
	// HeaderPatients lists, comma-separated, the keyed hashes of the
	// further patients whose data an outbound payload carries
	// (audit.Record.Patients), when there are any.
	HeaderPatients = "Junction-Patient-Hashes"
	// HeaderDecided is when the route stage decided consent for an
	// outbound payload (Unix milliseconds), so the delivery stage can
	// tell whether a Consent or the opt-out list changed since.
	HeaderDecided = "Junction-Decided"
	// HeaderDecidedFor is the keyed hash of the NHS number consent was
	// decided by, when it is not HeaderPatient's (a patient the
	// translation names by a local identifier, whose NHS number the
	// patient index knew).
	HeaderDecidedFor = "Junction-Decided-For"
	// HeaderDecidedOptOut is "true" on a payload whose route's purpose
	// the national data opt-out applies to, so its decision found none
	// of its patients on the opt-out list.
	HeaderDecidedOptOut = "Junction-Decided-Opt-Out"
	// HeaderTraceParent is the W3C trace context, in the canonical form
	// OpenTelemetry's header carrier reads.
	HeaderTraceParent = "Traceparent"
)

// PatientNone is the HeaderPatient of a payload whose message has no
// patient hash.
const PatientNone = "none"

// Envelope is one inbound message and the keys extracted from it at ingress.
type Envelope struct {
	// ID is Junction's id for the message, unique and time-sortable.
	ID string
	// Source is the inbound adapter instance name (for example "pas").
	Source string
	// ContentType is the payload's media type.
	ContentType string
	// ReceivedAt is when ingress read the message.
	ReceivedAt time.Time
	// MessageType is the message type, for HL7 v2 "ADT^A01", for FHIR the
	// resource type ("Bundle", "Patient").
	MessageType string
	// ControlID is the sender's message id (MSH-10, Bundle.identifier).
	ControlID string
	// Sender names the sending system (MSH-3^MSH-4), never a person.
	Sender string
	// DedupeKey identifies resends of the same message.
	DedupeKey string
	// Partition is the per-patient ordering partition.
	Partition int
	// TraceParent is the W3C traceparent of the span that received the
	// message, so later hops join its trace.
	TraceParent string
	// Raw is the payload exactly as received.
	Raw []byte
}

// Header encodes e's metadata as NATS headers.
func (e *Envelope) Header() nats.Header {
	h := nats.Header{}
	h.Set(HeaderID, e.ID)
	h.Set(HeaderSource, e.Source)
	h.Set(HeaderContentType, e.ContentType)
	h.Set(HeaderReceived, e.ReceivedAt.UTC().Format(time.RFC3339Nano))
	if e.MessageType != "" {
		h.Set(HeaderMsgType, e.MessageType)
	}
	if e.ControlID != "" {
		h.Set(HeaderControlID, e.ControlID)
	}
	if e.Sender != "" {
		h.Set(HeaderSender, e.Sender)
	}
	if e.DedupeKey != "" {
		h.Set(HeaderDedupe, e.DedupeKey)
	}
	h.Set(HeaderPartition, strconv.Itoa(e.Partition))
	if e.TraceParent != "" {
		h.Set(HeaderTraceParent, e.TraceParent)
	}
	return h
}

// FromHeader rebuilds an envelope from NATS headers and data.
func FromHeader(h nats.Header, data []byte) *Envelope {
	e := &Envelope{
		ID:          h.Get(HeaderID),
		Source:      h.Get(HeaderSource),
		ContentType: h.Get(HeaderContentType),
		MessageType: h.Get(HeaderMsgType),
		ControlID:   h.Get(HeaderControlID),
		Sender:      h.Get(HeaderSender),
		DedupeKey:   h.Get(HeaderDedupe),
		TraceParent: h.Get(HeaderTraceParent),
		Raw:         data,
	}
	e.ReceivedAt, _ = time.Parse(time.RFC3339Nano, h.Get(HeaderReceived))
	e.Partition, _ = strconv.Atoi(h.Get(HeaderPartition))
	return e
}
