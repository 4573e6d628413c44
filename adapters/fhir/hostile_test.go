package fhir

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/junction-fhir/junction/pkg/corpustest"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/junction-fhir/junction/pkg/fault"
)

// hostileServer serves the endpoint over real HTTP on loopback.
func hostileServer(t *testing.T, cfg InboundConfig) (*inboundFixture, *httptest.Server) {
	t.Helper()
	f := newInboundFixture(t, cfg)
	srv := httptest.NewServer(f.mux)
	t.Cleanup(srv.Close)
	return f, srv
}

// postMeasured posts body and returns the status, the reply and the bytes
// the whole process allocated meanwhile (client and server alike).
func postMeasured(t *testing.T, url string, body []byte, hideLength bool) (int, []byte, uint64) {
	t.Helper()
	var r io.Reader = bytes.NewReader(body)
	if hideLength {
		r = hideLen(body)
	}
	req, err := http.NewRequest(http.MethodPost, url, r)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/fhir+json")
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST: %v", err)
	}
	reply, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatalf("reading the reply: %v", err)
	}
	return resp.StatusCode, reply, after.TotalAlloc - before.TotalAlloc
}

// repeatJoin returns n copies of elem joined by commas.
func repeatJoin(elem string, n int) string {
	if n == 0 {
		return ""
	}
	return strings.Repeat(elem+",", n-1) + elem
}

func bundleOf(n int, entry string) []byte {
	return []byte(`{"resourceType":"Bundle","type":"collection","entry":[` + repeatJoin(entry, n) + `]}`)
}

// TestHostileFHIRIngress posts input built to hurt the endpoint. Each must
// be refused with its status and an OperationOutcome, nothing stored, and
// the memory allocated while handling it bounded: at most allocFactor
// times the body (reading it costs about twice its size) plus 4 MiB.
func TestHostileFHIRIngress(t *testing.T) {
	const deep = 100_000
	const allocFactor = 8
	smallEntry := `{"resource":{"resourceType":"Basic"}}`
	// An entry of about 120 bytes, so 100,000 of them pass the 10 MiB limit.
	bigEntry := `{"fullUrl":"urn:uuid:` + strings.Repeat("0", 36) + `","resource":{"resourceType":"Basic","id":"` + strings.Repeat("b", 40) + `"}}`
	tests := []struct {
		name       string
		path       string
		body       []byte
		hideLength bool
		wantStatus int
		wantIssue  string
		wantReason fault.Code
		wantDiag   string
	}{
		{"arrays nested 100,000 deep", "/fhir", []byte(strings.Repeat("[", deep) + strings.Repeat("]", deep)), false,
			400, "structure", fault.CodeFHIRInvalidJSON, "deeper than 100"},
		{"objects nested 100,000 deep", "/fhir", []byte(strings.Repeat(`{"a":`, deep) + "1" + strings.Repeat("}", deep)), false,
			400, "structure", fault.CodeFHIRInvalidJSON, "deeper than 100"},
		{"objects nested 100,000 deep inside a Patient", "/fhir/Patient", []byte(`{"resourceType":"Patient","extension":[` + strings.Repeat(`{"extension":[`, deep) + strings.Repeat("]}", deep) + `]}`), false,
			400, "structure", fault.CodeFHIRInvalidJSON, "deeper than 100"},
		{"Bundle of 100,000 entries within the size limit", "/fhir", bundleOf(100_000, smallEntry), false,
			413, "too-costly", fault.CodeFHIRTooLarge, "100000 entries; the limit is 10000"},
		{"Bundle of 100,000 empty entries", "/fhir", bundleOf(100_000, `{}`), false,
			413, "too-costly", fault.CodeFHIRTooLarge, "entries; the limit is 10000"},
		{"Bundle of 100,000 entries beyond the size limit", "/fhir", bundleOf(100_000, bigEntry), false,
			413, "too-costly", fault.CodeFHIRTooLarge, "larger than 10485760 bytes"},
		{"Bundle of 100,000 entries beyond the size limit, chunked", "/fhir", bundleOf(100_000, bigEntry), true,
			413, "too-costly", fault.CodeFHIRTooLarge, "larger than 10485760 bytes"},
		{"Patient with 1,000,000 empty names", "/fhir/Patient", []byte(`{"resourceType":"Patient","name":[` + repeatJoin("{}", 1_000_000) + `]}`), false,
			413, "too-costly", fault.CodeFHIRTooLarge, "more than 163840 objects and arrays"},
		{"empty body", "/fhir", nil, false,
			400, "required", fault.CodeFHIREmpty, "empty body"},
		{"invalid UTF-8 in a string", "/fhir/Patient", []byte("{\"resourceType\":\"Patient\",\"name\":[{\"family\":\"TEST\xff\xfePATIENT\"}]}"), false,
			400, "structure", fault.CodeFHIRInvalidJSON, "not valid UTF-8: invalid byte at offset 49"},
		{"UTF-16 body", "/fhir/Patient", utf16LE(`{"resourceType":"Patient"}`), false,
			400, "structure", fault.CodeFHIRInvalidJSON, "not valid UTF-8"},
		{"truncated UTF-8 sequence at the end", "/fhir/Patient", []byte("{\"resourceType\":\"Patient\",\"id\":\"a\"}\xe2\x82"), false,
			400, "structure", fault.CodeFHIRInvalidJSON, "not valid UTF-8: invalid byte at offset 35"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, srv := hostileServer(t, DefaultInboundConfig())
			status, reply, alloc := postMeasured(t, srv.URL+tt.path, tt.body, tt.hideLength)
			t.Logf("%d-byte body: status %d, %d bytes allocated", len(tt.body), status, alloc)
			if status != tt.wantStatus {
				t.Fatalf("status = %d, want %d; reply %.300s", status, tt.wantStatus, reply)
			}
			issue, diag := outcomeOf(t, reply)
			if issue != tt.wantIssue || !strings.Contains(diag, tt.wantDiag) {
				t.Errorf("outcome = %s %q, want %s containing %q", issue, diag, tt.wantIssue, tt.wantDiag)
			}
			if n := len(f.host.all()); n != 0 {
				t.Errorf("stored %d messages", n)
			}
			if got := testutil.ToFloat64(f.m.Rejected.WithLabelValues("ehr", string(tt.wantReason))); got != 1 {
				t.Errorf("rejected{%s} = %v", tt.wantReason, got)
			}
			readSize := min(int64(len(tt.body)), DefaultMaxBodyBytes)
			if limit := uint64(allocFactor*readSize + 4<<20); alloc > limit {
				t.Errorf("allocated %d bytes for a %d-byte body, want at most %d", alloc, len(tt.body), limit)
			}
		})
	}
}

func utf16LE(s string) []byte {
	out := []byte{0xFF, 0xFE}
	for _, c := range []byte(s) {
		out = append(out, c, 0)
	}
	return out
}

// TestBundleEntryLimitBoundary shows the entry limit is exact: a Bundle of
// MaxBundleEntries entries is stored, one more is refused.
func TestBundleEntryLimitBoundary(t *testing.T) {
	entry := `{"resource":{"resourceType":"Basic"}}`
	f, srv := hostileServer(t, DefaultInboundConfig())
	status, reply, _ := postMeasured(t, srv.URL+"/fhir", bundleOf(MaxBundleEntries, entry), false)
	if status != http.StatusAccepted {
		t.Fatalf("%d entries: status %d, %.300s", MaxBundleEntries, status, reply)
	}
	status, reply, _ = postMeasured(t, srv.URL+"/fhir", bundleOf(MaxBundleEntries+1, entry), false)
	if status != http.StatusRequestEntityTooLarge {
		t.Fatalf("%d entries: status %d, %.300s", MaxBundleEntries+1, status, reply)
	}
	_, diag := outcomeOf(t, reply)
	if want := fmt.Sprintf("Bundle has %d entries; the limit is %d", MaxBundleEntries+1, MaxBundleEntries); !strings.Contains(diag, want) {
		t.Errorf("diagnostics %q, want %q", diag, want)
	}
	if n := len(f.host.all()); n != 1 {
		t.Errorf("stored %d, want 1", n)
	}
}

// TestContainerBudgetScalesWithBodyLimit shows the object and array budget
// follows max_body_bytes, with a floor.
func TestContainerBudgetScalesWithBodyLimit(t *testing.T) {
	for _, tt := range []struct {
		maxBody int64
		want    int
	}{
		{DefaultMaxBodyBytes, DefaultMaxBodyBytes / BytesPerContainer},
		{1 << 30, (1 << 30) / BytesPerContainer},
		{1000, MinContainers},
	} {
		cfg := DefaultInboundConfig()
		cfg.MaxBodyBytes = tt.maxBody
		// A body limit past the default needs a memory budget to match.
		cfg.MaxInflightBytes = max(5*tt.maxBody, DefaultMaxInflightBytes)
		f := newInboundFixture(t, cfg)
		if got := f.in.maxContainers(); got != tt.want {
			t.Errorf("max_body_bytes %d: budget %d, want %d", tt.maxBody, got, tt.want)
		}
		// One container over the budget is refused; at the budget it is
		// not refused for its shape. (Bodies for budgets past the default
		// would take too long to decode here.)
		at := []byte(`{"resourceType":"Patient","name":[` + repeatJoin("{}", tt.want-2) + `]}`)
		over := []byte(`{"resourceType":"Patient","name":[` + repeatJoin("{}", tt.want-1) + `]}`)
		if int64(len(over)) > tt.maxBody || tt.maxBody > DefaultMaxBodyBytes {
			continue
		}
		if _, rj, ok := f.in.check(at, "Patient"); !ok && rj.status == http.StatusRequestEntityTooLarge {
			t.Errorf("max_body_bytes %d: %d containers refused: %s", tt.maxBody, tt.want, rj.detail)
		}
		if _, rj, ok := f.in.check(over, "Patient"); ok || rj.status != http.StatusRequestEntityTooLarge {
			t.Errorf("max_body_bytes %d: %d containers: ok %v, %+v", tt.maxBody, tt.want+1, ok, rj)
		}
	}
}

// TestBundleEntryCount compares the scanning count with encoding/json,
// which is what decides how many entries the models decode.
func TestBundleEntryCount(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want int
	}{
		{"none", `{"resourceType":"Bundle"}`, 0},
		{"empty", `{"entry":[]}`, 0},
		{"empty with space", `{"entry":[ ] }`, 0},
		{"three", `{"entry":[{},{"resource":{"entry":[1,2,3,4]}},{}]}`, 3},
		{"scalars", `{"entry":[1, "a,b", null, [1,2]]}`, 4},
		{"spaces", "{ \"entry\" :\n [ {} , {} ] }", 2},
		{"upper case key", `{"ENTRY":[{},{}]}`, 2},
		{"escaped key", `{"\u0065ntry":[{},{}]}`, 2},
		{"escaped quote in key", `{"en\"try":[{},{}],"entry":[{}]}`, 1},
		{"nested entry ignored", `{"a":{"entry":[{},{}]},"entry":[{}]}`, 1},
		{"entry in a string value", `{"a":"entry","entry":[{}]}`, 1},
		{"key after string value", `{"a":"x","b":["entry"],"entry":[{},{},{}]}`, 3},
		{"not an array", `{"entry":{"a":[1,2]}}`, 0},
		{"root array", `[{"entry":[1]}]`, 0},
		{"duplicate keys: largest", `{"entry":[{},{},{}],"entry":[{}]}`, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !json.Valid([]byte(tt.doc)) {
				t.Fatalf("test document is not JSON: %s", tt.doc)
			}
			if got := bundleEntryCount([]byte(tt.doc)); got != tt.want {
				t.Errorf("bundleEntryCount = %d, want %d", got, tt.want)
			}
			var b struct {
				Entry []json.RawMessage `json:"entry"`
			}
			if json.Unmarshal([]byte(tt.doc), &b) == nil && len(b.Entry) > tt.want {
				t.Errorf("encoding/json decodes %d entries, more than the %d counted", len(b.Entry), tt.want)
			}
		})
	}
}

func FuzzBundleEntryCount(f *testing.F) {
	for _, s := range []string{`{"entry":[{},{}]}`, `{"ENTRY":[1]}`, `{"\u0065ntry":[{}]}`, `{"a":{"entry":[1]},"entry":[]}`} {
		f.Add([]byte(s))
	}
	for _, b := range corpusJSON(f, 40) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		if !json.Valid(doc) {
			return
		}
		n := bundleEntryCount(doc)
		var b struct {
			Entry []json.RawMessage `json:"entry"`
		}
		if json.Unmarshal(doc, &b) == nil && len(b.Entry) > n {
			t.Fatalf("encoding/json decodes %d entries, the scan counted %d", len(b.Entry), n)
		}
	})
}

// corporaDir is the shared third-party corpora: ../shared/corpora from the
// repository root.
var corporaDir = filepath.Join("..", "..", "..", "shared", "corpora")

// corpusJSON returns up to n official FHIR R4 examples from the corpora, or
// none, with a log line, when the corpora are absent.
func corpusJSON(tb testing.TB, n int) [][]byte {
	tb.Helper()
	files, _ := filepath.Glob(filepath.Join(corporaDir, "fhir-r4-examples", "*.json"))
	if len(files) == 0 {
		corpustest.Note(tb, "no FHIR examples under %s; fuzzing without corpus seeds", corporaDir)
		return nil
	}
	var out [][]byte
	for _, file := range files {
		if len(out) == n {
			break
		}
		if b, err := os.ReadFile(file); err == nil {
			out = append(out, b)
		}
	}
	return out
}
