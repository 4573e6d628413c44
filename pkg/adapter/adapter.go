// Package adapter defines what an adapter is: a factory that validates its
// configuration and builds inbound and outbound components, and the
// services the engine hands those components. Adapters never build their
// own logger, metrics, tracer or store; they get them here.
package adapter

import (
	"context"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/junction-fhir/junction/pkg/bucket"
	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/telemetry"
)

// Component is anything with a lifecycle. Shutdown is safe without Start,
// drains in-flight work and is idempotent.
type Component interface {
	Start(ctx context.Context) error
	Shutdown(ctx context.Context) error
}

// Factory describes one adapter type, such as "pas" or "fhir".
type Factory interface {
	// Type is the name used in config files.
	Type() string
	// NewConfig returns a pointer to a config struct holding the defaults.
	// The engine decodes the user's settings into it strictly.
	NewConfig() any
}

// Validator is implemented by config structs that check themselves. It
// returns every problem found, not just the first.
type Validator interface {
	Validate() []error
}

// InternalFactory is implemented by outbound factories whose destinations
// keep what they are given inside Junction (the consent engine's store,
// the opt-out list) rather than sending it to a receiver: a delivery to
// one discloses nothing, so routes do not ask consent for it, and a
// patient's refusal cannot block the patient's own Consent on its way to
// the store.
type InternalFactory interface {
	Internal() bool
}

// PlaceholderDomain is the made-up trust domain under which adapters'
// default identifier and code systems lie
// (https://fhir.example-trust.nhs.uk/Id/...), so that Junction runs with
// no settings. Each trust sets its own.
const PlaceholderDomain = "example-trust.nhs.uk"

// IsPlaceholder reports whether a system URI lies under
// PlaceholderDomain.
func IsPlaceholder(system string) bool {
	rest, ok := strings.CutPrefix(system, "https://")
	if !ok {
		rest, ok = strings.CutPrefix(system, "http://")
	}
	if !ok {
		return false
	}
	host, _, _ := strings.Cut(rest, "/")
	return host == PlaceholderDomain || strings.HasSuffix(host, "."+PlaceholderDomain)
}

// PlaceholderSettings returns, sorted, prefix and each key of settings
// (setting path to system URI) whose system is a placeholder.
func PlaceholderSettings(prefix string, settings map[string]string) []string {
	var out []string
	for key, v := range settings {
		if IsPlaceholder(v) {
			out = append(out, prefix+key)
		}
	}
	slices.Sort(out)
	return out
}

// PlaceholderUser is implemented by configs whose identifier or code
// systems may be left at placeholders (IsPlaceholder). Receivers match
// patients, visits, orders and codes on system and value, so two trusts
// sending the same placeholder to one receiver (a shared care record)
// would have different patients' records merged there.
type PlaceholderUser interface {
	// Placeholders returns the settings holding a placeholder, as paths
	// within the component's settings (dialect.local_identifier_system),
	// sorted.
	Placeholders() []string
}

// ContentTaker is implemented by outbound factories whose destinations
// take payloads of some content types only (envelope.ContentTypeHL7v2,
// envelope.ContentTypeFHIR), so that a route sending one another type is
// refused when it loads rather than dead-lettering every message.
type ContentTaker interface {
	TakesContent(contentType string) bool
}

// ContentStorer is implemented by inbound factories: the content type of
// the messages the input stores, which a route's raw payload sends.
type ContentStorer interface {
	StoresContent() string
}

// ExposureValidator is implemented by inbound configs whose settings
// must be stricter when the engine's HTTP listener is reachable beyond
// loopback (an endpoint on it then takes input from other machines).
// clientCerts says the listener verifies client certificates (mutual
// TLS), which then authenticate senders.
type ExposureValidator interface {
	ValidateExposed(clientCerts bool) []error
}

// Listener is implemented by inbound configs that listen on a TCP
// address of their own (not the engine's HTTP listener): the address as
// configured, so the engine can find two listeners given one address and
// an address it cannot listen on before it starts anything.
type Listener interface {
	ListenAddress() string
}

// CallerSecrets is implemented by inbound configs that authenticate
// their callers with secrets (a bearer token): the references, by
// setting name, so the engine can refuse one that is also an admin
// token, which would give the input's callers that token's roles.
type CallerSecrets interface {
	CallerSecrets() map[string]string
}

// SizeLimited is implemented by inbound configs that bound message size,
// so the engine can check the store accepts messages that large.
type SizeLimited interface {
	MaxInputBytes() int64
}

// InboundFactory builds inbound components.
type InboundFactory interface {
	Factory
	NewInbound(ctx context.Context, set Settings, host Host, cfg any) (Inbound, error)
}

// OutboundFactory builds outbound components.
type OutboundFactory interface {
	Factory
	NewOutbound(ctx context.Context, set Settings, cfg any) (Outbound, error)
}

// TranslatorFactory builds the pure translator for messages an inbound
// adapter produced.
type TranslatorFactory interface {
	Factory
	NewTranslator(cfg any) (Translator, error)
}

// Settings are the engine services handed to a component.
type Settings struct {
	// Name is the instance name from config ("pas", "ehr").
	Name    string
	Logger  *slog.Logger
	Metrics *telemetry.Metrics
	Tracer  trace.Tracer
	// DataDir is the engine's data directory.
	DataDir string
	// Secrets resolves env: and file: references.
	Secrets SecretResolver
	// JS is the engine's JetStream, for components that keep state in the
	// store (nil where there is no store, as in junction convert).
	JS jetstream.JetStream
	// Buckets is how the component opens key-value buckets in the store.
	Buckets bucket.Policy
	// NeedBucket tells the engine that messages need bucket written or
	// read on their way, holding what holds, so that readiness names it
	// while the store cannot write it; nil where there is no store.
	NeedBucket func(bucket, holds string)
	// Consents stores Consent resources in the consent engine's store;
	// nil when the consent engine is off.
	Consents ConsentWriter
	// OptOuts replaces the national data opt-out list of the consent
	// engine; nil when the consent engine is off.
	OptOuts OptOutLoader
	// AuditEventSearch says the engine serves GET /fhir/AuditEvent on the
	// HTTP listener, so the FHIR endpoint's CapabilityStatement lists it.
	AuditEventSearch bool
	// HTTPExposed says the engine's HTTP listener is bound beyond
	// loopback, so an endpoint on it is reachable from other machines.
	HTTPExposed bool
	// HTTPClientCerts says the engine's HTTP listener verifies client
	// certificates (mutual TLS), so an endpoint on it takes input only
	// from a client that presented one.
	HTTPClientCerts bool
	// KeyedHash returns the hex HMAC-SHA256 of data under the engine's
	// patient hash key, the key audit records and the consent store hash
	// patients by, for components that keep a value derived from patient
	// data in the store; nil where there is no store.
	KeyedHash func(data string) string
}

// ConsentWriter stores FHIR Consent resources for the consent engine.
type ConsentWriter interface {
	// WriteConsent validates one Consent (JSON) against the consent
	// profile and stores it for its patient, replacing a stored Consent
	// with the same id. A Consent outside the profile gives an error
	// holding consent.Issues (errors.As); any other error means the store
	// was unavailable.
	WriteConsent(ctx context.Context, resource []byte) error
}

// OptOutLoader replaces the national data opt-out list of the consent
// engine, as POST /api/optouts does.
type OptOutLoader interface {
	// LoadOptOuts parses extract as POST /api/optouts parses its body (one
	// NHS number per line, or CSV with the number in the first column)
	// and replaces the list with it, dated asOf. Lines without a valid NHS
	// number are left out and reported by line number. An extract with no
	// valid number, dated in the future, or too large is refused with a
	// permanent fault; a store that cannot be written gives a transient
	// one. An extract dated before the stored list is not loaded
	// (Superseded), so a replayed delivery never brings back an older
	// list. Neither the summary nor an error holds an NHS number.
	LoadOptOuts(ctx context.Context, extract []byte, asOf time.Time) (OptOutSummary, error)
}

// OptOutSummary is what loading an opt-out list did. It holds counts and
// line numbers, never an NHS number.
type OptOutSummary struct {
	// Accepted counts the lines with a valid NHS number; Invalid those
	// without one, and InvalidLines lists the first of them (from 1).
	Accepted, Invalid int
	InvalidLines      []int
	// Superseded reports a list older than the stored one, not loaded.
	Superseded bool
	// Stale reports a list already older than consent.opt_out_max_age.
	Stale bool
}

// InvalidLinesText lists the first n of InvalidLines, comma separated,
// with "..." when there are more: line numbers only, never their content.
func (s OptOutSummary) InvalidLinesText(n int) string {
	parts := make([]string, 0, min(len(s.InvalidLines), n)+1)
	for i, l := range s.InvalidLines {
		if i == n {
			parts = append(parts, "...")
			break
		}
		parts = append(parts, strconv.Itoa(l))
	}
	return strings.Join(parts, ", ")
}

// InputChecker is implemented by translators whose input refuses some
// messages before storing them (the FHIR endpoint validates each post), so
// that route tests refuse an input the live input would never store.
type InputChecker interface {
	// CheckInput returns the fault the input would refuse raw with, or
	// nil if it would store it.
	CheckInput(raw []byte) error
}

// StoreBinder is a Translator that does more once the engine's store is
// open (for example, linking results to the orders they answer).
// BindStore returns the translator the engine then uses.
type StoreBinder interface {
	BindStore(ctx context.Context, set Settings) (Translator, error)
}

// SecretResolver turns a reference such as "env:NAME" or "file:PATH" into
// its value.
type SecretResolver interface {
	Resolve(ref string) (string, error)
}

// IngestResult reports what the store did with an inbound message.
type IngestResult struct {
	// ID is the Junction message id of the stored message (for a duplicate,
	// the id of the original).
	ID string
	// Duplicate is true when the message was a resend of one already stored.
	Duplicate bool
}

// Host is what the engine offers inbound components.
type Host interface {
	// Ingest stores env durably (fsynced) and returns only then. An error
	// means the message is not stored and the sender must not get a
	// positive acknowledgement.
	Ingest(ctx context.Context, env *envelope.Envelope) (IngestResult, error)
	// Quarantine keeps input that could not be parsed, for ops to inspect:
	// raw is what is kept of it and received how many bytes came (more
	// than len(raw) when only the start is kept). It returns the entry's
	// id, which ops find it by.
	Quarantine(ctx context.Context, source string, raw []byte, received int, reason string) (string, error)
	// Partition maps a patient key (NHS number, MRN) to an ordering
	// partition. The key itself is not kept.
	Partition(patientKey string) int
	// NewID returns a new message id.
	NewID() string
}

// Inbound is a running inbound component.
type Inbound interface {
	Component
}

// HTTPInbound is an inbound component served on the engine's HTTP listener.
type HTTPInbound interface {
	Inbound
	// Routes returns handlers by ServeMux pattern, such as "POST /fhir".
	Routes() map[string]http.Handler
}

// Outbound sends deliveries to one destination.
type Outbound interface {
	Component
	// Send delivers d. It returns a receipt on success. Errors are
	// fault.Error values: transient ones are retried with backoff,
	// permanent ones dead-letter the delivery.
	Send(ctx context.Context, d *Delivery) (Receipt, error)
}

// BatchSender is an Outbound that can make many deliveries durable
// together, for example with one sync for a batch of files. SendBatch
// returns one receipt and one error (nil on success) per delivery, in
// order. The batch pipeline uses it for a first attempt at a whole batch
// and falls back to Send, with retries, for those that failed; so it
// suits only receivers that need no order among the entries of a batch.
type BatchSender interface {
	SendBatch(ctx context.Context, ds []*Delivery) ([]Receipt, []error)
}

// Delivery is one message for one destination.
type Delivery struct {
	// MessageID is the Junction id of the inbound message.
	MessageID string
	// Route and Destination name where it came from and where it goes.
	Route       string
	Destination string
	// ContentType of Body, normally application/fhir+json.
	ContentType string
	Body        []byte
	// IdempotencyKey is stable across retries and replays of this delivery.
	IdempotencyKey string
	// Attempt counts from 1.
	Attempt int
	// ReceivedAt is when Junction received the inbound message (a
	// replay's is the original's), or zero when unknown. Destinations
	// that keep a record up to date use it to tell an older message,
	// replayed or late on another route, from a newer one.
	ReceivedAt time.Time
}

// Receipt is what the receiver answered, summarised without patient data
// where the receiver's reply may hold it (Reply is kept in the audit trail
// for entitled readers).
type Receipt struct {
	// Status is a short outcome such as "201" or "AA".
	Status string
	// Reply is the receiver's answer (may hold patient data).
	Reply string
	// Location identifies what the receiver stored, where it says.
	Location string
}

// Translation is the FHIR form of an inbound message.
type Translation struct {
	// Bundle is the FHIR Bundle as JSON.
	Bundle []byte
	// PatientKey identifies the patient for ordering and consent (NHS
	// number when valid, else a local identifier). Never logged. The
	// router marks a local identifier that reads as a valid NHS number
	// but that Bundle does not name as one (route.LocalKeyPrefix), so
	// that no one takes it for that number.
	PatientKey string
	// Event is a short event code ("A01") for routes to match.
	Event string
	// V2 is the parsed HL7 v2 message when the source is v2, else nil. It is
	// an *hl7v2.Message, held as any so this package does not import hl7v2.
	V2 any
	// DataQuality lists data-quality issues found (for example
	// "nhs_number_invalid", "nhs_number_missing"), counted per feed.
	DataQuality []string
	// Parsed is Bundle decoded as JSON-shaped maps, when the engine has
	// decoded it once for several routes to share. Readers must not
	// modify it.
	Parsed map[string]any
	// BundleHash is the audit hash of Bundle, when the engine has
	// computed it once for several routes to share.
	BundleHash string
	// Relayed marks a message of a type the input relays (RelayLister)
	// rather than translates: Bundle holds only its MessageHeader and
	// the Patients of its PID segments, enough to partition, match and
	// decide consent, and the message itself is sent on unchanged. It is
	// never applied to the patient index.
	Relayed bool
}

// EventLister is a Translator that says which message types it
// translates, in full form such as "ADT^A01", so that a route naming one
// it never will is refused at load rather than dead-lettering each
// message.
type EventLister interface {
	Events() []string
}

// RelayLister is a Translator whose input also takes message types it
// does not translate (an HL7 v2 input's relay setting): patterns such as
// "ORM^O01" or "SIU^*" (every event of a type). A route takes a relayed
// type only when it names it, and sends it raw.
type RelayLister interface {
	RelayTypes() []string
}

// Translator turns raw inbound bytes into FHIR with no I/O.
type Translator interface {
	Translate(env *envelope.Envelope) (*Translation, error)
}

// DataQualityCoder is a Translator that lists every code its
// translations may give in Translation.DataQuality, so that the engine
// can create each input's data-quality series at zero when it starts
// (an alert on increase() then sees the first issue after a restart).
type DataQualityCoder interface {
	DataQualityCodes() []string
}
