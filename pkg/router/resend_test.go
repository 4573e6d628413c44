package router

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/junction-fhir/junction/pkg/audit"
	"github.com/junction-fhir/junction/pkg/envelope"
)

func TestResendContent(t *testing.T) {
	const v2 = envelope.ContentTypeHL7v2
	base := "MSH|^~\\&|PAS|RX1|||20260101||ADT^A01|C1|P|2.4\rEVN|A01\rPID|1||9990000018\r"
	tests := []struct {
		name string
		a, b string
		ct   string
		same bool
	}{
		{"identical", base, base, v2, true},
		{"new MSH-7", base, "MSH|^~\\&|PAS|RX1|||20260102||ADT^A01|C1|P|2.4\rEVN|A01\rPID|1||9990000018\r", v2, true},
		{"LF separators", base, "MSH|^~\\&|PAS|RX1|||20260101||ADT^A01|C1|P|2.4\nEVN|A01\nPID|1||9990000018\n", v2, true},
		{"CR LF separators, none at the end", base, "MSH|^~\\&|PAS|RX1|||20260101||ADT^A01|C1|P|2.4\r\nEVN|A01\r\nPID|1||9990000018", v2, true},
		{"blank lines", base, "MSH|^~\\&|PAS|RX1|||20260101||ADT^A01|C1|P|2.4\r\rEVN|A01\r\n\r\nPID|1||9990000018\r", v2, true},
		{"a field changed", base, "MSH|^~\\&|PAS|RX1|||20260101||ADT^A01|C1|P|2.4\rEVN|A01\rPID|1||9990000026\r", v2, false},
		{"segments joined", base, "MSH|^~\\&|PAS|RX1|||20260101||ADT^A01|C1|P|2.4\rEVN|A01PID|1||9990000018\r", v2, false},
		{"a segment more", base, base + "PV1|1|I\r", v2, false},
		{"FHIR identical", `{"a": 1}`, `{"a": 1}`, envelope.ContentTypeFHIR, true},
		{"FHIR serialised again with other white space", `{"a": 1, "b": ["x y"]}`, "{\n  \"a\":1,\r\n\t\"b\": [ \"x y\" ]\n}\n", envelope.ContentTypeFHIR, true},
		{"FHIR white space inside a string is content", `{"a":"x y"}`, `{"a":"x  y"}`, envelope.ContentTypeFHIR, false},
		{"FHIR keys in another order are other content", `{"a":1,"b":2}`, `{"b":2,"a":1}`, envelope.ContentTypeFHIR, false},
		{"FHIR value changed", `{"a": 1}`, `{"a": 2}`, envelope.ContentTypeFHIR, false},
		{"FHIR that is not JSON is compared whole", `{"a": 1`, `{"a":1`, envelope.ContentTypeFHIR, false},
		{"FHIR stamped again", `{"resourceType":"Bundle","meta":{"lastUpdated":"2026-12-07T09:00:00Z","profile":["p"]},"identifier":{"value":"m1"},"timestamp":"2026-12-07T09:00:00Z","entry":[]}`,
			`{"resourceType":"Bundle","meta":{"lastUpdated":"2026-12-07T09:05:00Z","profile":["p"]},"identifier":{"value":"m1"},"timestamp":"2026-12-07T09:05:00Z","entry":[]}`, envelope.ContentTypeFHIR, true},
		{"FHIR stamped for the first time", `{"resourceType":"Bundle","identifier":{"value":"m1"},"entry":[]}`,
			`{"resourceType":"Bundle","meta":{"lastUpdated":"2026-12-07T09:05:00Z"},"identifier":{"value":"m1"},"timestamp":"2026-12-07T09:05:00Z","entry":[]}`, envelope.ContentTypeFHIR, false},
		{"FHIR meta changed beside its time", `{"meta":{"lastUpdated":"2026-12-07T09:00:00Z","profile":["p"]},"a":1}`,
			`{"meta":{"lastUpdated":"2026-12-07T09:05:00Z","profile":["q"]},"a":1}`, envelope.ContentTypeFHIR, false},
		{"FHIR timestamps within entries are content", `{"entry":[{"resource":{"timestamp":"1"}}]}`, `{"entry":[{"resource":{"timestamp":"2"}}]}`, envelope.ContentTypeFHIR, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := &envelope.Envelope{ContentType: tt.ct, Raw: []byte(tt.b), DedupeKey: "k"}
			if got := sameMessage(env, []byte(tt.a)); got != tt.same {
				t.Errorf("sameMessage = %v, want %v", got, tt.same)
			}
			orig := &envelope.Envelope{ContentType: tt.ct, Raw: []byte(tt.a), DedupeKey: "k"}
			if got := reuseKey(env) == reuseKey(orig); got != tt.same {
				t.Errorf("reuse keys equal = %v, want %v", got, tt.same)
			}
			x := newDedupeIndex(time.Hour, 16)
			if got := x.contentHash(env) == x.contentHash(orig); got != tt.same {
				t.Errorf("content hashes equal = %v, want %v", got, tt.same)
			}
		})
	}
}

// c1Message is message id from pas with control id C1 and the given raw
// bytes.
func c1Message(id, raw string) *envelope.Envelope {
	e := testEnv(id, "pas")
	e.DedupeKey, e.Raw = "pas|C1", []byte(raw)
	return e
}

// TestAcceptResendWithOtherSeparators checks that a resend whose segment
// separators changed on the way (CR to LF) is a resend, not a reuse of
// the control id.
func TestAcceptResendWithOtherSeparators(t *testing.T) {
	js := testStore(t)
	acc, c := testAcceptor(t, js, time.Hour)
	logBatch(t, js, []*envelope.Envelope{c1Message("A", "MSH|^~\\&|PAS|RX1|||20260101||ADT^A01|C1|P|2.4\rEVN|A01\rPID|1||9990000018\r")})
	handleNext(t, acc, c)
	logBatch(t, js, []*envelope.Envelope{c1Message("A2", "MSH|^~\\&|PAS|RX1|||20260102||ADT^A01|C1|P|2.4\nEVN|A01\nPID|1||9990000018\n")})
	handleNext(t, acc, c)
	m := acc.r.o.Metrics
	if got := testutil.ToFloat64(m.Duplicates.WithLabelValues("pas")); got != 1 {
		t.Errorf("duplicates %v, want 1", got)
	}
	if got := testutil.ToFloat64(m.DataQuality.WithLabelValues("pas", "control_id_reused")); got != 0 {
		t.Errorf("control_id_reused %v, want 0", got)
	}
}

// TestAcceptFindsReuseUnderLegacyKey checks that a message kept, before
// the reuse key hashed only the content after MSH, under a key hashing
// the whole message is still found by its byte-identical resend.
func TestAcceptFindsReuseUnderLegacyKey(t *testing.T) {
	js := testStore(t)
	acc, c := testAcceptor(t, js, time.Hour)
	first := "MSH|^~\\&|PAS|RX1|||20260101||ADT^A01|C1|P|2.4\rPID|1||9990000018\r"
	reused := "MSH|^~\\&|PAS|RX1|||20260102||ADT^A01|C1|P|2.4\rPID|1||9990000026\r"
	logBatch(t, js, []*envelope.Envelope{c1Message("A", first)})
	handleNext(t, acc, c)
	// The reused-id message as an earlier version accepted it.
	old := c1Message("B", reused)
	old.DedupeKey = "pas|C1|" + audit.Hash(old.Raw)[:16]
	logBatch(t, js, []*envelope.Envelope{old})
	handleNext(t, acc, c)
	logBatch(t, js, []*envelope.Envelope{c1Message("B2", reused)})
	handleNext(t, acc, c)
	if got := testutil.ToFloat64(acc.r.o.Metrics.Duplicates.WithLabelValues("pas")); got != 1 {
		t.Errorf("duplicates %v, want 1: the resend was not found under the earlier key", got)
	}
}

// TestWithoutMembers checks the in-place scan that leaves a FHIR
// message's stamps out of its resend content against a reference that
// decodes the JSON, on JSON whose strings hold what the scan must step
// over.
func TestWithoutMembers(t *testing.T) {
	tests := []struct{ in, want string }{
		{`{"timestamp":"t","a":1}`, `{"a":1}`},
		{`{"a":1,"timestamp":"t"}`, `{"a":1}`},
		{`{"timestamp":"t"}`, `{}`},
		{`{"meta":{"lastUpdated":"x"},"a":[1,{"b":"}"}]}`, `{"meta":{},"a":[1,{"b":"}"}]}`},
		{`{"meta":{"profile":["p"],"lastUpdated":"x","tag":[]},"timestamp":"t"}`, `{"meta":{"profile":["p"],"tag":[]}}`},
		{`{"a":"say \"timestamp\": {","timestamp":"t","b":"\\"}`, `{"a":"say \"timestamp\": {","b":"\\"}`},
		{`{"entry":[{"resource":{"timestamp":"1","meta":{"lastUpdated":"2"}}}],"n":null,"t":true,"f":-1.5e3}`, `{"entry":[{"resource":{"timestamp":"1","meta":{"lastUpdated":"2"}}}],"n":null,"t":true,"f":-1.5e3}`},
		{`{"time\u0073tamp":"t"}`, `{"time\u0073tamp":"t"}`}, // an escaped key is not matched
		{`["timestamp"]`, `["timestamp"]`},
		{`{"a":{"timestamp":"t"}}`, `{"a":{"timestamp":"t"}}`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := string(withoutMembers([]byte(tt.in), "timestamp", "meta")); got != tt.want {
				t.Errorf("withoutMembers = %s, want %s", got, tt.want)
			}
		})
	}
}

// FuzzWithoutMembers checks the scan against a decoding reference on any
// compact JSON object: the same members left, in the same order.
func FuzzWithoutMembers(f *testing.F) {
	for _, s := range []string{`{"timestamp":"t","a":1}`, `{"meta":{"lastUpdated":"x","b":[1,"]"]},"c":"\"}"}`, `{"a":[[],{}],"timestamp":{"x":"}"}}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var buf bytes.Buffer
		if !json.Valid([]byte(s)) || json.Compact(&buf, []byte(s)) != nil || buf.Len() == 0 || buf.Bytes()[0] != '{' {
			return
		}
		in := buf.Bytes()
		if got, want := withoutMembers(in, "timestamp", "meta"), referenceWithout(t, in, "timestamp", "meta"); !bytes.Equal(got, want) {
			t.Errorf("withoutMembers(%s) = %s, reference %s", in, got, want)
		}
	})
}

// referenceWithout is withoutMembers by decoding: each top-level member
// as raw JSON, its key compared as written (as the scan compares it).
func referenceWithout(t *testing.T, obj []byte, drop, meta string) []byte {
	t.Helper()
	if len(obj) == 0 || obj[0] != '{' || !bytes.Contains(obj, []byte(`"`+drop+`"`)) && !bytes.Contains(obj, []byte(`"lastUpdated"`)) {
		return obj
	}
	dec := json.NewDecoder(bytes.NewReader(obj))
	if _, err := dec.Token(); err != nil {
		t.Fatal(err)
	}
	out := []byte{'{'}
	for dec.More() {
		before := dec.InputOffset()
		if _, err := dec.Token(); err != nil {
			t.Fatal(err)
		}
		keyRaw := bytes.TrimPrefix(obj[before:dec.InputOffset()], []byte{','})
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			t.Fatal(err)
		}
		switch key := string(keyRaw[1 : len(keyRaw)-1]); {
		case key == drop:
			continue
		case key == meta && meta != "":
			v = referenceWithout(t, v, "lastUpdated", "")
		}
		if len(out) > 1 {
			out = append(out, ',')
		}
		out = append(append(append(out, keyRaw...), ':'), v...)
	}
	return append(out, '}')
}
