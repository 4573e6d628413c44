package fhir

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/junction-fhir/junction/pkg/corpustest"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/junction-fhir/junction/pkg/adapter"
	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/fault"
	"github.com/junction-fhir/junction/pkg/telemetry"
)

// fakeHost is an in-memory stand-in for the engine's store.
type fakeHost struct {
	mu          sync.Mutex
	n           int
	stored      []*envelope.Envelope
	byKey       map[string]string
	err         error
	quarantined []quarantined
}

// quarantined is one body the endpoint kept for ops.
type quarantined struct {
	reason string
	body   []byte
}

func newFakeHost() *fakeHost { return &fakeHost{byKey: map[string]string{}} }

func (h *fakeHost) Ingest(_ context.Context, env *envelope.Envelope) (adapter.IngestResult, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.err != nil {
		return adapter.IngestResult{}, h.err
	}
	if env.DedupeKey != "" {
		if id, ok := h.byKey[env.DedupeKey]; ok {
			return adapter.IngestResult{ID: id, Duplicate: true}, nil
		}
		h.byKey[env.DedupeKey] = env.ID
	}
	c := *env
	c.Raw = append([]byte(nil), env.Raw...)
	h.stored = append(h.stored, &c)
	return adapter.IngestResult{ID: env.ID}, nil
}

func (h *fakeHost) Quarantine(_ context.Context, _ string, body []byte, _ int, reason string) (string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.quarantined = append(h.quarantined, quarantined{reason, append([]byte(nil), body...)})
	return fmt.Sprintf("Q%d", len(h.quarantined)), nil
}

func (h *fakeHost) quarantine() []quarantined {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]quarantined(nil), h.quarantined...)
}

func (h *fakeHost) Partition(key string) int {
	f := fnv.New32a()
	f.Write([]byte(key))
	return int(f.Sum32() % 64)
}

func (h *fakeHost) NewID() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.n++
	return fmt.Sprintf("01TESTID%06d", h.n)
}

func (h *fakeHost) all() []*envelope.Envelope {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]*envelope.Envelope(nil), h.stored...)
}

type inboundFixture struct {
	in   *Inbound
	host *fakeHost
	mux  *http.ServeMux
	m    *telemetry.Metrics
}

func newInboundFixture(t *testing.T, cfg InboundConfig) *inboundFixture {
	t.Helper()
	m := telemetry.NewMetrics(prometheus.NewRegistry())
	host := newFakeHost()
	in, err := NewInbound(adapter.Settings{Name: "ehr", Metrics: m}, host, cfg)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	for p, h := range in.Routes() {
		mux.Handle(p, h)
	}
	return &inboundFixture{in: in, host: host, mux: mux, m: m}
}

func (f *inboundFixture) do(method, path, ctype string, body []byte, hdr map[string]string) *httptest.ResponseRecorder {
	req := localRequest(method, path, bytes.NewReader(body))
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	f.mux.ServeHTTP(rec, req)
	return rec
}

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// outcomeOf decodes an OperationOutcome reply to its first issue.
func outcomeOf(t *testing.T, body []byte) (code, diagnostics string) {
	t.Helper()
	var oo struct {
		ResourceType string
		Issue        []struct{ Severity, Code, Diagnostics string }
	}
	if err := json.Unmarshal(body, &oo); err != nil || oo.ResourceType != "OperationOutcome" || len(oo.Issue) == 0 {
		t.Fatalf("reply is not an OperationOutcome: %s", body)
	}
	return oo.Issue[0].Code, oo.Issue[0].Diagnostics
}

func TestInboundAccepts(t *testing.T) {
	bundle := readTestdata(t, "message-bundle.json")
	patient := readTestdata(t, "patient.json")
	obs := readTestdata(t, "observation.json")
	coll := readTestdata(t, "collection-no-nhs.json")
	bom := append([]byte{0xEF, 0xBB, 0xBF}, patient...)
	h := newFakeHost()
	tests := []struct {
		name     string
		path     string
		ctype    string
		body     []byte
		hdr      map[string]string
		wantType string
		wantCtl  string
		wantKey  string
		wantPart int
	}{
		{"message bundle", "/fhir", "application/fhir+json", bundle, nil,
			"Bundle", "MSG-0001", "bundle|https://supplier.example/message-id|MSG-0001", h.Partition("9990000018")},
		{"bundle at /fhir/Bundle", "/fhir/Bundle", "application/fhir+json; charset=utf-8", bundle, nil,
			"Bundle", "MSG-0001", "bundle|https://supplier.example/message-id|MSG-0001", h.Partition("9990000018")},
		{"message bundle at $process-message", "/fhir/$process-message", "application/fhir+json", bundle, nil,
			"Bundle", "MSG-0001", "bundle|https://supplier.example/message-id|MSG-0001", h.Partition("9990000018")},
		{"nulls lining up a repeating primitive's extensions", "/fhir/Patient", "application/fhir+json",
			[]byte(`{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9990000026"}],"name":[{"given":["A",null],"_given":[null,{"extension":[{"url":"https://x.example/e","valueString":"b"}]}]}]}`), nil,
			"Patient", "", "", h.Partition("9990000026")},
		{"patient with idempotency key", "/fhir/Patient", "application/json; charset=UTF-8", patient, map[string]string{"Idempotency-Key": "k-1"},
			"Patient", "k-1", "idem|k-1", h.Partition("9990000026")},
		{"patient without key", "/fhir/Patient", "application/fhir+json; fhirVersion=4.0", patient, nil,
			"Patient", "", "", h.Partition("9990000026")},
		{"charset written utf8", "/fhir/Patient", "application/fhir+json; charset=utf8", patient, map[string]string{"Content-Encoding": "identity"},
			"Patient", "", "", h.Partition("9990000026")},
		{"observation partitioned by subject", "/fhir/Observation", "application/fhir+json", obs, nil,
			"Observation", "", "", h.Partition("9990000034")},
		{"condition partitioned by a conditional reference's NHS number", "/fhir/Condition", "application/fhir+json",
			[]byte(`{"resourceType":"Condition","code":{"text":"x"},"subject":{"reference":"Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|9990000085"}}`), nil,
			"Condition", "", "", h.Partition("9990000085")},
		{"collection without NHS number uses id", "/fhir", "application/fhir+json", coll, nil,
			"Bundle", "", "", h.Partition("01TESTID000001")},
		{"byte order mark kept", "/fhir/Patient", "application/fhir+json", bom, nil,
			"Patient", "", "", h.Partition("9990000026")},
		// A surrogate pair, and the replacement character sent as such.
		{"escaped surrogate pair and replacement character", "/fhir/Patient", "application/fhir+json",
			[]byte(`{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9990000026"}],"name":[{"family":"A\ud83d\ude00B","given":["C\uFFFD","D�"]}]}`), nil,
			"Patient", "", "", h.Partition("9990000026")},
		{"contained resources side by side", "/fhir/Patient", "application/fhir+json",
			[]byte(`{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9990000026"}],"contained":[{"resourceType":"Organization","id":"o1"},{"resourceType":"Organization","id":"o2"}]}`), nil,
			"Patient", "", "", h.Partition("9990000026")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newInboundFixture(t, DefaultInboundConfig())
			rec := f.do(http.MethodPost, tt.path, tt.ctype, tt.body, tt.hdr)
			if rec.Code != http.StatusAccepted {
				t.Fatalf("status = %d, body %s", rec.Code, rec.Body)
			}
			code, diag := outcomeOf(t, rec.Body.Bytes())
			if code != "informational" || !strings.Contains(diag, "01TESTID000001") {
				t.Errorf("outcome = %s %q", code, diag)
			}
			if got := rec.Header().Get(HeaderMessageID); got != "01TESTID000001" {
				t.Errorf("%s = %q", HeaderMessageID, got)
			}
			st := f.host.all()
			if len(st) != 1 {
				t.Fatalf("stored %d messages", len(st))
			}
			e := st[0]
			got := []any{e.ID, e.Source, e.ContentType, e.MessageType, e.ControlID, e.DedupeKey, e.Partition, e.Sender}
			want := []any{"01TESTID000001", "ehr", envelope.ContentTypeFHIR, tt.wantType, tt.wantCtl, tt.wantKey, tt.wantPart, ""}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("envelope id, source, type, msgtype, control, dedupe, partition, sender (-want +got):\n%s", diff)
			}
			if !bytes.Equal(e.Raw, tt.body) {
				t.Errorf("Raw changed:\n got %q\nwant %q", e.Raw, tt.body)
			}
			if e.ReceivedAt.IsZero() {
				t.Error("ReceivedAt not set")
			}
			if got := testutil.ToFloat64(f.m.Acks.WithLabelValues("ehr", "202")); got != 1 {
				t.Errorf("acks{202} = %v", got)
			}
			if got := testutil.ToFloat64(f.m.Received.WithLabelValues("ehr")); got != 1 {
				t.Errorf("received = %v", got)
			}
		})
	}
}

func TestInboundRejects(t *testing.T) {
	patient := readTestdata(t, "patient.json")
	bundle := readTestdata(t, "message-bundle.json")
	deep := []byte(`{"resourceType":"Patient","extension":` + strings.Repeat("[", 200) + strings.Repeat("]", 200) + `}`)
	veryDeep := bytes.Repeat([]byte("["), 1<<20)
	tests := []struct {
		name       string
		path       string
		ctype      string
		body       []byte
		wantStatus int
		wantIssue  string
		wantReason fault.Code
		wantDiag   string
	}{
		{"text/plain", "/fhir/Patient", "text/plain", patient, 415, "not-supported", fault.CodeFHIRMediaType, "Content-Type"},
		{"no content type", "/fhir/Patient", "", patient, 415, "not-supported", fault.CodeFHIRMediaType, "Content-Type"},
		{"latin1 charset", "/fhir/Patient", "application/fhir+json; charset=iso-8859-1", patient, 415, "not-supported", fault.CodeFHIRMediaType, "charset"},
		{"gzip body", "/fhir/Patient", "application/fhir+json", []byte{0x1f, 0x8b, 0x08, 0x00}, 415, "not-supported", fault.CodeFHIRMediaType, "Content-Encoding"},
		// A conditional create forwarded as an update by identifier would
		// replace the destination's record: refused, not ignored.
		{"conditional create header", "/fhir/Patient", "application/fhir+json", patient, 400, "not-supported", fault.CodeFHIRNotSupported, "If-None-Exist (a conditional create) is not supported"},
		{"conditional create header on a Bundle", "/fhir", "application/fhir+json", bundle, 400, "not-supported", fault.CodeFHIRNotSupported, "request.ifNoneExist"},
		{"fhir version 3", "/fhir/Patient", "application/fhir+json; fhirVersion=3.0", patient, 415, "not-supported", fault.CodeFHIRMediaType, "fhirVersion"},
		{"empty body", "/fhir/Patient", "application/fhir+json", nil, 400, "required", fault.CodeFHIREmpty, "empty"},
		{"whitespace body", "/fhir", "application/fhir+json", []byte(" \r\n"), 400, "required", fault.CodeFHIREmpty, "empty"},
		{"too large", "/fhir/Patient", "application/fhir+json", bytes.Repeat([]byte(" "), 11<<20), 413, "too-costly", fault.CodeFHIRTooLarge, "larger than"},
		{"invalid json", "/fhir/Patient", "application/fhir+json", []byte(`{"resourceType":"Patient",}`), 400, "structure", fault.CodeFHIRInvalidJSON, "offset 26"},
		{"truncated json", "/fhir/Patient", "application/fhir+json", []byte(`{"resourceType":"Patient"`), 400, "structure", fault.CodeFHIRInvalidJSON, "invalid JSON"},
		{"trailing content", "/fhir/Patient", "application/fhir+json", []byte(`{"resourceType":"Patient"} {}`), 400, "structure", fault.CodeFHIRInvalidJSON, "offset"},
		{"too deep", "/fhir/Patient", "application/fhir+json", deep, 400, "structure", fault.CodeFHIRInvalidJSON, "deeper than 100"},
		{"very deep array", "/fhir", "application/fhir+json", veryDeep, 400, "structure", fault.CodeFHIRInvalidJSON, "deeper than 100"},
		{"array body", "/fhir", "application/fhir+json", []byte(`[1,2]`), 400, "structure", fault.CodeFHIRInvalid, "not a JSON object"},
		{"no resourceType", "/fhir/Patient", "application/fhir+json", []byte(`{"id":"x"}`), 400, "required", fault.CodeFHIRInvalid, "resourceType"},
		{"numeric resourceType", "/fhir/Patient", "application/fhir+json", []byte(`{"resourceType":7}`), 400, "required", fault.CodeFHIRInvalid, "resourceType"},
		{"unknown resourceType", "/fhir/Patient", "application/fhir+json", []byte(`{"resourceType":"Patients"}`), 400, "invalid", fault.CodeFHIRInvalid, "unknown resourceType"},
		{"type mismatch", "/fhir/Patient", "application/fhir+json", readTestdata(t, "observation.json"), 400, "invalid", fault.CodeFHIRInvalid, "does not match"},
		{"single resource at base", "/fhir", "application/fhir+json", patient, 400, "invalid", fault.CodeFHIRInvalid, "takes a Bundle"},
		{"type not accepted", "/fhir/Medication", "application/fhir+json", []byte(`{"resourceType":"Medication"}`), 404, "not-supported", fault.CodeFHIRNotSupported, "not accepted"},
		{"path type not a type", "/fhir/notatype", "application/fhir+json", patient, 404, "not-supported", fault.CodeFHIRNotSupported, "not accepted"},
		{"searchset bundle", "/fhir", "application/fhir+json", []byte(`{"resourceType":"Bundle","type":"searchset"}`), 400, "not-supported", fault.CodeFHIRInvalid, "Bundle.type"},
		{"unknown bundle type", "/fhir", "application/fhir+json", []byte(`{"resourceType":"Bundle","type":"pile"}`), 400, "invalid", fault.CodeFHIRInvalid, "invalid Bundle"},
		{"bad gender code", "/fhir/Patient", "application/fhir+json", []byte(`{"resourceType":"Patient","gender":"mail"}`), 400, "invalid", fault.CodeFHIRInvalid, "invalid Patient: unknown AdministrativeGender code (the value is not shown)"},
		{"birth date in a locale's order", "/fhir/Patient", "application/fhir+json", []byte(`{"resourceType":"Patient","birthDate":"01/02/1970"}`), 400, "invalid", fault.CodeFHIRInvalid, "invalid Patient: not a FHIR date or dateTime"},
		{"element in another case", "/fhir/Patient", "application/fhir+json", []byte(`{"resourceType":"Patient","birthdate":"1970-02-01"}`), 400, "invalid", fault.CodeFHIRInvalid, "invalid Patient: the element birthDate is written \"birthdate\": FHIR element names are case-sensitive"},
		{"required element missing", "/fhir/Observation", "application/fhir+json", []byte(`{"resourceType":"Observation","code":{"text":"Hb"},"valueQuantity":{"value":135}}`), 400, "required", fault.CodeFHIRInvalid, "Observation.status is required"},
		{"required element missing in a Bundle", "/fhir", "application/fhir+json", []byte(`{"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Patient"}},{"resource":{"resourceType":"Encounter","status":"finished"}}]}`), 400, "required", fault.CodeFHIRInvalid, "Encounter.class is required"},
		{"decimal that is a string", "/fhir/Observation", "application/fhir+json", []byte(`{"resourceType":"Observation","status":"final","code":{"text":"Hb"},"valueQuantity":{"value":"SMITH John 9990000018"}}`), 400, "invalid", fault.CodeFHIRInvalid, "invalid Observation: a decimal must be a JSON number, not a string"},
		{"decimal that is a string of digits", "/fhir/Observation", "application/fhir+json", []byte(`{"resourceType":"Observation","status":"final","code":{"text":"Hb"},"valueQuantity":{"value":"72.5"}}`), 400, "invalid", fault.CodeFHIRInvalid, "invalid Observation: a decimal must be a JSON number, not a string"},
		{"decimal that is a string in a range", "/fhir/Observation", "application/fhir+json", []byte(`{"resourceType":"Observation","status":"final","code":{"text":"Hb"},"referenceRange":[{"low":{"value":"1e999"}}]}`), 400, "invalid", fault.CodeFHIRInvalid, "invalid Observation: a decimal must be a JSON number, not a string"},
		{"two choices of value[x]", "/fhir/Observation", "application/fhir+json", []byte(`{"resourceType":"Observation","status":"final","code":{"text":"Hb"},"valueQuantity":{"value":72.5},"valueString":"72.5"}`), 400, "invalid", fault.CodeFHIRInvalid, "invalid Observation: more than one choice of value[x] is given: FHIR allows one"},
		{"two choices of value[x] in a component", "/fhir/Observation", "application/fhir+json", []byte(`{"resourceType":"Observation","status":"final","code":{"text":"BP"},"component":[{"code":{"text":"sys"},"valueQuantity":{"value":120},"valueInteger":120}]}`), 400, "invalid", fault.CodeFHIRInvalid, "more than one choice of value[x]"},
		{"contained resource of the wrong type", "/fhir/Observation", "application/fhir+json", []byte(`{"resourceType":"Observation","status":"final","code":{"text":"Hb"},"contained":[{"resourceType":"Patient","id":"p","active":"yes"}],"subject":{"reference":"#p"}}`), 400, "invalid", fault.CodeFHIRInvalid, "invalid Observation: invalid Patient: wrong JSON type for active"},
		{"decimal that is a string in a nested Bundle", "/fhir", "application/fhir+json", []byte(`{"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Observation","status":"final","code":{"text":"Hb"},"valueQuantity":{"value":"72.5"}}}]}}]}`), 400, "invalid", fault.CodeFHIRInvalid, "a decimal must be a JSON number, not a string"},
		{"decimal that is a string in a Bundle", "/fhir", "application/fhir+json", []byte(`{"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Observation","status":"final","code":{"text":"Hb"},"valueQuantity":{"value":"SMITH John 9990000018"}}}]}`), 400, "invalid", fault.CodeFHIRInvalid, "a decimal must be a JSON number, not a string"},
		{"number out of an integer's range", "/fhir/Patient", "application/fhir+json", []byte(`{"resourceType":"Patient","multipleBirthInteger":99999999999999999999}`), 400, "invalid", fault.CodeFHIRInvalid, "wrong JSON type for multipleBirthInteger at offset 69 (want an integer, got number)"},
		{"wrong json type", "/fhir/Patient", "application/fhir+json", []byte(`{"resourceType":"Patient","active":"yes"}`), 400, "invalid", fault.CodeFHIRInvalid, "wrong JSON type for active at offset 40 (want a boolean, got string)"},
		// In JSON's terms, not the Go model's ([]fhir.HumanName).
		{"object for an array", "/fhir/Patient", "application/fhir+json", []byte(`{"resourceType":"Patient","name":{"family":"X"}}`), 400, "invalid", fault.CodeFHIRInvalid, "(want an array, got object)"},
		{"bad entry resource", "/fhir", "application/fhir+json", []byte(`{"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Patient","gender":"x"}}]}`), 400, "invalid", fault.CodeFHIRInvalid, "invalid Patient"},
		{"entry without resourceType", "/fhir", "application/fhir+json", []byte(`{"resourceType":"Bundle","type":"batch","entry":[{"resource":{"id":"x"},"request":{"method":"POST","url":"Patient"}}]}`), 400, "invalid", fault.CodeFHIRInvalid, "entry without"},
		{"transaction entry without a request", "/fhir", "application/fhir+json", []byte(`{"resourceType":"Bundle","type":"transaction","entry":[{"resource":{"resourceType":"Patient"},"request":{"method":"POST","url":"Patient"}},{"resource":{"resourceType":"Patient"}}]}`), 400, "required", fault.CodeFHIRInvalid, "an entry of a transaction or batch needs a request (bdl-3)"},
		{"collection entry with a request", "/fhir", "application/fhir+json", []byte(`{"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Patient"},"request":{"method":"POST","url":"Patient"}}]}`), 400, "invalid", fault.CodeFHIRInvalid, "only a transaction's or batch's entries have a request (bdl-3)"},
		{"message without header", "/fhir", "application/fhir+json", []byte(`{"resourceType":"Bundle","type":"message","entry":[{"resource":{"resourceType":"Patient"}}]}`), 400, "invalid", fault.CodeFHIRInvalid, "MessageHeader"},
		{"empty message", "/fhir", "application/fhir+json", []byte(`{"resourceType":"Bundle","type":"message"}`), 400, "invalid", fault.CodeFHIRInvalid, "MessageHeader"},
		{"message with an empty first entry", "/fhir", "application/fhir+json", []byte(`{"resourceType":"Bundle","type":"message","entry":[{"fullUrl":"urn:uuid:a"},{"resource":{"resourceType":"Patient"}}]}`), 400, "invalid", fault.CodeFHIRInvalid, "first entry of a message Bundle must be a MessageHeader"},
		// encoding/json matches keys without regard to case and keeps the
		// last; FHIR and routing keep the exact, first key.
		{"resourceType in another case", "/fhir/Patient", "application/fhir+json", []byte(`{"ResourceType":"Patient","id":"x"}`), 400, "structure", fault.CodeFHIRInvalid, `key "ResourceType" is not resourceType: FHIR element names are case-sensitive, at offset 1`},
		{"resourceType twice", "/fhir/Patient", "application/fhir+json", []byte(`{"resourceType":"Procedure","status":"x","resourceType":"Patient"}`), 400, "structure", fault.CodeFHIRInvalid, `the key "resourceType" twice`},
		{"resourceType twice in two cases", "/fhir/Patient", "application/fhir+json", []byte(`{"resourceType":"Observation","RESOURCETYPE":"Patient"}`), 400, "structure", fault.CodeFHIRInvalid, `the key "RESOURCETYPE" twice (or twice in different cases), at offset 30`},
		{"element twice", "/fhir/Patient", "application/fhir+json", []byte(`{"resourceType":"Patient","identifier":[],"identifier":[]}`), 400, "structure", fault.CodeFHIRInvalid, `"identifier" twice`},
		{"element twice in an entry", "/fhir", "application/fhir+json", []byte(`{"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Patient","gender":"male","Gender":"female"}}]}`), 400, "structure", fault.CodeFHIRInvalid, `"Gender" twice`},
		{"key that is not an element name twice", "/fhir/Patient", "application/fhir+json", []byte(`{"resourceType":"Patient","a b":1,"a b":2}`), 400, "structure", fault.CodeFHIRInvalid, "the key (not shown) twice"},
		{"resourceType spelled with a long s", "/fhir/Observation", "application/fhir+json", []byte(`{"resourceType":"Patient","reſourceType":"Observation"}`), 400, "structure", fault.CodeFHIRInvalid, "a key that is not ASCII"},
		{"element spelled with a long s", "/fhir/Patient", "application/fhir+json", []byte(`{"resourceType":"Patient","ſtatus":"b"}`), 400, "structure", fault.CodeFHIRInvalid, "a key that is not ASCII"},
		// A key shaped like an element name but none: it may be patient
		// data put in the wrong place.
		{"unknown key twice", "/fhir/Patient", "application/fhir+json", []byte(`{"resourceType":"Patient","extension":[{"smithjohn9990000018":1,"smithjohn9990000018":2}]}`), 400, "structure", fault.CodeFHIRInvalid, "the key (not shown) twice"},
		{"letters-only unknown key twice", "/fhir/Patient", "application/fhir+json", []byte(`{"resourceType":"Patient","extension":[{"testpatient":1,"testpatient":2}]}`), 400, "structure", fault.CodeFHIRInvalid, "the key (not shown) twice"},
		{"primitive extension key twice", "/fhir/Patient", "application/fhir+json", []byte(`{"resourceType":"Patient","birthDate":"2000-01-01","_birthDate":{},"_birthDate":{}}`), 400, "structure", fault.CodeFHIRInvalid, `the key "_birthDate" twice`},
		{"key of digits twice", "/fhir/Patient", "application/fhir+json", []byte(`{"resourceType":"Patient","extension":[{"9990000018":1,"9990000018":2}]}`), 400, "structure", fault.CodeFHIRInvalid, "the key (not shown) twice"},
		{"unknown resourceType not quoted", "/fhir", "application/fhir+json", []byte(`{"resourceType":"9990000018"}`), 400, "invalid", fault.CodeFHIRInvalid, "unknown resourceType (not shown)"},
		{"number too large", "/fhir/Patient", "application/fhir+json", []byte(`{"resourceType":"Patient","extension":[{"url":"https://x.example/e","valueDecimal":1e99999}]}`), 400, "structure", fault.CodeFHIRInvalid, "a number too large to read, at offset 83"},
		{"long idempotency key", "/fhir", "application/fhir+json", bundle, 400, "invalid", fault.CodeFHIRInvalid, "Idempotency-Key"},
		// The message carries it through the store's headers, which
		// JetStream bounds.
		{"long bundle identifier", "/fhir", "application/fhir+json", []byte(`{"resourceType":"Bundle","type":"collection","identifier":{"system":"https://x.example","value":"` + strings.Repeat("W", 70000) + `"},"entry":[{"resource":{"resourceType":"Patient"}}]}`), 400, "too-long", fault.CodeFHIRInvalid, "Bundle.identifier.value is longer than 512 characters"},
		// A destination would update what was meant to be deleted.
		{"delete entry", "/fhir", "application/fhir+json", []byte(`{"resourceType":"Bundle","type":"transaction","entry":[{"request":{"method":"POST","url":"Patient"},"resource":{"resourceType":"Patient"}},{"request":{"method":"DELETE","url":"Condition?identifier=https://x.example|C-1"}}]}`), 400, "not-supported", fault.CodeFHIRInvalid, "request method DELETE is not supported"},
		{"delete entry with a resource", "/fhir", "application/fhir+json", []byte(`{"resourceType":"Bundle","type":"transaction","entry":[{"request":{"method":"DELETE","url":"Condition/1"},"resource":{"resourceType":"Condition"}}]}`), 400, "not-supported", fault.CodeFHIRInvalid, "request method DELETE"},
		{"patch entry", "/fhir", "application/fhir+json", []byte(`{"resourceType":"Bundle","type":"transaction","entry":[{"request":{"method":"PATCH","url":"Patient/1"},"resource":{"resourceType":"Parameters"}}]}`), 400, "not-supported", fault.CodeFHIRInvalid, "request method PATCH"},
		{"read batch", "/fhir", "application/fhir+json", []byte(`{"resourceType":"Bundle","type":"batch","entry":[{"request":{"method":"GET","url":"Patient/1"}}]}`), 400, "not-supported", fault.CodeFHIRInvalid, "request method GET"},
		{"collection at $process-message", "/fhir/$process-message", "application/fhir+json", []byte(`{"resourceType":"Bundle","type":"collection"}`), 400, "invalid", fault.CodeFHIRInvalid, "$process-message takes a Bundle of type message"},
		{"patient at $process-message", "/fhir/$process-message", "application/fhir+json", patient, 400, "invalid", fault.CodeFHIRInvalid, "takes a Bundle"},
		// JSON allows them; FHIR JSON does not (a server would refuse them).
		{"null element", "/fhir/Patient", "application/fhir+json", []byte(`{"resourceType":"Patient","name":null}`), 400, "structure", fault.CodeFHIRInvalid, "null: FHIR JSON has none but as an array's item (leave the element out), at offset 33"},
		{"empty array", "/fhir/Patient", "application/fhir+json", []byte(`{"resourceType":"Patient","name":[]}`), 400, "structure", fault.CodeFHIRInvalid, "an empty array"},
		{"empty object", "/fhir/Patient", "application/fhir+json", []byte(`{"resourceType":"Patient","name":[{}]}`), 400, "structure", fault.CodeFHIRInvalid, "an empty object"},
		{"empty string", "/fhir/Patient", "application/fhir+json", []byte(`{"resourceType":"Patient","name":[{"family":""}]}`), 400, "structure", fault.CodeFHIRInvalid, "an empty string"},
		{"control character", "/fhir/Patient", "application/fhir+json", []byte(`{"resourceType":"Patient","name":[{"family":"A\u0000B"}]}`), 400, "structure", fault.CodeFHIRInvalid, "a control character"},
		// JSON allows them; Unicode text and FHIR do not.
		{"unpaired surrogate", "/fhir/Patient", "application/fhir+json", []byte(`{"resourceType":"Patient","name":[{"family":"A\ud800B"}]}`), 400, "structure", fault.CodeFHIRInvalid, "an unpaired surrogate escape"},
		{"contained within contained", "/fhir/Patient", "application/fhir+json", []byte(`{"resourceType":"Patient","contained":[{"resourceType":"Organization","id":"o1","contained":[{"resourceType":"Organization","id":"o2"}]}]}`), 400, "invalid", fault.CodeFHIRInvalid, "dom-2"},
		{"contained within contained in a Bundle", "/fhir", "application/fhir+json", []byte(`{"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Patient","contained":[{"resourceType":"Organization","id":"o1","contained":[{"resourceType":"Organization","id":"o2"}]}]}}]}`), 400, "invalid", fault.CodeFHIRInvalid, "dom-2"},
		// A destination would refuse them later, or store a dangling reference.
		{"two entries with one fullUrl", "/fhir", "application/fhir+json", []byte(`{"resourceType":"Bundle","type":"transaction","entry":[{"fullUrl":"urn:uuid:6f0c1e0a-1d2b-4c3d-8e4f-5a6b7c8d9e01","resource":{"resourceType":"Patient"},"request":{"method":"POST","url":"Patient"}},{"fullUrl":"urn:uuid:6f0c1e0a-1d2b-4c3d-8e4f-5a6b7c8d9e01","resource":{"resourceType":"Patient"},"request":{"method":"POST","url":"Patient"}}]}`), 400, "invalid", fault.CodeFHIRInvalid, "entry 1 has the fullUrl of entry 0"},
		{"reference to no entry", "/fhir", "application/fhir+json", []byte(`{"resourceType":"Bundle","type":"collection","entry":[{"fullUrl":"urn:uuid:6f0c1e0a-1d2b-4c3d-8e4f-5a6b7c8d9e01","resource":{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"urn:uuid:6f0c1e0a-1d2b-4c3d-8e4f-5a6b7c8d9e02"}}}]}`), 400, "invalid", fault.CodeFHIRInvalid, "no entry's fullUrl resolves"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newInboundFixture(t, DefaultInboundConfig())
			hdr := map[string]string{}
			if tt.name == "long idempotency key" {
				hdr["Idempotency-Key"] = strings.Repeat("k", 300)
			}
			if tt.name == "gzip body" {
				hdr["Content-Encoding"] = "gzip"
			}
			if strings.HasPrefix(tt.name, "conditional create header") {
				hdr["If-None-Exist"] = "identifier=https://fhir.nhs.uk/Id/nhs-number|9990000026"
			}
			rec := f.do(http.MethodPost, tt.path, tt.ctype, tt.body, hdr)
			if rec.Code != tt.wantStatus {
				t.Fatalf("status = %d, want %d; body %s", rec.Code, tt.wantStatus, rec.Body)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/fhir+json" {
				t.Errorf("Content-Type = %q", ct)
			}
			issue, diag := outcomeOf(t, rec.Body.Bytes())
			// Nothing that reads as patient data in the body comes back.
			for _, pd := range []string{"SMITH", "9990000018", "smithjohn", "testpatient"} {
				if bytes.Contains(tt.body, []byte(pd)) && strings.Contains(rec.Body.String(), pd) {
					t.Errorf("the answer quotes %q from the body: %s", pd, rec.Body)
				}
			}
			if issue != tt.wantIssue || !strings.Contains(diag, tt.wantDiag) {
				t.Errorf("outcome = %s %q, want %s containing %q", issue, diag, tt.wantIssue, tt.wantDiag)
			}
			if n := len(f.host.all()); n != 0 {
				t.Errorf("stored %d messages", n)
			}
			if rec.Header().Get(HeaderMessageID) != "" {
				t.Error("rejected request has a message id header")
			}
			if got := testutil.ToFloat64(f.m.Rejected.WithLabelValues("ehr", string(tt.wantReason))); got != 1 {
				t.Errorf("rejected{%s} = %v", tt.wantReason, got)
			}
			if got := testutil.ToFloat64(f.m.Acks.WithLabelValues("ehr", fmt.Sprint(tt.wantStatus))); got != 1 {
				t.Errorf("acks{%d} = %v", tt.wantStatus, got)
			}
			// A body rejected for what it holds is kept for ops (its first
			// 64 KiB); one rejected before it was read, for its URL, or empty,
			// is not.
			q := f.host.quarantine()
			urlOnly := tt.name == "type not accepted" || tt.name == "path type not a type" || strings.HasPrefix(tt.name, "conditional create header")
			if tt.wantStatus == 400 && tt.wantReason != fault.CodeFHIREmpty && tt.name != "long idempotency key" && !urlOnly {
				want := tt.body[:min(len(tt.body), adapter.MaxQuarantineBytes)]
				if len(q) != 1 || q[0].reason != string(tt.wantReason) || !bytes.Equal(q[0].body, want) {
					t.Errorf("quarantined %d bodies, want the body (%d bytes) with reason %s", len(q), len(want), tt.wantReason)
				}
				if got := testutil.ToFloat64(f.m.Quarantined.WithLabelValues("ehr")); got != 1 {
					t.Errorf("quarantined = %v, want 1", got)
				}
				// The sender is told which entry keeps it, to quote to ops.
				if got := rec.Header().Get(HeaderQuarantineID); got != "Q1" {
					t.Errorf("%s = %q, want Q1", HeaderQuarantineID, got)
				}
			} else if len(q) != 0 {
				t.Errorf("quarantined %d bodies, want none", len(q))
			} else if got := rec.Header().Get(HeaderQuarantineID); got != "" {
				t.Errorf("%s = %q on a refusal that kept nothing", HeaderQuarantineID, got)
			}
		})
	}
}

func TestInboundTooDeepInsideStringIsFine(t *testing.T) {
	f := newInboundFixture(t, DefaultInboundConfig())
	body := []byte(`{"resourceType":"Patient","text":{"status":"generated","div":"` + strings.Repeat(`[{\"`, 300) + `"}}`)
	rec := f.do(http.MethodPost, "/fhir/Patient", "application/fhir+json", body, nil)
	if rec.Code != http.StatusAccepted {
		t.Fatalf("status = %d, body %s", rec.Code, rec.Body)
	}
}

func TestInboundSmallLimit(t *testing.T) {
	cfg := DefaultInboundConfig()
	patient := readTestdata(t, "patient.json")
	cfg.MaxBodyBytes = int64(len(patient))
	f := newInboundFixture(t, cfg)
	if rec := f.do(http.MethodPost, "/fhir/Patient", "application/fhir+json", patient, nil); rec.Code != http.StatusAccepted {
		t.Errorf("body of exactly the limit: status %d", rec.Code)
	}
	// Unknown length (chunked): the reader, not Content-Length, must stop it.
	req := localRequest(http.MethodPost, "/fhir/Patient", hideLen(append(patient, ' ')))
	req.ContentLength = -1
	req.Header.Set("Content-Type", "application/fhir+json")
	rec := httptest.NewRecorder()
	f.mux.ServeHTTP(rec, req)
	if rec.Code != http.StatusRequestEntityTooLarge {
		t.Errorf("one byte over the limit: status %d", rec.Code)
	}
}

// hideLen hides the length of b from net/http.
func hideLen(b []byte) *struct{ *bytes.Reader } { return &struct{ *bytes.Reader }{bytes.NewReader(b)} }

func TestInboundDuplicate(t *testing.T) {
	tests := []struct {
		name string
		path string
		body []byte
		hdr  map[string]string
	}{
		{"bundle identifier", "/fhir", readTestdata(t, "message-bundle.json"), nil},
		{"idempotency key", "/fhir/Patient", readTestdata(t, "patient.json"), map[string]string{"Idempotency-Key": "abc"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newInboundFixture(t, DefaultInboundConfig())
			first := f.do(http.MethodPost, tt.path, "application/fhir+json", tt.body, tt.hdr)
			second := f.do(http.MethodPost, tt.path, "application/fhir+json", tt.body, tt.hdr)
			if first.Code != 202 || second.Code != 202 {
				t.Fatalf("status = %d, %d", first.Code, second.Code)
			}
			id := first.Header().Get(HeaderMessageID)
			if got := second.Header().Get(HeaderMessageID); got != id || id == "" {
				t.Errorf("duplicate id header = %q, want %q", got, id)
			}
			if _, diag := outcomeOf(t, second.Body.Bytes()); !strings.Contains(diag, "duplicate of message "+id) {
				t.Errorf("diagnostics = %q", diag)
			}
			if got := testutil.ToFloat64(f.m.Duplicates.WithLabelValues("ehr")); got != 1 {
				t.Errorf("duplicates = %v", got)
			}
			if n := len(f.host.all()); n != 1 {
				t.Errorf("stored %d", n)
			}
		})
	}
}

func TestInboundStoreDown(t *testing.T) {
	tests := []struct {
		name, issue, diag string
		err               error
	}{
		{"store down", "transient", "the store did not confirm it",
			fault.Wrap(fault.Transient, fault.CodeStoreUnavailable, "store unavailable", errors.New("nats: no responders"))},
		// The ingester's refusal while routing is behind (router.max_backlog).
		{"routing behind", "throttled", "behind with routing",
			&fault.Error{Code: fault.CodeBacklog, Class: fault.Transient, Msg: "not stored: over router.max_backlog"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newInboundFixture(t, DefaultInboundConfig())
			f.host.err = tt.err
			rec := f.do(http.MethodPost, "/fhir", "application/fhir+json", readTestdata(t, "message-bundle.json"), nil)
			if rec.Code != http.StatusServiceUnavailable {
				t.Fatalf("status = %d", rec.Code)
			}
			if rec.Header().Get("Retry-After") == "" {
				t.Error("no Retry-After")
			}
			if rec.Header().Get(HeaderMessageID) != "" {
				t.Error("message id header on a failed store")
			}
			if issue, diag := outcomeOf(t, rec.Body.Bytes()); issue != tt.issue || !strings.Contains(diag, tt.diag) {
				t.Errorf("issue = %s, diagnostics %q; want %s, %q", issue, diag, tt.issue, tt.diag)
			}
			if got := testutil.ToFloat64(f.m.Acks.WithLabelValues("ehr", "503")); got != 1 {
				t.Errorf("acks{503} = %v", got)
			}
			if got := testutil.ToFloat64(f.m.Acks.WithLabelValues("ehr", "202")); got != 0 {
				t.Errorf("acks{202} = %v", got)
			}
		})
	}
}

func TestInboundMetadata(t *testing.T) {
	cfg := DefaultInboundConfig()
	cfg.ResourceTypes = []string{"Patient", "Encounter"}
	f := newInboundFixture(t, cfg)
	rec := f.do(http.MethodGet, "/fhir/metadata", "", nil, nil)
	if rec.Code != 200 || rec.Header().Get("Content-Type") != "application/fhir+json" {
		t.Fatalf("status %d, type %q", rec.Code, rec.Header().Get("Content-Type"))
	}
	var cs struct {
		ResourceType string
		Kind         string
		Rest         []struct{ Resource []struct{ Type string } }
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &cs); err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, r := range cs.Rest[0].Resource {
		types = append(types, r.Type)
	}
	if diff := cmp.Diff([]string{"Bundle", "Encounter", "Patient"}, types); diff != "" {
		t.Errorf("types (-want +got):\n%s", diff)
	}
	if cs.ResourceType != "CapabilityStatement" || cs.Kind != "instance" {
		t.Errorf("resourceType %q kind %q", cs.ResourceType, cs.Kind)
	}
	// Only JSON is spoken: a client asking for XML alone is told so.
	for _, tc := range []struct {
		path, accept string
		want         int
	}{
		{"/fhir/metadata", "application/fhir+xml", http.StatusNotAcceptable},
		{"/fhir/metadata?_format=xml", "", http.StatusNotAcceptable},
		{"/fhir/metadata?_format=json", "application/fhir+xml", http.StatusOK},
		{"/fhir/metadata", "application/fhir+xml, application/fhir+json;q=0.9", http.StatusOK},
		{"/fhir/metadata", "application/xml, */*;q=0.1", http.StatusOK},
	} {
		hdr := map[string]string{}
		if tc.accept != "" {
			hdr["Accept"] = tc.accept
		}
		if rec := f.do(http.MethodGet, tc.path, "", nil, hdr); rec.Code != tc.want {
			t.Errorf("GET %s, Accept %q: status %d, want %d", tc.path, tc.accept, rec.Code, tc.want)
		}
	}
}

// TestInboundPostAsksForXML checks that a post whose client asks for an
// XML answer alone is refused before it is stored (406), so it is not
// stored and answered in JSON the client takes for a failure, and that
// any JSON or wildcard in Accept, or _format=json, is enough.
func TestInboundPostAsksForXML(t *testing.T) {
	for _, tc := range []struct {
		path, accept string
		want         int
	}{
		{"/fhir/Patient", "application/fhir+xml", http.StatusNotAcceptable},
		{"/fhir/Patient?_format=xml", "", http.StatusNotAcceptable},
		{"/fhir/Patient?_format=json", "application/fhir+xml", http.StatusAccepted},
		{"/fhir/Patient", "application/fhir+xml, application/fhir+json;q=0.9", http.StatusAccepted},
		{"/fhir/Patient", "application/xml, */*;q=0.1", http.StatusAccepted},
		{"/fhir/Patient", "application/fhir+xml, application/*", http.StatusAccepted},
		{"/fhir/Patient", "", http.StatusAccepted},
	} {
		t.Run(tc.path+" "+tc.accept, func(t *testing.T) {
			f := newInboundFixture(t, DefaultInboundConfig())
			hdr := map[string]string{}
			if tc.accept != "" {
				hdr["Accept"] = tc.accept
			}
			rec := f.do(http.MethodPost, tc.path, "application/fhir+json", readTestdata(t, "patient.json"), hdr)
			if rec.Code != tc.want {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.want, rec.Body)
			}
			stored := len(f.host.all())
			if want := map[bool]int{true: 1, false: 0}[tc.want == http.StatusAccepted]; stored != want {
				t.Errorf("stored %d, want %d", stored, want)
			}
		})
	}
}

func TestInboundShutdown(t *testing.T) {
	f := newInboundFixture(t, DefaultInboundConfig())
	if err := f.in.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if err := f.in.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	rec := f.do(http.MethodPost, "/fhir/Patient", "application/fhir+json", readTestdata(t, "patient.json"), nil)
	if rec.Code != http.StatusServiceUnavailable {
		t.Errorf("status after shutdown = %d", rec.Code)
	}
	if n := len(f.host.all()); n != 0 {
		t.Errorf("stored %d after shutdown", n)
	}
}

func TestInboundConcurrent(t *testing.T) {
	f := newInboundFixture(t, DefaultInboundConfig())
	patient := readTestdata(t, "patient.json")
	var wg sync.WaitGroup
	codes := make(chan int, 50)
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			rec := f.do(http.MethodPost, "/fhir/Patient", "application/fhir+json", patient, map[string]string{"Idempotency-Key": fmt.Sprint("k", i%10)})
			codes <- rec.Code
		}(i)
	}
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != 202 {
			t.Errorf("status %d", c)
		}
	}
	if n := len(f.host.all()); n != 10 {
		t.Errorf("stored %d, want 10", n)
	}
	if got := testutil.ToFloat64(f.m.Duplicates.WithLabelValues("ehr")); got != 40 {
		t.Errorf("duplicates = %v, want 40", got)
	}
}

func TestInboundConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  InboundConfig
		want []string
	}{
		{"defaults", DefaultInboundConfig(), nil},
		{"all wrong", InboundConfig{MaxBodyBytes: 0, ResourceTypes: []string{"Patient", "Patient", "Bundle", "Nope"}}, []string{
			"max_body_bytes: must be positive",
			`resource_types[1]: "Patient" listed twice`,
			"resource_types[2]: Bundle is always accepted; do not list it",
			`resource_types[3]: "Nope" is not a resource type`,
		}},
		{"none", InboundConfig{MaxBodyBytes: 1}, []string{"resource_types: at least one type is required"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			errs := tt.cfg.Validate()
			if len(errs) != len(tt.want) {
				t.Fatalf("got %d errors %v, want %d", len(errs), errs, len(tt.want))
			}
			for i, e := range errs {
				if !strings.HasPrefix(e.Error(), tt.want[i]) {
					t.Errorf("error %d = %q, want prefix %q", i, e, tt.want[i])
				}
			}
		})
	}
}

func TestFactories(t *testing.T) {
	f := Factory{}
	if f.Type() != "fhir" || (OutboundFactory{}).Type() != "fhir" {
		t.Error("Type is not fhir")
	}
	ic, ok := f.NewConfig().(*InboundConfig)
	if !ok || ic.MaxBodyBytes != 10<<20 || len(ic.ResourceTypes) != 14 {
		t.Errorf("inbound defaults = %+v", f.NewConfig())
	}
	oc, ok := (OutboundFactory{}).NewConfig().(*OutboundConfig)
	if !ok || oc.Mode != ModeTransaction || oc.Timeout.Seconds() != 30 {
		t.Errorf("outbound defaults = %+v", (OutboundFactory{}).NewConfig())
	}
	in, err := f.NewInbound(context.Background(), adapter.Settings{}, newFakeHost(), ic)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := in.(adapter.HTTPInbound); !ok {
		t.Errorf("inbound is %T, not an HTTPInbound", in)
	}
	if _, err := f.NewInbound(context.Background(), adapter.Settings{}, newFakeHost(), "x"); err == nil {
		t.Error("wrong config type accepted")
	}
	if _, err := f.NewTranslator(nil); err != nil {
		t.Error(err)
	}
}

// TestInboundOfficialExamples posts the official FHIR R4 examples of the
// accepted types; each must be stored.
func TestInboundOfficialExamples(t *testing.T) {
	dir := filepath.Join("..", "..", "..", "shared", "corpora", "fhir-r4-examples")
	files, _ := filepath.Glob(filepath.Join(dir, "*.json"))
	if len(files) == 0 {
		corpustest.Missing(t, "corpus ../shared/corpora/fhir-r4-examples absent; skipping official examples")
	}
	accepted := map[string]bool{}
	for _, ty := range DefaultResourceTypes() {
		accepted[ty] = true
	}
	n := 0
	for _, file := range files {
		body, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var head struct {
			ResourceType, Type string
			Entry              []struct{ Request *struct{ Method string } }
		}
		if json.Unmarshal(body, &head) != nil {
			continue
		}
		// Entries that delete, patch or read are refused: a destination
		// is sent resources to create or update.
		refused := ""
		for i, e := range head.Entry {
			if e.Request != nil && e.Request.Method != "POST" && e.Request.Method != "PUT" {
				refused = fmt.Sprintf("Bundle.entry[%d].request.method", i)
				break
			}
		}
		path := "/fhir/" + head.ResourceType
		switch {
		case accepted[head.ResourceType]:
		case head.ResourceType == "Bundle" && (head.Type == "transaction" || head.Type == "batch" || head.Type == "message" || head.Type == "collection"):
			path = "/fhir"
		default:
			continue
		}
		n++
		t.Run(filepath.Base(file), func(t *testing.T) {
			f := newInboundFixture(t, DefaultInboundConfig())
			rec := f.do(http.MethodPost, path, "application/fhir+json", body, nil)
			switch {
			case refused == "" && rec.Code != http.StatusAccepted:
				t.Errorf("status %d: %s", rec.Code, rec.Body)
			case refused != "" && (rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), `"expression":["`+refused+`"]`)):
				t.Errorf("status %d: %s; want 400 naming %s", rec.Code, rec.Body, refused)
			}
		})
	}
	if n == 0 {
		t.Error("no examples of accepted types found")
	}
}

func FuzzInboundCheck(f *testing.F) {
	for _, name := range []string{"message-bundle.json", "patient.json", "observation.json", "collection-no-nhs.json"} {
		f.Add(readTestdata(f, name), "")
	}
	f.Add([]byte(`{"resourceType":"Patient"}`), "Patient")
	f.Add([]byte(`[[[[`), "")
	f.Add([]byte(`{"resourceType":"Bundle","type":"batch","ENTRY":[{},{}],"\u0065ntry":[]}`), "")
	f.Add([]byte("{\"resourceType\":\"Patient\",\"id\":\"\xff\"}"), "Patient")
	f.Add([]byte(`{"resourceType":"Patient","name":[{},{},{},{}]}`), "Patient")
	for _, b := range corpusJSON(f, 80) {
		f.Add(b, "")
	}
	in, err := NewInbound(adapter.Settings{}, newFakeHost(), DefaultInboundConfig())
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte, pathType string) {
		c, rj, ok := in.check(body, pathType)
		if ok {
			if c.resourceType == "" {
				t.Error("accepted without a resourceType")
			}
			if !json.Valid(stripBOM(body)) {
				t.Error("accepted invalid JSON")
			}
			if !utf8.Valid(body) {
				t.Error("accepted invalid UTF-8")
			}
			if n := countContainers(body); n > in.maxContainers() {
				t.Errorf("accepted %d objects and arrays", n)
			}
			var b struct {
				Entry []json.RawMessage `json:"entry"`
			}
			if c.resourceType == "Bundle" && json.Unmarshal(stripBOM(body), &b) == nil && len(b.Entry) > MaxBundleEntries {
				t.Errorf("accepted a Bundle of %d entries", len(b.Entry))
			}
			return
		}
		if rj.status < 400 || rj.detail == "" {
			t.Errorf("rejection without status or detail: %+v", rj)
		}
	})
}

func BenchmarkInboundPost(b *testing.B) {
	host := newFakeHost()
	in, err := NewInbound(adapter.Settings{}, host, DefaultInboundConfig())
	if err != nil {
		b.Fatal(err)
	}
	h := in.Routes()[RoutePostBundle]
	body := readTestdata(b, "message-bundle.json")
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		req := localRequest(http.MethodPost, "/fhir", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/fhir+json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusAccepted {
			b.Fatal(rec.Code)
		}
	}
}

// TestInboundBearerToken: with bearer_token set, posts without the token
// (or with a wrong one) get 401 and nothing is stored.
func TestInboundBearerToken(t *testing.T) {
	t.Setenv("JUNCTION_TEST_FHIR_TOKEN", "s3cret-token-long-enough")
	cfg := DefaultInboundConfig()
	cfg.BearerToken = "env:JUNCTION_TEST_FHIR_TOKEN"
	m := telemetry.NewMetrics(prometheus.NewRegistry())
	host := newFakeHost()
	in, err := NewInbound(adapter.Settings{Name: "ehr", Metrics: m, Secrets: testSecrets{}}, host, cfg)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	for p, h := range in.Routes() {
		mux.Handle(p, h)
	}
	body := []byte(`{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9990000042"}]}`)
	for _, tt := range []struct {
		name, auth string
		want       int
	}{
		{"missing", "", http.StatusUnauthorized},
		{"wrong", "Bearer nope", http.StatusUnauthorized},
		{"not bearer", "Basic s3cret-token-long-enough", http.StatusUnauthorized},
		{"right", "Bearer s3cret-token-long-enough", http.StatusAccepted},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req := localRequest(http.MethodPost, "/fhir/Patient", bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/fhir+json")
			if tt.auth != "" {
				req.Header.Set("Authorization", tt.auth)
			}
			rec := httptest.NewRecorder()
			mux.ServeHTTP(rec, req)
			if rec.Code != tt.want {
				t.Errorf("status %d, want %d: %s", rec.Code, tt.want, rec.Body)
			}
		})
	}
	if n := len(host.all()); n != 1 {
		t.Errorf("%d messages stored, want 1", n)
	}
	cfg.BearerToken = "inline-token"
	if errs := cfg.Validate(); len(errs) == 0 {
		t.Error("an inline token was accepted")
	}
}

// TestInboundConcurrencyLimit: with every slot taken, a post gets 503 with
// Retry-After and nothing is stored.
func TestInboundConcurrencyLimit(t *testing.T) {
	cfg := DefaultInboundConfig()
	cfg.MaxConcurrent = 1
	f := newInboundFixture(t, cfg)
	f.in.slots <- struct{}{} // a post in progress
	body := []byte(`{"resourceType":"Patient"}`)
	rec := f.do(http.MethodPost, "/fhir/Patient", "application/fhir+json", body, nil)
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" {
		t.Errorf("busy: status %d, Retry-After %q", rec.Code, rec.Header().Get("Retry-After"))
	}
	<-f.in.slots
	if rec := f.do(http.MethodPost, "/fhir/Patient", "application/fhir+json", body, nil); rec.Code != http.StatusAccepted {
		t.Errorf("after the slot frees: status %d: %s", rec.Code, rec.Body)
	}
	if n := len(f.host.all()); n != 1 {
		t.Errorf("%d stored, want 1", n)
	}
}

// TestOtherRequestsGetOperationOutcome checks that what the endpoint does
// not serve is answered as FHIR clients expect: an OperationOutcome, with
// Allow on a 405.
func TestOtherRequestsGetOperationOutcome(t *testing.T) {
	f := newInboundFixture(t, DefaultInboundConfig())
	for _, tc := range []struct {
		method, path string
		status       int
		allow        string
	}{
		{http.MethodGet, "/fhir", http.StatusMethodNotAllowed, "POST"},
		{http.MethodGet, "/fhir/Patient", http.StatusMethodNotAllowed, "POST"},
		{http.MethodPut, "/fhir/Patient", http.StatusMethodNotAllowed, "POST"},
		{http.MethodDelete, "/fhir/metadata", http.StatusMethodNotAllowed, "GET"},
		{http.MethodPost, "/fhir/metadata", http.StatusMethodNotAllowed, "GET"},
		{http.MethodGet, "/fhir/Patient/9990000018", http.StatusNotFound, ""},
		{http.MethodPost, "/fhir/Patient/_search", http.StatusNotFound, ""},
		// An update, patch or delete of an instance: no method is.
		{http.MethodPut, "/fhir/Patient/1", http.StatusMethodNotAllowed, ""},
		{http.MethodDelete, "/fhir/Patient/1", http.StatusMethodNotAllowed, ""},
		{http.MethodPatch, "/fhir/Patient/1", http.StatusMethodNotAllowed, ""},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			rejected := testutil.ToFloat64(f.m.Rejected.WithLabelValues("ehr", string(fault.CodeFHIRNotSupported)))
			answered := testutil.ToFloat64(f.m.Acks.WithLabelValues("ehr", strconv.Itoa(tc.status)))
			rec := f.do(tc.method, tc.path, "", nil, nil)
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.status, rec.Body)
			}
			if got := testutil.ToFloat64(f.m.Rejected.WithLabelValues("ehr", string(fault.CodeFHIRNotSupported))); got != rejected+1 {
				t.Errorf("rejected{fhir.not-supported} went from %v to %v, want one more", rejected, got)
			}
			if got := testutil.ToFloat64(f.m.Acks.WithLabelValues("ehr", strconv.Itoa(tc.status))); got != answered+1 {
				t.Errorf("acks{%d} went from %v to %v, want one more", tc.status, answered, got)
			}
			if _, diag := outcomeOf(t, rec.Body.Bytes()); tc.method != http.MethodGet && strings.Contains(diag, "reads (") {
				t.Errorf("a %s is answered as if it were a read: %q", tc.method, diag)
			}
			if code, _ := outcomeOf(t, rec.Body.Bytes()); code != "not-supported" {
				t.Errorf("issue code %q, want not-supported", code)
			}
			if got, ok := rec.Header()["Allow"]; strings.Join(got, ",") != tc.allow || ok != (tc.status == http.StatusMethodNotAllowed) {
				t.Errorf("Allow %q (given: %v), want %q", got, ok, tc.allow)
			}
			if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/fhir+json") {
				t.Errorf("Content-Type %q", ct)
			}
		})
	}
	// What it does serve is unchanged.
	if rec := f.do(http.MethodGet, "/fhir/metadata", "", nil, nil); rec.Code != http.StatusOK {
		t.Errorf("metadata: %d", rec.Code)
	}
}

// TestInboundExposedNeedsToken checks that an endpoint reachable from
// other machines without a bearer token is refused, unless the config
// says something in front authenticates, which is then said at start.
func TestInboundExposedNeedsToken(t *testing.T) {
	t.Setenv("JUNCTION_FHIR_TEST_TOKEN", "s3cret-long-enough")
	tests := []struct {
		name    string
		exposed bool
		token   string
		allow   bool
		refused bool
		warn    bool
	}{
		{"loopback", false, "", false, false, false},
		{"exposed without a token", true, "", false, true, false},
		{"exposed, unauthenticated allowed", true, "", true, false, true},
		{"exposed with a token", true, "env:JUNCTION_FHIR_TEST_TOKEN", false, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			cfg := DefaultInboundConfig()
			cfg.BearerToken, cfg.AllowUnauthenticated = tt.token, tt.allow
			set := adapter.Settings{Name: "fhir", Secrets: testSecrets{}, HTTPExposed: tt.exposed,
				Logger: slog.New(slog.NewTextHandler(&logs, nil))}
			_, err := NewInbound(set, newFakeHost(), cfg)
			if refused := err != nil; refused != tt.refused {
				t.Fatalf("NewInbound error %v, want refused %v", err, tt.refused)
			}
			if tt.refused && !strings.Contains(err.Error(), "bearer_token: required") {
				t.Errorf("refusal %q does not say what is missing", err)
			}
			if got := strings.Contains(logs.String(), "allow_unauthenticated"); got != tt.warn {
				t.Errorf("warned %v, want %v; logs:\n%s", got, tt.warn, logs.String())
			}
		})
	}
}

// TestInboundSlowAndLargeBodies checks that a body still arriving holds
// no processing slot (a slow sender cannot lock others out), that bodies
// arriving draw on the memory budget so that past it a post gets 503 and
// Retry-After, and that ordinary posts still go through meanwhile.
func TestInboundSlowAndLargeBodies(t *testing.T) {
	patient := readTestdata(t, "patient.json")
	cfg := DefaultInboundConfig()
	cfg.MaxConcurrent = 1
	cfg.MaxBodyBytes = 1 << 20
	cfg.MaxInflightBytes = 5 << 20
	f := newInboundFixture(t, cfg)
	type upload struct {
		pw   *io.PipeWriter
		done chan *httptest.ResponseRecorder
	}
	start := func(n int) upload {
		pr, pw := io.Pipe()
		t.Cleanup(func() { pw.CloseWithError(errors.New("test over")) })
		req := localRequest(http.MethodPost, "/fhir", pr)
		req.Header.Set("Content-Type", "application/fhir+json")
		u := upload{pw: pw, done: make(chan *httptest.ResponseRecorder, 1)}
		go func() {
			rec := httptest.NewRecorder()
			f.mux.ServeHTTP(rec, req)
			u.done <- rec
		}()
		go func() { _, _ = pw.Write(bytes.Repeat([]byte(" "), n)) }()
		return u
	}
	waitLeft := func(want int64) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for f.in.mem.Left() != want {
			if time.Now().After(deadline) {
				t.Fatalf("budget left %d, want %d", f.in.mem.Left(), want)
			}
			time.Sleep(time.Millisecond)
		}
	}
	// Each 600 KiB arriving holds a 1 MiB buffer, 960 KiB of it drawn.
	var held []upload
	for i := range 5 {
		held = append(held, start(600<<10))
		waitLeft(5<<20 - int64(i+1)*960<<10)
	}
	over := start(600 << 10)
	select {
	case rec := <-over.done:
		if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" {
			t.Errorf("post past the budget: %d (Retry-After %q), want 503 with Retry-After", rec.Code, rec.Header().Get("Retry-After"))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a post past the budget was not refused")
	}
	// With one slot and five bodies arriving, an ordinary post is taken.
	if rec := f.do(http.MethodPost, "/fhir/Patient", "application/fhir+json", patient, nil); rec.Code != http.StatusAccepted {
		t.Fatalf("ordinary post while bodies arrive: %d %s", rec.Code, rec.Body)
	}
	// Finished (here: cut short), the uploads give back what they drew.
	for _, u := range held {
		u.pw.CloseWithError(errors.New("sender gone"))
		if rec := <-u.done; rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), `"incomplete"`) {
			t.Errorf("upload cut short: %d %s, want 400 with issue incomplete", rec.Code, rec.Body)
		}
	}
	waitLeft(5 << 20)
	// Counted as cut short, not as a supplier's invalid FHIR.
	if got := testutil.ToFloat64(f.m.Rejected.WithLabelValues("ehr", string(fault.CodeFHIRIncomplete))); got != 5 {
		t.Errorf("incomplete bodies counted %v, want 5", got)
	}
	if got := testutil.ToFloat64(f.m.Rejected.WithLabelValues("ehr", string(fault.CodeFHIRInvalid))); got != 0 {
		t.Errorf("invalid resources counted %v, want 0", got)
	}
}

// TestInboundSchema: with the FHIR R4 JSON schema configured, what the
// models read but FHIR does not allow (a date in another format, an
// element FHIR does not define) is refused with its path, and valid
// resources and the official examples' Bundles are taken.
func TestInboundSchema(t *testing.T) {
	path := filepath.Join("..", "..", "..", "shared", "corpora", "fhir-r4-schema", "fhir.schema.json")
	if _, err := os.Stat(path); err != nil {
		corpustest.Missing(t, "FHIR R4 JSON schema not present at %s; skipping the schema check", path)
	}
	cfg := DefaultInboundConfig()
	cfg.Schema = path
	f := newInboundFixture(t, cfg)
	tests := []struct {
		name, path string
		body       []byte
		status     int
		diag       string
	}{
		{"valid patient", "/fhir/Patient", readTestdata(t, "patient.json"), 202, ""},
		{"valid message bundle", "/fhir", readTestdata(t, "message-bundle.json"), 202, ""},
		{"birthDate in another format", "/fhir/Patient", []byte(`{"resourceType":"Patient","birthDate":"01/01/1980"}`), 400, "Patient.birthDate"},
		{"impossible date", "/fhir/Patient", []byte(`{"resourceType":"Patient","birthDate":"1980-13-45"}`), 400, "Patient.birthDate"},
		{"unknown element", "/fhir/Patient", []byte(`{"resourceType":"Patient","fooBar":1}`), 400, "Patient"},
		{"unknown key that may be patient data", "/fhir/Patient", []byte(`{"resourceType":"Patient","smithjohn9990000018":1}`), 400, "Patient.(not shown)"},
		{"nulls lining up a repeating primitive's extensions", "/fhir/Patient", []byte(`{"resourceType":"Patient","name":[{"given":["A",null],"_given":[null,{"extension":[{"url":"https://x.example/e","valueString":"b"}]}]}]}`), 202, ""},
		{"id with a space", "/fhir/Patient", []byte(`{"resourceType":"Patient","id":"a b"}`), 400, "Patient.id"},
		{"bundle timestamp not an instant", "/fhir", []byte(`{"resourceType":"Bundle","type":"collection","timestamp":"yesterday"}`), 400, "Bundle.timestamp"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := f.do(http.MethodPost, tt.path, "application/fhir+json", tt.body, nil)
			if rec.Code != tt.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tt.status, rec.Body)
			}
			if tt.diag != "" {
				// The path in the diagnostics (the schema's) or as the
				// issue's expression (the checks made without it).
				_, diag := outcomeOf(t, rec.Body.Bytes())
				var oo struct {
					Issue []struct{ Expression []string }
				}
				_ = json.Unmarshal(rec.Body.Bytes(), &oo)
				named := strings.Contains(diag, tt.diag) || len(oo.Issue) > 0 && slices.Contains(oo.Issue[0].Expression, tt.diag)
				if !named || strings.Contains(rec.Body.String(), "1980") || strings.Contains(rec.Body.String(), "yesterday") || strings.Contains(rec.Body.String(), "smithjohn") {
					t.Errorf("answer %s: want the path %s and no value", rec.Body, tt.diag)
				}
			}
		})
	}
	bad := cfg
	bad.Schema = filepath.Join(t.TempDir(), "nope.json")
	if errs := bad.Validate(); len(errs) == 0 {
		t.Error("a missing schema file passed validation")
	}
}

// TestAcceptedWithWarnings checks the warnings a 202 carries for what the
// translation will count as data-quality issues: an NHS number failing
// its check digit (never quoted) and a patient named only by a literal
// reference.
func TestAcceptedWithWarnings(t *testing.T) {
	tests := []struct {
		name, path, body, warning string
	}{
		{"valid NHS number", "/fhir/Patient", `{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9990000018"}]}`, ""},
		{"NHS number failing its check digit", "/fhir/Patient", `{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9990000019"}]}`, "check digit"},
		{"NHS number of nine digits", "/fhir/Patient", `{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"999000001"}]}`, "an NHS number is ten digits"},
		{"literal reference only", "/fhir/Observation", `{"resourceType":"Observation","status":"final","code":{"text":"Hb"},"subject":{"reference":"Patient/123"}}`, "literal reference"},
		{"hospital number only", "/fhir/Patient", `{"resourceType":"Patient","identifier":[{"system":"https://fhir.example-trust.nhs.uk/Id/mrn","value":"H1"}]}`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newInboundFixture(t, DefaultInboundConfig())
			rec := f.do(http.MethodPost, tt.path, "application/fhir+json", []byte(tt.body), nil)
			if rec.Code != http.StatusAccepted {
				t.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
			var oo struct {
				Issue []struct{ Severity, Diagnostics string }
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &oo); err != nil {
				t.Fatal(err)
			}
			switch {
			case tt.warning == "" && len(oo.Issue) != 1:
				t.Errorf("answer %s, want no warning", rec.Body)
			case tt.warning != "" && (len(oo.Issue) != 2 || oo.Issue[1].Severity != "warning" || !strings.Contains(oo.Issue[1].Diagnostics, tt.warning)):
				t.Errorf("answer %s, want a warning saying %q", rec.Body, tt.warning)
			}
			if strings.Contains(rec.Body.String(), "9990000019") {
				t.Errorf("the answer quotes the NHS number: %s", rec.Body)
			}
		})
	}
}

// localRequest is httptest.NewRequest addressed to 127.0.0.1, as this
// machine's own tools address the endpoint: without a bearer token the
// endpoint refuses requests to other names (access.CheckLocal).
func localRequest(method, target string, body io.Reader) *http.Request {
	r := httptest.NewRequest(method, target, body)
	r.Host = "127.0.0.1:8080"
	return r
}

// TestInboundIdempotencyKeyLimit: an Idempotency-Key of the largest
// length taken is stored and recognised on a resend; one character more
// is refused, unstored.
func TestInboundIdempotencyKeyLimit(t *testing.T) {
	for _, tt := range []struct {
		n      int
		status int
		stored int
	}{
		{maxIdempotencyKey, http.StatusAccepted, 1},
		{maxIdempotencyKey + 1, http.StatusBadRequest, 0},
	} {
		t.Run(strconv.Itoa(tt.n), func(t *testing.T) {
			f := newInboundFixture(t, DefaultInboundConfig())
			hdr := map[string]string{HeaderIdempotencyKey: strings.Repeat("k", tt.n)}
			for range 2 {
				if rec := f.do(http.MethodPost, "/fhir/Patient", "application/fhir+json", readTestdata(t, "patient.json"), hdr); rec.Code != tt.status {
					t.Fatalf("status %d, want %d", rec.Code, tt.status)
				}
			}
			if n := len(f.host.all()); n != tt.stored {
				t.Errorf("stored %d, want %d", n, tt.stored)
			}
		})
	}
}
