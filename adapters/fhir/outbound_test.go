package fhir

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/junction-fhir/junction/pkg/adapter"
	"github.com/junction-fhir/junction/pkg/envelope"
	"github.com/junction-fhir/junction/pkg/fault"
	jfhir "github.com/junction-fhir/junction/pkg/fhir"
)

// testSecrets resolves env: and file: references, like the engine's
// resolver, for tests.
type testSecrets struct{}

func (testSecrets) Resolve(ref string) (string, error) {
	switch {
	case strings.HasPrefix(ref, "env:"):
		v, ok := os.LookupEnv(strings.TrimPrefix(ref, "env:"))
		if !ok {
			return "", errors.New("environment variable not set")
		}
		return v, nil
	case strings.HasPrefix(ref, "file:"):
		b, err := os.ReadFile(strings.TrimPrefix(ref, "file:"))
		return string(b), err
	}
	return "", errors.New("not a reference")
}

// recorded is one request a test server saw.
type recorded struct {
	Method, Path, ContentType, RequestID, Authorization string
	Body                                                []byte
}

// fhirServer is a test FHIR server answering with status and reply.
type fhirServer struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []recorded
}

func newFHIRServer(t *testing.T, h func(w http.ResponseWriter, r *http.Request)) *fhirServer {
	t.Helper()
	s := &fhirServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		s.mu.Lock()
		s.reqs = append(s.reqs, recorded{r.Method, r.URL.EscapedPath(), r.Header.Get("Content-Type"), r.Header.Get(HeaderRequestID), r.Header.Get("Authorization"), body})
		s.mu.Unlock()
		h(w, r)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *fhirServer) requests() []recorded {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]recorded(nil), s.reqs...)
}

func reply(status int, body string, hdr ...string) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/fhir+json")
		for i := 0; i+1 < len(hdr); i += 2 {
			w.Header().Set(hdr[i], hdr[i+1])
		}
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}
}

func newTestOutbound(t *testing.T, cfg OutboundConfig) *Outbound {
	t.Helper()
	o, err := NewOutbound(adapter.Settings{Name: "ehr", Secrets: testSecrets{}}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = o.Shutdown(context.Background()) })
	return o
}

func delivery(t *testing.T) *adapter.Delivery {
	return &adapter.Delivery{MessageID: "01TESTID000001", Route: "adt", Destination: "ehr",
		ContentType: envelope.ContentTypeFHIR, Body: readTestdata(t, "message-bundle.json"), IdempotencyKey: "01TESTID000001/adt/ehr", Attempt: 1}
}

func TestOutboundTransaction(t *testing.T) {
	t.Setenv("JUNCTION_TEST_FHIR_TOKEN", "Bearer test-token-long-enough")
	srv := newFHIRServer(t, reply(200, `{"resourceType":"Bundle","type":"transaction-response"}`))
	o := newTestOutbound(t, OutboundConfig{URL: srv.URL + "/fhir/", Authorization: "env:JUNCTION_TEST_FHIR_TOKEN", Timeout: 5 * time.Second, Mode: ModeTransaction})
	d := delivery(t)
	rcpt, err := o.Send(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(adapter.Receipt{Status: "200", Reply: `{"resourceType":"Bundle","type":"transaction-response"}`}, rcpt); diff != "" {
		t.Errorf("receipt (-want +got):\n%s", diff)
	}
	reqs := srv.requests()
	if len(reqs) != 1 {
		t.Fatalf("requests = %d", len(reqs))
	}
	r := reqs[0]
	gotHead := []string{r.Method, r.Path, r.ContentType, r.RequestID, r.Authorization}
	wantHead := []string{"POST", "/fhir", "application/fhir+json", d.IdempotencyKey, "Bearer test-token-long-enough"}
	if diff := cmp.Diff(wantHead, gotHead); diff != "" {
		t.Errorf("method, path, type, request id, auth (-want +got):\n%s", diff)
	}
	var tx struct {
		ResourceType, Type string
		Entry              []struct {
			FullURL  string         `json:"fullUrl"`
			Resource map[string]any `json:"resource"`
			Request  struct{ Method, URL string }
		}
	}
	if err := json.Unmarshal(r.Body, &tx); err != nil {
		t.Fatal(err)
	}
	encFull := "urn:uuid:2b6c1a36-8c1e-4f0e-9d1a-0c6a1e1f0003"
	encID := jfhir.DeterministicUUID(d.IdempotencyKey, encFull)
	type entry struct{ FullURL, Method, URL, Type, ID string }
	var got []entry
	for _, e := range tx.Entry {
		id, _ := e.Resource["id"].(string)
		rt, _ := e.Resource["resourceType"].(string)
		got = append(got, entry{e.FullURL, e.Request.Method, e.Request.URL, rt, id})
	}
	want := []entry{
		{"urn:uuid:2b6c1a36-8c1e-4f0e-9d1a-0c6a1e1f0002", "PUT", "Patient?identifier=https%3A%2F%2Ffhir.nhs.uk%2FId%2Fnhs-number|9990000018", "Patient", ""},
		{encFull, "PUT", "Encounter/" + encID, "Encounter", encID},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("transaction entries (-want +got):\n%s", diff)
	}
	if tx.ResourceType != "Bundle" || tx.Type != "transaction" {
		t.Errorf("bundle %s/%s", tx.ResourceType, tx.Type)
	}
	// The Encounter's reference to the Patient is kept for the server to resolve.
	subj, _ := tx.Entry[1].Resource["subject"].(map[string]any)
	if subj["reference"] != "urn:uuid:2b6c1a36-8c1e-4f0e-9d1a-0c6a1e1f0002" {
		t.Errorf("subject = %v", subj)
	}
}

func TestTransactionBundleIsDeterministic(t *testing.T) {
	body := readTestdata(t, "message-bundle.json")
	a, err := TransactionBundle(body, "k1")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := TransactionBundle(body, "k1")
	c, _ := TransactionBundle(body, "k2")
	if string(a) != string(b) {
		t.Error("same key gave different transactions")
	}
	if string(a) == string(c) {
		t.Error("different keys gave the same identifier-less ids")
	}
}

func TestTransactionBundleRules(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		wantURL []string
	}{
		{"first identifier with system and value", `{"resourceType":"Bundle","type":"collection","entry":[{"fullUrl":"urn:uuid:a","resource":{"resourceType":"Organization","identifier":[{"value":"novalue-system"},{"system":"https://fhir.nhs.uk/Id/ods-organization-code","value":"RX1"}]}}]}`,
			[]string{"Organization?identifier=https%3A%2F%2Ffhir.nhs.uk%2FId%2Fods-organization-code|RX1"}},
		{"search escaping", `{"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Patient","identifier":[{"system":"urn:x","value":"a|b,c$d\\e"}]}}]}`,
			[]string{`Patient?identifier=urn%3Ax|a%5C%7Cb%5C%2Cc%5C%24d%5C%5Ce`}},
		{"single resource", `{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9990000026"}]}`,
			[]string{"Patient?identifier=https%3A%2F%2Ffhir.nhs.uk%2FId%2Fnhs-number|9990000026"}},
		{"header and empty entries dropped", `{"resourceType":"Bundle","type":"message","entry":[{"resource":{"resourceType":"MessageHeader"}},{"request":{"method":"DELETE","url":"Patient/1"}}]}`,
			nil},
		{"no fullUrl gets a deterministic one", `{"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Observation","id":"old","status":"final"}}]}`,
			[]string{"Observation/" + jfhir.DeterministicUUID("k", "urn:uuid:"+jfhir.DeterministicUUID("k", "entry", "0"))}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := TransactionBundle([]byte(tt.body), "k")
			if err != nil {
				t.Fatal(err)
			}
			var tx struct {
				Entry []struct {
					Resource map[string]any
					Request  struct{ URL string }
				}
			}
			if err := json.Unmarshal(out, &tx); err != nil {
				t.Fatal(err)
			}
			var urls []string
			for _, e := range tx.Entry {
				urls = append(urls, e.Request.URL)
				if id, ok := e.Resource["id"]; ok && !strings.HasSuffix(e.Request.URL, "/"+id.(string)) {
					t.Errorf("resource id %v does not match %s", id, e.Request.URL)
				}
			}
			if diff := cmp.Diff(tt.wantURL, urls); diff != "" {
				t.Errorf("request URLs (-want +got):\n%s", diff)
			}
		})
	}
}

func TestTransactionBundleErrors(t *testing.T) {
	for _, body := range []string{`not json`, `{"resourceType":"Bundle","type":"collection","entry":[{"resource":{"id":"x"}}]}`, `{"resourceType":"Bundle","entry":7}`} {
		t.Run(body, func(t *testing.T) {
			_, err := TransactionBundle([]byte(body), "k")
			if err == nil || fault.IsTransient(err) {
				t.Errorf("err = %v, want a permanent fault", err)
			}
		})
	}
}

func TestSetID(t *testing.T) {
	tests := []struct{ in, id, want string }{
		{`{"resourceType":"Patient","id":"a","active":true}`, "b", `{"resourceType":"Patient","id":"b","active":true}`},
		{`{"resourceType":"Patient","active":true}`, "b", `{"resourceType":"Patient","id":"b","active":true}`},
		{`{"active":true,"resourceType":"Patient"}`, "b", `{"active":true,"resourceType":"Patient","id":"b"}`},
		{`{"resourceType":"Patient","id":"a","active":true}`, "", `{"resourceType":"Patient","active":true}`},
		{`{"resourceType":"Patient", "name": [ {"family":"TESTPATIENT"} ]}`, "", `{"resourceType":"Patient","name":[ {"family":"TESTPATIENT"} ]}`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := setID([]byte(tt.in), tt.id)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("setID = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestOutboundAnswers(t *testing.T) {
	oo := `{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"invalid","diagnostics":"Patient.birthDate is invalid"}]}`
	tests := []struct {
		name       string
		handler    func(http.ResponseWriter, *http.Request)
		wantErr    bool
		transient  bool
		wantCode   fault.Code
		wantDetail string
		wantRcpt   adapter.Receipt
		// wantWait is the Retry-After the fault carries.
		wantWait time.Duration
	}{
		{name: "201 with location", handler: reply(201, `{}`, "Location", "https://srv.example/fhir/Bundle/1"),
			wantRcpt: adapter.Receipt{Status: "201", Reply: "{}", Location: "https://srv.example/fhir/Bundle/1"}},
		{name: "400 with outcome", handler: reply(400, oo), wantErr: true, wantCode: fault.CodeDestRejected, wantDetail: "error invalid: Patient.birthDate is invalid"},
		{name: "422 plain text", handler: reply(422, "unprocessable"), wantErr: true, wantCode: fault.CodeDestRejected, wantDetail: "unprocessable"},
		{name: "503", handler: reply(503, oo), wantErr: true, transient: true, wantCode: fault.CodeDestUnavailable, wantDetail: "Patient.birthDate"},
		{name: "500", handler: reply(500, ""), wantErr: true, transient: true, wantCode: fault.CodeDestUnavailable},
		{name: "409 version conflict", handler: reply(409, oo), wantErr: true, transient: true, wantCode: fault.CodeDestUnavailable, wantDetail: "Patient.birthDate"},
		{name: "412 without a merge", handler: reply(412, oo), wantErr: true, wantCode: fault.CodeDestRejected, wantDetail: "Patient.birthDate"},
		{name: "429", handler: reply(429, "slow down", "Retry-After", "5"), wantErr: true, transient: true, wantCode: fault.CodeDestUnavailable, wantDetail: "slow down", wantWait: 5 * time.Second},
		{name: "503 with retry-after", handler: reply(503, "", "Retry-After", "120"), wantErr: true, transient: true, wantCode: fault.CodeDestUnavailable, wantWait: 2 * time.Minute},
		{name: "redirect not followed", handler: reply(302, "", "Location", "/elsewhere"), wantErr: true, wantCode: fault.CodeDestRejected, wantDetail: "Location: /elsewhere"},
		{name: "200 with a web page", handler: reply(200, "<html><body>Welcome to nginx!</body></html>", "Content-Type", "text/html; charset=utf-8"), wantErr: true, wantCode: fault.CodeDestRejected},
		{name: "long reply cut", handler: reply(200, strings.Repeat("x", 10000)), wantRcpt: adapter.Receipt{Status: "200", Reply: strings.Repeat("x", 4096)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newFHIRServer(t, tt.handler)
			o := newTestOutbound(t, OutboundConfig{URL: srv.URL, Timeout: 5 * time.Second, Mode: ModeTransaction})
			rcpt, err := o.Send(context.Background(), delivery(t))
			if !tt.wantErr {
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(tt.wantRcpt, rcpt); diff != "" {
					t.Errorf("receipt (-want +got):\n%s", diff)
				}
				return
			}
			checkFault(t, err, tt.transient, tt.wantCode)
			f := fault.As(err)
			if !strings.Contains(f.Detail, tt.wantDetail) {
				t.Errorf("detail = %q, want it to contain %q", f.Detail, tt.wantDetail)
			}
			if got := fault.RetryAfterOf(err); got != tt.wantWait {
				t.Errorf("Retry-After carried = %v, want %v", got, tt.wantWait)
			}
			if strings.Contains(err.Error(), "birthDate") {
				t.Errorf("Error() holds the server's reply: %v", err)
			}
		})
	}
}

func checkFault(t *testing.T, err error, transient bool, code fault.Code) {
	t.Helper()
	if err == nil {
		t.Fatal("no error")
	}
	if fault.IsTransient(err) != transient || fault.CodeOf(err) != code {
		t.Errorf("err = %v (transient %v), want %s transient %v", err, fault.IsTransient(err), code, transient)
	}
}

func TestOutboundTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := newFHIRServer(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	defer close(release)
	o := newTestOutbound(t, OutboundConfig{URL: srv.URL, Timeout: 50 * time.Millisecond, Mode: ModeTransaction})
	_, err := o.Send(context.Background(), delivery(t))
	checkFault(t, err, true, fault.CodeDestUnavailable)
	// The safe reason says what went wrong, for logs and the trail.
	if f := fault.As(err); f == nil || f.Msg != "fhir: request failed: timed out" {
		t.Errorf("reason %v, want it to say the request timed out", err)
	}
}

func TestOutboundConnectionRefused(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	o := newTestOutbound(t, OutboundConfig{URL: "http://" + addr, Timeout: 5 * time.Second, Mode: ModeTransaction})
	_, err = o.Send(context.Background(), delivery(t))
	checkFault(t, err, true, fault.CodeDestUnavailable)
	if f := fault.As(err); f == nil || f.Msg != "fhir: request failed: connection refused" {
		t.Errorf("reason %v, want it to say the connection was refused", err)
	}
}

func TestOutboundMessageMode(t *testing.T) {
	srv := newFHIRServer(t, reply(200, `{"resourceType":"Bundle","type":"message"}`))
	o := newTestOutbound(t, OutboundConfig{URL: srv.URL + "/base", Timeout: 5 * time.Second, Mode: ModeMessage})
	d := delivery(t)
	if _, err := o.Send(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	r := srv.requests()[0]
	if r.Path != "/base/$process-message" || string(r.Body) != string(d.Body) {
		t.Errorf("path %q, body changed: %v", r.Path, string(r.Body) != string(d.Body))
	}
	// A collection is not a message.
	d.Body = readTestdata(t, "collection-no-nhs.json")
	_, err := o.Send(context.Background(), d)
	checkFault(t, err, false, fault.CodeTranslate)
	if n := len(srv.requests()); n != 1 {
		t.Errorf("requests = %d, want 1", n)
	}
}

func TestOutboundRefusesV2AndShutdown(t *testing.T) {
	srv := newFHIRServer(t, reply(200, "{}"))
	o := newTestOutbound(t, OutboundConfig{URL: srv.URL, Timeout: time.Second, Mode: ModeTransaction})
	d := delivery(t)
	d.ContentType = envelope.ContentTypeHL7v2
	_, err := o.Send(context.Background(), d)
	checkFault(t, err, false, fault.CodeDestRejected)
	if err := o.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	_, err = o.Send(context.Background(), delivery(t))
	checkFault(t, err, true, fault.CodeDestUnavailable)
	if n := len(srv.requests()); n != 0 {
		t.Errorf("requests = %d", n)
	}
}

func TestOutboundAuthorizationFromFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(path, []byte("Basic dGVzdDp0ZXN0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := newFHIRServer(t, reply(200, "{}"))
	o := newTestOutbound(t, OutboundConfig{URL: srv.URL, Authorization: "file:" + path, Timeout: time.Second, Mode: ModeTransaction})
	if _, err := o.Send(context.Background(), delivery(t)); err != nil {
		t.Fatal(err)
	}
	if got := srv.requests()[0].Authorization; got != "Basic dGVzdDp0ZXN0" {
		t.Errorf("Authorization = %q", got)
	}
	// Rotation: the next request reads the new value.
	if err := os.WriteFile(path, []byte("Basic bmV3Om5ldw=="), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := o.Send(context.Background(), delivery(t)); err != nil {
		t.Fatal(err)
	}
	if got := srv.requests()[1].Authorization; got != "Basic bmV3Om5ldw==" {
		t.Errorf("Authorization after rotation = %q", got)
	}
	// Mid-rotation, the file missing or empty: the attempt fails, but as
	// one to retry, not a permanent failure that dead-letters at once.
	for _, step := range []struct {
		name   string
		change func() error
	}{
		{"missing", func() error { return os.Remove(path) }},
		{"empty", func() error { return os.WriteFile(path, nil, 0o600) }},
	} {
		if err := step.change(); err != nil {
			t.Fatal(err)
		}
		_, err := o.Send(context.Background(), delivery(t))
		if err == nil || !fault.IsTransient(err) || fault.CodeOf(err) != fault.CodeConfig {
			t.Errorf("secret file %s: %v (transient %v), want a transient config fault", step.name, err, fault.IsTransient(err))
		}
	}
	if n := len(srv.requests()); n != 2 {
		t.Errorf("%d requests sent, want 2 (none without the secret)", n)
	}
}

func TestNewOutboundErrors(t *testing.T) {
	tests := []struct {
		name string
		set  adapter.Settings
		cfg  OutboundConfig
	}{
		{"unset env", adapter.Settings{Secrets: testSecrets{}}, OutboundConfig{URL: "http://x", Authorization: "env:JUNCTION_TEST_UNSET_VAR", Timeout: time.Second, Mode: ModeTransaction}},
		{"no resolver", adapter.Settings{}, OutboundConfig{URL: "http://x", Authorization: "env:X", Timeout: time.Second, Mode: ModeTransaction}},
		{"invalid", adapter.Settings{}, OutboundConfig{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := NewOutbound(tt.set, tt.cfg); err == nil || fault.CodeOf(err) != fault.CodeConfig {
				t.Errorf("err = %v, want %s", err, fault.CodeConfig)
			}
		})
	}
}

func TestOutboundConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  OutboundConfig
		want []string
	}{
		{"defaults plus url", OutboundConfig{URL: "https://fhir.example/r4", Timeout: time.Second, Mode: "message", Authorization: "env:TOKEN"}, nil},
		{"all wrong", OutboundConfig{Authorization: "Bearer abc", Mode: "rest"}, []string{
			"url: required",
			"authorization: must be a secret reference (env:NAME or file:PATH), not an inline value",
			"timeout: must be positive",
			`mode: "rest" is not "transaction" or "message"`,
		}},
		{"bad url", OutboundConfig{URL: "ftp://x", Timeout: time.Second, Mode: "transaction"}, []string{"url: scheme must be http or https"}},
		{"url with query", OutboundConfig{URL: "https://x/fhir?a=1", Timeout: time.Second, Mode: "transaction"}, []string{"url: must not have a query or fragment"}},
		{"bare env prefix", OutboundConfig{URL: "https://x", Authorization: "env:", Timeout: time.Second, Mode: "transaction"}, []string{"authorization: must be a secret reference (env:NAME or file:PATH), not an inline value"}},
		{"merge types", OutboundConfig{URL: "https://x", Timeout: time.Second, Mode: "transaction", Merge: []string{"Patient", "patient", "MessageHeader", "Patient", "RelatedPerson"}}, []string{
			`merge[1]: "patient" is not a resource type a transaction updates`,
			`merge[2]: "MessageHeader" is not a resource type a transaction updates`,
			`merge[3]: "Patient" given twice`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, e := range tt.cfg.Validate() {
				got = append(got, e.Error())
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Validate (-want +got):\n%s", diff)
			}
		})
	}
}

func FuzzTransactionBundle(f *testing.F) {
	for _, name := range []string{"message-bundle.json", "patient.json", "collection-no-nhs.json"} {
		f.Add(readTestdata(f, name))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		out, err := TransactionBundle(body, "k")
		if err != nil {
			return
		}
		if !json.Valid(out) {
			t.Errorf("transaction is not JSON: %q", out)
		}
	})
}

func BenchmarkTransactionBundle(b *testing.B) {
	body := readTestdata(b, "message-bundle.json")
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := TransactionBundle(body, "k"); err != nil {
			b.Fatal(err)
		}
	}
}

// TestTransactionBundleConditionalCreate: an entry the sender posted as
// a conditional create (ifNoneExist) stays one, so the receiver makes the
// resource only when none matches and never replaces an existing record
// with what may be a stub. Other entries are updated by identifier.
func TestTransactionBundleConditionalCreate(t *testing.T) {
	body := `{"resourceType":"Bundle","type":"transaction","entry":[` +
		`{"fullUrl":"urn:uuid:p1","request":{"method":"POST","url":"Patient","ifNoneExist":"identifier=https://fhir.nhs.uk/Id/nhs-number|9990000026"},` +
		`"resource":{"resourceType":"Patient","id":"stub","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9990000026"}]}},` +
		`{"fullUrl":"urn:uuid:o1","request":{"method":"POST","url":"Observation"},` +
		`"resource":{"resourceType":"Observation","identifier":[{"system":"https://lab.example/Id/obs","value":"O1"}],"subject":{"reference":"urn:uuid:p1"}}}]}`
	out, err := TransactionBundle([]byte(body), "k")
	if err != nil {
		t.Fatal(err)
	}
	var tx struct {
		Entry []struct {
			FullURL  string `json:"fullUrl"`
			Resource map[string]any
			Request  struct {
				Method, URL string
				IfNoneExist string `json:"ifNoneExist"`
			}
		}
	}
	if err := json.Unmarshal(out, &tx); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range tx.Entry {
		got = append(got, e.FullURL+" "+e.Request.Method+" "+e.Request.URL+" "+e.Request.IfNoneExist)
		if _, ok := e.Resource["id"]; ok && e.Request.Method == "POST" {
			t.Errorf("posted resource keeps an id: %v", e.Resource)
		}
	}
	want := []string{
		"urn:uuid:p1 POST Patient identifier=https://fhir.nhs.uk/Id/nhs-number|9990000026",
		"urn:uuid:o1 PUT Observation?identifier=https%3A%2F%2Flab.example%2FId%2Fobs|O1 ",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("entries (-want +got):\n%s", diff)
	}
}

// TestPlainHTTPDestinationIsWarned: a destination over plain HTTP to
// another machine starts, but says at start that patient data crosses in
// clear; loopback and https do not.
func TestPlainHTTPDestinationIsWarned(t *testing.T) {
	tests := []struct {
		url  string
		warn bool
	}{
		{"http://ehr.example.nhs.uk/fhir", true},
		{"https://ehr.example.nhs.uk/fhir", false},
		{"http://127.0.0.1:8080/fhir", false},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			var logged bytes.Buffer
			cfg := DefaultOutboundConfig()
			cfg.URL = tt.url
			if _, err := NewOutbound(adapter.Settings{Name: "ehr", Logger: slog.New(slog.NewTextHandler(&logged, nil))}, cfg); err != nil {
				t.Fatal(err)
			}
			if got := strings.Contains(logged.String(), "plain HTTP"); got != tt.warn {
				t.Fatalf("warned %v, want %v; log:\n%s", got, tt.warn, logged.String())
			}
		})
	}
}
