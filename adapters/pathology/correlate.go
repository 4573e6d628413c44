package pathology

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/junction-fhir/junction/pkg/adapter"
	kvbucket "github.com/junction-fhir/junction/pkg/bucket"
	"github.com/junction-fhir/junction/pkg/fault"
	"github.com/junction-fhir/junction/pkg/hl7v2"
	"github.com/junction-fhir/junction/pkg/nhs"
)

// CorrelationStore keeps the orders Junction sent, by correlation key (see
// PlacerKey and FillerKey). Implementations must be safe for concurrent
// use.
type CorrelationStore interface {
	// Get returns the order stored under key, or found false.
	Get(ctx context.Context, key string) (order SentOrder, found bool, err error)
	// Put stores order under key, replacing what was there.
	Put(ctx context.Context, key string, order SentOrder) error
}

// PlacerKey is the correlation key of a placer order number in a
// namespace (EI-2). Keys are hashes, so that order numbers do not appear
// in key listings, and fit NATS KV key rules whatever the numbers hold.
// The namespace is compared without regard to case, the number exactly;
// both are trimmed.
func PlacerKey(namespace, number string) string { return orderKey("placer", namespace, number) }

// FillerKey is the correlation key of a filler order number in a
// namespace.
func FillerKey(namespace, number string) string { return orderKey("filler", namespace, number) }

func orderKey(kind, namespace, number string) string {
	h := sha256.New()
	h.Write([]byte(kind))
	h.Write([]byte{0})
	h.Write([]byte(strings.ToUpper(strings.TrimSpace(namespace))))
	h.Write([]byte{0})
	h.Write([]byte(strings.TrimSpace(number)))
	return kind + "." + hex.EncodeToString(h.Sum(nil)[:20])
}

// ResultOrder is the order numbers of one OBR of a result message.
type ResultOrder struct {
	PlacerNumber, PlacerNamespace string
	FillerNumber, FillerNamespace string
}

// ResultOrders reads the placer and filler numbers of every OBR of an
// ORU^R01 message, in order, as the results translator does: OBR-2 and
// OBR-3, else ORC-2 and ORC-3 of the ORC before the OBR. The i-th entry
// belongs to the translator's i-th DiagnosticReport.
func ResultOrders(m *hl7v2.Message) []ResultOrder {
	var out []ResultOrder
	var orc *hl7v2.Segment
	get := func(obr *hl7v2.Segment, field, comp int) string {
		seg := obr
		if strings.TrimSpace(value(obr.Component(field, 1, 1, 1))) == "" && orc != nil {
			seg = orc
		}
		// Component has unescaped the value; unescaping it again would
		// read an escaped backslash's text as an escape.
		return strings.TrimSpace(value(seg.Component(field, 1, comp, 1)))
	}
	for _, s := range m.Segments() {
		switch s.Name() {
		case "ORC":
			orc = s
		case "OBR":
			out = append(out, ResultOrder{
				PlacerNumber: get(s, 2, 1), PlacerNamespace: get(s, 2, 2),
				FillerNumber: get(s, 3, 1), FillerNamespace: get(s, 3, 2),
			})
			orc = nil
		}
	}
	return out
}

// OrderRecorder records orders as they are sent.
type OrderRecorder interface {
	RecordSent(ctx context.Context, orders []SentOrder) error
}

// Correlator links results to the orders Junction sent. It is safe for
// concurrent use when its store is.
type Correlator struct {
	store CorrelationStore
	// namespace is the placer namespace assumed when a result echoes a
	// placer number without one.
	namespace string
	// keyed, when set, hashes the orders' patient check values (KeyedBy).
	keyed func(string) string
}

// KeyedBy makes c hash each order's patient check value with keyed, the
// engine's keyed hash (adapter.Settings.KeyedHash), and returns c. The
// writer of the records and their reader must use the same.
func (c *Correlator) KeyedBy(keyed func(string) string) *Correlator {
	c.keyed = keyed
	return c
}

var _ OrderRecorder = (*Correlator)(nil)

// NewCorrelator returns a correlator over store. defaultNamespace is the
// placer namespace (OrderOptions.PlacerNamespace) assumed for results
// whose placer number has no EI-2.
func NewCorrelator(store CorrelationStore, defaultNamespace string) *Correlator {
	return &Correlator{store: store, namespace: defaultNamespace}
}

// RecordSent stores each order under its placer key and, when it has a
// filler number, its filler key. Call it before the order is sent, so a
// result can never arrive for an order the index does not know; storing
// again on a retry is harmless.
func (c *Correlator) RecordSent(ctx context.Context, orders []SentOrder) error {
	for _, o := range orders {
		if o.PlacerNumber == "" {
			continue
		}
		if o.NHSNumber != "" {
			o.Patient, o.NHSNumber = c.patientCheck(o, o.NHSNumber), ""
		}
		if err := c.store.Put(ctx, PlacerKey(o.PlacerNamespace, o.PlacerNumber), o); err != nil {
			return fmt.Errorf("record order: %w", err)
		}
		if o.FillerNumber != "" {
			if err := c.store.Put(ctx, FillerKey(o.FillerNamespace, o.FillerNumber), o); err != nil {
				return fmt.Errorf("record order: %w", err)
			}
		}
	}
	return nil
}

// Match is what correlation found for one DiagnosticReport.
type Match struct {
	// Found is true when the report's order was one Junction sent.
	Found bool
	// ServiceRequest names the original ServiceRequest (its fullUrl in the
	// order bundle).
	ServiceRequest string
	// FillerLearned is true when the result taught a new filler number,
	// now stored.
	FillerLearned bool
	// PatientMismatch is true when the order named was found but was sent
	// for another patient: the order's NHS number and the result's differ
	// (a number the laboratory mistyped, or gave to another sample). The
	// report is then not linked to the order, and nothing is learned from
	// it; Found stays false.
	PatientMismatch bool
}

// DQOrderPatientMismatch: a result names an order Junction sent for
// another patient (the NHS numbers differ), so its report was not linked
// to that order.
const DQOrderPatientMismatch = "order_patient_mismatch"

// patientCheck returns the check value of the NHS number nhsNumber for
// order o (SentOrder.Patient): the first 6 hex digits of a hash of the
// order's placer namespace and number and the NHS number, keyed with the
// engine's patient hash key (KeyedBy), so that whoever reads the
// correlation records without the key cannot try NHS numbers against it.
// It is short on purpose as well: for one order about fifty numbers of the
// whole NHS number range share each value, while another patient's number
// matches it by chance about once in 16 million. Without a key (a
// correlator of tests) the hash is SHA-256.
func (c *Correlator) patientCheck(o SentOrder, nhsNumber string) string {
	data := "patient\x00" + strings.ToUpper(strings.TrimSpace(o.PlacerNamespace)) + "\x00" + strings.TrimSpace(o.PlacerNumber) + "\x00" + nhs.Normalize(nhsNumber)
	if c.keyed != nil {
		return c.keyed(data)[:6]
	}
	sum := sha256.Sum256([]byte(data))
	return hex.EncodeToString(sum[:3])
}

// samePatient reports whether the NHS number nhsNumber is the one order o
// was recorded with. A record an earlier version wrote before the checks
// were keyed (December 2026) holds the unkeyed hash: it is checked against
// that too, so results for orders sent before an upgrade are still
// linked; another patient's number then matches by chance about twice in
// 16 million rather than once.
func (c *Correlator) samePatient(o SentOrder, nhsNumber string) bool {
	if c.patientCheck(o, nhsNumber) == o.Patient {
		return true
	}
	if c.keyed == nil {
		return false
	}
	return (&Correlator{}).patientCheck(o, nhsNumber) == o.Patient
}

// resultNHSNumber returns the NHS number of the Patient entry of a result
// bundle's entries, or "" when it has none (the translator gives only a
// valid one the NHS number system).
func resultNHSNumber(entries []json.RawMessage) string {
	for _, raw := range entries {
		if !bytes.Contains(raw, []byte(nhs.SystemNHSNumber)) {
			continue
		}
		var e struct {
			Resource struct {
				ResourceType string           `json:"resourceType"`
				Identifier   []fhirIdentifier `json:"identifier"`
			} `json:"resource"`
		}
		if json.Unmarshal(raw, &e) != nil || e.Resource.ResourceType != "Patient" {
			continue
		}
		for _, id := range e.Resource.Identifier {
			if id.System == nhs.SystemNHSNumber && id.Value != "" {
				return id.Value
			}
		}
	}
	return ""
}

// lookup finds the order of one result order: by placer number (in the
// result's namespace, else the default), else by filler number.
func (c *Correlator) lookup(ctx context.Context, r ResultOrder) (SentOrder, bool, error) {
	if r.PlacerNumber != "" {
		ns := r.PlacerNamespace
		if ns == "" {
			ns = c.namespace
		}
		o, ok, err := c.store.Get(ctx, PlacerKey(ns, r.PlacerNumber))
		if err != nil || ok {
			return o, ok, err
		}
	}
	if r.FillerNumber != "" {
		return c.store.Get(ctx, FillerKey(r.FillerNamespace, r.FillerNumber))
	}
	return SentOrder{}, false, nil
}

// Correlate links the DiagnosticReports of a translated result bundle
// (the results translator's output, whose i-th DiagnosticReport comes from
// orders[i]) to the orders Junction sent. An order sent for another
// patient (it was sent with an NHS number, the result's Patient has one,
// and they differ) is not linked (Match.PatientMismatch): the result
// would be listed under another patient's request. When either has no
// NHS number the order is linked, as nothing tells the patients apart.
// For each other report whose order is found it:
//
//   - adds to DiagnosticReport.basedOn, first, a reference to the original
//     ServiceRequest: by its placer identifier, and by its fullUrl when
//     that is an absolute http(s) URL (a urn:uuid of the order bundle
//     means nothing outside it). The ServiceRequest the translator built
//     from ORC/OBR stays referenced after it. A reference already there
//     is not added again, so correlating twice changes nothing;
//   - stores a filler number the result carries and the order did not, in
//     the order's record and under its filler key.
//
// Everything else in the bundle is kept byte for byte (key order within
// each resource too). It returns the bundle and one Match per order.
func (c *Correlator) Correlate(ctx context.Context, bundle []byte, orders []ResultOrder) ([]byte, []Match, error) {
	var top struct {
		Entry []json.RawMessage `json:"entry"`
	}
	if err := json.Unmarshal(bundle, &top); err != nil {
		return nil, nil, fault.New(fault.CodeFHIRInvalidJSON, "correlate: result bundle is not a JSON Bundle")
	}
	entries := top.Entry
	nhsNumber := resultNHSNumber(entries)
	matches := make([]Match, len(orders))
	report := 0
	changed := false
	for i, raw := range entries {
		// Only a DiagnosticReport (or a resource naming one) is decoded
		// further.
		if !bytes.Contains(raw, []byte("DiagnosticReport")) {
			continue
		}
		entry, err := decodeJSONObject(raw)
		if err != nil {
			return nil, nil, fault.New(fault.CodeFHIRInvalid, "correlate: result bundle entry is not an object")
		}
		ri := entry.index("resource")
		if ri < 0 {
			continue
		}
		res, err := decodeJSONObject(entry[ri].value)
		if err != nil {
			return nil, nil, fault.New(fault.CodeFHIRInvalid, "correlate: result bundle resource is not an object")
		}
		if rt := res.index("resourceType"); rt < 0 || string(bytes.TrimSpace(res[rt].value)) != `"DiagnosticReport"` {
			continue
		}
		if report >= len(orders) {
			return nil, nil, fault.New(fault.CodeInternal, "correlate: more DiagnosticReports than result orders")
		}
		r := orders[report]
		report++
		o, found, err := c.lookup(ctx, r)
		if err != nil {
			return nil, nil, fault.Wrap(fault.Transient, fault.CodeStoreUnavailable, "correlate: order lookup failed", err)
		}
		if !found {
			continue
		}
		m := &matches[report-1]
		if o.Patient != "" && nhsNumber != "" && !c.samePatient(o, nhsNumber) {
			m.PatientMismatch = true
			continue
		}
		m.Found, m.ServiceRequest = true, o.ServiceRequest
		if r.FillerNumber != "" && (r.FillerNumber != o.FillerNumber || !strings.EqualFold(r.FillerNamespace, o.FillerNamespace)) {
			o.FillerNumber, o.FillerNamespace = r.FillerNumber, r.FillerNamespace
			o.FillerSystem = fillerSystemOf(res)
			if err := c.RecordSent(ctx, []SentOrder{o}); err != nil {
				return nil, nil, fault.Wrap(fault.Transient, fault.CodeStoreUnavailable, "correlate: storing the filler number failed", err)
			}
			m.FillerLearned = true
		}
		newRes, ok, err := addBasedOn(res, originalReference(o))
		if err != nil {
			return nil, nil, fault.New(fault.CodeFHIRInvalid, "correlate: DiagnosticReport.basedOn is not an array")
		}
		if !ok {
			continue
		}
		entry[ri].value = newRes
		entries[i] = entry.encode()
		changed = true
	}
	if report != len(orders) {
		return nil, nil, fault.Newf(fault.CodeInternal, "correlate: %d DiagnosticReports for %d result orders", report, len(orders))
	}
	if !changed {
		return bundle, matches, nil
	}
	obj, err := decodeJSONObject(bundle)
	if err != nil {
		return nil, nil, fault.New(fault.CodeFHIRInvalidJSON, "correlate: result bundle is not a JSON object")
	}
	obj[obj.index("entry")].value = encodeJSONArray(entries)
	return obj.encode(), matches, nil
}

// CorrelateTranslation correlates a results translation in place: the
// orders come from tr.V2 (the parsed ORU^R01), and tr.Bundle is replaced
// (and tr.Parsed cleared) when a report was linked.
func (c *Correlator) CorrelateTranslation(ctx context.Context, tr *adapter.Translation) ([]Match, error) {
	m, ok := tr.V2.(*hl7v2.Message)
	if !ok || m == nil {
		return nil, fault.New(fault.CodeInternal, "correlate: translation has no HL7 v2 message")
	}
	out, matches, err := c.Correlate(ctx, tr.Bundle, ResultOrders(m))
	if err != nil {
		return nil, err
	}
	if slices.ContainsFunc(matches, func(m Match) bool { return m.PatientMismatch }) && !slices.Contains(tr.DataQuality, DQOrderPatientMismatch) {
		tr.DataQuality = append(tr.DataQuality, DQOrderPatientMismatch)
	}
	if !bytes.Equal(out, tr.Bundle) {
		tr.Bundle, tr.Parsed = out, nil
	}
	return matches, nil
}

// fillerSystemOf returns the system of the report's FILL identifier.
func fillerSystemOf(res jsonObject) string {
	i := res.index("identifier")
	if i < 0 {
		return ""
	}
	var ids []fhirIdentifier
	if json.Unmarshal(res[i].value, &ids) != nil {
		return ""
	}
	if id := identifierTyped(ids, "FILL"); id != nil {
		return id.System
	}
	return ""
}

// originalReference is the reference to an order's ServiceRequest.
func originalReference(o SentOrder) map[string]any {
	ref := map[string]any{"type": "ServiceRequest"}
	if strings.HasPrefix(o.ServiceRequest, "https://") || strings.HasPrefix(o.ServiceRequest, "http://") {
		ref["reference"] = o.ServiceRequest
	}
	id := map[string]any{
		"type": map[string]any{"coding": []any{map[string]any{
			"system": systemV2IDType, "code": "PLAC", "display": "Placer Identifier",
		}}},
		"value": o.PlacerNumber,
	}
	if o.PlacerSystem != "" {
		id["system"] = o.PlacerSystem
	}
	ref["identifier"] = id
	return ref
}

// addBasedOn puts ref first in the resource's basedOn unless a reference
// with the same reference or identifier is there. It reports whether it
// changed the resource.
func addBasedOn(res jsonObject, ref map[string]any) ([]byte, bool, error) {
	var based []json.RawMessage
	bi := res.index("basedOn")
	if bi >= 0 {
		if err := json.Unmarshal(res[bi].value, &based); err != nil {
			return nil, false, err
		}
	}
	want := ref["identifier"].(map[string]any)
	for _, b := range based {
		var have fhirRef
		if json.Unmarshal(b, &have) != nil {
			continue
		}
		if r, ok := ref["reference"].(string); ok && have.Reference == r {
			return nil, false, nil
		}
		if have.Identifier != nil && have.Identifier.Value == want["value"] && have.Identifier.System == anyString(want["system"]) {
			return nil, false, nil
		}
	}
	raw, err := marshalNoEscape(ref)
	if err != nil {
		return nil, false, err
	}
	based = append([]json.RawMessage{raw}, based...)
	if bi >= 0 {
		res[bi].value = encodeJSONArray(based)
	} else {
		// basedOn goes before the first element R4 orders after it, or
		// last.
		at := len(res)
		for i, kv := range res {
			switch kv.key {
			case "status", "category", "code", "subject", "encounter", "effectiveDateTime", "effectivePeriod",
				"issued", "performer", "resultsInterpreter", "specimen", "result", "imagingStudy", "media",
				"conclusion", "conclusionCode", "presentedForm":
				at = i
			}
			if at != len(res) {
				break
			}
		}
		res = append(res[:at], append(jsonObject{{key: "basedOn", value: encodeJSONArray(based)}}, res[at:]...)...)
	}
	return res.encode(), true, nil
}

func anyString(v any) string {
	s, _ := v.(string)
	return s
}

// jsonObject is a JSON object with its keys in document order.
type jsonObject []jsonMember

type jsonMember struct {
	key   string
	value json.RawMessage
}

func (o jsonObject) index(key string) int {
	for i, m := range o {
		if m.key == key {
			return i
		}
	}
	return -1
}

// decodeJSONObject reads a JSON object keeping its key order.
func decodeJSONObject(raw []byte) (jsonObject, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, errors.New("not an object")
	}
	var out jsonObject
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		key, _ := tok.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, err
		}
		out = append(out, jsonMember{key: key, value: v})
	}
	if _, err := dec.Token(); err != nil {
		return nil, err
	}
	return out, nil
}

// encode writes the object back, values as they are.
func (o jsonObject) encode() []byte {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, m := range o {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := marshalNoEscape(m.key)
		b.Write(k)
		b.WriteByte(':')
		b.Write(m.value)
	}
	b.WriteByte('}')
	return b.Bytes()
}

func encodeJSONArray(items []json.RawMessage) []byte {
	var b bytes.Buffer
	b.WriteByte('[')
	for i, it := range items {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(it)
	}
	b.WriteByte(']')
	return b.Bytes()
}

// marshalNoEscape encodes v as JSON without escaping <, > and &, as the
// translator writes them.
func marshalNoEscape(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(b.Bytes(), "\n"), nil
}

// Defaults of the JetStream KV correlation store.
const (
	DefaultCorrelationBucket = "junction_order_correlation"
	DefaultCorrelationTTL    = 180 * 24 * time.Hour
)

// KVStore is a CorrelationStore in a JetStream KV bucket. Values are the
// SentOrder JSON: ServiceRequest URL and order numbers, no patient data.
type KVStore struct {
	kv jetstream.KeyValue
}

var _ CorrelationStore = (*KVStore)(nil)

// NewKVStore opens the bucket as buckets allows (history 1, entries
// expiring after ttl) and returns a store on it.
func NewKVStore(ctx context.Context, js jetstream.JetStream, bucket string, ttl time.Duration, buckets kvbucket.Policy) (*KVStore, error) {
	if bucket == "" {
		bucket = DefaultCorrelationBucket
	}
	if ttl <= 0 {
		ttl = DefaultCorrelationTTL
	}
	kv, err := buckets.Open(ctx, js, jetstream.KeyValueConfig{
		Bucket:      bucket,
		Description: "Junction: orders sent, by placer and filler number hash, for result correlation",
		History:     1,
		TTL:         ttl,
		Storage:     jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("correlation bucket %s: %w", bucket, err)
	}
	return &KVStore{kv: kv}, nil
}

// Bucket is the name of the store's bucket.
func (s *KVStore) Bucket() string { return s.kv.Bucket() }

// needCorrelation tells the engine, where set says how, that messages
// need kv's bucket: results wait for it to link them to their orders, and
// orders to record themselves before they are sent.
func needCorrelation(set adapter.Settings, kv *KVStore) {
	if set.NeedBucket != nil {
		set.NeedBucket(kv.Bucket(), "orders sent, read to link pathology results to them and written before each order is sent")
	}
}

// Get implements CorrelationStore.
func (s *KVStore) Get(ctx context.Context, key string) (SentOrder, bool, error) {
	e, err := s.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return SentOrder{}, false, nil
	}
	if err != nil {
		return SentOrder{}, false, fmt.Errorf("correlation get: %w", err)
	}
	var o SentOrder
	if err := json.Unmarshal(e.Value(), &o); err != nil {
		return SentOrder{}, false, fmt.Errorf("correlation record is not JSON: %w", err)
	}
	return o, true, nil
}

// Put implements CorrelationStore.
func (s *KVStore) Put(ctx context.Context, key string, o SentOrder) error {
	raw, err := json.Marshal(o)
	if err != nil {
		return fmt.Errorf("correlation record: %w", err)
	}
	if _, err := s.kv.Put(ctx, key, raw); err != nil {
		return fmt.Errorf("correlation put: %w", err)
	}
	return nil
}
