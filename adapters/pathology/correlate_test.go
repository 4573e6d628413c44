package pathology

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go/jetstream"
	models "github.com/samply/golang-fhir-models/fhir-models/fhir"

	"github.com/junction-fhir/junction/adapters/pas"
	"github.com/junction-fhir/junction/pkg/adapter"
	"github.com/junction-fhir/junction/pkg/bucket"
	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/fault"
	"github.com/junction-fhir/junction/pkg/hl7v2"
	"github.com/junction-fhir/junction/pkg/jstest"
	transport "github.com/junction-fhir/junction/pkg/mllp"
)

// orderMemStore is an in-memory CorrelationStore for the pure matching tests.
type orderMemStore struct {
	mu  sync.Mutex
	m   map[string]SentOrder
	err error
}

func newOrderMemStore() *orderMemStore { return &orderMemStore{m: map[string]SentOrder{}} }

func (s *orderMemStore) Get(_ context.Context, key string) (SentOrder, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return SentOrder{}, false, s.err
	}
	o, ok := s.m[key]
	return o, ok, nil
}

func (s *orderMemStore) Put(_ context.Context, key string, o SentOrder) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	s.m[key] = o
	return nil
}

// startJetStream runs an embedded JetStream server for the test.
func startJetStream(t *testing.T) jetstream.JetStream { return jstest.Start(t, "pathology-test") }

func TestOrderKeys(t *testing.T) {
	k := PlacerKey("EPR", "ORD-1")
	tests := []struct {
		name string
		key  string
		same bool
	}{
		{"namespace case and space ignored", PlacerKey(" epr ", "ORD-1"), true},
		{"number trimmed", PlacerKey("EPR", " ORD-1 "), true},
		{"other number", PlacerKey("EPR", "ORD-2"), false},
		{"number case kept", PlacerKey("EPR", "ord-1"), false},
		{"other namespace", PlacerKey("LAB", "ORD-1"), false},
		{"filler kind", FillerKey("EPR", "ORD-1"), false},
		{"no separator confusion", PlacerKey("EPRO", "RD-1"), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if (tc.key == k) != tc.same {
				t.Errorf("key %q vs %q: same %v, want %v", tc.key, k, tc.key == k, tc.same)
			}
		})
	}
	for _, key := range []string{k, FillerKey("L|AB", "a b/c*>")} {
		if strings.Contains(key, "ORD") || !validKVKey(key) {
			t.Errorf("key %q is not a hashed, valid KV key", key)
		}
	}
}

// validKVKey checks the NATS KV key rule.
func validKVKey(k string) bool {
	if k == "" || k[0] == '.' || k[len(k)-1] == '.' {
		return false
	}
	for _, c := range k {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("-/_=.", c)) {
			return false
		}
	}
	return true
}

func TestResultOrders(t *testing.T) {
	raw := "MSH|^~\\&|LIMS|LAB|EPR|RX1|20260701120000||ORU^R01|1|P|2.5\r" +
		"PID|1||9990000018^^^NHS^NH\r" +
		"ORC|RE|P1^EPR|F1^LIMS\r" +
		"OBR|1|||FBC\r" +
		"OBR|2|P2|F\\T\\2^LIMS|U&E\r" +
		"ORC|RE|P3^EPR\r" +
		"OBR|3|P3B^EPR||LFT\r" +
		"OBR|4|P\\E\\H\\E\\4^EPR|F\\E\\T\\E\\4|CRP\r"
	m, err := hl7v2.Parse([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	want := []ResultOrder{
		{PlacerNumber: "P1", PlacerNamespace: "EPR", FillerNumber: "F1", FillerNamespace: "LIMS"},
		{PlacerNumber: "P2", FillerNumber: "F&2", FillerNamespace: "LIMS"},
		{PlacerNumber: "P3B", PlacerNamespace: "EPR"},
		// Escaped backslashes are text: this \H\ is no highlighting escape.
		{PlacerNumber: `P\H\4`, PlacerNamespace: "EPR", FillerNumber: `F\T\4`},
	}
	if diff := cmp.Diff(want, ResultOrders(m)); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// labResult turns an order message into the laboratory's result: ORU^R01
// with filler-N (N the OBR's position) in OBR-3 and a final status.
func labResult(t *testing.T, order []byte, filler string) []byte {
	t.Helper()
	oru := toORU(t, order)
	var out [][]byte
	n := 0
	for _, seg := range bytes.Split(oru, []byte("\r")) {
		if bytes.HasPrefix(seg, []byte("OBR|")) {
			fields := bytes.Split(seg, []byte("|"))
			for len(fields) <= 25 {
				fields = append(fields, nil)
			}
			n++
			fields[3] = []byte(filler + "-" + strconv.Itoa(n) + "^LIMS")
			fields[25] = []byte("F")
			seg = bytes.Join(fields, []byte("|"))
		}
		out = append(out, seg)
	}
	return bytes.Join(out, []byte("\r"))
}

// reportBasedOn returns the DiagnosticReports' basedOn of a bundle.
func reportBasedOn(t *testing.T, bundle []byte) [][]models.Reference {
	t.Helper()
	var b models.Bundle
	if err := json.Unmarshal(bundle, &b); err != nil {
		t.Fatalf("bundle: %v", err)
	}
	var out [][]models.Reference
	for _, e := range b.Entry {
		var head struct{ ResourceType string }
		if json.Unmarshal(e.Resource, &head) == nil && head.ResourceType == "DiagnosticReport" {
			var dr models.DiagnosticReport
			if err := json.Unmarshal(e.Resource, &dr); err != nil {
				t.Fatalf("DiagnosticReport: %v", err)
			}
			out = append(out, dr.BasedOn)
		}
	}
	return out
}

func TestCorrelate(t *testing.T) {
	ctx := t.Context()
	tr := newTestTranslator(t)
	opts := testOrderOptions("2.5", MessageTypeOML)
	enc, err := EncodeOrder(readOrderBundle(t, "two-orders"), opts)
	if err != nil {
		t.Fatalf("EncodeOrder: %v", err)
	}
	store := newOrderMemStore()
	c := NewCorrelator(store, "EPR")
	if err := c.RecordSent(ctx, enc.Orders); err != nil {
		t.Fatalf("RecordSent: %v", err)
	}
	// The second order was sent with a filler number: three keys.
	if len(store.m) != 3 {
		t.Fatalf("%d keys stored, want 3", len(store.m))
	}
	for k, v := range store.m {
		raw, _ := json.Marshal(v)
		if strings.Contains(k, "ORD") || bytes.Contains(raw, []byte("999000")) {
			t.Errorf("key %q or value holds data it should not", k)
		}
	}

	res, err := tr.Translate(testEnvelope("result", labResult(t, enc.Message, "LAB26-900")))
	if err != nil {
		t.Fatalf("Translate: %v", err)
	}
	before := reportBasedOn(t, res.Bundle)
	matches, err := c.CorrelateTranslation(ctx, res)
	if err != nil {
		t.Fatalf("CorrelateTranslation: %v", err)
	}
	wantMatches := []Match{
		{Found: true, ServiceRequest: "https://ehr.example-trust.nhs.uk/fhir/ServiceRequest/sr-ue", FillerLearned: true},
		{Found: true, ServiceRequest: "https://ehr.example-trust.nhs.uk/fhir/ServiceRequest/sr-lft", FillerLearned: true},
	}
	if diff := cmp.Diff(wantMatches, matches); diff != "" {
		t.Errorf("matches (-want +got):\n%s", diff)
	}
	after := reportBasedOn(t, res.Bundle)
	if len(after) != 2 {
		t.Fatalf("%d reports", len(after))
	}
	for i, placer := range []string{"ORD-2026-000200", "ORD-2026-000201"} {
		if len(after[i]) != len(before[i])+1 {
			t.Fatalf("report %d: basedOn %d references, want %d", i, len(after[i]), len(before[i])+1)
		}
		first := after[i][0]
		if strOf(first.Reference) != wantMatches[i].ServiceRequest || first.Identifier == nil ||
			strOf(first.Identifier.Value) != placer || strOf(first.Identifier.System) != DefaultPlacerOrderSystem {
			t.Errorf("report %d: first basedOn %+v", i, first)
		}
		if diff := cmp.Diff(before[i], after[i][1:]); diff != "" {
			t.Errorf("report %d: the translator's references changed:\n%s", i, diff)
		}
	}
	if schema := loadFHIRSchema(t); schema != nil {
		var v map[string]any
		if err := json.Unmarshal(res.Bundle, &v); err != nil {
			t.Fatal(err)
		}
		if issues := schema.check(v, "Bundle", "Bundle"); len(issues) > 0 {
			t.Errorf("correlated bundle is not schema-valid:\n%s", strings.Join(issues, "\n"))
		}
	}
	// Correlating again adds nothing and learns nothing.
	again := append([]byte(nil), res.Bundle...)
	matches, err = c.CorrelateTranslation(ctx, res)
	if err != nil {
		t.Fatalf("second CorrelateTranslation: %v", err)
	}
	if !bytes.Equal(again, res.Bundle) || matches[0].FillerLearned {
		t.Error("second correlation changed the bundle or learned again")
	}
	// The learned filler number finds the order when the placer number
	// is not echoed.
	o, ok, err := c.lookup(ctx, ResultOrder{FillerNumber: "LAB26-900-2", FillerNamespace: "LIMS"})
	if err != nil || !ok || o.PlacerNumber != "ORD-2026-000201" || o.FillerNumber != "LAB26-900-2" {
		t.Errorf("lookup by learned filler: %+v %v %v", o, ok, err)
	}
	if o.FillerSystem != DefaultFillerOrderSystem {
		t.Errorf("filler system %q", o.FillerSystem)
	}
}

// minimalOrder returns the results translator and the "minimal" order
// bundle encoded as OML^O21 v2.5.
func minimalOrder(t *testing.T) (*Translator, *EncodedOrder) {
	t.Helper()
	enc, err := EncodeOrder(readOrderBundle(t, "minimal"), testOrderOptions("2.5", MessageTypeOML))
	if err != nil {
		t.Fatal(err)
	}
	return newTestTranslator(t), enc
}

func TestCorrelateUnknownAndErrors(t *testing.T) {
	ctx := t.Context()
	tr, enc := minimalOrder(t)
	res, err := tr.Translate(testEnvelope("result", labResult(t, enc.Message, "F9")))
	if err != nil {
		t.Fatal(err)
	}
	orig := append([]byte(nil), res.Bundle...)

	t.Run("unknown order left alone", func(t *testing.T) {
		store := newOrderMemStore()
		matches, err := NewCorrelator(store, "EPR").CorrelateTranslation(ctx, res)
		if err != nil {
			t.Fatal(err)
		}
		if matches[0].Found || !bytes.Equal(orig, res.Bundle) || len(store.m) != 0 {
			t.Errorf("unknown order: %+v, bundle changed %v, %d keys", matches, !bytes.Equal(orig, res.Bundle), len(store.m))
		}
	})
	t.Run("default namespace", func(t *testing.T) {
		store := newOrderMemStore()
		o := enc.Orders[0]
		o.PlacerNamespace = "EPR"
		if err := NewCorrelator(store, "EPR").RecordSent(ctx, []SentOrder{o}); err != nil {
			t.Fatal(err)
		}
		got, _, err := NewCorrelator(store, "EPR").Correlate(ctx, orig, []ResultOrder{{PlacerNumber: "P-1"}})
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(got, orig) {
			t.Error("placer number without namespace not matched under the default")
		}
		got, _, err = NewCorrelator(store, "OTHER").Correlate(ctx, orig, []ResultOrder{{PlacerNumber: "P-1"}})
		if err != nil || !bytes.Equal(got, orig) {
			t.Errorf("matched under another default namespace (%v)", err)
		}
	})
	t.Run("store failure is transient", func(t *testing.T) {
		store := newOrderMemStore()
		store.err = errors.New("down")
		_, _, err := NewCorrelator(store, "EPR").Correlate(ctx, orig, []ResultOrder{{PlacerNumber: "P-1", PlacerNamespace: "EPR"}})
		if !fault.IsTransient(err) {
			t.Errorf("error %v is not transient", err)
		}
	})
	t.Run("report count mismatch", func(t *testing.T) {
		_, _, err := NewCorrelator(newOrderMemStore(), "EPR").Correlate(ctx, orig, nil)
		if err == nil {
			t.Error("no error for a report without a result order")
		}
	})
	t.Run("not json", func(t *testing.T) {
		_, _, err := NewCorrelator(newOrderMemStore(), "EPR").Correlate(ctx, []byte("[1"), nil)
		if fault.CodeOf(err) != fault.CodeFHIRInvalidJSON {
			t.Errorf("error %v", err)
		}
	})
}

// TestCorrelatePatientMismatch checks that a result naming an order sent
// for another patient is not linked to that order, while results whose
// patient matches, or cannot be told apart, are.
func TestCorrelatePatientMismatch(t *testing.T) {
	ctx := t.Context()
	tr, enc := minimalOrder(t)
	if len(enc.Orders) != 1 || enc.Orders[0].NHSNumber == "" {
		t.Fatalf("order encoded without its patient's NHS number: %+v", enc.Orders)
	}
	result := labResult(t, enc.Message, "F9")
	const orderNHS = "9990000034^^^NHS^NH"
	if !bytes.Contains(result, []byte(orderNHS)) {
		t.Fatalf("result has not the order's NHS number: %q", result)
	}
	keyA := func(data string) string { return fmt.Sprintf("%x", sha256.Sum256([]byte("key A|"+data))) }
	keyB := func(data string) string { return fmt.Sprintf("%x", sha256.Sum256([]byte("key B|"+data))) }
	tests := []struct {
		name           string
		pid3           string // PID-3 of the result, in place of the order's
		unchecked      bool   // the order was recorded without a patient check
		writer, reader func(string) string
		linked         bool
	}{
		{name: "same patient", pid3: orderNHS, linked: true},
		{name: "another patient's NHS number", pid3: "9990000042^^^NHS^NH"},
		{name: "result without an NHS number", pid3: "H123456^^^RX1^MR", linked: true},
		{name: "order recorded before patient checks", pid3: "9990000042^^^NHS^NH", unchecked: true, linked: true},
		{name: "same patient, keyed", pid3: orderNHS, writer: keyA, reader: keyA, linked: true},
		{name: "another patient, keyed", pid3: "9990000042^^^NHS^NH", writer: keyA, reader: keyA},
		// The check is the key's: under another key the same patient's
		// number does not match it.
		{name: "same patient, another key", pid3: orderNHS, writer: keyA, reader: keyB},
		// An earlier version's record, written before checks were keyed,
		// still matches its patient and no other.
		{name: "same patient, recorded unkeyed", pid3: orderNHS, reader: keyA, linked: true},
		{name: "another patient, recorded unkeyed", pid3: "9990000042^^^NHS^NH", reader: keyA},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			store := newOrderMemStore()
			o := enc.Orders[0]
			if tc.unchecked {
				o.NHSNumber = ""
			}
			if err := NewCorrelator(store, "EPR").KeyedBy(tc.writer).RecordSent(ctx, []SentOrder{o}); err != nil {
				t.Fatal(err)
			}
			if rec, _, _ := store.Get(ctx, PlacerKey(o.PlacerNamespace, o.PlacerNumber)); rec.NHSNumber != "" || (rec.Patient == "") != tc.unchecked {
				t.Fatalf("recorded %+v: want a check value and no NHS number", rec)
			}
			c := NewCorrelator(store, "EPR").KeyedBy(tc.reader)
			res, err := tr.Translate(testEnvelope("result", bytes.Replace(result, []byte(orderNHS), []byte(tc.pid3), 1)))
			if err != nil {
				t.Fatal(err)
			}
			before := append([]byte(nil), res.Bundle...)
			matches, err := c.CorrelateTranslation(ctx, res)
			if err != nil {
				t.Fatal(err)
			}
			if len(matches) != 1 {
				t.Fatalf("%d matches", len(matches))
			}
			m := matches[0]
			if m.Found != tc.linked || m.PatientMismatch == tc.linked || m.FillerLearned != tc.linked {
				t.Errorf("match %+v, want linked %v", m, tc.linked)
			}
			if changed := !bytes.Equal(before, res.Bundle); changed != tc.linked {
				t.Errorf("bundle changed %v, want %v", changed, tc.linked)
			}
			if flagged := slices.Contains(res.DataQuality, DQOrderPatientMismatch); flagged == tc.linked {
				t.Errorf("data quality %q: %s flagged %v", res.DataQuality, DQOrderPatientMismatch, flagged)
			}
			if _, learned, _ := store.Get(ctx, FillerKey("LIMS", "F9-1")); learned != tc.linked {
				t.Errorf("filler number learned %v, want %v", learned, tc.linked)
			}
		})
	}
}

func TestKVStore(t *testing.T) {
	ctx := t.Context()
	js := startJetStream(t)
	s, err := NewKVStore(ctx, js, "", 0, bucket.Policy{})
	if err != nil {
		t.Fatalf("NewKVStore: %v", err)
	}
	key := PlacerKey("EPR", "ORD-1")
	if _, ok, err := s.Get(ctx, key); ok || err != nil {
		t.Fatalf("empty store: found %v, err %v", ok, err)
	}
	want := SentOrder{ServiceRequest: "https://ehr.example/fhir/ServiceRequest/1", PlacerSystem: "urn:x", PlacerNumber: "ORD-1", PlacerNamespace: "EPR"}
	if err := s.Put(ctx, key, want); err != nil {
		t.Fatalf("Put: %v", err)
	}
	got, ok, err := s.Get(ctx, key)
	if err != nil || !ok {
		t.Fatalf("Get: %v %v", ok, err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	// Reopening the bucket keeps its entries.
	s2, err := NewKVStore(ctx, js, DefaultCorrelationBucket, DefaultCorrelationTTL, bucket.Policy{})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	if _, ok, err := s2.Get(ctx, key); !ok || err != nil {
		t.Errorf("after reopen: found %v, err %v", ok, err)
	}
}

// fakeLab is an MLLP receiver that acknowledges every message with code
// and keeps what it received.
type fakeLab struct {
	mu   sync.Mutex
	got  [][]byte
	code hl7v2.AckCode
	addr string
}

func startFakeLab(t *testing.T, code hl7v2.AckCode) *fakeLab {
	t.Helper()
	lab := &fakeLab{code: code}
	srv := &transport.Server{Addr: "127.0.0.1:0", Handler: transport.HandlerFunc(func(_ context.Context, _ *transport.ConnInfo, payload []byte) ([]byte, bool) {
		lab.mu.Lock()
		lab.got = append(lab.got, payload)
		lab.mu.Unlock()
		m, err := hl7v2.Parse(payload)
		if err != nil {
			return hl7v2.BuildRawAck(hl7v2.AckOptions{}), true
		}
		return hl7v2.BuildAck(m, hl7v2.AckOptions{Code: lab.code, ControlID: "ACK1", App: "LIMS"}), false
	})}
	if err := srv.Listen(); err != nil {
		t.Fatalf("listen: %v", err)
	}
	lab.addr = srv.ListenAddr().String()
	go func() { _ = srv.Serve(context.Background()) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	return lab
}

func (l *fakeLab) received() [][]byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([][]byte(nil), l.got...)
}

// TestOrdersOutboundEndToEnd sends an order bundle through the order
// destination to a fake laboratory, records it in a JetStream KV index,
// and correlates the laboratory's result with it.
func TestOrdersOutboundEndToEnd(t *testing.T) {
	ctx := t.Context()
	lab := startFakeLab(t, hl7v2.AckAA)
	kv, err := NewKVStore(ctx, startJetStream(t), "", 0, bucket.Policy{})
	if err != nil {
		t.Fatalf("NewKVStore: %v", err)
	}
	corr := NewCorrelator(kv, "EPR")
	cfg := DefaultOrdersConfig()
	cfg.Address = lab.addr
	cfg.AckTimeout = 10 * time.Second
	cfg.Order = testOrderOptions("2.5", MessageTypeOML)
	out, err := NewOrdersOutbound(adapter.Settings{Name: "lims"}, cfg, corr)
	if err != nil {
		t.Fatalf("NewOrdersOutbound: %v", err)
	}
	out.now = func() time.Time { return time.Date(2026, 7, 1, 9, 15, 0, 0, time.UTC) }
	t.Cleanup(func() { _ = out.Shutdown(context.Background()) })

	d := &adapter.Delivery{MessageID: "m1", Destination: "lims", ContentType: envelope.ContentTypeFHIR,
		Body: readOrderBundle(t, "fbc-encounter"), IdempotencyKey: "m1/route/lims", Attempt: 1}
	rec, err := out.Send(ctx, d)
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	if rec.Status != "AA" {
		t.Errorf("receipt status %q", rec.Status)
	}
	// A retry carries the same control id.
	d.Attempt = 2
	if _, err := out.Send(ctx, d); err != nil {
		t.Fatalf("second Send: %v", err)
	}
	got := lab.received()
	if len(got) != 2 {
		t.Fatalf("lab received %d messages", len(got))
	}
	m1, err := hl7v2.Parse(got[0])
	if err != nil {
		t.Fatalf("lab got an unparsable message: %v", err)
	}
	m2, _ := hl7v2.Parse(got[1])
	if m1.ControlID() != ControlIDFor(d) || m2.ControlID() != m1.ControlID() || len(m1.ControlID()) != 20 {
		t.Errorf("control ids %q, %q; want %q both times", m1.ControlID(), m2.ControlID(), ControlIDFor(d))
	}
	if m1.MessageType() != "OML^O21" {
		t.Errorf("message type %q", m1.MessageType())
	}

	tr := newTestTranslator(t)
	res, err := tr.Translate(testEnvelope("result", labResult(t, got[0], "LAB26-777")))
	if err != nil {
		t.Fatalf("Translate: %v", err)
	}
	matches, err := corr.CorrelateTranslation(ctx, res)
	if err != nil {
		t.Fatalf("CorrelateTranslation: %v", err)
	}
	if len(matches) != 1 || !matches[0].Found || matches[0].ServiceRequest != "urn:uuid:6a1f0c2e-0d4b-4c55-9a57-2f1d6a0b7c06" || !matches[0].FillerLearned {
		t.Fatalf("matches %+v", matches)
	}
	based := reportBasedOn(t, res.Bundle)[0][0]
	// The order bundle's fullUrl is a urn:uuid: the link is by identifier.
	if based.Reference != nil || based.Identifier == nil || strOf(based.Identifier.Value) != "ORD-2026-000123" {
		t.Errorf("basedOn %+v", based)
	}
	if _, ok, err := kv.Get(ctx, FillerKey("LIMS", "LAB26-777-1")); !ok || err != nil {
		t.Errorf("learned filler number not stored: %v %v", ok, err)
	}
}

func TestOrdersOutboundRejects(t *testing.T) {
	ctx := t.Context()
	tests := []struct {
		name      string
		code      hl7v2.AckCode
		body      string
		ctype     string
		recorder  *orderMemStore
		transient bool
		sent      int
	}{
		{"application error is permanent", hl7v2.AckAE, "", envelope.ContentTypeFHIR, nil, false, 1},
		{"reject is transient", hl7v2.AckAR, "", envelope.ContentTypeFHIR, nil, true, 1},
		{"bad bundle is permanent, nothing sent", hl7v2.AckAA, `{"resourceType":"Bundle"}`, envelope.ContentTypeFHIR, nil, false, 0},
		{"other content type", hl7v2.AckAA, "", "text/plain", nil, false, 0},
		{"recording failure is transient, nothing sent", hl7v2.AckAA, "", envelope.ContentTypeFHIR, &orderMemStore{m: map[string]SentOrder{}, err: errors.New("down")}, true, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			lab := startFakeLab(t, tc.code)
			cfg := DefaultOrdersConfig()
			cfg.Address = lab.addr
			cfg.Order = testOrderOptions("2.4", MessageTypeORM)
			var rec OrderRecorder
			if tc.recorder != nil {
				rec = NewCorrelator(tc.recorder, "EPR")
			}
			out, err := NewOrdersOutbound(adapter.Settings{Name: "lims"}, cfg, rec)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = out.Shutdown(context.Background()) })
			body := []byte(tc.body)
			if tc.body == "" {
				body = readOrderBundle(t, "minimal")
			}
			_, err = out.Send(ctx, &adapter.Delivery{MessageID: "m", Destination: "lims", ContentType: tc.ctype, Body: body})
			if err == nil {
				t.Fatal("no error")
			}
			if fault.IsTransient(err) != tc.transient {
				t.Errorf("transient %v, want %v (%v)", fault.IsTransient(err), tc.transient, err)
			}
			if n := len(lab.received()); n != tc.sent {
				t.Errorf("lab received %d messages, want %d", n, tc.sent)
			}
		})
	}
}

func TestOrdersConfigValidate(t *testing.T) {
	c := DefaultOrdersConfig()
	c.Address = "lab:2575"
	if errs := c.Validate(); len(errs) != 0 {
		t.Fatalf("defaults with an address: %v", errs)
	}
	c.Order.Version, c.Order.MessageType, c.Order.TimeZone = "2.3", MessageTypeOML, "Mars/Olympus"
	errs := c.Validate()
	if len(errs) != 2 {
		t.Fatalf("errors %v, want 2", errs)
	}
	for _, err := range errs {
		if !strings.HasPrefix(err.Error(), "order.") {
			t.Errorf("error %q does not name its key", err)
		}
	}
	if _, err := (OrdersOutboundFactory{}).NewOutbound(t.Context(), adapter.Settings{}, &c); fault.CodeOf(err) != fault.CodeConfig {
		t.Errorf("factory accepted an invalid config: %v", err)
	}
}

func TestAddBasedOn(t *testing.T) {
	ref := originalReference(SentOrder{PlacerNumber: "P1", PlacerSystem: "urn:x", ServiceRequest: "https://ehr.example/fhir/ServiceRequest/9"})
	tests := []struct {
		name, in, want string
		changed        bool
	}{
		{"inserted before status", `{"resourceType":"DiagnosticReport","id":"r","status":"final","code":{"text":"x <5"}}`,
			`{"resourceType":"DiagnosticReport","id":"r","basedOn":[{"identifier":{"system":"urn:x","type":{"coding":[{"code":"PLAC","display":"Placer Identifier","system":"http://terminology.hl7.org/CodeSystem/v2-0203"}]},"value":"P1"},"reference":"https://ehr.example/fhir/ServiceRequest/9","type":"ServiceRequest"}],"status":"final","code":{"text":"x <5"}}`, true},
		{"prepended", `{"resourceType":"DiagnosticReport","basedOn":[{"reference":"urn:uuid:1"}]}`,
			`{"resourceType":"DiagnosticReport","basedOn":[{"identifier":{"system":"urn:x","type":{"coding":[{"code":"PLAC","display":"Placer Identifier","system":"http://terminology.hl7.org/CodeSystem/v2-0203"}]},"value":"P1"},"reference":"https://ehr.example/fhir/ServiceRequest/9","type":"ServiceRequest"},{"reference":"urn:uuid:1"}]}`, true},
		{"same reference there", `{"resourceType":"DiagnosticReport","basedOn":[{"reference":"https://ehr.example/fhir/ServiceRequest/9"}]}`, "", false},
		{"same identifier there", `{"resourceType":"DiagnosticReport","basedOn":[{"identifier":{"system":"urn:x","value":"P1"}}]}`, "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			obj, err := decodeJSONObject([]byte(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			got, changed, err := addBasedOn(obj, ref)
			if err != nil || changed != tc.changed {
				t.Fatalf("changed %v, err %v", changed, err)
			}
			if changed && string(got) != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

// TestCorrelationBucketNeeded: the results translator and the order
// destination, given the engine's store, tell the engine they need the
// correlation bucket, so that readiness names it while the store cannot
// write it (results wait for it, and orders are recorded in it before
// they are sent).
func TestCorrelationBucketNeeded(t *testing.T) {
	js := startJetStream(t)
	tests := []struct {
		name string
		open func(set adapter.Settings) error
	}{
		{"results translator", func(set adapter.Settings) error {
			tr, err := NewTranslator(pas.DefaultDialect(), DefaultLabDialect())
			if err != nil {
				return err
			}
			_, err = tr.BindStore(t.Context(), set)
			return err
		}},
		{"order destination", func(set adapter.Settings) error {
			cfg := DefaultOrdersConfig()
			cfg.Address = "127.0.0.1:1"
			cfg.Order = testOrderOptions("2.5", MessageTypeOML)
			out, err := OrdersOutboundFactory{}.NewOutbound(t.Context(), set, &cfg)
			if err == nil {
				t.Cleanup(func() { _ = out.Shutdown(context.Background()) })
			}
			return err
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var needed []string
			set := adapter.Settings{Name: "lab", JS: js, NeedBucket: func(bucket, holds string) {
				if holds == "" {
					t.Errorf("bucket %s needed without saying what it holds", bucket)
				}
				needed = append(needed, bucket)
			}}
			if err := tc.open(set); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(needed, []string{DefaultCorrelationBucket}) {
				t.Errorf("needed %v, want [%s]", needed, DefaultCorrelationBucket)
			}
		})
	}
}
